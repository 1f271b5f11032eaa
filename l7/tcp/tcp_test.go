package tcp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/tcp"
	"github.com/tollgate-dev/tollgate/pkg/config"
)

// waitLimit bounds every wait in these tests; reaching it is a failure.
const waitLimit = 10 * time.Second

// connLimit is the I/O deadline of the tests' client and upstream
// connections, so a proxy that stops relaying fails a test, not hangs it.
const connLimit = time.Minute

// limit sets c's deadline when tb is a test (benchmarks run unbounded).
func limit(tb testing.TB, c net.Conn) {
	if _, ok := tb.(*testing.T); ok {
		c.SetDeadline(time.Now().Add(connLimit))
	}
}

// checkLeaks fails the test if, once its other cleanups have run, goroutines
// started during the test are still alive. Call it first in a test.
func checkLeaks(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitLimit)
		for {
			n, relays := runtime.NumGoroutine(), relayStacks()
			if n <= base && relays == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines: got %d, want <= %d; relay goroutines left:\n%s", n, base, relays)
				return
			}
			time.Sleep(time.Millisecond) // polling the count, not waiting for an event
		}
	})
}

// relayStacks returns the stacks of goroutines running code of package tcp.
func relayStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "/l7/tcp.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// server accepts connections on 127.0.0.1 and runs handle on each; it
// closes the connection when handle returns. Handlers still running at
// cleanup fail the test (their connections are then closed, so a broken
// proxy fails the test rather than hanging it).
func server(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				limit(t, c)
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		if !waitFor(&wg) {
			t.Error("upstream connections still open at the end of the test")
			mu.Lock()
			for c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		}
	})
	return ln.Addr().String()
}

// waitFor waits for wg, giving up after waitLimit.
func waitFor(wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(waitLimit):
		return false
	}
}

// echo writes back what it reads and passes on the end of its input.
func echo(c *net.TCPConn) {
	// Hide ReadFrom/WriteTo so the copy does not splice a socket into itself.
	if _, err := io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c}); err == nil {
		c.CloseWrite()
	}
}

// served is the outcome of one proxied session.
type served struct {
	s   *l7.Session
	err error
}

// proxy runs the tcp engine for upstream on a 127.0.0.1 listener, serving
// each accepted connection under ctx, and sends every session's outcome on
// the returned channel.
func proxy(t testing.TB, ctx context.Context, upstream string) (string, <-chan served) {
	t.Helper()
	var log *zap.Logger = zap.NewNop()
	if _, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(t)
	}
	eng, err := l7.New(
		&config.Target{Name: "test", Protocol: tcp.Protocol, Upstream: upstream},
		l7.Deps{Dial: (&net.Dialer{}).DialContext, Log: log},
	)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan served, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s := &l7.Session{ID: l7.NewID(), Start: time.Now()}
			s.Log = log.With(zap.String("session", s.ID))
			wg.Go(func() { results <- served{s, eng.Serve(ctx, s, c)} })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		if !waitFor(&wg) {
			t.Error("sessions still running at the end of the test")
		}
	})
	return ln.Addr().String(), results
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	limit(t, c)
	return c.(*net.TCPConn)
}

func result(t testing.TB, results <-chan served) served {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(waitLimit):
		t.Fatal("session did not end")
		return served{}
	}
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// exchange writes out to c, closes c's write side, and returns all c reads
// until EOF.
func exchange(c *net.TCPConn, out []byte) ([]byte, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(out)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	in, rerr := io.ReadAll(c)
	return in, errors.Join(rerr, <-werr)
}

