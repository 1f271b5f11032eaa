package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/test/pgtest"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

// pgFixture is a real PostgreSQL behind a tollgate agent: governed clients
// dial target (where nothing else listens) with no password at all.
type pgFixture struct {
	*agent
	pg     *pgtest.Server
	target string // host:port clients dial
	host   string
	port   string
}

var pgAddrSeq = 20

func newPG(t *testing.T) *pgFixture {
	t.Helper()
	testenv.RequirePrivileged(t)
	return newPGOn(t, pgtest.Shared(t))
}

// newPGOn is newPG in front of a given cluster.
func newPGOn(t *testing.T, pg *pgtest.Server) *pgFixture {
	t.Helper()
	pgAddrSeq++
	host := fmt.Sprintf("127.77.1.%d", pgAddrSeq)
	port := strconv.Itoa(freePort(t))
	a := newAgent(t, "")
	secret := filepath.Join(a.dir, "orders-db.password")
	if err := os.WriteFile(secret, []byte(pg.App.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.extra = fmt.Sprintf(`identities:
  - name: reporting
    owner: team-finance
    purpose: e2e
    match: {cgroup: %q}
targets:
  - name: orders-db
    protocol: postgres
    address: %s
    upstream: %s
    credentials: {username: %s, password_file: %s}
`, a.cg.Path, net.JoinHostPort(host, port), pg.Addr(), pg.App.Name, secret)
	a.writeConfig()
	a.start()
	return &pgFixture{agent: a, pg: pg, target: net.JoinHostPort(host, port), host: host, port: port}
}

// conninfo is what a legacy script would hard-code: no password.
func (f *pgFixture) conninfo(extra string) string {
	return fmt.Sprintf("host=%s port=%s dbname=%s user=legacy_script connect_timeout=10 %s", f.host, f.port, f.pg.Database, extra)
}

// run runs a client program inside the governed cgroup.
func (f *pgFixture) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD=", "PGCONNECT_TIMEOUT=10")
	testenv.InCgroup(f.t, cmd, f.cg)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPsqlThroughAgentWithInjectedCredentials(t *testing.T) {
	f := newPG(t)
	for _, mode := range []string{"disable", "prefer", "require"} {
		out, err := f.run("psql", "-X", "-At", f.conninfo("sslmode="+mode),
			"-c", "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid(); SELECT 40 + 2")
		if err != nil {
			t.Fatalf("sslmode=%s: %v\n%s", mode, err, out)
		}
		// The upstream login is the agent's; the client's TLS ends at the agent.
		if !strings.Contains(out, f.pg.App.Name+"|f") || !strings.Contains(out, "42") {
			t.Errorf("sslmode=%s: output %q; want current_user %s and 42", mode, out, f.pg.App.Name)
		}
	}
	ss := f.sessions()
	if len(ss) != 3 {
		t.Fatalf("sessions = %d; want 3", len(ss))
	}
	s := ss[2]
	if s.Identity != "reporting" || s.Attrs["database"] != f.pg.Database || s.Attrs["user"] != "legacy_script" ||
		s.Attrs["upstream_user"] != f.pg.App.Name || s.Attrs["tls"] != "true" || s.Attrs["application_name"] != "psql" {
		t.Errorf("session = %+v", s)
	}
	if s.Statements != 1 {
		t.Errorf("statements = %d; want 1 (one Query message)", s.Statements)
	}
	if s.Dst.String() != f.target {
		t.Errorf("dst = %s; want %s", s.Dst, f.target)
	}
}

func TestPsqlScriptAndCopyBothWays(t *testing.T) {
	f := newPG(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.csv")
	var rows strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&rows, "%d,name %d\n", i, i)
	}
	os.WriteFile(in, []byte(rows.String()), 0o644)
	script := filepath.Join(dir, "script.sql")
	os.WriteFile(script, []byte(fmt.Sprintf(`CREATE TABLE copy_t (id int, name text);
\copy copy_t FROM '%s' WITH (FORMAT csv)
SELECT count(*), sum(id) FROM copy_t;
\copy (SELECT * FROM copy_t ORDER BY id) TO '%s/out.csv' WITH (FORMAT csv)
DROP TABLE copy_t;
`, in, dir)), 0o644)
	out, err := f.run("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", f.conninfo(""), "-f", script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "1000|499500") {
		t.Errorf("output %q; want 1000|499500", out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out.csv"))
	if err != nil || string(got) != rows.String() {
		t.Errorf("copied out %d bytes (%v); want the %d bytes copied in", len(got), err, rows.Len())
	}
}

func TestPsqlCtrlCCancelsThroughAgent(t *testing.T) {
	f := newPG(t)
	cmd := exec.Command("psql", "-X", "-At", f.conninfo(""), "-c", "SELECT pg_sleep(60)")
	cmd.Env = append(os.Environ(), "PGPASSWORD=")
	testenv.InCgroup(t, cmd, f.cg)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the sleep runs on the server, then press Ctrl-C.
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := f.pg.Exec(t, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
		if string(r[0].Rows[0][0]) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the query never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("cancel took %v", took)
	}
	if !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Errorf("psql output %q; want the cancel message", out.String())
	}
	// The cancel arrived on its own, redirected connection: a second session.
	if n := len(f.sessions()); n < 1 {
		t.Errorf("sessions = %d", n)
	}
}

func TestPgbenchModesThroughAgent(t *testing.T) {
	f := newPG(t)
	env := []string{"PGHOST=" + f.host, "PGPORT=" + f.port, "PGDATABASE=" + f.pg.Database, "PGUSER=legacy_script", "PGPASSWORD="}
	pgbench := func(args ...string) string {
		cmd := exec.Command("pgbench", args...)
		cmd.Env = append(os.Environ(), env...)
		testenv.InCgroup(t, cmd, f.cg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pgbench("-i", "-s", "1", "-q")
	for _, mode := range []string{"simple", "extended", "prepared"} {
		out := pgbench("-M", mode, "-c", "4", "-t", "100", "-n")
		if !strings.Contains(out, "number of transactions actually processed: 400/400") {
			t.Errorf("-M %s: %s", mode, out)
		}
	}
}

func TestPsycopg2AndNodePostgresThroughAgent(t *testing.T) {
	f := newPG(t)
	for _, c := range []struct {
		name string
		cmd  []string
	}{
		{"psycopg2", []string{"/usr/bin/python3", "../clients/psycopg2_client.py", f.conninfo("")}},
		{"node-postgres", []string{"node", "../clients/node/client.js",
			fmt.Sprintf("postgresql://legacy_script@%s/%s", f.target, f.pg.Database)}},
	} {
		out, err := f.run(c.cmd[0], c.cmd[1:]...)
		if err != nil {
			t.Errorf("%s: %v\n%s", c.name, err, out)
			continue
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Errorf("%s: output %q: %v", c.name, out, err)
			continue
		}
		if got["sum"] != float64(2) || got["error_sqlstate"] != "42P01" {
			t.Errorf("%s: %v", c.name, got)
		}
		switch c.name {
		case "psycopg2":
			if got["rows"] != float64(100) || got["concat"] != "tollgate" {
				t.Errorf("psycopg2: %v", got)
			}
		case "node-postgres":
			if got["prepared"] != float64(42) || got["prepared_again"] != float64(100) || got["after_error"] != float64(7) {
				t.Errorf("node-postgres: %v", got)
			}
		}
	}
}

// pgxClient runs in the governed cgroup: batch, pipeline-style batch,
// binary formats, CopyFrom and the statement cache, against args[0].
func pgxClient(args []string) any {
	res := map[string]any{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, args[0])
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	defer conn.Close(ctx)
	fail := func(step string, err error) any { return map[string]any{"error": step + ": " + err.Error()} }
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE p (id int8, ts timestamptz, v numeric, b bytea)"); err != nil {
		return fail("create", err)
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"p"}, []string{"id", "ts", "v", "b"}, pgx.CopyFromSlice(500, func(i int) ([]any, error) {
		return []any{int64(i), time.Unix(int64(i), 0), i, []byte{byte(i)}}, nil
	}))
	if err != nil {
		return fail("copyfrom", err)
	}
	res["copied"] = n
	b := &pgx.Batch{}
	b.Queue("SELECT count(*) FROM p")
	b.Queue("SELECT sum(id) FROM p WHERE id < $1", 10)
	br := conn.SendBatch(ctx, b)
	var cnt, sum int64
	if err := br.QueryRow().Scan(&cnt); err != nil {
		return fail("batch 1", err)
	}
	if err := br.QueryRow().Scan(&sum); err != nil {
		return fail("batch 2", err)
	}
	br.Close()
	res["count"], res["sum"] = cnt, sum
	// The same query twice: the second runs from the statement cache.
	for i := 0; i < 3; i++ {
		var id int64
		var ts time.Time
		var bb []byte
		if err := conn.QueryRow(ctx, "SELECT id, ts, b FROM p WHERE id = $1", int64(7)).Scan(&id, &ts, &bb); err != nil {
			return fail("cached", err)
		}
		res["cached_id"], res["cached_ts"], res["cached_b"] = id, ts.Unix(), int(bb[0])
	}
	return res
}

func TestPgxThroughAgent(t *testing.T) {
	f := newPG(t)
	cmd := testenv.Helper("pgx", fmt.Sprintf("postgres://legacy_script@%s/%s?sslmode=prefer", f.target, f.pg.Database))
	testenv.InCgroup(t, cmd, f.cg)
	var got map[string]any
	testenv.RunJSON(t, cmd, &got)
	want := map[string]any{"copied": float64(500), "count": float64(500), "sum": float64(45), "cached_id": float64(7), "cached_ts": float64(7), "cached_b": float64(7)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v; want %v (all: %v)", k, got[k], v, got)
		}
	}
}
