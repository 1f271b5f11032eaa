package redirect

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/test/testenv"
)

func TestMain(m *testing.M) {
	testenv.RegisterHelper("shortcut", shortcutClient)
	testenv.RunHelper()
	os.Exit(m.Run())
}

// proxyReply is what the test proxy sends back to a helper client.
type proxyReply struct {
	Origin  Origin `json:"origin"`
	Err     string `json:"err,omitempty"`
	Payload string `json:"payload"`
}

type fixture struct {
	r          *Redirector
	cg         testenv.Cgroup
	pinDir     string
	proxyPort  uint16
	targetPort uint16
	opts       Options
}

// freePort returns a TCP port free on both loopback addresses.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l6, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			l6.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

// serve runs handle for every connection on l.
func serve(t *testing.T, r *Redirector, l net.Listener, handle func(*Redirector, net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(r, c)
			}()
		}
	}()
}

// replyOrigin answers a connection with the origin the redirector recorded
// for it and what the client sent.
func replyOrigin(r *Redirector, c net.Conn) {
	o, lerr := r.LookupConn(c)
	payload, _ := io.ReadAll(c)
	rep := proxyReply{Origin: o, Payload: string(payload)}
	if lerr != nil {
		rep.Err = lerr.Error()
	}
	json.NewEncoder(c).Encode(rep)
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newFixture(t *testing.T, targets ...string) *fixture {
	return newFixtureServing(t, replyOrigin, targets...)
}

// newFixtureServing is newFixture with handle serving the proxy port.
func newFixtureServing(t *testing.T, handle func(*Redirector, net.Conn), targets ...string) *fixture {
	return newFixtureWith(t, handle, nil, targets...)
}

// newFixtureWith is newFixtureServing with edit changing the options before
// Attach.
func newFixtureWith(t *testing.T, handle func(*Redirector, net.Conn), edit func(*Options), targets ...string) *fixture {
	t.Helper()
	testenv.RequirePrivileged(t)
	f := &fixture{
		cg:         testenv.NewCgroup(t),
		pinDir:     testenv.BPFFS(t),
		proxyPort:  freePort(t),
		targetPort: freePort(t),
	}
	if len(targets) == 0 {
		targets = []string{"127.77.0.5/32", "::1/128"}
	}
	var tt []Target
	for i, p := range targets {
		tt = append(tt, Target{ID: uint32(i + 1), Prefix: netip.MustParsePrefix(p), Port: f.targetPort})
	}
	f.opts = Options{
		Cgroup: f.cg.Dir(),
		PinDir: f.pinDir,
		Proxy: Proxy{
			Port:   f.proxyPort,
			V4:     netip.MustParseAddr("127.0.0.1"),
			Remote: netip.MustParseAddr("169.254.77.1"),
			V6:     netip.MustParseAddr("::1"),
		},
		Mark:     0x70670001,
		Targets:  tt,
		Shortcut: true,
	}
	if edit != nil {
		edit(&f.opts)
	}
	r, err := Attach(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	t.Cleanup(func() {
		if err := r.Detach(); err != nil {
			t.Errorf("detach: %v", err)
		}
	})
	port := strconv.Itoa(int(f.proxyPort))
	serve(t, r, listen(t, "tcp4", "127.0.0.1:"+port), handle)
	serve(t, r, listen(t, "tcp6", "[::1]:"+port), handle)
	return f
}

func (f *fixture) target(host string) string {
	return net.JoinHostPort(host, strconv.Itoa(int(f.targetPort)))
}

func decodeReply(t *testing.T, d testenv.DialResult) proxyReply {
	t.Helper()
	if !d.OK {
		t.Fatalf("dial failed: %s", d.Err)
	}
	var rep proxyReply
	if err := json.Unmarshal([]byte(d.Reply), &rep); err != nil {
		t.Fatalf("reply %q is not from the proxy: %v", d.Reply, err)
	}
	if rep.Err != "" {
		t.Fatalf("proxy lookup: %s", rep.Err)
	}
	return rep
}

func TestGovernedDialIsRedirectedAndIdentified(t *testing.T) {
	f := newFixture(t)
	// Something real listens at the target: an ungoverned dial reaches it.
	direct := listen(t, "tcp4", f.target("127.77.0.5"))
	go func() {
		for {
			c, err := direct.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "direct")
			c.Close()
		}
	}()

	d := testenv.Dial(t, f.cg, "tcp4", f.target("127.77.0.5"), "hello")
	rep := decodeReply(t, d)
	want := Origin{
		Dst:         netip.MustParseAddrPort(f.target("127.77.0.5")),
		TargetID:    1,
		CgroupID:    f.cg.ID,
		PID:         uint32(d.PID),
		UID:         uint32(os.Getuid()),
		GID:         uint32(os.Getgid()),
		NetnsCookie: rep.Origin.NetnsCookie,
	}
	if rep.Origin != want {
		t.Errorf("origin = %+v; want %+v", rep.Origin, want)
	}
	if rep.Origin.NetnsCookie == 0 {
		t.Error("netns cookie not recorded")
	}
	if rep.Payload != "hello" {
		t.Errorf("payload = %q; want hello", rep.Payload)
	}
	if d.Peer != f.target("127.77.0.5") {
		t.Errorf("getpeername = %s; want the dialled %s", d.Peer, f.target("127.77.0.5"))
	}

	// The test process is not in the governed cgroup: it goes direct.
	c, err := net.Dial("tcp4", f.target("127.77.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "direct" {
		t.Errorf("ungoverned dial got %q; want direct", got)
	}

	// A non-target port is untouched, governed or not.
	other := testenv.Dial(t, f.cg, "tcp4", net.JoinHostPort("127.77.0.5", strconv.Itoa(int(freePort(t)))), "x")
	if other.OK || !strings.Contains(other.Err, "refused") {
		t.Errorf("dial to a non-target = %+v; want connection refused", other)
	}

	st, err := f.r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Redirected < 1 || st.Established < 1 {
		t.Errorf("stats = %+v; want redirected and established counted", st)
	}
}

func TestIPv6AndMappedDials(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ network, addr, wantDst string }{
		{"tcp6", f.target("::1"), f.target("::1")},
		{"tcp6mapped", f.target("::ffff:127.77.0.5"), f.target("127.77.0.5")},
	} {
		d := testenv.Dial(t, f.cg, tc.network, tc.addr, "v6")
		rep := decodeReply(t, d)
		if got := rep.Origin.Dst.String(); got != tc.wantDst {
			t.Errorf("%s: origin dst = %s; want %s", tc.addr, got, tc.wantDst)
		}
		if rep.Origin.CgroupID != f.cg.ID {
			t.Errorf("%s: cgroup = %d; want %d", tc.addr, rep.Origin.CgroupID, f.cg.ID)
		}
		if unmap(d.Peer) != unmap(tc.addr) {
			t.Errorf("%s: getpeername = %s", tc.addr, d.Peer)
		}
	}
}

func TestUDPToTargetRefused(t *testing.T) {
	f := newFixture(t)
	for _, addr := range []string{f.target("127.77.0.5"), f.target("::1")} {
		cmd := testenv.Helper("sendto", addr)
		testenv.InCgroup(t, cmd, f.cg)
		var d testenv.DialResult
		testenv.RunJSON(t, cmd, &d)
		if d.OK || !strings.Contains(d.Err, "operation not permitted") {
			t.Errorf("sendto %s = %+v; want operation not permitted", addr, d)
		}
		network := "udp4"
		if strings.HasPrefix(addr, "[") {
			network = "udp6"
		}
		c := testenv.Dial(t, f.cg, network, addr, "x")
		if c.OK || !strings.Contains(c.Err, "operation not permitted") {
			t.Errorf("udp connect %s = %+v; want operation not permitted", addr, c)
		}
	}
	st, _ := f.r.Stats()
	if st.DeniedUdp < 4 {
		t.Errorf("denied_udp = %d; want 4", st.DeniedUdp)
	}
}

func TestChildrenOfGovernedProcessAreGoverned(t *testing.T) {
	f := newFixture(t)
	sub := testenv.NewCgroup(t, f.cg) // a nested cgroup is governed too
	cmd := testenv.Helper("spawn", "tcp4", f.target("127.77.0.5"), "child", "0")
	testenv.InCgroup(t, cmd, sub)
	var d testenv.DialResult
	testenv.RunJSON(t, cmd, &d)
	rep := decodeReply(t, d)
	if rep.Origin.CgroupID != sub.ID || rep.Origin.PID != uint32(d.PID) {
		t.Errorf("origin = %+v; want cgroup %d pid %d", rep.Origin, sub.ID, d.PID)
	}
	if uint32(cmd.Process.Pid) == rep.Origin.PID {
		t.Error("origin names the parent, not the child that dialled")
	}
}

func TestMarkedAndExemptSocketsGoDirect(t *testing.T) {
	f := newFixture(t)
	direct := listen(t, "tcp4", f.target("127.77.0.5"))
	go func() {
		for {
			c, err := direct.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "direct")
			c.Close()
		}
	}()
	cmd := testenv.Helper("dial", "tcp4", f.target("127.77.0.5"), "", strconv.Itoa(int(f.opts.Mark)))
	testenv.InCgroup(t, cmd, f.cg)
	var d testenv.DialResult
	testenv.RunJSON(t, cmd, &d)
	if d.Reply != "direct" {
		t.Errorf("marked dial reply = %q (%s); want direct", d.Reply, d.Err)
	}

	agent := testenv.NewCgroup(t, f.cg)
	if err := f.r.SetExempt([]uint64{agent.ID}); err != nil {
		t.Fatal(err)
	}
	if d := testenv.Dial(t, agent, "tcp4", f.target("127.77.0.5"), ""); d.Reply != "direct" {
		t.Errorf("exempt cgroup dial reply = %q (%s); want direct", d.Reply, d.Err)
	}
	if d := testenv.Dial(t, f.cg, "tcp4", f.target("127.77.0.5"), "gov"); !strings.Contains(d.Reply, `"payload":"gov"`) {
		t.Errorf("governed dial after exemption = %q; want the proxy", d.Reply)
	}
}

