package postgres_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestCancel(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	c := p.connect(t)
	ctx := t.Context()

	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c.Exec(context.Background(), "SELECT pg_sleep(30)")
		done <- err
	}()
	// Wait until the query runs upstream, then cancel it: pgconn dials the
	// address it is connected to, the proxy, on a new connection.
	waitActive(t, srv, "SELECT pg_sleep(30)")
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var pe *pgconn.PgError
		if !errorsAs(err, &pe) || pe.Code != "57014" {
			t.Fatalf("cancelled query: got %v; want 57014 query_canceled", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("query not cancelled")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("cancel took %v", el)
	}
	if r := p.result(t); r.err != nil { // the cancel request's own connection
		t.Errorf("Serve of the cancel request: %v", r.err)
	}
	var s string
	if err := c.QueryRow(ctx, "SELECT 'usable'").Scan(&s); err != nil || s != "usable" {
		t.Errorf("after the cancel: %q, %v", s, err)
	}

	// A cancel request with a wrong key cancels nothing.
	raw, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 16)
	binary.BigEndian.PutUint32(pkt[0:], 16)
	binary.BigEndian.PutUint32(pkt[4:], 80877102)
	binary.BigEndian.PutUint32(pkt[8:], c.PgConn().PID())
	copy(pkt[12:], []byte{1, 2, 3, 4})
	raw.Write(pkt)
	raw.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := raw.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("cancel connection: got %d, %v; want EOF", n, err)
	}
	raw.Close()
}

func TestUpstreamRestart(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Start(t)
	p := startProxy(t, srv, nil)
	c := p.connect(t)
	ctx := t.Context()
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Exec(ctx, "SELECT 1")
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || (pe.Code != "57P01" && pe.Code != "08006") {
		t.Errorf("query after the upstream restarted: got %v; want a FATAL 57P01 or 08006", err)
	}
	if r := p.result(t); r.err == nil {
		t.Error("Serve: got nil error after the upstream went away")
	} else {
		t.Logf("Serve: %v", r.err)
	}
	var s string
	if err := p.connect(t).QueryRow(ctx, "SELECT 'new session'").Scan(&s); err != nil || s != "new session" {
		t.Errorf("new session: %q, %v", s, err)
	}

	// The upstream dies without a word (immediate stop kills backends
	// with SIGQUIT): the client gets the proxy's error.
	c2 := p.connect(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err = c2.Exec(ctx, "SELECT 1")
	if !errorsAs(err, &pe) || (pe.Code != "57P01" && pe.Code != "08006") {
		t.Errorf("query after the upstream stopped: got %v", err)
	}
	// A new session to a stopped upstream is refused cleanly.
	_, err = pgx.Connect(ctx, p.dsn())
	if !errorsAs(err, &pe) || pe.Code != "08001" || pe.Severity != "FATAL" {
		t.Errorf("connect while the upstream is down: got %v; want FATAL 08001", err)
	}
}

func TestUpstreamAuthFailure(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	tgt := target(srv)
	tgt.Credentials.Password = "wrong-secret-password"
	p := startProxy(t, srv, tgt)
	_, err := pgx.Connect(t.Context(), p.dsn())
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "28P01" || pe.Severity != "FATAL" {
		t.Fatalf("got %v; want FATAL 28P01", err)
	}
	if !strings.Contains(pe.Message, "refused the login with the target's credentials") {
		t.Errorf("message %q does not say what failed", pe.Message)
	}
	if strings.Contains(err.Error(), "wrong-secret-password") {
		t.Errorf("the client was shown the password: %v", err)
	}
	if r := p.result(t); r.err == nil {
		t.Error("Serve: nil error after a failed login")
	}
}

// waitActive waits until a session of srv runs query.
func waitActive(t *testing.T, srv *pgtest.Server, query string) {
	t.Helper()
	d := direct(t, srv)
	for start := time.Now(); ; {
		var n int
		if err := d.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Since(start) > waitLimit {
			t.Fatalf("%q did not start", query)
		}
		time.Sleep(10 * time.Millisecond) // polling the server, not waiting for an event of ours
	}
}

// startupConn speaks the startup protocol by hand.
type startupConn struct {
	t *testing.T
	net.Conn
	fe *pgproto3.Frontend
}

func dialRaw(t *testing.T, addr string) *startupConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitLimit))
	return &startupConn{t: t, Conn: c, fe: pgproto3.NewFrontend(c, c)}
}

