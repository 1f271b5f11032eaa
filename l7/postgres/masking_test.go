package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// The customers of the masking tests: what must never reach the client.
var (
	secretEmails = []string{"ada@example.com", "bob@corp.example"}
	secretCards  = []string{"4111111111111111", "5500005555555559"}
)

// memJournal keeps the records an engine writes.
type memJournal struct {
	mu   sync.Mutex
	recs []memRecord
}

type memRecord struct {
	typ  string
	data []byte
}

func (j *memJournal) Append(_ context.Context, typ string, data any) (uint64, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return 0, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recs = append(j.recs, memRecord{typ, b})
	return uint64(len(j.recs)), nil
}

func (j *memJournal) of(typ string) []map[string]any {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []map[string]any
	for _, r := range j.recs {
		if r.typ == typ {
			var m map[string]any
			json.Unmarshal(r.data, &m)
			out = append(out, m)
		}
	}
	return out
}

func (j *memJournal) contains(s string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range j.recs {
		if bytes.Contains(r.data, []byte(s)) {
			return true
		}
	}
	return false
}

var maskKey = bytes.Repeat([]byte{7}, 32)

// maskingProxy serves srv with a decider that allows everything with rules.
func maskingProxy(t *testing.T, srv *pgtest.Server, j l7.Journal, rules ...policy.MaskRule) *proxy {
	t.Helper()
	srv.Exec(t, `CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card varchar(19), note text, score int8);
		INSERT INTO customers VALUES
			(1, 'Ada', 'ada@example.com', '4111111111111111', 'pays on time', 10),
			(2, 'Bob', 'bob@corp.example', '5500005555555559', 'card 4012888888881881 on file', 20);
		CREATE VIEW customer_contacts AS SELECT id, name, email, lower(email) AS lowered FROM customers;
		GRANT ALL ON customers, customer_contacts TO `+srv.App.Name)
	dec := postgres.DeciderFunc(func(context.Context, *l7.Session, postgres.Request) postgres.Decision {
		return postgres.Decision{Allow: true, Mask: rules}
	})
	return startProxy(t, srv, nil, postgres.WithDecider(dec), postgres.WithMasking(maskKey, j))
}

var (
	emailRule = policy.MaskRule{Table: "public.customers", Column: "email", Method: "email"}
	cardRule  = policy.MaskRule{Table: "public.customers", Column: "card", Method: "last4"}
)

// noSecrets fails when out holds an original masked value.
func noSecrets(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range append(append([]string{}, secretEmails...), secretCards...) {
		if strings.Contains(out, s) {
			t.Errorf("%s: original value %q reached the client:\n%s", what, s, out)
		}
	}
}