func TestThousandConcurrentLookups(t *testing.T) {
	f := newFixture(t, "127.77.0.0/16")
	var addrs []string
	for i := 0; i < 1000; i++ {
		addrs = append(addrs, f.target(fmt.Sprintf("127.77.%d.%d", 1+i/250, 1+i%250)))
	}
	cmd := testenv.Helper("dialmany", append([]string{"tcp4", "1000"}, addrs...)...)
	testenv.InCgroup(t, cmd, f.cg)
	var res []testenv.DialResult
	testenv.RunJSON(t, cmd, &res)
	if len(res) != 1000 {
		t.Fatalf("got %d results; want 1000", len(res))
	}
	for i, d := range res {
		rep := decodeReply(t, d)
		// The client sent the address it dialled; the proxy must have found
		// that same connection's record.
		if rep.Origin.Dst.String() != rep.Payload || rep.Payload != addrs[i] {
			t.Fatalf("dial %d: origin dst %s, client dialled %s", i, rep.Origin.Dst, rep.Payload)
		}
	}
}

func TestSetTargetsReplacesTable(t *testing.T) {
	f := newFixture(t)
	newT := []Target{{ID: 7, Prefix: netip.MustParsePrefix("127.78.0.0/24"), Port: f.targetPort}}
	if err := f.r.SetTargets(newT); err != nil {
		t.Fatal(err)
	}
	if d := testenv.Dial(t, f.cg, "tcp4", f.target("127.77.0.5"), "x"); d.OK {
		t.Errorf("removed target still redirected: %+v", d)
	}
	rep := decodeReply(t, testenv.Dial(t, f.cg, "tcp4", f.target("127.78.0.9"), "x"))
	if rep.Origin.TargetID != 7 {
		t.Errorf("target id = %d; want 7", rep.Origin.TargetID)
	}
}

