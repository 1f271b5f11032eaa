package postgres_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestRegistered(t *testing.T) {
	if !l7.IsRegistered(postgres.Protocol) {
		t.Fatalf("protocol %q not registered: %v", postgres.Protocol, l7.Protocols())
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
		{"verify-full", config.Target{Upstream: "db.internal:5432", TLS: config.TLS{Mode: config.TLSVerifyFull}}, l7.Deps{Dial: dialer}, true},
		{"cidr address, no upstream", config.Target{Address: "10.0.0.0/8:5432"}, l7.Deps{Dial: dialer}, false},
		{"no port", config.Target{Upstream: "127.0.0.1"}, l7.Deps{Dial: dialer}, false},
		{"bad port", config.Target{Upstream: "127.0.0.1:99999"}, l7.Deps{Dial: dialer}, false},
		{"no dialer", config.Target{Upstream: "127.0.0.1:5432"}, l7.Deps{}, false},
		{"passthrough", config.Target{Upstream: "127.0.0.1:5432", Credentials: config.Credentials{Passthrough: true}}, l7.Deps{Dial: dialer}, true},
		{"missing ca file", config.Target{Upstream: "127.0.0.1:5432", TLS: config.TLS{Mode: config.TLSRequire, CAFile: "/nonexistent/ca.pem"}}, l7.Deps{Dial: dialer}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.target.Name, tc.target.Protocol = "t", postgres.Protocol
			_, err := l7.New(&tc.target, tc.deps)
			if got := err == nil; got != tc.ok {
				t.Errorf("New: got err %v; want ok %v", err, tc.ok)
			}
		})
	}
}

func TestPsqlMultiStatement(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	out := run(t, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", p.libpq(), "-c",
		"CREATE TABLE m (x int); INSERT INTO m SELECT generate_series(1, 10); SELECT sum(x) FROM m")
	// psql 15 prints the result of each statement of the Query.
	if got, want := strings.TrimSpace(out), "CREATE TABLE\nINSERT 0 10\n55"; got != want {
		t.Errorf("psql -c: got %q; want %q", got, want)
	}
	if r := p.result(t); r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
}

func TestPsqlScript(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	script := filepath.Join(t.TempDir(), "script.sql")
	err := os.WriteFile(script, []byte(`
\set ON_ERROR_STOP 1
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
BEGIN;
INSERT INTO accounts VALUES (1, 'ada', 100), (2, 'bob', 50);
UPDATE accounts SET balance = balance - 30 WHERE id = 1;
UPDATE accounts SET balance = balance + 30 WHERE id = 2;
COMMIT;
PREPARE top(int) AS SELECT owner FROM accounts ORDER BY balance DESC LIMIT $1;
EXECUTE top(1);
SELECT string_agg(format('%s=%s', owner, balance), ',' ORDER BY id) AS balances FROM accounts \gset r_
\echo :r_balances
DO $$ BEGIN RAISE NOTICE 'notice through the proxy'; END $$;
SELECT current_setting('application_name');
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, "psql", "-X", "-A", "-t", "-q", "-d", p.libpq(), "-f", script)
	for _, want := range []string{"bob\n", "ada=70,bob=80", "notice through the proxy", "tollgate-test"} {
		if !strings.Contains(out, want) {
			t.Errorf("psql -f output lacks %q:\n%s", want, out)
		}
	}
	if r := p.result(t); r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
}

func TestPsqlCopy(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.csv"), filepath.Join(dir, "out.csv")
	var b strings.Builder
	for i := range 20000 {
		b.WriteString(strconv.Itoa(i))
		b.WriteString(",")
		b.WriteString(strings.Repeat("x", i%50))
		b.WriteString(",")
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString("\n")
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", p.libpq(),
		"-c", "CREATE TABLE c (n int, a text, b text)",
		"-c", `\copy c FROM '`+in+`' WITH (FORMAT csv)`,
		"-c", `\copy (SELECT * FROM c ORDER BY n) TO '`+out+`' WITH (FORMAT csv)`)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != b.String() {
		t.Errorf(`\copy out: got %d bytes; want the %d copied in`, len(got), b.Len())
	}
	if r := p.result(t); r.err != nil {
		t.Errorf("Serve: %v", r.err)
	}
}

func TestPgbench(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	host, port, _ := strings.Cut(p.addr, ":")
	base := []string{"-h", host, "-p", port, "-U", srv.App.Name}
	run(t, "pgbench", append(base, "-i", "-q", "-s", "1", srv.Database)...)
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			out := run(t, "pgbench", append(base, "-M", mode, "-c", "4", "-j", "2", "-t", "200", "-n", srv.Database)...)
			if !strings.Contains(out, "number of transactions actually processed: 800/800") {
				t.Errorf("pgbench -M %s:\n%s", mode, out)
			}
			if strings.Contains(out, "number of failed transactions: ") && !strings.Contains(out, "number of failed transactions: 0 ") {
				t.Errorf("pgbench -M %s had failures:\n%s", mode, out)
			}
		})
	}
}