func queryRows(t *testing.T, c *pgx.Conn, sql string, opts ...any) [][]string {
	t.Helper()
	rows, err := c.Query(context.Background(), sql, opts...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		var row []string
		for _, v := range vals {
			if v == nil {
				row = append(row, "NULL")
				continue
			}
			b, _ := json.Marshal(v)
			row = append(row, strings.Trim(string(b), `"`))
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func TestMaskColumnsPgx(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	j := &memJournal{}
	p := maskingProxy(t, srv, j, emailRule, cardRule)
	c := p.connect(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec} {
		for _, sql := range []string{
			"SELECT id, name, email, card FROM customers ORDER BY id",
			"SELECT id, name, email AS e, card AS c FROM public.customers c ORDER BY id",
			"SELECT * FROM customers ORDER BY id",
			"WITH x AS (SELECT * FROM customers) SELECT id, name, email, card FROM x ORDER BY id",
			"SELECT id, name, email, card FROM (SELECT * FROM customers) s ORDER BY id",
			"SELECT id, name, email, email FROM customer_contacts ORDER BY id",
		} {
			for i := 0; i < 2; i++ { // the second time from pgx's statement cache
				rows := queryRows(t, c, sql, mode)
				got, _ := json.Marshal(rows)
				noSecrets(t, sql, string(got))
				if len(rows) != 2 || rows[0][1] != "Ada" || rows[1][1] != "Bob" {
					t.Fatalf("%v %s: names changed: %s", mode, sql, got)
				}
				if rows[0][2] != "****@example.com" || rows[1][2] != "****@corp.example" {
					t.Errorf("%v %s: emails %s", mode, sql, got)
				}
			}
		}
	}
	// Binary results: an int8 hashed stays an int8.
	p2 := maskingProxy(t, pgtest.Shared(t), nil, policy.MaskRule{Table: "public.customers", Column: "score", Method: "hash"})
	c2 := p2.connect(t)
	var a, b int64
	if err := c2.QueryRow(context.Background(), "SELECT score FROM customers WHERE id = 1").Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := c2.QueryRow(context.Background(), "SELECT score FROM customers WHERE id = 1", pgx.QueryExecModeSimpleProtocol).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if a == 10 || a != b {
		t.Errorf("hashed score: binary %d, text %d (original 10): want equal tokens, not the original", a, b)
	}

	recs := j.of(postgres.RecordMasking)
	if len(recs) == 0 {
		t.Fatal("no masking records")
	}
	last := recs[len(recs)-1]
	if last["values"].(float64) < 4 || last["originals_hmac"] == "" || last["masked_sha256"] == "" {
		t.Errorf("masking record: %v", last)
	}
	for _, s := range append(append([]string{}, secretEmails...), secretCards...) {
		if j.contains(s) {
			t.Errorf("the journal holds the original value %q", s)
		}
	}
}

func TestMaskExpressions(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := maskingProxy(t, srv, nil, emailRule, cardRule)
	c := p.connect(t)
	for _, sql := range []string{
		"SELECT lower(email) FROM customers",
		"SELECT email || '' FROM customers",
		"SELECT upper(c.email) AS name FROM customers c",
		"SELECT email FROM customers UNION ALL SELECT 'x'",
		"SELECT row_to_json(c) FROM customers c",
		"SELECT c FROM customers c",
		"SELECT customers FROM customers",
		"SELECT c, 1 FROM customer_contacts c",
		"SELECT lowered FROM customer_contacts",
		"SELECT (SELECT max(card) FROM customers) AS m",
	} {
		_, err := c.Exec(context.Background(), sql)
		var pe *pgconn.PgError
		if !errorsAs(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "masked") {
			t.Errorf("%s: got %v; want a 42501 denial about masking", sql, err)
		}
	}
	// A constraint's detail would quote the row, masked columns included.
	srv.Exec(t, "ALTER TABLE customers ADD CONSTRAINT short_name CHECK (length(name) < 10)")
	_, err := c.Exec(context.Background(), "UPDATE customers SET name = 'a much longer name' WHERE id = 1")
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "23514" || strings.Contains(pe.Detail, "ada@") || !strings.Contains(pe.Detail, "withheld") {
		t.Errorf("check violation: %v (detail %q); want 23514 with the detail withheld", err, pe.Detail)
	}
	// A failed cast quotes the value it could not read.
	_, err = c.Exec(context.Background(), "SELECT id FROM customers WHERE email::int = 0")
	if !errorsAs(err, &pe) || pe.Code != "22P02" || strings.Contains(pe.Message, "@") {
		t.Errorf("failed cast of a masked column: %v; want 22P02 without the value", err)
	}
	// Still usable, and expressions over unmasked columns run.
	rows := queryRows(t, c, "SELECT lower(name), count(*) FROM customers WHERE email LIKE '%example%' GROUP BY 1 ORDER BY 1")
	if len(rows) != 2 || rows[0][0] != "ada" {
		t.Errorf("expression over an unmasked column: %v", rows)
	}

	// With a classifier the expressions run, their values caught by it.
	// A classifier that is not the masked column's does not let its
	// expressions through.
	p1 := maskingProxy(t, pgtest.Shared(t), nil, emailRule, cardRule, policy.MaskRule{Classifier: "credit_card", Method: "last4"})
	if _, err := p1.connect(t).Exec(context.Background(), "SELECT lower(email) FROM customers"); !errorsAs(err, &pe) || pe.Code != "42501" {
		t.Errorf("lower(email) with only a card classifier: %v; want denied", err)
	}
	emailLinked, cardLinked := emailRule, cardRule
	emailLinked.Classifier, cardLinked.Classifier = "email", "credit_card"
	p2 := maskingProxy(t, pgtest.Shared(t), nil, emailLinked, cardLinked)
	c2 := p2.connect(t)
	// ... but not composites, arrays or numbers, which no classifier reads.
	for _, sql := range []string{
		"SELECT c FROM customers c",
		"SELECT array_agg(email) FROM customers",
		"SELECT row(email, card) FROM customers",
	} {
		_, err := c2.Exec(context.Background(), sql)
		var pe *pgconn.PgError
		if !errorsAs(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "no classifier can read") {
			t.Errorf("%s with classifiers: got %v; want a 42501 denial", sql, err)
		}
	}
	for _, sql := range []string{
		"SELECT lower(email), card || '' FROM customers",
		"SELECT email FROM customers UNION ALL SELECT 'x'",
		"SELECT note FROM customers",
	} {
		rows := queryRows(t, c2, sql)
		got, _ := json.Marshal(rows)
		noSecrets(t, sql, string(got))
		// Classifiers judge whole values: free text that mentions a
		// card number is not a card number.
		if sql == "SELECT note FROM customers" && !strings.Contains(string(got), "card 4012888888881881 on file") {
			t.Errorf("%s: free text changed: %s", sql, got)
		}
	}

	// A rule can let expressions through.
	allow := emailRule
	allow.Params = map[string]any{"expressions": "allow"}
	p3 := maskingProxy(t, pgtest.Shared(t), nil, allow)
	if rows := queryRows(t, p3.connect(t), "SELECT lower(email) FROM customers ORDER BY 1"); rows[0][0] != "ada@example.com" {
		t.Errorf("expressions: allow: %v", rows)
	}
}

func TestMaskCopy(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := maskingProxy(t, srv, nil, emailRule, cardRule)
	c := p.connect(t)
	for _, sql := range []string{
		"COPY customers TO STDOUT",
		"COPY customers (id, email) TO STDOUT WITH (FORMAT csv, HEADER)",
		"COPY (SELECT name, email AS e, card FROM customers) TO STDOUT (FORMAT csv, DELIMITER ';')",
	} {
		var buf bytes.Buffer
		if _, err := c.PgConn().CopyTo(context.Background(), &buf, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		noSecrets(t, sql, buf.String())
		if !strings.Contains(buf.String(), "****@example.com") {
			t.Errorf("%s: no masked email in\n%s", sql, buf.String())
		}
	}
	var buf bytes.Buffer
	_, err := c.PgConn().CopyTo(context.Background(), &buf, "COPY customers TO STDOUT (FORMAT binary)")
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "42501" {
		t.Errorf("binary COPY: got %v; want denied", err)
	}
	// COPY to a server file would write the originals where no one masks them.
	if _, err := c.Exec(context.Background(), "COPY customers TO '/tmp/tollgate-never-written'"); !errorsAs(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "server file") {
		t.Errorf("COPY to a server file: %v; want denied", err)
	}
	// A rule can deny COPY of its table altogether.
	deny := emailRule
	deny.Params = map[string]any{"copy": "deny"}
	pd := maskingProxy(t, pgtest.Shared(t), nil, deny)
	_, err = pd.connect(t).PgConn().CopyTo(context.Background(), &buf, "COPY customers (id, email) TO STDOUT")
	if !errorsAs(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "COPY") {
		t.Errorf("COPY with copy: deny: got %v; want denied", err)
	}
	psql := run(t, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", p.libpq(), "-c", `\copy customers to stdout csv`)
	noSecrets(t, "psql \\copy", psql)
	if !strings.Contains(psql, "************1111") {
		t.Errorf("psql \\copy: %s", psql)
	}
}

func TestMaskHashStable(t *testing.T) {
	checkLeaks(t)
	rule := policy.MaskRule{Table: "public.customers", Column: "email", Method: "hash"}
	tokens := map[string]bool{}
	for i := 0; i < 2; i++ { // two engines with the same key: a restart
		p := maskingProxy(t, pgtest.Shared(t), nil, rule)
		c := p.connect(t)
		rows := queryRows(t, c, "SELECT email FROM customers ORDER BY id")
		noSecrets(t, "hash", strings.Join(rows[0], ","))
		tokens[rows[0][0]] = true
		again := queryRows(t, c, "SELECT email FROM customers ORDER BY id", pgx.QueryExecModeSimpleProtocol)
		if again[0][0] != rows[0][0] {
			t.Errorf("hash differs between protocols: %q vs %q", rows[0][0], again[0][0])
		}
	}
	if len(tokens) != 1 {
		t.Errorf("hash tokens across engines: %v; want one", tokens)
	}
}

func TestMaskClients(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := maskingProxy(t, srv, nil, emailRule, cardRule)
	sql := "SELECT name, email, card FROM customers ORDER BY id"
	out := run(t, "psql", "-X", "-A", "-t", "-d", p.libpq(), "-c", sql)
	noSecrets(t, "psql", out)
	if !strings.Contains(out, "Ada|****@example.com|************1111") {
		t.Errorf("psql: %s", out)
	}
	py := run(t, "/usr/bin/python3", "-c", `
import sys, psycopg2
c = psycopg2.connect(sys.argv[1]).cursor()
c.execute("SELECT name, email, card FROM customers WHERE id = %s", (1,))
print("|".join(c.fetchone()))`, p.dsn())
	noSecrets(t, "psycopg2", py)
	if !strings.Contains(py, "Ada|****@example.com|************1111") {
		t.Errorf("psycopg2: %s", py)
	}
	js := run(t, "node", "-e", `
const { Client } = require(process.argv[2]);
const c = new Client({ connectionString: process.argv[1] });
(async () => {
  await c.connect();
  const r = await c.query({ text: "SELECT name, email, card FROM customers WHERE id = $1", values: [1], name: "q" });
  const r2 = await c.query({ text: "SELECT name, email, card FROM customers WHERE id = $1", values: [1], name: "q" });
  console.log([r.rows[0].name, r.rows[0].email, r2.rows[0].card].join("|"));
  await c.end();
})().catch((e) => { console.error(e); process.exit(1); });`, p.dsn(), nodePg(t))
	noSecrets(t, "node-postgres", js)
	if !strings.Contains(js, "Ada|****@example.com|************1111") {
		t.Errorf("node-postgres: %s", js)
	}
}

// nodePg is node-postgres as scripts/setup.sh installs it for the tests.
func nodePg(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../test/clients/node/node_modules/pg")
	if err == nil {
		_, err = os.Stat(dir)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node-postgres is required (scripts/setup.sh installs it): %v", err)
		}
		t.Skipf("node-postgres not installed: %v", err)
	}
	return dir
}