func TestRegistered(t *testing.T) {
	if !l7.IsRegistered(tcp.Protocol) {
		t.Fatalf("protocol %q not registered: %v", tcp.Protocol, l7.Protocols())
	}
	dialer := (&net.Dialer{}).DialContext
	for _, tc := range []struct {
		name   string
		target config.Target
		deps   l7.Deps
		ok     bool
	}{
		{"upstream", config.Target{Upstream: "127.0.0.1:5432"}, l7.Deps{Dial: dialer}, true},
		{"address as upstream", config.Target{Address: "127.0.0.1:5432"}, l7.Deps{Dial: dialer}, true},
		{"cidr address, no upstream", config.Target{Address: "10.0.0.0/8:5432"}, l7.Deps{Dial: dialer}, false},
		{"no port", config.Target{Upstream: "127.0.0.1"}, l7.Deps{Dial: dialer}, false},
		{"no host", config.Target{Upstream: ":5432"}, l7.Deps{Dial: dialer}, false},
		{"no dialer", config.Target{Upstream: "127.0.0.1:5432"}, l7.Deps{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.target.Name, tc.target.Protocol = "t", tcp.Protocol
			_, err := l7.New(&tc.target, tc.deps)
			if got := err == nil; got != tc.ok {
				t.Errorf("New: got err %v; want ok %v", err, tc.ok)
			}
		})
	}
}

func TestEcho(t *testing.T) {
	checkLeaks(t)
	addr, results := proxy(t, t.Context(), server(t, echo))

	out := randomBytes(1, 1<<20)
	in, err := exchange(dial(t, addr), out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, out) {
		t.Fatalf("echo: got %d bytes, want the %d sent", len(in), len(out))
	}
	r := result(t, results)
	if r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
	if got, want := r.s.BytesIn.Load(), int64(len(out)); got != want {
		t.Errorf("BytesIn: got %d; want %d", got, want)
	}
	if got, want := r.s.BytesOut.Load(), int64(len(out)); got != want {
		t.Errorf("BytesOut: got %d; want %d", got, want)
	}
}

// TestHalfCloseClientFirst: the client sends a request and closes its write
// side; the upstream answers only after it has read the whole request.
func TestHalfCloseClientFirst(t *testing.T) {
	checkLeaks(t)
	tail := randomBytes(2, 1<<20)
	up := server(t, func(c *net.TCPConn) {
		req, err := io.ReadAll(c) // ends only if the client's FIN is passed on
		if err != nil {
			return
		}
		sum := sha256.Sum256(req)
		c.Write(append(sum[:], tail...))
	})
	addr, results := proxy(t, t.Context(), up)

	req := randomBytes(3, 100<<10)
	in, err := exchange(dial(t, addr), req)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(req)
	if want := append(sum[:], tail...); !bytes.Equal(in, want) {
		t.Fatalf("reply: got %d bytes, want %d (sha256 of the request, then the tail)", len(in), len(want))
	}
	r := result(t, results)
	if r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
	if got, want := r.s.BytesIn.Load(), int64(len(req)); got != want {
		t.Errorf("BytesIn: got %d; want %d", got, want)
	}
	if got, want := r.s.BytesOut.Load(), int64(len(sum)+len(tail)); got != want {
		t.Errorf("BytesOut: got %d; want %d", got, want)
	}
}

// TestHalfCloseUpstreamFirst: the upstream sends everything and closes its
// write side first; the client reads to EOF and only then sends.
func TestHalfCloseUpstreamFirst(t *testing.T) {
	checkLeaks(t)
	greeting := randomBytes(4, 1<<20)
	received := make(chan [32]byte, 1)
	up := server(t, func(c *net.TCPConn) {
		if _, err := c.Write(greeting); err != nil {
			return
		}
		if err := c.CloseWrite(); err != nil {
			return
		}
		got, err := io.ReadAll(c)
		if err != nil {
			return
		}
		received <- sha256.Sum256(got)
	})
	addr, results := proxy(t, t.Context(), up)

	c := dial(t, addr)
	in, err := io.ReadAll(c) // ends only if the upstream's FIN is passed on
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, greeting) {
		t.Fatalf("greeting: got %d bytes, want %d", len(in), len(greeting))
	}
	req := randomBytes(5, 1<<20)
	if _, err := c.Write(req); err != nil {
		t.Fatalf("write after the upstream half-closed: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-received:
		if got != sha256.Sum256(req) {
			t.Errorf("upstream received other bytes than the client sent")
		}
	case <-time.After(waitLimit):
		t.Fatal("upstream did not receive the request")
	}
	r := result(t, results)
	if r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
	if got, want := r.s.BytesIn.Load(), int64(len(req)); got != want {
		t.Errorf("BytesIn: got %d; want %d", got, want)
	}
	if got, want := r.s.BytesOut.Load(), int64(len(greeting)); got != want {
		t.Errorf("BytesOut: got %d; want %d", got, want)
	}
}

