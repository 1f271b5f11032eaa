package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/mask"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

func init() { testenv.RegisterHelper("pgxmask", pgxMask) }

// pgxMask runs in the governed cgroup: the same query three times through
// pgx's statement cache (prepare, then cached executions), and once in the
// describe-exec mode.
func pgxMask(args []string) any {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, args[0])
	if err != nil {
		return map[string]any{"error": "connect: " + err.Error()}
	}
	defer conn.Close(ctx)
	out := map[string]any{}
	row := func(mode pgx.QueryExecMode) ([]string, error) {
		var name, email, card, ssn string
		err := conn.QueryRow(ctx, "SELECT name, email, card, ssn FROM customers WHERE id = $1", mode, 1).Scan(&name, &email, &card, &ssn)
		return []string{name, email, card, ssn}, err
	}
	for i, k := range []string{"prepared", "cached", "cached"} {
		r, err := row(pgx.QueryExecModeCacheStatement)
		if err != nil {
			return map[string]any{"error": fmt.Sprintf("run %d: %v", i+1, err)}
		}
		out[k] = r
	}
	r, err := row(pgx.QueryExecModeDescribeExec)
	if err != nil {
		return map[string]any{"error": "describe exec: " + err.Error()}
	}
	out["described"] = r
	return out
}

// maskPolicy lets the governed workload read, with the customers' e-mail,
// card and SSN masked, and nothing else.
const maskPolicy = `package tollgate

import rego.v1

default decision := {"allow": false, "reason": "only reads are allowed"}

decision := {"allow": true} if input.request.kind == "connect"

decision := {"allow": true, "mask": [
	{"table": "public.customers", "column": "email", "method": "email"},
	{"table": "public.customers", "column": "card", "method": "last4"},
	{"table": "public.customers", "column": "ssn", "method": "hash"},
]} if {
	input.request.kind == "statement"
	input.request.read_only
}
`

// customer is a row of the customers table, in clear.
type customer struct {
	id, name, email, card, ssn string
}

var customers = []customer{
	{"1", "Ada Lovelace", "ada.lovelace@analytical.example", "4111 1111 1111 1111", "078-05-1120"},
	{"2", "Alan Turing", "alan.turing@bletchley.example", "5500-0000-0000-0004", "219-09-9999"},
}

// originals are the values that must never leave the database unmasked.
func originals() []string {
	var out []string
	for _, c := range customers {
		out = append(out, c.email, c.card, c.ssn, strings.NewReplacer(" ", "", "-", "").Replace(c.card))
	}
	return out
}

