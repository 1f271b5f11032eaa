package postgres_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// waitLimit bounds every wait in these tests; reaching it is a failure.
const waitLimit = 15 * time.Second

// served is the outcome of one proxied session.
type served struct {
	s   *l7.Session
	err error
}

// proxy is the engine serving a 127.0.0.1 listener in front of srv.
type proxy struct {
	t       testing.TB
	srv     *pgtest.Server
	addr    string
	results chan served
}

// target is the config.Target of srv, logging in as its App role.
func target(srv *pgtest.Server) *config.Target {
	return &config.Target{
		Name: "db", Protocol: postgres.Protocol, Upstream: srv.Addr(),
		Credentials: config.Credentials{Username: srv.App.Name, Password: srv.App.Password},
	}
}

// startProxy runs the engine for tgt (default: target(srv)) on a listener,
// serving each accepted connection under the test's context.
func startProxy(t testing.TB, srv *pgtest.Server, tgt *config.Target, opts ...postgres.Option) *proxy {
	t.Helper()
	return startProxyCtx(t, context.Background(), srv, tgt, opts...)
}

// startProxyCtx is startProxy with sessions served under parent.
func startProxyCtx(t testing.TB, parent context.Context, srv *pgtest.Server, tgt *config.Target, opts ...postgres.Option) *proxy {
	t.Helper()
	return startProxyDial(t, parent, srv, tgt, (&net.Dialer{}).DialContext, opts...)
}

// startProxyDial is startProxyCtx with upstream connections opened by dial.
func startProxyDial(t testing.TB, parent context.Context, srv *pgtest.Server, tgt *config.Target,
	dial func(ctx context.Context, network, address string) (net.Conn, error), opts ...postgres.Option) *proxy {
	t.Helper()
	if tgt == nil {
		tgt = target(srv)
	}
	log := zap.NewNop()
	if _, ok := t.(*testing.T); ok && testing.Verbose() {
		log = zaptest.NewLogger(t)
	}
	eng, err := postgres.New(tgt, l7.Deps{Dial: dial, Log: log}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(parent)
	p := &proxy{t: t, srv: srv, addr: ln.Addr().String(), results: make(chan served, 4096)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s := &l7.Session{ID: l7.NewID(), Target: tgt, Start: time.Now()}
			s.Log = log.With(zap.String("session", s.ID))
			wg.Go(func() {
				err := eng.Serve(ctx, s, c)
				select {
				case p.results <- served{s, err}:
				default:
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitLimit):
			cancel()
			t.Error("sessions still running at the end of the test")
			<-done
		}
		cancel()
	})
	return p
}

// dsn is a URL for the proxy: the client's user is the App role, with no
// password (the proxy asks none).
func (p *proxy) dsn() string {
	u := url.URL{Scheme: "postgres", Host: p.addr, Path: "/" + p.srv.Database, User: url.User(p.srv.App.Name), RawQuery: "sslmode=disable"}
	return u.String()
}

// libpq is the proxy as a libpq keyword/value string.
func (p *proxy) libpq() string {
	host, port, _ := net.SplitHostPort(p.addr)
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, p.srv.App.Name, p.srv.Database)
}

func (p *proxy) connect(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := pgx.Connect(ctx, p.dsn())
	if err != nil {
		t.Fatalf("connect through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// result waits for the next session to end.
func (p *proxy) result(t testing.TB) served {
	t.Helper()
	select {
	case r := <-p.results:
		return r
	case <-time.After(waitLimit):
		t.Fatal("session did not end")
		return served{}
	}
}

// direct connects to srv without the proxy, as the App role.
func direct(t testing.TB, srv *pgtest.Server) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := pgx.Connect(ctx, srv.DSN(srv.App.Name))
	if err != nil {
		t.Fatalf("connect directly: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// tool finds a client program, or skips (fails when CI=true).
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required: %v", name, err)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// run runs a client program and returns its output, failing the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(t, name), args...)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGAPPNAME=tollgate-test")
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil {
		// A hang: what the engine was doing tells a deadlock from a slow
		// machine.
		t.Fatalf("%s %s: %v\n%s\nengine goroutines:\n%s", name, strings.Join(args, " "), err, out, engineStacks())
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkLeaks fails the test if, once its other cleanups have run,
// goroutines of this package's code are still alive. Call it first.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitLimit)
		for {
			left := engineStacks()
			if left == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("engine goroutines left:\n%s", left)
				return
			}
			time.Sleep(5 * time.Millisecond) // polling the count, not waiting for an event
		}
	})
}

// engineStacks returns the stacks of goroutines running the engine's code.
func engineStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "/l7/postgres.") && !strings.Contains(g, "(*eventLoop).run") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
