// Package e2e runs the real tollgate and tollctl binaries against the real
// kernel: governed processes in cgroups the tests create, upstream servers
// on 127.0.0.0/8, pods as network namespaces.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/control"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/redirect"
	"github.com/tollgate-dev/tollgate/test/pgtest"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	testenv.RegisterHelper("pgx", pgxClient)
	testenv.RegisterHelper("pgxdeny", pgxDeny)
	testenv.RegisterHelper("pgxconnect", pgxConnect)
	testenv.RunHelper()
	dir, err := os.MkdirTemp("", "tollgate-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	out, err := exec.Command("go", "build", "-o", dir, "github.com/tollgate-dev/tollgate/cmd/...").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// upstream is a line server standing in for a protected service: every line
// gets "<name>: <line>" back.
type upstream struct {
	name  string
	l     net.Listener
	conns atomic.Int64
}

func startUpstream(t *testing.T, name, addr string) *upstream {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{name: name, l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s: %s\n", name, sc.Text())
				}
			}()
		}
	}()
	return u
}

func (u *upstream) addr() string { return u.l.Addr().String() }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var linkLocalSeq atomic.Int32

// agent is one tollgate daemon run by a test, with its own cgroup, pins,
// proxy port, link-local address and control socket.
type agent struct {
	t         *testing.T
	dir       string
	cfgPath   string
	socket    string
	pinDir    string
	linkLocal string
	cg        testenv.Cgroup
	proxyPort int
	// extra is appended to the generated config (targets, identities).
	extra string
	// failOpen sets bpf.on_agent_down.
	failOpen bool
	// inCgroup runs the agent itself inside this cgroup.
	inCgroup *testenv.Cgroup
	// policyDir holds the agent's Rego policy (allow-all unless a test
	// writes another).
	policyDir string

	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newAgent(t *testing.T, extra string) *agent {
	t.Helper()
	testenv.RequirePrivileged(t)
	a := &agent{
		t:         t,
		dir:       t.TempDir(),
		pinDir:    testenv.BPFFS(t),
		cg:        testenv.NewCgroup(t),
		proxyPort: freePort(t),
		linkLocal: fmt.Sprintf("169.254.77.%d", 10+linkLocalSeq.Add(1)+int32(os.Getpid()%100)),
		extra:     extra,
	}
	a.cfgPath = filepath.Join(a.dir, "tollgate.yaml")
	a.policyDir = filepath.Join(a.dir, "policy")
	os.Mkdir(a.policyDir, 0o755)
	a.writePolicy(allowAll)
	a.socket = filepath.Join(a.dir, "tollctl.sock")
	t.Cleanup(func() {
		a.stop(syscall.SIGKILL)
		// Pins were left by a fail-closed agent: remove them, which detaches.
		redirect.Unpin(a.pinDir)
		exec.Command("ip", "addr", "del", a.linkLocal+"/32", "dev", "lo").Run()
		if t.Failed() && a.logs != nil {
			t.Logf("agent log:\n%s", a.logs.String())
		}
	})
	a.writeConfig()
	return a
}

func (a *agent) writeConfig() {
	mode := "fail-closed"
	if a.failOpen {
		mode = "fail-open"
	}
	cfg := fmt.Sprintf(`state_dir: %s/state
control_socket: %s
shutdown_grace: 2s
policy: {dir: %s}
bpf:
  cgroup: %s
  pin_dir: %s
  on_agent_down: %s
proxy:
  port: %d
  link_local: %s
%s`, a.dir, a.socket, a.policyDir, a.cg.Path, a.pinDir, mode, a.proxyPort, a.linkLocal, a.extra)
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

const allowAll = "package tollgate\n\ndecision := {\"allow\": true}\n"

// writePolicy replaces the agent's policy with one file of Rego.
func (a *agent) writePolicy(rego string) {
	a.t.Helper()
	tmp := filepath.Join(a.dir, "policy.rego.tmp")
	if err := os.WriteFile(tmp, []byte(rego), 0o644); err != nil {
		a.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.policyDir, "policy.rego")); err != nil {
		a.t.Fatal(err)
	}
}

// start runs the agent and waits until its control API answers.
func (a *agent) start() {
	a.t.Helper()
	a.cmd = exec.Command(filepath.Join(binDir, "tollgate"), "run", "--config", a.cfgPath)
	a.logs = &syncBuffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	if a.inCgroup != nil {
		testenv.InCgroup(a.t, a.cmd, *a.inCgroup)
	}
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(a.cmd, a.done)
	c := control.NewClient(a.socket)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-a.done:
			a.cmd = nil // gone: nothing for cleanup to stop
			a.t.Fatalf("agent exited at start: %v\n%s", werr, a.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent did not come up: %v\n%s", err, a.logs.String())
		}
	}
}

