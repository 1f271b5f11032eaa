// Command bench measures tollgate side by side with a direct connection, in
// one run, and prints ratios: connection setup (connect to first byte),
// relay throughput, and the agent's memory per idle relayed connection.
//
// It needs root and the binaries from `make build`. Run it with `make bench`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/cgroup2"
	"github.com/tollgate-dev/tollgate/pkg/control"
)

type result struct {
	SetupP50, SetupP99       time.Duration
	DirectP50, DirectP99     time.Duration
	ThroughputMBs, DirectMBs float64
}

func main() {
	client := flag.Bool("client", false, "internal: run the measuring client")
	target := flag.String("target", "", "internal: governed address")
	direct := flag.String("direct", "", "internal: direct address of the same server")
	dials := flag.Int("dials", 2000, "connections for the setup measurement")
	mib := flag.Int("mib", 1024, "MiB streamed for the throughput measurement")
	idle := flag.Int("idle", 1000, "idle connections for the memory measurement")
	suite := flag.String("suite", "all", "tcp | pg | mask | all")
	maskRows := flag.Int("mask-rows", 1000000, "rows read for the masking measurement")
	seconds := flag.Int("seconds", 10, "pgbench run length for each path and mode")
	rounds := flag.Int("rounds", 2, "pg suite: interleaved rounds of TPS runs (each seconds/2 long) per path and mode")
	baseline := flag.String("baseline", "", "pg suite: also measure this agent binary (say, a build of main) side by side with bin/tollgate")
	perfDir := flag.String("perf", "", "pg suite: instead of the comparison, record the agent with perf (one tollgate run per mode) into this directory")
	flag.BoolVar(&perfSystem, "perf-system", false, "with -perf: record the whole machine (perf record -a), not the agent alone, to see what each process and kernel thread costs (perf report --sort comm)")
	flag.Parse()
	if *client {
		runClient(*target, *direct, *dials, *mib)
		return
	}
	var err error
	if *suite == "tcp" || *suite == "all" {
		err = run(*dials, *mib, *idle)
	}
	if err == nil && (*suite == "pg" || *suite == "all") {
		err = runPG(*seconds, max(*rounds, 1), *baseline, *perfDir)
	}
	if err == nil && (*suite == "mask" || *suite == "all") {
		err = runMask(*maskRows)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// governed is a throwaway cgroup with a tollgate agent governing it.
type governed struct {
	work, cgDir, cgPath, pins string
	linkLocal                 string
	agent                     *exec.Cmd
}

// startGoverned starts the agent (bin/tollgate) on a new cgroup with the
// given targets (YAML list items) and an allow-all policy that lets the
// agent cache its decisions.
func startGoverned(name, targets string) (*governed, error) {
	bin, _ := filepath.Abs("bin/tollgate")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s: run make build first", bin)
	}
	return startGovernedWith(name, bin, "169.254.77.201", targets)
}

// startGovernedWith is startGoverned with the agent binary and the proxy's
// link-local address given: two agents may run side by side.
func startGovernedWith(name, bin, linkLocal, targets string) (*governed, error) {
	mount, err := cgroup2.Mount()
	if err != nil {
		return nil, err
	}
	g := &governed{cgPath: fmt.Sprintf("/tollgate-bench-%s-%d", name, os.Getpid()), linkLocal: linkLocal}
	g.cgDir = filepath.Join(mount, g.cgPath)
	g.pins = fmt.Sprintf("/sys/fs/bpf/tollgate-bench-%s-%d", name, os.Getpid())
	if g.work, err = os.MkdirTemp("", "tollgate-bench"); err != nil {
		return nil, err
	}
	os.Chmod(g.work, 0o755)
	if err := os.Mkdir(g.cgDir, 0o755); err != nil {
		return nil, err
	}
	os.Mkdir(filepath.Join(g.work, "policy"), 0o755)
	os.WriteFile(filepath.Join(g.work, "policy", "allow.rego"), []byte("package tollgate\n\ndecision := {\"allow\": true, \"cache\": true}\n"), 0o644)
	pl, _ := net.Listen("tcp4", "127.0.0.1:0")
	proxyPort := pl.Addr().(*net.TCPAddr).Port
	pl.Close()
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
control_socket: %[1]s/ctl.sock
policy: {dir: %[1]s/policy}
bpf: {cgroup: %[2]s, pin_dir: %[3]s}
proxy: {port: %[4]d, link_local: %[6]s}
identities:
  - {name: bench, owner: bench, purpose: benchmark, match: {cgroup: %[2]s}}
targets:
%[5]s`, g.work, g.cgPath, g.pins, proxyPort, targets, linkLocal)
	cfgPath := filepath.Join(g.work, "tollgate.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	g.agent = exec.Command(bin, "run", "--config", cfgPath, "--log-level", "warn")
	g.agent.Stderr = os.Stderr
	if err := g.agent.Start(); err != nil {
		g.close()
		return nil, err
	}
	if err := waitUp(control.NewClient(filepath.Join(g.work, "ctl.sock"))); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// command runs inside the governed cgroup.
func (g *governed) command(name string, args ...string) (*exec.Cmd, func(), error) {
	cg, err := os.Open(g.cgDir)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	return cmd, func() { cg.Close() }, nil
}

func (g *governed) close() {
	if g.agent != nil && g.agent.Process != nil {
		g.agent.Process.Signal(syscall.SIGTERM)
		g.agent.Wait()
	}
	os.RemoveAll(g.pins)
	os.Remove(g.cgDir)
	exec.Command("ip", "addr", "del", g.linkLocal+"/32", "dev", "lo").Run()
	os.RemoveAll(g.work)
}

// server answers each connection with one byte, then streams the number of
// MiB the client asks for ("<n>\n"), if any.
func server() (net.Listener, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	chunk := make([]byte, 1<<20)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte{'!'})
				var n int
				if _, err := fmt.Fscanf(c, "%d\n", &n); err != nil {
					io.Copy(io.Discard, c)
					return
				}
				for i := 0; i < n; i++ {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l, nil
}

func run(dials, mib, idle int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root")
	}
	srv, err := server()
	if err != nil {
		return err
	}
	defer srv.Close()
	targetAddr := "127.77.0.50:9000"
	g, err := startGoverned("tcp", fmt.Sprintf("  - {name: bench, protocol: tcp, address: %s, upstream: %s}\n", targetAddr, srv.Addr()))
	if err != nil {
		return err
	}
	defer g.close()

	// The client runs inside the governed cgroup and measures both paths.
	self, _ := os.Executable()
	cl, done, err := g.command(self, "-client", "-target", targetAddr, "-direct", srv.Addr().String(),
		"-dials", strconv.Itoa(dials), "-mib", strconv.Itoa(mib))
	if err != nil {
		return err
	}
	defer done()
	cl.Stderr = os.Stderr
	out, err := cl.Output()
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		return err
	}

	perConn, err := idleMemory(g, targetAddr, idle)
	if err != nil {
		return err
	}

	fmt.Printf("tollgate benchmark (redirect + tcp relay vs direct), %s\n\n", time.Now().Format(time.RFC3339))
	fmt.Printf("%-34s %14s %14s %8s\n", "measure", "tollgate", "direct", "ratio")
	fmt.Printf("%-34s %14v %14v %7.2fx\n", "connect to first byte, p50", r.SetupP50, r.DirectP50, float64(r.SetupP50)/float64(r.DirectP50))
	fmt.Printf("%-34s %14v %14v %7.2fx\n", "connect to first byte, p99", r.SetupP99, r.DirectP99, float64(r.SetupP99)/float64(r.DirectP99))
	fmt.Printf("%-34s %11.0f MB/s %9.0f MB/s %7.2fx\n", "relay throughput", r.ThroughputMBs, r.DirectMBs, r.ThroughputMBs/r.DirectMBs)
	fmt.Printf("%-34s %11.1f KiB\n", "agent memory per idle connection", perConn)
	return nil
}

func waitUp(cc *control.Client) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := contextWithTimeout(time.Second)
		_, err := cc.Status(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent did not start: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idleMemory opens n idle connections through the agent from a process in
// the governed cgroup and returns the agent's RSS growth per connection.
func idleMemory(g *governed, target string, n int) (float64, error) {
	agentPID := g.agent.Process.Pid
	before, err := rssKiB(agentPID)
	if err != nil {
		return 0, err
	}
	self, _ := os.Executable()
	holder, done, err := g.command(self, "-client", "-target", target, "-dials", strconv.Itoa(-n))
	if err != nil {
		return 0, err
	}
	defer done()
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		return 0, err
	}
	defer func() { stdin.Close(); holder.Wait() }()
	line := make([]byte, 64)
	k, _ := stdout.Read(line) // "held N\n" once every connection is up
	if !strings.HasPrefix(string(line[:k]), "held") {
		return 0, fmt.Errorf("idle holder: %q", line[:k])
	}
	time.Sleep(500 * time.Millisecond) // let the agent's goroutines settle
	after, err := rssKiB(agentPID)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

func rssKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

func runClient(target, direct string, dials, mib int) {
	if dials < 0 { // hold -dials idle connections until stdin closes
		var conns []net.Conn
		for i := 0; i < -dials; i++ {
			c, err := net.Dial("tcp4", target)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			b := make([]byte, 1)
			io.ReadFull(c, b)
			conns = append(conns, c)
		}
		fmt.Printf("held %d\n", len(conns))
		io.Copy(io.Discard, os.Stdin)
		return
	}
	var r result
	// Interleave the two paths so machine noise hits both alike.
	var via, dir []time.Duration
	for i := 0; i < dials; i++ {
		via = append(via, firstByte(target))
		dir = append(dir, firstByte(direct))
	}
	r.SetupP50, r.SetupP99 = pct(via, 50), pct(via, 99)
	r.DirectP50, r.DirectP99 = pct(dir, 50), pct(dir, 99)
	r.DirectMBs = stream(direct, mib)
	r.ThroughputMBs = stream(target, mib)
	json.NewEncoder(os.Stdout).Encode(r)
}

func firstByte(addr string) time.Duration {
	start := time.Now()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	d := time.Since(start)
	c.Close()
	return d
}

func stream(addr string, mib int) float64 {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	b := make([]byte, 1)
	io.ReadFull(c, b)
	start := time.Now()
	fmt.Fprintf(c, "%d\n", mib)
	n, _ := io.Copy(io.Discard, c)
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
