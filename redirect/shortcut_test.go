package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/tollgate-dev/tollgate/bpf"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

// The shortcut test runs one script on both ends of a redirected
// connection: a helper client in the governed cgroup and the proxy. Each
// end sends its own byte pattern, so any byte out of place (a reordering
// between the bytes handed over by tg_skmsg and those that took TCP) is
// caught where it lands.

// patternByte is byte i of what end dir sends.
func patternByte(dir byte, i int) byte { return byte(i) ^ byte(i>>8)*31 ^ byte(i>>16)*7 ^ dir }

// end is one end of the script's connection.
type end struct {
	c          net.Conn
	r          *bufio.Reader
	dir        byte
	sent, rcvd int
	chunks     *rand.Rand // chunk sizes, the end's own
}

func newEnd(c net.Conn, dir byte) *end {
	return &end{c: c, r: bufio.NewReaderSize(c, 1<<16), dir: dir, chunks: rand.New(rand.NewPCG(uint64(dir), 7))}
}

// send writes n bytes of the end's pattern in chunks of random sizes.
func (e *end) send(n int) error {
	buf := make([]byte, 0, 64<<10)
	for n > 0 {
		k := min(n, 1+e.chunks.IntN(cap(buf)))
		buf = buf[:k]
		for i := range buf {
			buf[i] = patternByte(e.dir, e.sent+i)
		}
		if _, err := e.c.Write(buf); err != nil {
			return fmt.Errorf("write at %d: %w", e.sent, err)
		}
		e.sent += k
		n -= k
	}
	return nil
}

// expect reads n bytes and checks each against the peer's pattern.
func (e *end) expect(n int) error {
	buf := make([]byte, 32<<10)
	for n > 0 {
		k, err := e.r.Read(buf[:min(n, len(buf))])
		for i, b := range buf[:k] {
			if want := patternByte(e.dir^1, e.rcvd+i); b != want {
				return fmt.Errorf("byte %d of the stream is %#x; want %#x: out of order", e.rcvd+i, b, want)
			}
		}
		e.rcvd += k
		n -= k
		if err != nil {
			return fmt.Errorf("read at %d: %w", e.rcvd, err)
		}
	}
	return nil
}

// The script's phases. Between them, step lets the proxy end look at the
// kernel's records; the client end does nothing there.
const (
	bigStream   = 12 << 20 // three times SHORTCUT_UNREAD_MAX
	pingPongs   = 200
	readerSleep = 300 * time.Millisecond
)