// stop signals the agent and waits for it to exit; it returns how long
// that took.
func (a *agent) stop(sig syscall.Signal) time.Duration {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	start := time.Now()
	a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
		a.t.Errorf("agent ignored %v for 30s", sig)
	}
	a.cmd = nil
	return time.Since(start)
}

// tollctl runs the CLI against this agent; it returns stdout and the exit code.
func (a *agent) tollctl(args ...string) (string, int) {
	cmd := exec.Command(filepath.Join(binDir, "tollctl"), append([]string{"--socket", a.socket}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out) + stderr.String(), ee.ExitCode()
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return string(out), 0
}

func (a *agent) sessions() []l7.SessionInfo {
	a.t.Helper()
	out, code := a.tollctl("sessions", "ls", "-o", "json")
	if code != 0 {
		a.t.Fatalf("tollctl sessions ls: exit %d: %s", code, out)
	}
	var ss []l7.SessionInfo
	if err := json.Unmarshal([]byte(out), &ss); err != nil {
		a.t.Fatalf("sessions json: %v: %s", err, out)
	}
	return ss
}

func (a *agent) identities() []identity.InventoryEntry {
	a.t.Helper()
	out, code := a.tollctl("identities", "ls", "-o", "json")
	var ids []identity.InventoryEntry
	if code != 0 || json.Unmarshal([]byte(out), &ids) != nil {
		a.t.Fatalf("identities ls: exit %d: %s", code, out)
	}
	return ids
}

func tcpTarget(name, address, upstream string) string {
	return fmt.Sprintf(`  - name: %s
    protocol: tcp
    address: %s
    upstream: %s
`, name, address, upstream)
}

func TestAgentRedirectsIdentifiesAndReports(t *testing.T) {
	up := startUpstream(t, "orders", "127.0.0.1:0")
	target := net.JoinHostPort("127.77.0.5", strconv.Itoa(freePort(t)))
	a := newAgent(t, "")
	a.extra = fmt.Sprintf(`identities:
  - name: billing-export
    owner: team-billing
    purpose: Nightly invoice export
    match: {cgroup: %q}
targets:
%s`, a.cg.Path, tcpTarget("orders-db", target, up.addr()))
	a.writeConfig()
	a.start()

	d := testenv.Dial(t, a.cg, "tcp4", target, "select 1\n")
	if !d.OK || d.Reply != "orders: select 1\n" {
		t.Fatalf("governed dial = %+v; want the upstream's reply through the agent", d)
	}
	if d.Peer != target {
		t.Errorf("client's getpeername = %s; want %s", d.Peer, target)
	}
	// Nothing listens at the target address itself: only the agent could answer.
	if c, err := net.DialTimeout("tcp4", target, time.Second); err == nil {
		c.Close()
		t.Fatal("something listens at the target address; the test proves nothing")
	}

	ss := a.sessions()
	if len(ss) != 1 {
		t.Fatalf("sessions = %d; want 1", len(ss))
	}
	s := ss[0]
	if s.Identity != "billing-export" || !s.Known || s.Workload.Owner != "team-billing" {
		t.Errorf("identity = %q known=%v owner=%q", s.Identity, s.Known, s.Workload.Owner)
	}
	if s.Dst.String() != target || s.PID != uint32(d.PID) || s.CgroupID != a.cg.ID || s.Workload.Cgroup != a.cg.Path {
		t.Errorf("session = %+v; want dst %s pid %d cgroup %s", s, target, d.PID, a.cg.Path)
	}
	if s.BytesIn != int64(len("select 1\n")) || s.BytesOut != int64(len(d.Reply)) {
		t.Errorf("bytes in/out = %d/%d; want %d/%d", s.BytesIn, s.BytesOut, len("select 1\n"), len(d.Reply))
	}
	if s.State != l7.StateClosed {
		t.Errorf("state = %s; want closed", s.State)
	}
	out, code := a.tollctl("sessions", "show", s.ID)
	if code != 0 || !strings.Contains(out, "billing-export") || !strings.Contains(out, target) {
		t.Errorf("sessions show: exit %d\n%s", code, out)
	}
	out, code = a.tollctl("status")
	if code != 0 || !strings.Contains(out, "orders-db") || !strings.Contains(out, a.cg.Path) || !strings.Contains(out, "sessions open:    0") {
		t.Errorf("status: exit %d\n%s", code, out)
	}

	out, code = a.tollctl("identities", "ls", "-o", "json")
	var ids []identity.InventoryEntry
	if code != 0 || json.Unmarshal([]byte(out), &ids) != nil || len(ids) != 1 {
		t.Fatalf("identities ls: exit %d: %s", code, out)
	}
	if e := ids[0]; e.Name != "billing-export" || !e.Configured || e.Sessions != 1 || len(e.Targets) != 1 || e.Targets[0] != "orders-db" || e.LastSeen.IsZero() {
		t.Errorf("inventory entry = %+v", e)
	}

	// An ungoverned process dialling the same address is left alone.
	if _, err := net.DialTimeout("tcp4", target, time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("ungoverned dial: %v; want connection refused", err)
	}

	// A conversation takes the same-host shortcut (proxy.shortcut, on by
	// default) once each end has said how far it read: the client's first
	// line goes by TCP, the rest and the agent's replies socket to socket.
	h := testenv.Hold(t, a.cg, "tcp4", target)
	for _, line := range []string{"a", "b", "c"} {
		if got := h.Send(line); got != "orders: "+line {
			t.Fatalf("held connection: %q; want the upstream's reply", got)
		}
	}
	out, _ = a.tollctl("status", "-o", "json")
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Kernel.ShortcutSends < 4 || st.Kernel.ShortcutTCPSends == 0 {
		t.Errorf("kernel counters = %+v (%v); want the shortcut taken", st.Kernel, err)
	}
}

func TestKill9FailsClosedAndRestartAdopts(t *testing.T) {
	up := startUpstream(t, "upstream", "127.0.0.1:0")
	port := freePort(t)
	target := net.JoinHostPort("127.77.0.6", strconv.Itoa(port))
	// A real server at the target address: a governed connection that went
	// direct would reach it and be seen.
	direct := startUpstream(t, "direct", target)
	a := newAgent(t, "targets:\n"+tcpTarget("db", target, up.addr()))
	a.start()
	if d := testenv.Dial(t, a.cg, "tcp4", target, "1\n"); d.Reply != "upstream: 1\n" {
		t.Fatalf("before kill: %+v", d)
	}

	// A governed client dials in a loop across the kill and the restart.
	stopLoop := make(chan struct{})
	loopDone := make(chan []testenv.DialResult)
	go func() {
		var res []testenv.DialResult
		for {
			select {
			case <-stopLoop:
				loopDone <- res
				return
			default:
			}
			cmd := testenv.Helper("dialmany", "tcp4", "5", target)
			testenv.InCgroup(t, cmd, a.cg)
			var rs []testenv.DialResult
			out, err := cmd.Output()
			if err == nil && json.Unmarshal(out, &rs) == nil {
				res = append(res, rs...)
			}
		}
	}()

	a.stop(syscall.SIGKILL)
	d := testenv.Dial(t, a.cg, "tcp4", target, "2\n")
	if d.OK || !strings.Contains(d.Err, "refused") {
		t.Errorf("with the agent dead: %+v; want connection refused", d)
	}
	a.start()
	out, _ := a.tollctl("status", "-o", "json")
	var st control.Status
	json.Unmarshal([]byte(out), &st)
	if !st.Adopted {
		t.Errorf("restarted agent did not adopt the pinned links: %s", out)
	}
	if d := testenv.Dial(t, a.cg, "tcp4", target, "3\n"); d.Reply != "upstream: 3\n" {
		t.Errorf("after restart: %+v", d)
	}
	close(stopLoop)
	res := <-loopDone
	var viaAgent, refused int
	for _, r := range res {
		switch {
		case strings.HasPrefix(r.Reply, "direct"):
			t.Fatalf("a governed connection went direct during the restart: %+v", r)
		case r.OK:
			viaAgent++
		case strings.Contains(r.Err, "refused") || strings.Contains(r.Err, "reset"):
			refused++
		}
	}
	t.Logf("dials across kill/restart: %d via the agent, %d refused, %d total", viaAgent, refused, len(res))
	if n := direct.conns.Load(); n != 0 {
		t.Errorf("the target's own server saw %d connections; want 0", n)
	}
}

func TestAgentInGovernedCgroupDoesNotLoop(t *testing.T) {
	port := freePort(t)
	target := net.JoinHostPort("127.77.0.7", strconv.Itoa(port))
	// The real service lives at the target address, and the agent's upstream
	// is that same address: only the agent's marked socket may reach it.
	svc := startUpstream(t, "service", target)
	a := newAgent(t, "targets:\n"+tcpTarget("svc", target, target))
	agentCg := testenv.NewCgroup(t, a.cg)
	a.inCgroup = &agentCg
	a.start()
	d := testenv.Dial(t, a.cg, "tcp4", target, "ping\n")
	if d.Reply != "service: ping\n" {
		t.Fatalf("dial = %+v; want the service's reply through the agent", d)
	}
	if n := svc.conns.Load(); n != 1 {
		t.Errorf("service saw %d connections; want exactly the agent's one", n)
	}
	ss := a.sessions()
	if len(ss) != 1 {
		t.Errorf("sessions = %d; want 1 (a loop would make more)", len(ss))
	}
}

func TestSIGHUPReloadKeepsSessions(t *testing.T) {
	upA := startUpstream(t, "a", "127.0.0.1:0")
	upB := startUpstream(t, "b", "127.0.0.1:0")
	port := strconv.Itoa(freePort(t))
	ta, tb := net.JoinHostPort("127.77.0.8", port), net.JoinHostPort("127.77.0.9", port)
	a := newAgent(t, "targets:\n"+tcpTarget("a", ta, upA.addr()))
	a.start()
	held := testenv.Hold(t, a.cg, "tcp4", ta)
	if r := held.Send("one"); r != "a: one" {
		t.Fatalf("held session: %q", r)
	}
	if d := testenv.Dial(t, a.cg, "tcp4", tb, "x\n"); d.OK {
		t.Fatalf("b is not a target yet but answered: %+v", d)
	}

	a.extra = "identities:\n  - name: reloaded\n    owner: o\n    purpose: p\n    match: {cgroup: " + strconv.Quote(a.cg.Path) + "}\n" +
		"targets:\n" + tcpTarget("a", ta, upA.addr()) + tcpTarget("b", tb, upB.addr())
	a.writeConfig()
	a.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(a.logs.String(), "config reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", a.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := testenv.Dial(t, a.cg, "tcp4", tb, "x\n"); d.Reply != "b: x\n" {
		t.Errorf("new target after reload: %+v", d)
	}
	if r := held.Send("two"); r != "a: two" {
		t.Errorf("session opened before the reload: %q; want it still relaying", r)
	}
	for _, s := range a.sessions() {
		if s.Target == "b" && s.Identity != "reloaded" {
			t.Errorf("session after reload has identity %q; want the reloaded one", s.Identity)
		}
	}

	// A broken config is refused and the running one stays.
	os.WriteFile(a.cfgPath, []byte("targets: [\n"), 0o600)
	a.cmd.Process.Signal(syscall.SIGHUP)
	for !strings.Contains(a.logs.String(), "reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("broken config not reported:\n%s", a.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := testenv.Dial(t, a.cg, "tcp4", tb, "y\n"); d.Reply != "b: y\n" {
		t.Errorf("after a broken reload: %+v", d)
	}
}

func TestSIGTERMDrainsWithinBound(t *testing.T) {
	up := startUpstream(t, "up", "127.0.0.1:0")
	target := net.JoinHostPort("127.77.0.10", strconv.Itoa(freePort(t)))
	a := newAgent(t, "targets:\n"+tcpTarget("db", target, up.addr()))
	a.start()
	held := testenv.Hold(t, a.cg, "tcp4", target)
	if r := held.Send("hi"); r != "up: hi" {
		t.Fatalf("held: %q", r)
	}
	took := a.stop(syscall.SIGTERM)
	// shutdown_grace is 2s in the test config; allow slack for a slow machine.
	if took > 10*time.Second {
		t.Errorf("SIGTERM took %v; want about the 2s grace", took)
	}
	if r := held.Send("after"); !strings.HasPrefix(r, "error") {
		t.Errorf("session still relaying after the agent stopped: %q", r)
	}
}

func TestFailOpenDetachesOnExit(t *testing.T) {
	up := startUpstream(t, "proxied", "127.0.0.1:0")
	target := net.JoinHostPort("127.77.0.11", strconv.Itoa(freePort(t)))
	startUpstream(t, "direct", target)
	a := newAgent(t, "targets:\n"+tcpTarget("db", target, up.addr()))
	a.failOpen = true
	a.writeConfig()
	a.start()
	if d := testenv.Dial(t, a.cg, "tcp4", target, "1\n"); d.Reply != "proxied: 1\n" {
		t.Fatalf("while running: %+v", d)
	}
	a.stop(syscall.SIGTERM)
	if d := testenv.Dial(t, a.cg, "tcp4", target, "2\n"); d.Reply != "direct: 2\n" {
		t.Errorf("after a fail-open exit: %+v; want direct", d)
	}
	if _, err := os.Stat(a.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there after fail-open exit: %v", err)
	}
}

func TestPodClientThroughAgent(t *testing.T) {
	up := startUpstream(t, "up", "127.0.0.1:0")
	target := net.JoinHostPort("127.77.0.12", strconv.Itoa(freePort(t)))
	a := newAgent(t, "targets:\n"+tcpTarget("db", target, up.addr()))
	a.start()
	pod := testenv.NewPod(t)
	podCg := testenv.NewCgroup(t, a.cg)
	cmd := pod.Command(testenv.Helper("dial", "tcp4", target, "from pod\n", "0"))
	testenv.InCgroup(t, cmd, podCg)
	var d testenv.DialResult
	testenv.RunJSON(t, cmd, &d)
	if d.Reply != "up: from pod\n" {
		t.Fatalf("pod dial = %+v", d)
	}
	ss := a.sessions()
	if len(ss) != 1 || ss[0].CgroupID != podCg.ID || ss[0].NetnsCookie == 0 {
		t.Errorf("sessions = %+v; want one from the pod's cgroup with its netns cookie", ss)
	}
}

func TestConfigErrorNamesKeyAndLine(t *testing.T) {
	a := newAgent(t, "targets:\n  - name: db\n    protocol: tcp\n    adress: 127.77.0.5:5432\n")
	cmd := exec.Command(filepath.Join(binDir, "tollgate"), "run", "--config", a.cfgPath)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("agent accepted an unknown key")
	}
	line := strings.Count(strings.SplitAfter(string(mustRead(t, a.cfgPath)), "adress")[0], "\n") + 1
	want := fmt.Sprintf("tollgate.yaml:%d", line)
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), `adress"`) {
		t.Errorf("error = %s; want it to name %s and the key", out, want)
	}

	a.extra = "targets:\n  - name: db\n    protocol: carrier-pigeon\n    address: 127.77.0.5:5432\n"
	a.writeConfig()
	out, err = exec.Command(filepath.Join(binDir, "tollgate"), "run", "--config", a.cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "carrier-pigeon") || !strings.Contains(string(out), "targets[0].protocol") {
		t.Errorf("unknown protocol: %v: %s", err, out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTollctlExitCodes(t *testing.T) {
	cmd := exec.Command(filepath.Join(binDir, "tollctl"), "--socket", filepath.Join(t.TempDir(), "none.sock"), "status")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "not running") {
		t.Errorf("status with no agent: %v %s; want exit 3 saying the agent is not running", err, out)
	}
	cmd = exec.Command(filepath.Join(binDir, "tollctl"), "frobnicate")
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("unknown command: %v; want exit 2", err)
	}
}

func TestDoctor(t *testing.T) {
	testenv.RequirePrivileged(t)
	out, err := exec.Command(filepath.Join(binDir, "tollgate"), "doctor").CombinedOutput()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	for _, p := range []string{"connect4", "connect6", "sockops", "getpeername4", "getpeername6", "sendmsg4", "sendmsg6"} {
		if !strings.Contains(string(out), "program "+p) {
			t.Errorf("doctor does not report %s:\n%s", p, out)
		}
	}
}
