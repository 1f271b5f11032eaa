package postgres_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// loopDelta returns what LoopStats counted since it was called, once the
// sessions of the test have ended.
func loopDelta(t *testing.T) func() (served, left int64) {
	s0, l0 := postgres.LoopStats()
	return func() (int64, int64) {
		s, l := postgres.LoopStats()
		return s - s0, l - l0
	}
}

// loopsOn skips when the event loops are turned off (TOLLGATE_EVENT_LOOPS=0:
// make test runs the package that way too).
func loopsOn(t *testing.T, p *proxy) {
	t.Helper()
	delta := loopDelta(t)
	c := p.connect(t)
	if _, err := c.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	c.Close(t.Context())
	p.result(t)
	if served, _ := delta(); served == 0 {
		t.Skip("the event loops are off")
	}
}

// TestEventLoopServes runs a session's traffic of every kind the loop
// serves (simple and extended protocol, a pipeline, a multi-statement
// Query, errors, COPY) and checks it never left the loop.
func TestEventLoopServes(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	loopsOn(t, p)
	delta := loopDelta(t)

	ctx := t.Context()
	c := p.connect(t)
	var n int
	if err := c.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("extended: %d, %v", n, err)
	}
	if err := c.QueryRow(ctx, "SELECT 7", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil || n != 7 {
		t.Fatalf("simple: %d, %v", n, err)
	}
	if _, err := c.Exec(ctx, "CREATE TEMP TABLE t (a int); INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatalf("multi-statement: %v", err)
	}
	b := &pgx.Batch{}
	for i := range 50 {
		b.Queue("SELECT a FROM t WHERE a = $1", i+1)
	}
	res := c.SendBatch(ctx, b)
	for i := range 50 {
		if err := res.QueryRow().Scan(&n); err != nil || n != i+1 {
			t.Fatalf("batch %d: %d, %v", i, n, err)
		}
	}
	if err := res.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT 1/0"); err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Fatalf("error: %v", err)
	}
	var buf bytes.Buffer
	if _, err := c.PgConn().CopyTo(ctx, &buf, "COPY t TO STDOUT"); err != nil || strings.Count(buf.String(), "\n") != 100 {
		t.Fatalf("COPY TO: %d lines, %v", strings.Count(buf.String(), "\n"), err)
	}
	if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader("101\n102\n"), "COPY t FROM STDIN"); err != nil {
		t.Fatalf("COPY FROM: %v", err)
	}
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 102 {
		t.Fatalf("count: %d, %v", n, err)
	}
	c.Close(ctx)
	if r := p.result(t); r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
	if served, left := delta(); served != 1 || left != 0 {
		t.Errorf("the loops served %d sessions, %d left; want 1 served, none left", served, left)
	}
}

// TestEventLoopStartupPipelined sends a Query in the same write as the
// startup message: the loop relays what the startup reader holds first.
func TestEventLoopStartupPipelined(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	raw := dialRaw(t, p.addr)
	var msg []byte
	msg, _ = startupMsg(p).Encode(msg)
	msg, _ = (&pgproto3.Query{String: "SELECT 'pipelined'"}).Encode(msg)
	if _, err := raw.Write(msg); err != nil {
		t.Fatal(err)
	}
	// The startup's answer, then the query's.
	raw.expectOK("startup")
	var value string
	for _, m := range raw.expectOK("query") {
		if d, ok := m.(*pgproto3.DataRow); ok {
			value = string(d.Values[0])
		}
	}
	if value != "pipelined" {
		t.Fatalf("query returned %q, want pipelined", value)
	}
}

// TestEventLoopLeavesOnSlowClient has a client that does not read a large
// result for a while: the loop cannot write it, and the session goes on in
// its goroutines, losing nothing.
func TestEventLoopLeavesOnSlowClient(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	loopsOn(t, p)
	delta := loopDelta(t)

	raw := dialRaw(t, p.addr)
	raw.send(startupMsg(p))
	raw.expectOK("startup")
	const rows, width = 20000, 1000 // 20 MB: far more than the sockets buffer
	raw.send(&pgproto3.Query{String: fmt.Sprintf("SELECT repeat('x', %d) FROM generate_series(1, %d)", width, rows)})
	time.Sleep(300 * time.Millisecond) // the loop fills the client's socket, and leaves
	n := 0
	for {
		msg, err := raw.fe.Receive()
		if err != nil {
			t.Fatalf("after %d rows: %v", n, err)
		}
		if d, ok := msg.(*pgproto3.DataRow); ok {
			if len(d.Values) != 1 || len(d.Values[0]) != width {
				t.Fatalf("row %d: %d values", n, len(d.Values))
			}
			n++
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if n != rows {
		t.Fatalf("got %d rows, want %d", n, rows)
	}
	// The session goes on.
	raw.send(&pgproto3.Query{String: "SELECT 1"})
	raw.expectOK("next query")
	raw.send(&pgproto3.Terminate{})
	if r := p.result(t); r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
	if served, left := delta(); served != 1 || left != 1 {
		t.Errorf("the loops served %d sessions, %d left; want 1 and 1", served, left)
	}
}

// expectOK receives the answer to what was sent (up to ReadyForQuery) and
// fails the test on an error.
func (c *startupConn) expectOK(what string) []pgproto3.BackendMessage {
	c.t.Helper()
	got, err := c.receive()
	if e := errorIn(got); err != nil || e != nil {
		c.t.Fatalf("%s: %v %v", what, e, err)
	}
	return got
}

// errorIn returns the ErrorResponse among msgs, if any.
func errorIn(msgs []pgproto3.BackendMessage) *pgproto3.ErrorResponse {
	for _, m := range msgs {
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			return e
		}
	}
	return nil
}
