package postgres_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// relayMaxMessage is the engine's message limit in the relay fuzz target.
const relayMaxMessage = 1 << 20

// FuzzRelay feeds client message sequences, after the startup, through the
// engine in front of a scripted upstream (fakeServer: the fuzzer needs
// thousands of sessions a second) and checks that the engine does not
// panic, that every Query, Parse and FunctionCall that reaches the upstream
// is one the Decider saw, in the client's order, denied ones replaced, that
// nothing else is added, reordered or dropped (no Sync injected), and that
// the session ends when the client goes. The seeds (testdata/fuzz/FuzzRelay)
// are what psql, pgx and pgbench sent in real sessions; TestRelaySeeds
// replays them, with the same checks, in front of a real PostgreSQL.
func FuzzRelay(f *testing.F) {
	// Hand-made sequences the clients did not send: a denial in the
	// middle of a pipeline, COPY in both directions, a FunctionCall,
	// portals cut by a row limit, garbage after a Sync.
	var hand [][]pgproto3.FrontendMessage
	hand = append(hand,
		[]pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "a", Query: "select 1"}, &pgproto3.Parse{Name: "b", Query: "select deny"},
			&pgproto3.Bind{PreparedStatement: "a"}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{},
			&pgproto3.Describe{ObjectType: 'S', Name: "a"}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "a", ResultFormatCodes: []int16{1}},
			&pgproto3.Execute{Portal: "p", MaxRows: 1}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Close{ObjectType: 'P', Name: "p"}, &pgproto3.Flush{}, &pgproto3.Sync{},
		},
		[]pgproto3.FrontendMessage{
			&pgproto3.Query{String: "copy in"}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{},
			&pgproto3.Query{String: "copy out"}, &pgproto3.Query{String: "copy in"}, &pgproto3.CopyFail{Message: "no"},
			&pgproto3.FunctionCall{Function: 42, Arguments: [][]byte{[]byte("x")}}, &pgproto3.FunctionCall{Function: 43},
			&pgproto3.Query{String: "begin"}, &pgproto3.Query{String: "fail"}, &pgproto3.Query{String: "rollback"}, &pgproto3.Terminate{},
		},
		[]pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select deny"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Sync{}, &pgproto3.Query{String: "notice; select 2"}, &pgproto3.Query{},
		},
	)
	for _, msgs := range hand {
		var b []byte
		for _, m := range msgs {
			b, _ = m.Encode(b)
		}
		f.Add(b)
		f.Add(append(b, 'z', 0, 0, 0, 4)) // an unknown message last
	}

	dial := startFakeServer(f)
	// The address is never dialled: dial connects to the fake server.
	tgt := &config.Target{Name: "fuzz", Protocol: postgres.Protocol, Upstream: "127.0.0.1:5432",
		Credentials: config.Credentials{Username: "fuzz"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		relayCheck(t, tgt, "fuzz", dial, data)
	})
}

// TestRelaySeeds replays the seeds of FuzzRelay through the engine in front
// of a real PostgreSQL, with FuzzRelay's checks.
func TestRelaySeeds(t *testing.T) {
	checkLeaks(t)
	seeds, err := filepath.Glob("testdata/fuzz/FuzzRelay/*")
	if err != nil || len(seeds) == 0 {
		t.Fatalf("no seeds: %v", err)
	}
	srv := pgtest.Shared(t)
	srv.Exec(t, "GRANT ALL ON SCHEMA public TO "+srv.App.Name)
	for _, path := range seeds {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := readCorpusFile(path)
			if err != nil {
				t.Fatal(err)
			}
			relayCheck(t, target(srv), srv.App.Name+"\x00"+srv.Database, (&net.Dialer{}).DialContext, data)
		})
	}
}

// readCorpusFile reads a []byte seed in the "go test fuzz v1" format.
func readCorpusFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.SplitN(string(b), "\n", 2)
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		return nil, errors.New("not a go test fuzz v1 file")
	}
	s := strings.TrimSpace(lines[1])
	if !strings.HasPrefix(s, "[]byte(") || !strings.HasSuffix(s, ")") {
		return nil, errors.New("not a []byte seed")
	}
	var out string
	if _, err := fmt.Sscanf(s[len("[]byte("):len(s)-1], "%q", &out); err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// decisionLog is a Decider that denies statements containing "deny" and
// FunctionCalls of odd functions, and keeps what it saw.
type decisionLog struct {
	mu   sync.Mutex
	seen []postgres.Request
	dec  []bool
}

func (d *decisionLog) Decide(_ context.Context, _ *l7.Session, r postgres.Request) postgres.Decision {
	if r.Kind != postgres.KindStatement {
		return postgres.Decision{Allow: true}
	}
	allow := !strings.Contains(r.SQL, "deny") && r.FunctionOID%2 == 0
	d.mu.Lock()
	d.seen = append(d.seen, r)
	d.dec = append(d.dec, allow)
	d.mu.Unlock()
	return postgres.Decision{Allow: allow, Reason: "fuzz"}
}