// script runs one end's part. client is true for the governed client.
func script(e *end, client bool, step func(phase string) error) error {
	if step == nil {
		step = func(string) error { return nil }
	}
	sizes := rand.New(rand.NewPCG(1, 2)) // the same on both ends
	pingPong := func(rounds int) error {
		for range rounds {
			up, down := 1+sizes.IntN(3000), 1+sizes.IntN(9000)
			var err error
			if client {
				if err = e.send(up); err == nil {
					err = e.expect(down)
				}
			} else if err = e.expect(up); err == nil {
				err = e.send(down)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	// stream has one end send big while the other sleeps before reading:
	// past the unread bound the rest must take TCP.
	stream := func(fromClient bool) error {
		if client == fromClient {
			return e.send(bigStream)
		}
		time.Sleep(readerSleep)
		return e.expect(bigStream)
	}
	for _, p := range []struct {
		name string
		run  func() error
	}{
		{"first", func() error { return pingPong(pingPongs) }},
		{"to client", func() error { return stream(false) }},
		{"after to client", func() error { return pingPong(pingPongs) }},
		{"from client", func() error { return stream(true) }},
		{"after from client", func() error { return pingPong(pingPongs) }},
	} {
		if err := p.run(); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if err := step(p.name); err != nil {
			return err
		}
	}
	return nil
}

// shortcutClient is the helper: args are the network and the address.
func shortcutClient(args []string) any {
	c, err := net.DialTimeout(args[0], args[1], 5*time.Second)
	if err != nil {
		return testenv.DialResult{Err: err.Error()}
	}
	defer c.Close()
	e := newEnd(c, 0)
	if err := script(e, true, nil); err != nil {
		return testenv.DialResult{Err: err.Error()}
	}
	// The proxy closes now: what the client sends next reaches a closed
	// socket as it would by TCP, never a refusal of the kernel program.
	io.Copy(io.Discard, e.r)
	var werr error
	for range 50 {
		if _, werr = c.Write([]byte("x")); werr != nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if werr == nil || errors.Is(werr, syscall.EACCES) {
		return testenv.DialResult{Err: fmt.Sprintf("write after the peer closed: %v; want a reset or a broken pipe", werr)}
	}
	return testenv.DialResult{OK: true}
}

func TestShortcutKeepsOrderAndFallsBack(t *testing.T) {
	for _, tc := range []struct{ network, host string }{{"tcp4", "127.77.0.5"}, {"tcp6", "::1"}} {
		t.Run(tc.network, func(t *testing.T) {
			done := make(chan error, 1)
			f := newFixtureServing(t, func(r *Redirector, c net.Conn) {
				done <- shortcutProxy(r, c)
			})
			runShortcut(t, testenv.Helper("shortcut", tc.network, f.target(tc.host)), f.cg, done)
		})
	}
}

// shortcutProxy is the proxy's end of the script. Between phases it reads
// how many bytes each end handed over (tg_hops): both ends use the
// shortcut, fall back to TCP past the unread bound, and take the shortcut
// again once the TCP bytes are read.
func shortcutProxy(r *Redirector, c net.Conn) error {
	if _, err := r.LookupConn(c); err != nil {
		return err
	}
	if err := r.Shortcut(c); err != nil {
		return err
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	peer := netip.MustParseAddrPort(c.RemoteAddr().String())
	mine := bpf.TollgateTuple{SrcAddr: local.Addr().Unmap().As16(), DstAddr: peer.Addr().Unmap().As16(), SrcPort: local.Port(), DstPort: peer.Port()}
	theirs := bpf.TollgateTuple{SrcAddr: mine.DstAddr, DstAddr: mine.SrcAddr, SrcPort: mine.DstPort, DstPort: mine.SrcPort}
	handed := func(k bpf.TollgateTuple) uint64 {
		var h bpf.TollgateHop
		if err := r.objs.TgHops.Lookup(&k, &h); err != nil {
			return 0
		}
		return h.Sent
	}
	var lastMine, lastTheirs uint64
	step := func(phase string) error {
		m, th := handed(mine), handed(theirs)
		dm, dt := m-lastMine, th-lastTheirs
		lastMine, lastTheirs = m, th
		var problems []string
		switch phase {
		case "first", "after to client", "after from client":
			if dm == 0 || dt == 0 {
				problems = append(problems, "an end did not use the shortcut")
			}
		case "to client":
			if dm >= bigStream {
				problems = append(problems, "the proxy never fell back to TCP")
			}
		case "from client":
			if dt >= bigStream {
				problems = append(problems, "the client never fell back to TCP")
			}
		}
		if problems != nil {
			return fmt.Errorf("after %s (handed over: proxy %d, client %d bytes): %s", phase, dm, dt, strings.Join(problems, "; "))
		}
		return nil
	}
	return script(newEnd(c, 1), false, step)
}

func TestShortcutOff(t *testing.T) {
	shortcut := make(chan error, 1)
	f := newFixtureWith(t, func(r *Redirector, c net.Conn) {
		shortcut <- r.Shortcut(c)
		replyOrigin(r, c)
	}, func(o *Options) { o.Shortcut = false })
	d := testenv.Dial(t, f.cg, "tcp4", f.target("127.77.0.5"), "hello")
	if rep := decodeReply(t, d); rep.Payload != "hello" || rep.Err != "" {
		t.Fatalf("reply = %+v", rep)
	}
	if err := <-shortcut; !errors.Is(err, ErrShortcutOff) {
		t.Errorf("Shortcut = %v; want ErrShortcutOff", err)
	}
	// sockops put no client socket in tg_socks.
	var k bpf.TollgateTuple
	if err := f.r.objs.TgSocks.NextKey(nil, &k); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("tg_socks has a socket (%v) with the shortcut off", err)
	}
	st, err := f.r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Shortcut != 0 {
		t.Errorf("%d sends took the shortcut with it off", st.Shortcut)
	}
}

// A kernel that cannot run tg_skmsg (no BTF, older than 5.9) still runs the
// rest: the shortcut's program alone is replaced, and its error kept.
func TestShortcutProgramThatCannotLoad(t *testing.T) {
	spec, err := bpf.LoadTollgate()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	// Reads R2 before writing it: every kernel's verifier refuses it.
	spec.Programs[bpf.TollgateProgTgSkmsg].Instructions = asm.Instructions{asm.Mov.Reg(asm.R0, asm.R2), asm.Return()}
	var objs bpf.TollgateObjects
	shortcutErr, err := loadObjects(spec, &objs, nil)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer objs.Close()
	if shortcutErr == nil || !strings.Contains(shortcutErr.Error(), "tg_skmsg") {
		t.Errorf("shortcut error = %v; want the verifier's refusal of tg_skmsg", shortcutErr)
	}
	if objs.TgConnect4 == nil || objs.TgSkmsg == nil {
		t.Error("programs missing after the fallback")
	}
}

func TestShortcutCounters(t *testing.T) {
	done := make(chan error, 1)
	f := newFixtureServing(t, func(r *Redirector, c net.Conn) {
		done <- shortcutProxy(r, c)
	})
	runShortcut(t, testenv.Helper("shortcut", "tcp4", f.target("127.77.0.5")), f.cg, done)
	if t.Failed() {
		return
	}
	st, err := f.r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Shortcut == 0 || st.ShortcutTcp == 0 {
		t.Errorf("stats = %+v; want sends counted both ways", st)
	}
}

// A client in a pod (another network namespace, reaching the agent on the
// link-local address through a veth) gets the shortcut too: the sockhash
// spans namespaces, and the two ends still see the same addresses.
func TestShortcutFromPod(t *testing.T) {
	done := make(chan error, 1)
	handle := func(r *Redirector, c net.Conn) { done <- shortcutProxy(r, c) }
	f := newFixtureServing(t, handle)
	pod, podCg := f.pod(t, handle)
	runShortcut(t, pod.Command(testenv.Helper("shortcut", "tcp4", f.target("127.77.0.5"))), podCg, done)
}

// runShortcut runs the shortcut helper cmd in cgroup cg and fails the test
// unless both ends (done: the proxy's) ran their script through.
func runShortcut(t *testing.T, cmd *exec.Cmd, cg testenv.Cgroup, done <-chan error) {
	t.Helper()
	testenv.InCgroup(t, cmd, cg)
	var res testenv.DialResult
	testenv.RunJSON(t, cmd, &res)
	if err := <-done; err != nil {
		t.Errorf("proxy end: %v", err)
	}
	if !res.OK {
		t.Errorf("client end: %s", res.Err)
	}
}
