package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// denyForbidden denies statements whose text contains "forbidden".
var denyForbidden = postgres.WithDecider(postgres.DeciderFunc(
	func(_ context.Context, _ *l7.Session, r postgres.Request) postgres.Decision {
		if strings.Contains(r.SQL, "forbidden") {
			return postgres.Decision{Reason: "the word forbidden"}
		}
		return postgres.Decision{Allow: true}
	}))

func wantDenied(t *testing.T, err error) {
	t.Helper()
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "the word forbidden") {
		t.Fatalf("got %v; want a 42501 denial naming the reason", err)
	}
}

func setupDenyTable(t *testing.T, srv *pgtest.Server) {
	srv.Exec(t, "CREATE TABLE d (id int, note text); GRANT ALL ON d TO "+srv.App.Name)
}

func count(t *testing.T, c *pgx.Conn) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM d").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDenySimple(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	setupDenyTable(t, srv)
	p := startProxy(t, srv, nil, denyForbidden)
	c := p.connect(t).PgConn()
	ctx := t.Context()

	_, err := c.Exec(ctx, "INSERT INTO d VALUES (1, 'forbidden')").ReadAll()
	wantDenied(t, err)
	if c.TxStatus() != 'I' {
		t.Errorf("tx status after denial: %c; want I", c.TxStatus())
	}
	// A multi-statement Query is judged whole: nothing of it runs.
	_, err = c.Exec(ctx, "INSERT INTO d VALUES (2, 'ok'); SELECT 'forbidden'").ReadAll()
	wantDenied(t, err)
	res, err := c.Exec(ctx, "SELECT 1").ReadAll()
	if err != nil || string(res[0].Rows[0][0]) != "1" {
		t.Fatalf("after denials: %v", err)
	}
	if n := count(t, direct(t, srv)); n != 0 {
		t.Errorf("rows written by denied statements: %d", n)
	}

	// psql shows the denial and goes on.
	out, _ := exec.Command(tool(t, "psql"), "-X", "-d", p.libpq(), "-c", "SELECT 'forbidden'", "-c", "SELECT 'after'").CombinedOutput()
	if !strings.Contains(string(out), "denied by tollgate policy: the word forbidden") || !strings.Contains(string(out), "after") {
		t.Errorf("psql output:\n%s", out)
	}
}

func TestDenyExtended(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	setupDenyTable(t, srv)
	p := startProxy(t, srv, nil, denyForbidden)
	c := p.connect(t)
	ctx := t.Context()

	_, err := c.Exec(ctx, "INSERT INTO d VALUES ($1, 'forbidden')", 1)
	wantDenied(t, err)
	var s string
	if err := c.QueryRow(ctx, "SELECT $1::text", "still usable").Scan(&s); err != nil || s != "still usable" {
		t.Fatalf("after the denial: %q, %v", s, err)
	}
	// A batch with a denied statement is one implicit transaction: the
	// allowed insert before the denial is rolled back. In the default mode
	// pgx prepares the whole batch first, so the denial comes before any
	// insert runs; in exec mode the first insert runs, then is undone.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		cfg, err := pgx.ParseConfig(p.dsn())
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		bc, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		batch := &pgx.Batch{}
		batch.Queue("INSERT INTO d VALUES ($1, 'ok')", 2)
		batch.Queue("INSERT INTO d VALUES ($1, 'forbidden')", 3)
		batch.Queue("INSERT INTO d VALUES ($1, 'ok')", 4)
		br := bc.SendBatch(ctx, batch)
		var errs []error
		for range 3 {
			if _, err := br.Exec(); err != nil {
				errs = append(errs, err)
			}
		}
		br.Close()
		if len(errs) == 0 {
			t.Fatalf("mode %v: batch with a forbidden statement succeeded", mode)
		}
		if mode == pgx.QueryExecModeExec && len(errs) != 2 {
			t.Errorf("mode %v: %d errors in the batch (%v); want the denial and the skipped insert", mode, len(errs), errs)
		}
		wantDenied(t, errs[0])
		if n := count(t, bc); n != 0 {
			t.Errorf("mode %v: rows after the denied batch: %d; want 0", mode, n)
		}
		bc.Close(ctx)
	}
	// Every exec mode.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		_, err := c.Exec(ctx, "SELECT $1::text || 'forbidden'", mode, "x")
		wantDenied(t, err)
		if err := c.QueryRow(ctx, "SELECT $1::text", mode, "ok").Scan(&s); err != nil || s != "ok" {
			t.Fatalf("mode %v after the denial: %q, %v", mode, s, err)
		}
	}
}

