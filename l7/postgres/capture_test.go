package postgres_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// TestCaptureRelaySeeds writes the seed corpus of FuzzRelay: what real
// clients send after the startup, captured on the way in to the engine in
// front of a real PostgreSQL. It runs only when TOLLGATE_CAPTURE_SEEDS=1:
//
//	TOLLGATE_CAPTURE_SEEDS=1 go test -run TestCaptureRelaySeeds ./l7/postgres
func TestCaptureRelaySeeds(t *testing.T) {
	if os.Getenv("TOLLGATE_CAPTURE_SEEDS") != "1" {
		t.Skip("writes testdata/fuzz/FuzzRelay; set TOLLGATE_CAPTURE_SEEDS=1")
	}
	srv := pgtest.Shared(t)
	srv.Exec(t, "GRANT ALL ON SCHEMA public TO "+srv.App.Name)
	dir := filepath.Join("testdata", "fuzz", "FuzzRelay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	capture := func(name string, client func(addr string)) {
		t.Helper()
		data := captureSession(t, srv, client)
		body := afterStartup(data)
		if len(body) == 0 {
			t.Fatalf("%s: nothing captured", name)
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", body), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", file, len(body))
	}
	libpq := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, srv.App.Name, srv.Database)
	}
	dsn := func(addr string) string { return srv.DSNTo(addr, srv.App.Name) }
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	capture("psql-script", func(addr string) {
		script := filepath.Join(t.TempDir(), "s.sql")
		os.WriteFile(script, []byte(`
CREATE TABLE IF NOT EXISTS acct (id int PRIMARY KEY, owner text, balance numeric);
BEGIN;
INSERT INTO acct VALUES (1, 'ada', 100), (2, 'bob', 50) ON CONFLICT DO NOTHING;
UPDATE acct SET balance = balance - 1 WHERE id = 1;
COMMIT;
SELECT 'deny this';
PREPARE top(int) AS SELECT owner FROM acct ORDER BY balance DESC LIMIT $1;
EXECUTE top(1);
\copy acct TO STDOUT
SELECT 1/0;
SELECT owner, balance FROM acct ORDER BY id \gset
SELECT 1 \; SELECT 2;
`), 0o644)
		exec.CommandContext(ctx, tool(t, "psql"), "-X", "-q", "-d", libpq(addr), "-f", script).Run()
	})
	capture("psql-copy-in", func(addr string) {
		cmd := exec.CommandContext(ctx, tool(t, "psql"), "-X", "-q", "-d", libpq(addr),
			"-c", "CREATE TABLE IF NOT EXISTS cin (n int, s text)", "-c", `\copy cin FROM STDIN`)
		cmd.Stdin = strings.NewReader("1\tone\n2\ttwo\n\\.\n")
		cmd.Run()
	})
	capture("pgbench-extended", func(addr string) {
		host, port, _ := net.SplitHostPort(addr)
		exec.CommandContext(ctx, tool(t, "pgbench"), "-h", host, "-p", port, "-U", srv.App.Name, "-n", "-M", "extended",
			"-t", "3", "-f", pgbenchScript(t), srv.Database).Run()
	})
	capture("pgbench-prepared", func(addr string) {
		host, port, _ := net.SplitHostPort(addr)
		exec.CommandContext(ctx, tool(t, "pgbench"), "-h", host, "-p", port, "-U", srv.App.Name, "-n", "-M", "prepared",
			"-t", "3", "-f", pgbenchScript(t), srv.Database).Run()
	})
	capture("pgx-cache", func(addr string) {
		c, err := pgx.Connect(ctx, dsn(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		for i := range 3 {
			var s string
			c.QueryRow(ctx, "SELECT $1::text || 'x'", fmt.Sprint(i)).Scan(&s)
		}
		c.Exec(ctx, "SELECT $1::text || ' deny'", "x")
		c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
		c.Exec(ctx, "SELECT $1::int", pgx.QueryExecModeDescribeExec, 1)
		c.Exec(ctx, "SELECT $1::int", pgx.QueryExecModeExec, 1)
	})
	capture("pgx-batch", func(addr string) {
		c, err := pgx.Connect(ctx, dsn(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		c.Exec(ctx, "CREATE TABLE IF NOT EXISTS bt (id int, v text)")
		b := &pgx.Batch{}
		b.Queue("INSERT INTO bt VALUES ($1, $2)", 1, "a")
		b.Queue("INSERT INTO bt VALUES ($1, $2)", 2, "deny")
		b.Queue("SELECT count(*) FROM bt")
		c.SendBatch(ctx, b).Close()
		tx, _ := c.Begin(ctx)
		tx.Exec(ctx, "INSERT INTO bt VALUES ($1, 'tx')", 3)
		tx.Rollback(ctx)
	})
	capture("pgx-pipeline-copy", func(addr string) {
		c, err := pgx.Connect(ctx, dsn(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		pl := c.PgConn().StartPipeline(ctx)
		pl.SendPrepare("s1", "SELECT $1::int + 1", nil)
		pl.SendQueryPrepared("s1", [][]byte{[]byte("41")}, nil, nil)
		pl.SendQueryParams("SELECT $1::text", [][]byte{[]byte("hi")}, nil, nil, []int16{1})
		pl.SendDeallocate("s1")
		pl.Sync()
		pl.Close()
		c.Exec(ctx, "CREATE TABLE IF NOT EXISTS cf (id int, s text)")
		c.CopyFrom(ctx, pgx.Identifier{"cf"}, []string{"id", "s"}, pgx.CopyFromRows([][]any{{1, "a"}, {2, "b"}}))
		var out bytes.Buffer
		c.PgConn().CopyTo(ctx, &out, "COPY cf TO STDOUT")
	})
}

// pgbenchScript is a small custom pgbench script: the built-in ones need
// pgbench -i.
func pgbenchScript(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "bench.sql")
	os.WriteFile(f, []byte("\\set x random(1, 100)\nBEGIN;\nSELECT :x + 1;\nSELECT 'deny' || :x;\nEND;\n"), 0o644)
	return f
}

// captureSession runs the engine for the sessions of one client (pgbench
// opens two: setup, then the benchmark) and returns the bytes the client
// sent on the one that sent the most.
func captureSession(t *testing.T, srv *pgtest.Server, client func(addr string)) []byte {
	t.Helper()
	eng, err := postgres.New(target(srv), l7.Deps{Dial: (&net.Dialer{}).DialContext, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sessions []*bytes.Buffer
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := &bytes.Buffer{}
			mu.Lock()
			sessions = append(sessions, buf)
			mu.Unlock()
			wg.Go(func() {
				rc := &recordConn{Conn: c, mu: &mu, buf: buf}
				eng.Serve(context.Background(), &l7.Session{ID: l7.NewID(), Target: target(srv), Start: time.Now()}, rc)
			})
		}
	})
	client(ln.Addr().String())
	ln.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	var most []byte
	for _, b := range sessions {
		if b.Len() > len(most) {
			most = bytes.Clone(b.Bytes())
		}
	}
	return most
}

// recordConn keeps a copy of what is read from the client.
type recordConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// afterStartup strips the startup packets (SSLRequest, StartupMessage) from
// a client's stream.
func afterStartup(b []byte) []byte {
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b))
		code := binary.BigEndian.Uint32(b[4:])
		if n < 8 || n > len(b) {
			return nil
		}
		b = b[n:]
		if code>>16 == 3 {
			return b
		}
	}
	return nil
}