// maskedRecord is the data of a "masking" journal record.
type maskedRecord struct {
	Session       string           `json:"session"`
	Statement     uint64           `json:"statement_seq"`
	Columns       []string         `json:"columns"`
	Values        int64            `json:"values"`
	PerColumn     map[string]int64 `json:"per_column"`
	OriginalsHMAC string           `json:"originals_hmac"`
	MaskedSHA256  string           `json:"masked_sha256"`
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// newMaskingPG is newPG with the customers table (written directly: the
// originals never pass the agent) and maskPolicy in force.
func newMaskingPG(t *testing.T) *pgFixture {
	t.Helper()
	f := newPG(t)
	var ins strings.Builder
	ins.WriteString("CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text, ssn text);")
	for _, c := range customers {
		ins.WriteString("INSERT INTO customers VALUES (" + c.id + ", '" + c.name + "', '" + c.email + "', '" + c.card + "', '" + c.ssn + "');")
	}
	ins.WriteString("GRANT SELECT ON customers TO " + f.pg.App.Name)
	f.pg.Exec(t, ins.String())
	f.setPolicy(maskPolicy)
	return f
}

// psqlMasked runs sql with psql in the governed cgroup: unaligned, tuples
// only, "|" between fields.
func (f *pgFixture) psqlMasked(sql string) (string, error) {
	return f.run("psql", "-X", "-A", "-t", "-F", "|", "-v", "VERBOSITY=verbose", f.conninfo(""), "-c", sql)
}

func TestMaskingEndToEnd(t *testing.T) {
	f := newMaskingPG(t)
	psql := f.psqlMasked
	const selectSQL = "SELECT id, name, email, card, ssn FROM customers ORDER BY id"
	out, err := psql(selectSQL)
	if err != nil {
		t.Fatalf("select: %v\n%s", err, out)
	}
	rows := lines(out)
	if len(rows) != len(customers) {
		t.Fatalf("select returned %q; want %d rows", out, len(customers))
	}
	wantMasked := [][]string{
		{"1", "Ada Lovelace", "****@analytical.example", "**** **** **** 1111"},
		{"2", "Alan Turing", "****@bletchley.example", "****-****-****-0004"},
	}
	var tokens []string // ssn hash tokens, by row
	for i, row := range rows {
		cols := strings.Split(row, "|")
		if len(cols) != 5 || !slices.Equal(cols[:4], wantMasked[i]) {
			t.Errorf("row %d = %q; want %q and a hash token", i+1, row, wantMasked[i])
			continue
		}
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(cols[4]) {
			t.Errorf("row %d ssn = %q; want a 16-digit hex token", i+1, cols[4])
		}
		tokens = append(tokens, cols[4])
	}
	if len(tokens) == 2 && tokens[0] == tokens[1] {
		t.Errorf("two different SSNs have the same token %s", tokens[0])
	}
	for _, o := range originals() {
		if strings.Contains(out, o) {
			t.Errorf("psql saw the original %q", o)
		}
	}

	// COPY TO STDOUT is masked alike (text format: tab-separated).
	const copySQL = "COPY customers TO STDOUT"
	out, err = psql(copySQL)
	if err != nil {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	for i, row := range lines(out) {
		want := strings.Join(append(slices.Clone(wantMasked[i]), tokens[i]), "\t")
		if row != want {
			t.Errorf("COPY row %d = %q; want %q", i+1, row, want)
		}
	}
	out, err = psql("COPY (SELECT name, email FROM customers ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)")
	if err != nil || out != "name,email\nAda Lovelace,****@analytical.example\nAlan Turing,****@bletchley.example\n" {
		t.Errorf("COPY csv: %v\n%q", err, out)
	}

	// A value computed from a masked column cannot be masked: denied.
	out, err = psql("SELECT lower(email) FROM customers")
	if err == nil || !strings.Contains(out, "42501") || !strings.Contains(out, "masking") || !strings.Contains(out, "email") {
		t.Errorf("lower(email): %v\n%s; want 42501 naming masking and the column", err, out)
	}
	// The same through an alias and a sub-query: still the masked column.
	out, err = psql("SELECT e AS contact FROM (SELECT email AS e FROM customers WHERE id = 1) s")
	if err != nil || strings.TrimSpace(out) != "****@analytical.example" {
		t.Errorf("aliased sub-query: %v\n%s; want the masked e-mail", err, out)
	}

	// Every column, and a whole row.
	out, err = psql("SELECT * FROM customers ORDER BY id")
	if err != nil || !strings.HasPrefix(out, strings.Join(wantMasked[0], "|")+"|"+tokens[0]+"\n") {
		t.Errorf("SELECT *: %v\n%s", err, out)
	}

	// pgx: extended protocol, binary where it can, the statement cache
	// (executions without a RowDescription on the wire).
	cmd := testenv.Helper("pgxmask", fmt.Sprintf("postgres://legacy_script@%s/%s?sslmode=disable", f.target, f.pg.Database))
	testenv.InCgroup(t, cmd, f.cg)
	var viaPgx map[string]any
	testenv.RunJSON(t, cmd, &viaPgx)
	if viaPgx["error"] != nil {
		t.Errorf("pgx: %v", viaPgx)
	}
	for _, k := range []string{"prepared", "cached", "described"} {
		want := []any{"Ada Lovelace", "****@analytical.example", "**** **** **** 1111", tokens[0]}
		if got, _ := viaPgx[k].([]any); !slices.Equal(got, want) {
			t.Errorf("pgx %s = %v; want %v", k, viaPgx[k], want)
		}
	}

	f.stop(syscall.SIGTERM)
	agentLog := f.logs.String()

	// The journal: a masking record after each masked statement, with
	// counts and digests that match what was sent and the originals.
	keyPath := filepath.Join(f.dir, "state", "mask.key")
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mask key %s: %v %v; want a 0600 file", keyPath, fi, err)
	}
	key, err := mask.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	masker := mask.NewMasker(key)
	hash, err := mask.NewMethod(mask.MethodHash, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range customers {
		tok, _, err := masker.Mask(nil, hash, mask.Column{TypeOID: pgtype.TextOID}, []byte(c.ssn))
		if err != nil || i >= len(tokens) || string(tok) != tokens[i] {
			t.Errorf("ssn token of row %d = %v; want HMAC under state_dir/mask.key %s (%v)", i+1, tokens, tok, err)
		}
	}

	recs := f.journal()
	bySeq := map[uint64]audit.Record{}
	masking := map[string]maskedRecord{} // by the statement's SQL
	for _, r := range recs {
		bySeq[r.Seq] = r
		if r.Type != "masking" {
			continue
		}
		var m maskedRecord
		if err := json.Unmarshal(r.Data, &m); err != nil {
			t.Fatalf("masking record %s: %v", r.Data, err)
		}
		st, ok := bySeq[m.Statement]
		if !ok || st.Type != "statement" || st.Seq >= r.Seq {
			t.Errorf("masking record %d names statement %d, which is not an earlier statement record", r.Seq, m.Statement)
			continue
		}
		d := recordData(t, st)
		if d["session"] != m.Session || d["allow"] != true {
			t.Errorf("masking record %d: statement %v", r.Seq, d)
		}
		masking[d["sql"].(string)] = m
	}
	wantCols := []string{"public.customers.card", "public.customers.email", "public.customers.ssn"}
	for _, sql := range []string{selectSQL, copySQL} {
		m, ok := masking[sql]
		if !ok {
			t.Errorf("no masking record for %q", sql)
			continue
		}
		if m.Values != 6 || !slices.Equal(m.Columns, wantCols) || m.PerColumn["public.customers.email"] != 2 ||
			!hex64.MatchString(m.OriginalsHMAC) || !hex64.MatchString(m.MaskedSHA256) {
			t.Errorf("masking record of %q = %+v", sql, m)
		}
	}
	// The digests are of these originals and of what psql received.
	if m, ok := masking[selectSQL]; ok && len(tokens) == 2 {
		ev := masker.NewEvidence()
		for i, c := range customers {
			ev.Add("public.customers.email", []byte(c.email), []byte(wantMasked[i][2]))
			ev.Add("public.customers.card", []byte(c.card), []byte(wantMasked[i][3]))
			ev.Add("public.customers.ssn", []byte(c.ssn), []byte(tokens[i]))
		}
		sum := ev.Summary()
		if m.OriginalsHMAC != sum.OriginalsHMAC || m.MaskedSHA256 != sum.MaskedSHA256 {
			t.Errorf("masking record digests %s / %s; want %s / %s (keyed digest of the originals, digest of what was sent)",
				m.OriginalsHMAC, m.MaskedSHA256, sum.OriginalsHMAC, sum.MaskedSHA256)
		}
	}

	// No original anywhere in the agent's files or its log.
	assertNoOriginals(t, f.dir, agentLog)

	// The key persists: the same tokens after a restart.
	f.start()
	out, err = psql("SELECT ssn FROM customers ORDER BY id")
	if err != nil || !slices.Equal(lines(out), tokens) {
		t.Errorf("ssn tokens after a restart: %v %q; want %q", err, out, tokens)
	}
	if k2, err := os.ReadFile(keyPath); err != nil || !bytes.Equal(bytes.TrimSpace(k2), []byte(hex.EncodeToString(key))) {
		t.Errorf("mask key changed across the restart")
	}
	f.stop(syscall.SIGTERM)
	assertNoOriginals(t, f.dir, f.logs.String())
}

// A whole-row reference carries every column, masked ones included: with
// no classifier it can only be denied (l7/postgres/masking.go says so).
func TestMaskingWholeRowReferenceDenied(t *testing.T) {
	f := newMaskingPG(t)
	for _, sql := range []string{"SELECT c FROM customers c", "SELECT customers FROM customers", "SELECT row_to_json(c) FROM customers c"} {
		out, err := f.psqlMasked(sql)
		leaked := false
		for _, o := range originals() {
			leaked = leaked || strings.Contains(out, o)
		}
		if err == nil || leaked || !strings.Contains(out, "42501") {
			t.Errorf("%s: %v\n%s; want 42501 and no original", sql, err, out)
		}
	}
}

// A statement whose result is not masked but whose error quotes a masked
// value: neither the client nor the journal may see the value.
func TestMaskingErrorDoesNotRevealMaskedValue(t *testing.T) {
	f := newMaskingPG(t)
	out, err := f.psqlMasked("SELECT id FROM customers WHERE email::int = 0")
	t.Logf("client saw: %v: %s", err, out)
	for _, o := range originals() {
		if strings.Contains(out, o) {
			t.Errorf("the client got the original %q through an error message", o)
		}
	}
	f.stop(syscall.SIGTERM)
	assertNoOriginals(t, f.dir, f.logs.String())
}

// assertNoOriginals fails if an original value is in any regular file
// under dir (config, policy, state: journal, keys, everything) or in log.
func assertNoOriginals(t *testing.T, dir, log string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, o := range originals() {
			if bytes.Contains(data, []byte(o)) {
				rel, _ := filepath.Rel(dir, path)
				i := bytes.Index(data, []byte(o))
				lo, hi := max(0, i-120), min(len(data), i+len(o)+40)
				t.Errorf("original %q is in %s: …%s…", o, rel, data[lo:hi])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("walked only %d files under %s", files, dir)
	}
	for _, o := range originals() {
		if strings.Contains(log, o) {
			t.Errorf("original %q is in the agent's log", o)
		}
	}
}

func lines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}