func (c *startupConn) send(msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

// receive reads messages until ReadyForQuery or an ErrorResponse, or the
// end of the connection, and returns them.
func (c *startupConn) receive() ([]pgproto3.BackendMessage, error) {
	var got []pgproto3.BackendMessage
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			return got, err
		}
		got = append(got, copyMessage(msg))
		switch msg.(type) {
		case *pgproto3.ReadyForQuery, *pgproto3.ErrorResponse:
			return got, nil
		}
	}
}

func copyMessage(m pgproto3.BackendMessage) pgproto3.BackendMessage {
	switch m := m.(type) {
	case *pgproto3.ErrorResponse:
		c := *m
		return &c
	case *pgproto3.NegotiateProtocolVersion:
		c := *m
		return &c
	case *pgproto3.ParameterStatus:
		c := *m
		return &c
	case *pgproto3.BackendKeyData:
		c := *m
		c.SecretKey = append([]byte(nil), m.SecretKey...)
		return &c
	case *pgproto3.DataRow:
		c := &pgproto3.DataRow{Values: make([][]byte, len(m.Values))}
		for i, v := range m.Values {
			if v != nil {
				c.Values[i] = append([]byte{}, v...)
			}
		}
		return c
	}
	return m
}

func startupMsg(p *proxy, extra ...string) *pgproto3.StartupMessage {
	params := map[string]string{"user": p.srv.App.Name, "database": p.srv.Database}
	for i := 0; i+1 < len(extra); i += 2 {
		params[extra[i]] = extra[i+1]
	}
	return &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}
}

func lastError(t *testing.T, msgs []pgproto3.BackendMessage) *pgproto3.ErrorResponse {
	t.Helper()
	if len(msgs) > 0 {
		if e, ok := msgs[len(msgs)-1].(*pgproto3.ErrorResponse); ok {
			return e
		}
	}
	t.Fatalf("got %d messages, want an ErrorResponse last: %#v", len(msgs), msgs)
	return nil
}

// wantClosed checks that the proxy closed the connection.
func wantClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := io.Copy(io.Discard, c); err != nil {
		t.Errorf("after %d bytes: %v; want the proxy to close the connection", n, err)
	}
}