func TestDenyInTransaction(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	setupDenyTable(t, srv)
	p := startProxy(t, srv, nil, denyForbidden)
	ctx := t.Context()

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := p.connect(t)
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO d VALUES ($1, 'written before the denial')", mode, 1); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "SELECT 'forbidden'", mode)
		wantDenied(t, err)
		if got := c.PgConn().TxStatus(); got != 'E' {
			t.Errorf("mode %v: tx status after the denial: %c; want E (failed transaction)", mode, got)
		}
		_, err = tx.Exec(ctx, "INSERT INTO d VALUES ($1, 'after')", mode, 2)
		var pe *pgconn.PgError
		if !errorsAs(err, &pe) || pe.Code != "25P02" {
			t.Errorf("mode %v: statement after the denial: %v; want 25P02", mode, err)
		}
		// COMMIT cannot commit: the server answers ROLLBACK.
		res, err := c.PgConn().Exec(ctx, "COMMIT").ReadAll()
		if err != nil || res[0].CommandTag.String() != "ROLLBACK" {
			t.Errorf("mode %v: COMMIT: %v, %v; want ROLLBACK", mode, res, err)
		}
		if n := count(t, direct(t, srv)); n != 0 {
			t.Errorf("mode %v: rows committed around a denial: %d", mode, n)
		}
		if c.PgConn().TxStatus() != 'I' {
			t.Errorf("mode %v: tx status: %c", mode, c.PgConn().TxStatus())
		}
	}
}

// TestDenyFunctionCall: the fast-path FunctionCall is judged too.
func TestDenyFunctionCall(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	var mu sync.Mutex
	var seen []postgres.Request
	p := startProxy(t, srv, nil, postgres.WithDecider(postgres.DeciderFunc(
		func(_ context.Context, _ *l7.Session, r postgres.Request) postgres.Decision {
			mu.Lock()
			seen = append(seen, r)
			mu.Unlock()
			return postgres.Decision{Allow: r.Protocol != postgres.ProtocolFunction, Reason: "the word forbidden"}
		})))
	c := p.connect(t).PgConn()
	ctx := t.Context()
	// pgconn has no FunctionCall API: speak it on the hijacked connection.
	var oid uint32
	res, err := c.Exec(ctx, "SELECT 'pg_backend_pid'::regproc::oid").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range res[0].Rows[0][0] {
		oid = oid*10 + uint32(b-'0')
	}
	hj, err := c.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hj.Conn.Close()
	hj.Frontend.Send(&pgproto3.FunctionCall{Function: oid})
	if err := hj.Frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	var gotErr, gotReady bool
	for !gotReady {
		msg, err := hj.Frontend.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			gotErr = m.Code == "42501"
		case *pgproto3.ReadyForQuery:
			gotReady = true
		}
	}
	if !gotErr {
		t.Error("FunctionCall not denied")
	}
	mu.Lock()
	defer mu.Unlock()
	last := seen[len(seen)-1]
	if last.Protocol != postgres.ProtocolFunction || last.FunctionOID != oid {
		t.Errorf("decider saw %+v; want a function request for oid %d", last, oid)
	}
}

// TestSendErrorReachesPsql: a connection the agent refuses before its
// session starts (the journal cannot record it) shows psql why, whether
// psql asks for TLS first (sslmode=prefer, its default) or not.
func TestSendErrorReachesPsql(t *testing.T) {
	eng, err := postgres.New(&config.Target{Name: "db", Protocol: postgres.Protocol, Upstream: "127.0.0.1:1",
		Credentials: config.Credentials{Username: "app", Password: "x"}}, l7.Deps{Log: zap.NewNop(), Dial: (&net.Dialer{}).DialContext})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go eng.SendError(c, errors.New("tollgate cannot record this session: audit journal unavailable: no space left on device"))
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, mode := range []string{"prefer", "disable"} {
		out, _ := exec.Command(tool(t, "psql"), "-X", "-d", fmt.Sprintf("host=%s port=%s user=app dbname=db sslmode=%s connect_timeout=5", host, port, mode),
			"-c", "SELECT 1").CombinedOutput()
		if !strings.Contains(string(out), "FATAL:  tollgate: tollgate cannot record this session: audit journal unavailable") {
			t.Errorf("sslmode=%s: psql output:\n%s", mode, out)
		}
	}
}