func TestUpstreamRefused(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln.Addr().String()
	ln.Close()
	addr, results := proxy(t, t.Context(), refusing)

	c := dial(t, addr)
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read: got %d, %v; want the proxy to close the connection (EOF)", n, err)
	}
	r := result(t, results)
	if !errors.Is(r.err, syscall.ECONNREFUSED) {
		t.Errorf("Serve: got %v; want connection refused", r.err)
	}
}

// TestReset: one side resets the connection mid-stream; the proxy closes
// the other side and the session ends with an error.
func TestReset(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		checkLeaks(t)
		ended := make(chan error, 1)
		up := server(t, func(c *net.TCPConn) { // streams until the proxy goes away
			chunk := randomBytes(6, 32<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					ended <- err
					return
				}
			}
		})
		addr, results := proxy(t, t.Context(), up)

		c := dial(t, addr)
		if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		c.SetLinger(0) // Close sends RST
		c.Close()

		r := result(t, results)
		if r.err == nil {
			t.Error("Serve: got nil error after the client reset")
		}
		t.Logf("Serve: %v", r.err)
		select {
		case <-ended:
		case <-time.After(waitLimit):
			t.Fatal("upstream connection still open")
		}
	})
	t.Run("upstream", func(t *testing.T) {
		checkLeaks(t)
		up := server(t, func(c *net.TCPConn) {
			if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
				return
			}
			c.SetLinger(0)
		})
		addr, results := proxy(t, t.Context(), up)

		c := dial(t, addr)
		werr := make(chan error, 1)
		go func() { // writes until the proxy goes away
			chunk := randomBytes(7, 32<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					werr <- err
					return
				}
			}
		}()
		r := result(t, results)
		if r.err == nil {
			t.Error("Serve: got nil error after the upstream reset")
		}
		t.Logf("Serve: %v", r.err)
		select {
		case <-werr:
		case <-time.After(waitLimit):
			t.Fatal("client connection still open")
		}
	})
}

func TestContextCancel(t *testing.T) {
	checkLeaks(t)
	upClosed := make(chan struct{})
	up := server(t, func(c *net.TCPConn) {
		echo(c)
		close(upClosed)
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, results := proxy(t, ctx, up)

	c := dial(t, addr)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()

	r := result(t, results)
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Serve: got %v; want context.Canceled", r.err)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read: got %d, %v; want EOF", n, err)
	}
	select {
	case <-upClosed:
	case <-time.After(waitLimit):
		t.Fatal("upstream connection still open")
	}
}

func TestConcurrentSessions(t *testing.T) {
	checkLeaks(t)
	const sessions, size = 200, 64 << 10
	addr, results := proxy(t, t.Context(), server(t, echo))

	var wg sync.WaitGroup
	for i := range sessions {
		wg.Go(func() {
			out := randomBytes(uint64(100+i), size)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			defer c.Close()
			limit(t, c)
			in, err := exchange(c.(*net.TCPConn), out)
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			if !bytes.Equal(in, out) {
				t.Errorf("session %d: got %d bytes back, want the %d sent", i, len(in), len(out))
			}
		})
	}
	wg.Wait()
	for range sessions {
		r := result(t, results)
		if r.err != nil {
			t.Errorf("Serve: %v", r.err)
		}
		if in, out := r.s.BytesIn.Load(), r.s.BytesOut.Load(); in != size || out != size {
			t.Errorf("bytes in, out: got %d, %d; want %d each", in, out, size)
		}
	}
}