func TestStartup(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil, postgres.WithStartupTimeout(300*time.Millisecond))

	t.Run("ssl and gss refused, then plain", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		for _, req := range []pgproto3.FrontendMessage{&pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}} {
			c.send(req)
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil || b[0] != 'N' {
				t.Fatalf("answer to %T: %q, %v; want N", req, b, err)
			}
		}
		c.send(startupMsg(p, "application_name", "raw"))
		msgs, err := c.receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := msgs[0].(*pgproto3.AuthenticationOk); !ok {
			t.Errorf("first message %T; want AuthenticationOk", msgs[0])
		}
		var key *pgproto3.BackendKeyData
		params := map[string]bool{}
		for _, m := range msgs {
			switch m := m.(type) {
			case *pgproto3.BackendKeyData:
				key = m
			case *pgproto3.ParameterStatus:
				params[m.Name] = true
			}
		}
		if key == nil || key.ProcessID == 0 || len(key.SecretKey) != 4 {
			t.Errorf("BackendKeyData: %+v", key)
		}
		for _, name := range []string{"server_version", "client_encoding", "DateStyle", "integer_datetimes"} {
			if !params[name] {
				t.Errorf("no ParameterStatus %s", name)
			}
		}
		c.send(&pgproto3.Terminate{})
		wantClosed(t, c)
	})

	t.Run("bytes pipelined after SSLRequest", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.fe.Send(&pgproto3.SSLRequest{})
		c.send(startupMsg(p))
		msgs, _ := c.receive()
		if e := lastError(t, msgs); e.Code != "08P01" || !strings.Contains(e.Message, "unencrypted data after SSL request") {
			t.Errorf("got %s %s", e.Code, e.Message)
		}
		wantClosed(t, c)
	})

	t.Run("replication", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.send(startupMsg(p, "replication", "database"))
		msgs, _ := c.receive()
		if e := lastError(t, msgs); e.Code != "42501" || e.Severity != "FATAL" {
			t.Errorf("got %s %s %s", e.Severity, e.Code, e.Message)
		}
		wantClosed(t, c)
		// replication=false is no replication connection.
		c = dialRaw(t, p.addr)
		c.send(startupMsg(p, "replication", "false"))
		if msgs, err := c.receive(); err != nil || len(msgs) == 0 {
			t.Fatal(err)
		} else if _, ok := msgs[len(msgs)-1].(*pgproto3.ReadyForQuery); !ok {
			t.Errorf("replication=false: got %#v", msgs[len(msgs)-1])
		}
	})

	t.Run("no user", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"database": "x"}})
		msgs, _ := c.receive()
		if e := lastError(t, msgs); e.Code != "28000" {
			t.Errorf("got %s %s", e.Code, e.Message)
		}
	})

	t.Run("protocol 3.2", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		m := startupMsg(p, "_pq_.test_option", "on")
		m.ProtocolVersion = pgproto3.ProtocolVersion32
		c.send(m)
		msgs, err := c.receive()
		if err != nil {
			t.Fatal(err)
		}
		npv, ok := msgs[0].(*pgproto3.NegotiateProtocolVersion)
		if !ok || npv.NewestMinorProtocol != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.test_option" {
			t.Errorf("first message: %#v; want NegotiateProtocolVersion 3.0 naming _pq_.test_option", msgs[0])
		}
	})

	t.Run("bad length", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.Write([]byte{0, 0, 0, 3, 0, 3, 0, 0})
		msgs, _ := c.receive()
		if e := lastError(t, msgs); e.Code != "08P01" {
			t.Errorf("got %s %s", e.Code, e.Message)
		}
		wantClosed(t, c)
	})

	t.Run("unsupported protocol", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.Write([]byte{0, 0, 0, 9, 0, 2, 0, 0, 0})
		msgs, _ := c.receive()
		if e := lastError(t, msgs); e.Code != "0A000" {
			t.Errorf("got %s %s", e.Code, e.Message)
		}
	})

	t.Run("direct TLS refused", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"postgresql"}})
		if err := tc.Handshake(); err == nil {
			t.Error("direct TLS handshake succeeded without client TLS")
		}
	})

	t.Run("startup timeout", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.Write([]byte{0, 0}) // half a length
		start := time.Now()
		wantClosed(t, c)
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("closed after %v; want the 300ms startup timeout", el)
		}
	})

	// Drain the outcomes: every session ended.
	for len(p.results) > 0 {
		<-p.results
	}
}

// established returns a connection through the proxy past startup.
func established(t *testing.T, p *proxy) *startupConn {
	c := dialRaw(t, p.addr)
	c.send(startupMsg(p))
	msgs, err := c.receive()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msgs[len(msgs)-1].(*pgproto3.ReadyForQuery); !ok {
		t.Fatalf("startup ended with %#v", msgs[len(msgs)-1])
	}
	return c
}