func TestLookupUnknownConnection(t *testing.T) {
	f := newFixture(t)
	_, err := f.r.Lookup(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
	if !errors.Is(err, ErrNoOrigin) {
		t.Errorf("err = %v; want ErrNoOrigin", err)
	}
}

func TestRestartAdoptsPinnedLinks(t *testing.T) {
	f := newFixture(t)
	// Close as a dying agent would: pins stay, programs stay attached.
	if err := f.r.Close(); err != nil {
		t.Fatal(err)
	}
	// While no agent runs, a governed dial lands on the proxy port; the test
	// proxy still listens here, which shows the redirect is still in force.
	r2, err := Attach(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Adopted() {
		t.Error("second Attach did not adopt the pinned links")
	}
	f.r = r2
	// The test proxy still holds the first redirector; the maps are the same
	// pinned maps, so the record the new programs wrote is found.
	d := testenv.Dial(t, f.cg, "tcp4", f.target("127.77.0.5"), "again")
	if !strings.Contains(d.Reply, `"payload":"again"`) {
		t.Errorf("after adoption: %+v", d)
	}
}

func unmap(s string) netip.AddrPort {
	ap := netip.MustParseAddrPort(s)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// pod serves the proxy on the link-local address too, with handle, and
// returns a pod and a cgroup of its own under the governed one.
func (f *fixture) pod(t *testing.T, handle func(*Redirector, net.Conn)) (testenv.Pod, testenv.Cgroup) {
	remove, err := AddLocalAddress(f.opts.Proxy.Remote)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Errorf("remove link-local address: %v", err)
		}
	})
	serve(t, f.r, listen(t, "tcp4", net.JoinHostPort(f.opts.Proxy.Remote.String(), strconv.Itoa(int(f.proxyPort)))), handle)
	return testenv.NewPod(t), testenv.NewCgroup(t, f.cg)
}

func TestPodClientReachesProxyOnLinkLocal(t *testing.T) {
	f := newFixture(t)
	pod, podCg := f.pod(t, replyOrigin)

	cmd := pod.Command(testenv.Helper("dial", "tcp4", f.target("127.77.0.5"), "from-pod", "0"))
	testenv.InCgroup(t, cmd, podCg)
	var d testenv.DialResult
	testenv.RunJSON(t, cmd, &d)
	rep := decodeReply(t, d)
	if rep.Origin.CgroupID != podCg.ID {
		t.Errorf("cgroup = %d; want the pod's %d", rep.Origin.CgroupID, podCg.ID)
	}
	host, err := hostNetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Origin.NetnsCookie == 0 || rep.Origin.NetnsCookie == host {
		t.Errorf("netns cookie = %d; want the pod's (host is %d)", rep.Origin.NetnsCookie, host)
	}
	if rep.Origin.Dst.String() != f.target("127.77.0.5") || d.Peer != f.target("127.77.0.5") {
		t.Errorf("dst = %s, getpeername = %s; want %s", rep.Origin.Dst, d.Peer, f.target("127.77.0.5"))
	}
	if rep.Payload != "from-pod" {
		t.Errorf("payload = %q", rep.Payload)
	}
}