// columnsHook notes rows whose result the engine describes with another
// number of columns than the row has: a masking hook would mask the wrong
// values.
type columnsHook struct {
	mu  sync.Mutex
	bad []string
}

func (h *columnsHook) Wants(*postgres.Result) bool { return true }

func (h *columnsHook) OnRowDescription(_ *l7.Session, _ *postgres.Result, d *pgproto3.RowDescription) (*pgproto3.RowDescription, error) {
	return d, nil
}

func (h *columnsHook) OnDataRow(_ *l7.Session, r *postgres.Result, row *pgproto3.DataRow) (*pgproto3.DataRow, error) {
	if r.Fields != nil && len(r.Fields) != len(row.Values) {
		h.mu.Lock()
		h.bad = append(h.bad, fmt.Sprintf("%d values, %d columns (%q)", len(row.Values), len(r.Fields), r.SQL))
		h.mu.Unlock()
	}
	return row, nil
}

// teeConn keeps a copy of what is written to the upstream.
type teeConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c *teeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// dialFunc opens upstream connections.
type dialFunc = func(ctx context.Context, network, address string) (net.Conn, error)

// relayCheck runs one session through the engine for tgt, its upstream
// connections opened by dial: the startup as user (and database after a
// NUL), then data, then the end of the client's stream; and checks the
// engine's work.
func relayCheck(t *testing.T, tgt *config.Target, user string, dial dialFunc, data []byte) {
	var mu sync.Mutex
	var sent bytes.Buffer
	tee := func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &teeConn{Conn: c, mu: &mu, buf: &sent}, nil
	}
	dl := &decisionLog{}
	hook := &columnsHook{}
	eng, err := postgres.New(tgt, l7.Deps{Dial: tee, Log: zap.NewNop()},
		postgres.WithDecider(dl), postgres.WithRowHook(hook), postgres.WithMaxMessageSize(relayMaxMessage))
	if err != nil {
		t.Fatal(err)
	}
	cli, srvSide, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	served := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		served <- eng.Serve(ctx, &l7.Session{ID: l7.NewID(), Target: tgt, Start: time.Now()}, srvSide)
	}()

	cli.SetDeadline(time.Now().Add(waitLimit))
	u, db, _ := strings.Cut(user, "\x00")
	params := map[string]string{"user": u}
	if db != "" {
		params["database"] = db
	}
	start, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}).Encode(nil)
	if _, err := cli.Write(start); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(cli, io.Discard)
	for ready := false; !ready; {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("startup: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			ready = true
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup: %s %s", m.Code, m.Message)
		}
	}
	mu.Lock()
	loginLen := sent.Len()
	mu.Unlock()

	// Read everything the proxy sends while writing: a client that stops
	// reading may deadlock a proxy as it would the server itself.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(io.Discard, cli)
	}()
	cli.Write(data)
	cli.CloseWrite()

	var serveErr error
	select {
	case serveErr = <-served:
	case <-time.After(waitLimit):
		cancel()
		t.Fatalf("the session did not end when the client went:\n%s", engineStacks())
	}
	<-drained

	hook.mu.Lock()
	if len(hook.bad) > 0 {
		t.Errorf("rows whose columns the engine got wrong: %s", strings.Join(hook.bad, "; "))
	}
	hook.mu.Unlock()
	mu.Lock()
	upstream := bytes.Clone(sent.Bytes()[loginLen:])
	mu.Unlock()
	dl.mu.Lock()
	defer dl.mu.Unlock()
	checkForwarded(t, data, upstream, dl, serveErr)
}

// socketPair returns the two ends of a connected unix socket pair: no
// port, no TIME_WAIT, thousands a second.
func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1], nil
}

// frame is one message of a stream: its type and body.
type frame struct {
	typ  byte
	body []byte
}

// clientFrames reads data as the engine does and returns the messages it
// relays, up to the first it refuses.
func clientFrames(data []byte) []frame {
	be := pgproto3.NewBackend(bytes.NewReader(data), io.Discard)
	be.SetMaxBodyLen(relayMaxMessage)
	var out []frame
	for {
		msg, err := be.Receive()
		if err != nil {
			return out
		}
		var typ byte
		switch msg.(type) {
		case *pgproto3.Query:
			typ = 'Q'
		case *pgproto3.Parse:
			typ = 'P'
		case *pgproto3.FunctionCall:
			typ = 'F'
		case *pgproto3.Bind:
			typ = 'B'
		case *pgproto3.Describe:
			typ = 'D'
		case *pgproto3.Execute:
			typ = 'E'
		case *pgproto3.Close:
			typ = 'C'
		case *pgproto3.Sync:
			typ = 'S'
		case *pgproto3.Flush:
			typ = 'H'
		case *pgproto3.CopyData:
			typ = 'd'
		case *pgproto3.CopyDone:
			typ = 'c'
		case *pgproto3.CopyFail:
			typ = 'f'
		case *pgproto3.Terminate:
			return append(out, frame{typ: 'X'})
		default:
			return out
		}
		enc, err := msg.Encode(nil)
		if err != nil {
			return out
		}
		out = append(out, frame{typ: typ, body: enc[5:]})
	}
}