func TestMalformedClient(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil, postgres.WithMaxMessageSize(1<<20))
	for _, tc := range []struct {
		name  string
		bytes []byte
		code  string
	}{
		{"length below 4", []byte{'Q', 0, 0, 0, 2}, "08P01"},
		{"negative length", []byte{'Q', 0xff, 0xff, 0xff, 0xf0}, "08P01"},
		{"oversized", []byte{'Q', 0x10, 0, 0, 0}, "54000"},
		{"unknown type", []byte{'z', 0, 0, 0, 4}, "08P01"},
		{"query without terminator", []byte{'Q', 0, 0, 0, 7, 'a', 'b', 'c'}, "08P01"},
		{"parse without terminator", []byte{'P', 0, 0, 0, 7, 'a', 'b', 'c'}, "08P01"}, // the decoder's EOF is no end of the client
		{"password after startup", []byte{'p', 0, 0, 0, 5, 0}, "08P01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := established(t, p)
			if _, err := c.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			msgs, _ := c.receive()
			if e := lastError(t, msgs); e.Code != tc.code || e.Severity != "FATAL" {
				t.Errorf("got %s %s %s; want FATAL %s", e.Severity, e.Code, e.Message, tc.code)
			}
			wantClosed(t, c)
			if r := p.result(t); r.err == nil {
				t.Error("Serve: nil error")
			}
		})
	}

	t.Run("client drops mid-message", func(t *testing.T) {
		c := established(t, p)
		c.Write([]byte{'Q', 0, 0, 1, 0, 'S', 'E', 'L'})
		c.Close()
		if r := p.result(t); r.err != nil {
			t.Logf("Serve: %v", r.err)
		}
	})

	t.Run("client drops mid-result", func(t *testing.T) {
		c := established(t, p)
		c.send(&pgproto3.Query{String: "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)"})
		if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		c.Conn.(*net.TCPConn).SetLinger(0)
		c.Close()
		p.result(t)
	})
}

// recorder keeps what a Recorder is told.
type recorder struct {
	mu     sync.Mutex
	facts  []postgres.SessionFacts
	stmts  []postgres.Statement
	ended  []error
	endedC chan struct{}
}

func (r *recorder) SessionStart(_ *l7.Session, f postgres.SessionFacts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.facts = append(r.facts, f)
}

func (r *recorder) StatementDone(_ *l7.Session, st postgres.Statement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stmts = append(r.stmts, st)
}

func (r *recorder) SessionEnd(_ *l7.Session, _ postgres.SessionFacts, err error) {
	r.mu.Lock()
	r.ended = append(r.ended, err)
	r.mu.Unlock()
	r.endedC <- struct{}{}
}