// TestLargeTransfer echoes a large pseudo-random stream through the proxy
// and compares checksums of what was sent and what came back.
func TestLargeTransfer(t *testing.T) {
	checkLeaks(t)
	size := int64(256 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	addr, results := proxy(t, t.Context(), server(t, echo))
	c := dial(t, addr)

	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{8}), size), sent)
		_, err := io.Copy(c, src)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err := errors.Join(err, <-werr); err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Errorf("received %d bytes; want %d", n, size)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Error("sha256 of the bytes received differs from the bytes sent")
	}
	r := result(t, results)
	if r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
	if in, out := r.s.BytesIn.Load(), r.s.BytesOut.Load(); in != size || out != size {
		t.Errorf("bytes in, out: got %d, %d; want %d each", in, out, size)
	}
}

func TestSendError(t *testing.T) {
	checkLeaks(t)
	eng, err := l7.New(
		&config.Target{Name: "t", Protocol: tcp.Protocol, Upstream: "127.0.0.1:1"},
		l7.Deps{Dial: (&net.Dialer{}).DialContext},
	)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.SendError(sc, errors.New("denied")); err != nil {
		t.Errorf("SendError: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read: got %d, %v; want EOF", n, err)
	}
}

// TestRelayWithoutHalfClose: connections without CloseWrite end both
// directions when one side ends, and the relay ends cleanly.
func TestRelayWithoutHalfClose(t *testing.T) {
	checkLeaks(t)
	client, clientEnd := net.Pipe()
	upstream, upstreamEnd := net.Pipe()
	var in, out atomic.Int64
	done := make(chan error, 1)
	go func() { done <- tcp.Relay(t.Context(), clientEnd, upstream, &in, &out) }()

	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(upstreamEnd, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("upstream read: got %q, %v", buf, err)
	}
	client.Close()
	if n, err := upstreamEnd.Read(buf); err != io.EOF {
		t.Errorf("upstream read after client close: got %d, %v; want EOF", n, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Relay: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Relay did not end")
	}
	upstreamEnd.Close()
	if in.Load() != 4 || out.Load() != 0 {
		t.Errorf("bytes in, out: got %d, %d; want 4, 0", in.Load(), out.Load())
	}
}

// BenchmarkRelayThroughput streams 1 MiB writes to a discarding server,
// directly and through the tcp engine, in one run.
func BenchmarkRelayThroughput(b *testing.B) {
	received := make(chan int64, 1)
	sink := server(b, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		received <- n
	})
	through, _ := proxy(b, b.Context(), sink)
	chunk := randomBytes(9, 1<<20)

	for _, bc := range []struct{ name, addr string }{{"direct", sink}, {"tollgate", through}} {
		b.Run(bc.name, func(b *testing.B) {
			c := dial(b, bc.addr)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			var sent int64
			for b.Loop() {
				n, err := c.Write(chunk)
				if err != nil {
					b.Fatal(err)
				}
				sent += int64(n)
			}
			c.CloseWrite()
			if got := <-received; got != sent {
				b.Fatalf("sink received %d bytes; want %d", got, sent)
			}
		})
	}
}

func ExampleRelay() {
	client, clientEnd := net.Pipe()
	upstream, upstreamEnd := net.Pipe()
	var in, out atomic.Int64
	done := make(chan error, 1)
	go func() { done <- tcp.Relay(context.Background(), clientEnd, upstream, &in, &out) }()

	go client.Write([]byte("hello"))
	buf := make([]byte, 5)
	io.ReadFull(upstreamEnd, buf)
	client.Close()
	fmt.Println(string(buf), <-done, in.Load())
	// Output: hello <nil> 5
}