// upstreamFrames splits what the engine sent upstream after the login.
func upstreamFrames(b []byte) ([]frame, error) {
	var out []frame
	for len(b) > 0 {
		if len(b) < 5 {
			return out, fmt.Errorf("%d bytes of a message header", len(b))
		}
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n < 4 || len(b) < 1+n {
			return out, fmt.Errorf("message %q of length %d, %d bytes left", b[0], n, len(b)-1)
		}
		out = append(out, frame{typ: b[0], body: b[5 : 1+n]})
		b = b[1+n:]
	}
	return out, nil
}

func cstrings(body []byte) []string { return strings.Split(string(body), "\x00") }

// checkForwarded checks the upstream's stream against the client's and the
// decisions.
func checkForwarded(t *testing.T, data, upstream []byte, dl *decisionLog, serveErr error) {
	t.Helper()
	want := clientFrames(data)
	got, err := upstreamFrames(upstream)
	if err != nil {
		t.Fatalf("upstream stream: %v", err)
	}
	t.Logf("the client sent %d messages, %d went upstream, %d decided; Serve: %v", len(want), len(got), len(dl.seen), serveErr)
	if len(got) > len(want) {
		t.Fatalf("%d messages upstream; the client sent %d", len(got), len(want))
	}
	// The Decider saw the client's statements, in order, each once, and
	// no more than the engine read.
	var stmts []frame
	for _, f := range want {
		if f.typ == 'Q' || f.typ == 'P' || f.typ == 'F' {
			stmts = append(stmts, f)
		}
	}
	if len(dl.seen) > len(stmts) {
		t.Fatalf("the Decider saw %d statements; the client sent %d", len(dl.seen), len(stmts))
	}
	for i, r := range dl.seen {
		switch f := stmts[i]; f.typ {
		case 'Q':
			if r.Protocol != postgres.ProtocolSimple || r.SQL != cstrings(f.body)[0] {
				t.Fatalf("decision %d: %+v; want the Query %q", i, r, cstrings(f.body)[0])
			}
		case 'P':
			if p := cstrings(f.body); r.Protocol != postgres.ProtocolExtended || r.SQL != p[1] || r.Statement != p[0] {
				t.Fatalf("decision %d: %+v; want the Parse %q %q", i, r, p[0], p[1])
			}
		case 'F':
			if r.Protocol != postgres.ProtocolFunction || r.FunctionOID != binary.BigEndian.Uint32(f.body) {
				t.Fatalf("decision %d: %+v; want the FunctionCall of %d", i, r, binary.BigEndian.Uint32(f.body))
			}
		}
	}

	// Upstream: the client's messages in order, statements as decided.
	stmt := 0
	for i, g := range got {
		w := want[i]
		if w.typ == 'Q' || w.typ == 'P' || w.typ == 'F' {
			if stmt >= len(dl.seen) {
				t.Fatalf("message %d: %q went upstream, never decided", i, w.typ)
			}
			allowed := dl.dec[stmt]
			stmt++
			if allowed {
				if g.typ != w.typ || !bytes.Equal(g.body, w.body) {
					t.Fatalf("message %d: allowed %q %q went upstream as %q %q", i, w.typ, w.body, g.typ, g.body)
				}
				continue
			}
			switch {
			case w.typ == 'P' && g.typ == 'P':
				p := cstrings(g.body)
				if p[0] != cstrings(w.body)[0] || !strings.HasPrefix(p[1], "tollgate_denied_") {
					t.Fatalf("message %d: denied Parse went upstream as %q", i, g.body)
				}
			case (w.typ == 'Q' || w.typ == 'F') && g.typ == 'Q':
				if !strings.HasPrefix(cstrings(g.body)[0], "tollgate_denied_") {
					t.Fatalf("message %d: denied %q went upstream as %q", i, w.typ, g.body)
				}
			default:
				t.Fatalf("message %d: denied %q went upstream as %q", i, w.typ, g.typ)
			}
			continue
		}
		if g.typ != w.typ || !bytes.Equal(g.body, w.body) {
			t.Fatalf("message %d: the client's %q %q went upstream as %q %q", i, w.typ, w.body, g.typ, g.body)
		}
	}
	// A session the client ended (Terminate, or the end of its stream)
	// relayed all it read.
	if serveErr == nil && len(got) != len(want) {
		t.Fatalf("session ended cleanly with %d of the client's %d messages upstream", len(got), len(want))
	}
}