func TestRecorder(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	rec := &recorder{endedC: make(chan struct{}, 10)}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { // every reading is a second later
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	p := startProxy(t, srv, nil, denyForbidden, postgres.WithRecorder(rec), postgres.WithClock(clock))
	cfg, err := pgx.ParseConfig(p.dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "recorder-test"
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	c.Exec(ctx, "CREATE TABLE r (x int)", pgx.QueryExecModeSimpleProtocol)
	c.Exec(ctx, "INSERT INTO r SELECT generate_series(1, $1::int)", 7)
	c.Exec(ctx, "SELECT 'forbidden'")
	c.Exec(ctx, "SELECT 1/0", pgx.QueryExecModeSimpleProtocol)
	c.Exec(ctx, "SET application_name = 'renamed'")
	c.Close(ctx)
	select {
	case <-rec.endedC:
	case <-time.After(waitLimit):
		t.Fatal("no SessionEnd")
	}
	p.result(t)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.facts) != 1 {
		t.Fatalf("SessionStart calls: %d", len(rec.facts))
	}
	f := rec.facts[0]
	if f.Database != srv.Database || f.User != srv.App.Name || f.UpstreamUser != srv.App.Name || f.ApplicationName != "recorder-test" || f.UpstreamPID == 0 {
		t.Errorf("facts: %+v", f)
	}
	if rec.ended[0] != nil {
		t.Errorf("SessionEnd: %v", rec.ended[0])
	}
	type short struct {
		proto, sql, state string
		rows              int64
		allow             bool
	}
	var got []short
	for _, st := range rec.stmts {
		got = append(got, short{st.Protocol, st.SQL, st.SQLState, st.Rows, st.Decision.Allow})
		if st.Duration <= 0 {
			t.Errorf("%q: duration %v", st.SQL, st.Duration)
		}
	}
	want := []short{
		{"simple", "CREATE TABLE r (x int)", "", 0, true},
		{"extended", "INSERT INTO r SELECT generate_series(1, $1::int)", "", 7, true},
		{"simple", "SELECT 'forbidden'", "42501", 0, false}, // pgx sends Exec without arguments as a Query
		{"simple", "SELECT 1/0", "22012", 0, true},
		{"simple", "SET application_name = 'renamed'", "", 0, true},
	}
	if len(got) != len(want) {
		t.Fatalf("statements:\n got %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("statement %d: got %+v; want %+v", i, got[i], want[i])
		}
	}
}

func TestFacts(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	ids := make(chan string, 1)
	p := startProxy(t, srv, nil, postgres.WithDecider(postgres.DeciderFunc(
		func(_ context.Context, s *l7.Session, r postgres.Request) postgres.Decision {
			if r.Kind == postgres.KindStatement {
				select {
				case ids <- s.ID:
				default:
				}
			}
			return postgres.Decision{Allow: true}
		})))
	c := p.connect(t)
	if _, err := c.Exec(t.Context(), "SET application_name = 'facts-test'"); err != nil {
		t.Fatal(err)
	}
	id := <-ids
	f, ok := postgres.Facts(id)
	if !ok || f.Database != srv.Database || f.User != srv.App.Name || f.ApplicationName != "facts-test" {
		t.Errorf("Facts: %+v, %v", f, ok)
	}
	c.Close(t.Context())
	p.result(t)
	if _, ok := postgres.Facts(id); ok {
		t.Error("Facts of an ended session")
	}
}

var errMask = errors.New("mask failure")

// maskHook replaces values of columns named "secret" with "***", in text or
// binary format (text's binary format is its bytes), and notes whether it
// knew the columns of every row.
type maskHook struct {
	mu      sync.Mutex
	rows    int
	unknown int
	fail    bool
}

func (h *maskHook) Wants(*postgres.Result) bool { return true }

func (h *maskHook) OnRowDescription(_ *l7.Session, _ *postgres.Result, d *pgproto3.RowDescription) (*pgproto3.RowDescription, error) {
	return d, nil
}

func (h *maskHook) OnDataRow(_ *l7.Session, r *postgres.Result, row *pgproto3.DataRow) (*pgproto3.DataRow, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail {
		return nil, errMask
	}
	h.rows++
	if r.Fields == nil {
		h.unknown++
		return row, nil
	}
	out := &pgproto3.DataRow{Values: append([][]byte(nil), row.Values...)}
	for i, f := range r.Fields {
		if string(f.Name) == "secret" && out.Values[i] != nil {
			out.Values[i] = []byte("***")
		}
	}
	return out, nil
}

func TestRowHook(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	srv.Exec(t, "CREATE TABLE people (name text, secret text); INSERT INTO people VALUES ('ada', 'pw1'), ('bob', 'pw2'); GRANT SELECT ON people TO "+srv.App.Name)
	hook := &maskHook{}
	p := startProxy(t, srv, nil, postgres.WithRowHook(hook))
	c := p.connect(t)
	ctx := t.Context()
	for _, mode := range []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheStatement, // cached: no Describe on the wire after the first
		pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	} {
		rows, _ := c.Query(ctx, "SELECT name, secret FROM people ORDER BY name", mode)
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var n, s string
			err := r.Scan(&n, &s)
			return n + "=" + s, err
		})
		if err != nil {
			t.Fatalf("mode %v: %v", mode, err)
		}
		if strings.Join(got, ",") != "ada=***,bob=***" {
			t.Errorf("mode %v: got %v; want the secrets masked", mode, got)
		}
	}
	hook.mu.Lock()
	if hook.unknown != 0 {
		t.Errorf("%d of %d rows had no known columns", hook.unknown, hook.rows)
	}
	hook.fail = true
	hook.mu.Unlock()
	// A hook error ends the session: nothing passes unmasked.
	_, err := c.Exec(ctx, "SELECT secret FROM people")
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Severity != "FATAL" {
		t.Errorf("after a hook error: %v; want FATAL", err)
	}
	if r := p.result(t); !errors.Is(r.err, errMask) {
		t.Errorf("Serve: %v; want the hook's error", r.err)
	}
}

func TestTLS(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Start(t, pgtest.WithTLS())
	for _, tc := range []struct {
		name string
		tls  config.TLS
		ok   bool
	}{
		{"require", config.TLS{Mode: config.TLSRequire}, true},
		{"require with ca", config.TLS{Mode: config.TLSRequire, CAFile: srv.CAFile}, true},
		{"verify-full", config.TLS{Mode: config.TLSVerifyFull, CAFile: srv.CAFile}, true},
		{"verify-full, system roots", config.TLS{Mode: config.TLSVerifyFull}, false},
		{"disable", config.TLS{Mode: config.TLSDisable}, false}, // the server is hostssl only
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := target(srv)
			tgt.TLS = tc.tls
			p := startProxy(t, srv, tgt)
			c, err := pgx.Connect(t.Context(), strings.Replace(p.dsn(), "sslmode=require", "sslmode=disable", 1))
			if !tc.ok {
				if err == nil {
					c.Close(t.Context())
					t.Fatal("connected")
				}
				t.Logf("refused: %v", err)
				p.result(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(t.Context())
			var ssl bool
			if err := c.QueryRow(t.Context(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Errorf("upstream ssl: %v, %v", ssl, err)
			}
			// Cancel over TLS.
			done := make(chan error, 1)
			go func() { _, err := c.Exec(context.Background(), "SELECT pg_sleep(30)"); done <- err }()
			waitActive(t, srv, "SELECT pg_sleep(30)")
			if err := c.PgConn().CancelRequest(t.Context()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				var pe *pgconn.PgError
				if !errorsAs(err, &pe) || pe.Code != "57014" {
					t.Errorf("cancel over TLS: %v", err)
				}
			case <-time.After(waitLimit):
				t.Fatal("query not cancelled")
			}
		})
	}
}

func TestClientTLS(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	cert, err := tls.LoadX509KeyPair(testCert(t))
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, srv, nil, postgres.WithClientTLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	out := run(t, "psql", "-X", "-A", "-t", "-d", strings.Replace(p.libpq(), "sslmode=disable", "sslmode=require", 1),
		"-c", "SELECT 'over tls'")
	if strings.TrimSpace(out) != "over tls" {
		t.Errorf("psql: %q", out)
	}
	c, err := pgx.Connect(t.Context(), strings.Replace(p.dsn(), "sslmode=disable", "sslmode=require", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Errorf("pgx connection is %T; want TLS", c.PgConn().Conn())
	}

	// PostgreSQL 17's direct TLS: a ClientHello first, ALPN "postgresql".
	dc, err := pgx.Connect(t.Context(), strings.Replace(p.dsn(), "sslmode=disable", "sslmode=require&sslnegotiation=direct", 1))
	if err != nil {
		t.Fatalf("direct TLS: %v", err)
	}
	defer dc.Close(t.Context())
	var s string
	if err := dc.QueryRow(t.Context(), "SELECT 'direct'").Scan(&s); err != nil || s != "direct" {
		t.Errorf("direct TLS: %q, %v", s, err)
	}
	// Without ALPN: refused.
	raw := dialRaw(t, p.addr)
	if err := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}).Handshake(); err == nil {
		// The handshake may finish before the proxy checks ALPN: then
		// the proxy closes the connection.
		wantClosed(t, raw)
	}
}

func TestContextCancel(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := startProxyCtx(t, ctx, srv, nil)
	c := p.connect(t)
	if _, err := c.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// A session still in its startup ends too.
	raw := dialRaw(t, p.addr)
	raw.Write([]byte{0, 0})
	cancel()
	for range 2 {
		if r := p.result(t); !errors.Is(r.err, context.Canceled) {
			t.Errorf("Serve: %v; want context.Canceled", r.err)
		}
	}
	_, err := c.Exec(t.Context(), "SELECT 1")
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "57P01" {
		t.Errorf("query after the proxy's context ended: %v; want FATAL 57P01", err)
	}
	// The two bytes may still be unread when the proxy closes the
	// connection: the kernel then resets it, which ends it as well.
	raw.SetReadDeadline(time.Now().Add(waitLimit))
	if n, err := io.Copy(io.Discard, raw); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after %d bytes: %v; want the proxy to close the connection", n, err)
	}
}

// indexHook wants only the results of statements at index want of a
// Query, and notes what it was asked and shown.
type indexHook struct {
	mu    sync.Mutex
	want  int
	asked []string // "index:sql" per Wants
	rows  []string // "index:value" per OnDataRow
}

func (h *indexHook) Wants(r *postgres.Result) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked = append(h.asked, fmt.Sprintf("%d:%s", r.Index, r.SQL))
	return r.Index == h.want
}

func (h *indexHook) OnRowDescription(_ *l7.Session, _ *postgres.Result, d *pgproto3.RowDescription) (*pgproto3.RowDescription, error) {
	return d, nil
}

func (h *indexHook) OnDataRow(_ *l7.Session, r *postgres.Result, row *pgproto3.DataRow) (*pgproto3.DataRow, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rows = append(h.rows, fmt.Sprintf("%d:%s", r.Index, row.Values[0]))
	return &pgproto3.DataRow{Values: [][]byte{[]byte("masked")}}, nil
}

// TestRowHookWants checks that the hook sees only the results it wants,
// each statement of a Query with its index (PostgreSQL skips the empty
// statement between two semicolons), and that the others reach the client
// unchanged.
func TestRowHookWants(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	hook := &indexHook{want: 2}
	p := startProxy(t, srv, nil, postgres.WithRowHook(hook))
	c := p.connect(t)
	ctx := t.Context()
	const sql = "SELECT 'a' FROM generate_series(1, 2); SET application_name = 'x'; SELECT 'b'; ; SELECT 'c'"
	res, err := c.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		for _, row := range r.Rows {
			got = append(got, string(row[0]))
		}
	}
	if strings.Join(got, ",") != "a,a,masked,c" {
		t.Errorf("rows: %v; want a,a,masked,c", got)
	}
	// Extended protocol: index 0; asked about the RowDescription that
	// answers Describe, then about the Execute's rows.
	hook.mu.Lock()
	hook.want = 0
	hook.mu.Unlock()
	var v string
	if err := c.QueryRow(ctx, "SELECT 'd'", pgx.QueryExecModeExec).Scan(&v); err != nil || v != "masked" {
		t.Errorf("extended: %q, %v; want masked", v, err)
	}
	c.Close(ctx)
	p.result(t)
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if want := []string{"0:" + sql, "2:" + sql, "3:" + sql, "0:SELECT 'd'", "0:SELECT 'd'"}; strings.Join(hook.asked, "|") != strings.Join(want, "|") {
		t.Errorf("Wants asked about %q; want %q", hook.asked, want)
	}
	if want := []string{"2:b", "0:d"}; strings.Join(hook.rows, "|") != strings.Join(want, "|") {
		t.Errorf("OnDataRow saw %q; want %q", hook.rows, want)
	}
}
