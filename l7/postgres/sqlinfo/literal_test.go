package sqlinfo

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// literalCorpus holds statements rich in literals and comments, and the
// statements whose facts or syntax a literal could decide, on top of the
// other tests' SQL (see corpus).
var literalCorpus = []string{
	"SELECT abalance FROM pgbench_accounts WHERE aid = 81234;",
	"SELECT abalance FROM pgbench_accounts WHERE aid = 81234",
	"  SELECT 1 ;  ",
	";; SELECT 'a' ;; ",
	"/* lead */ SELECT x FROM t WHERE a = 'q' /* trail */ ;",
	"-- lead\nSELECT x FROM t WHERE a = 'q' -- trail",
	"SELECT * FROM t WHERE id = 1 /*traceparent='00-abc-01',route='/x'*/",
	"SELECT * FROM t WHERE a IN (1, 2.5, 'x', E'y', $$z$$, B'1', X'f', U&'u', N'n') -- tail",
	"INSERT INTO t (a, b, c) VALUES (1, 'two', 3.0), (4, $q$five$q$, 6e0) RETURNING *",
	"UPDATE t SET a = 'x', b = 2 WHERE id = 3",
	"DELETE FROM t WHERE ts < now() - interval '7 days'",
	"SELECT DATE '2020-01-01', TIMESTAMP '2020-01-01 00:00', 'x'::regclass, CAST('5' AS int), '{1,2}'::int[]",
	"SELECT interval '1' second(3), TIMESTAMP(3) '2020-01-01', char(5) 'x', bit(3) B'101', interval(2) '1s'",
	"SELECT set_config('search_path', 'evil', false)",
	"SELECT nextval('seq'), currval('public.seq'), 'users'::regclass",
	"SET application_name = 'app'",
	"SET statement_timeout = 5000",
	"SET TIME ZONE 'UTC'",
	"SET search_path = 'a', 'b'",
	"SET LOCAL x = 1.5",
	"SET x TO 'y'",
	"SET ROLE 'admin'",
	"SELECT * FROM t LIMIT 10 OFFSET 20",
	"SELECT * FROM t ORDER BY 1 FETCH FIRST 5 ROWS ONLY",
	"SELECT a, count(*) FROM t GROUP BY 1 ORDER BY 2 DESC",
	"FETCH 5 FROM c",
	"MOVE FORWARD 3 IN c",
	"COPY t TO '/tmp/x'",
	"COPY t TO ''",
	"COPY t FROM PROGRAM 'cat /tmp/x'",
	"COPY t TO STDOUT (FORMAT 'csv', DELIMITER ';')",
	"EXPLAIN (ANALYZE 'off') DELETE FROM t",
	"EXPLAIN (ANALYZE 'on') DELETE FROM t",
	"EXPLAIN (ANALYZE 0) DELETE FROM t",
	"EXPLAIN (ANALYZE 1) DELETE FROM t",
	"EXPLAIN (ANALYZE 1.5) DELETE FROM t",
	"EXPLAIN (ANALYZE 0, FORMAT 'json') SELECT * FROM t WHERE a = 1",
	"SELECT 1::float(5), 2::float(53)",
	"SELECT 1::numeric(10, 2), 'a'::varchar(5), current_time(3)",
	"CREATE TABLE t (a varchar(20) DEFAULT 'x', b numeric(5,2) CHECK (b > 0), c int[3])",
	"ALTER SEQUENCE s INCREMENT BY 5",
	"CREATE SEQUENCE s START 1",
	"SELECT json_value('{}', '$.a')",
	"SELECT * FROM JSON_TABLE('[]'::jsonb, '$[*]' COLUMNS (a int PATH '$.a')) jt",
	"SELECT * FROM t TABLESAMPLE BERNOULLI (10) REPEATABLE (5)",
	"SELECT 'a' FROM t",
	`SELECT "a" FROM t`,
	"SELECT $$a$$ FROM t",
	"SELECT $a$ $a$ FROM t",
	"PREPARE TRANSACTION 'x'",
	"COMMIT PREPARED 'x'",
	"NOTIFY ch, 'payload'",
	"DO $$ BEGIN DELETE FROM t; END $$",
	"CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
	"SELECT EXTRACT('year' FROM d) FROM t",
	"SELECT 1; SELECT 2",
	"SELECT 'a'; SELECT 'b';",
	"SELECT x FROM t WHERE a = 5 FOR UPDATE",
	"VALUES (1, 'a'), (2, 'b')",
	"SELECT * FROM t WHERE a LIKE 'x%' ESCAPE '!'",
	`SELECT 'x' COLLATE "C"`,
	"SELECT (ARRAY[1,2,3])[1:2], a[1:2] FROM t",
	"SELECT 'a' || 'b' -- comment with 'quote'\n FROM t",
	"SELECT /* 'x' */ 1",
	"SELECT 1.5e3, 2147483647, 2147483648, 0, 00012, .5, 5., 1E-5",
	"CALL p(1, 'x')",
	"EXECUTE q(1, 'x')",
	"SELECT * FROM t WHERE a = 1 AND b = 'x' AND c BETWEEN 1 AND 10",
	"ALTER TABLE t ALTER COLUMN c SET DEFAULT 5",
	"ALTER TABLE t ALTER COLUMN c SET STATISTICS 100",
	"CREATE INDEX ON t (a) WHERE b > 5",
	"CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (1) TO (10)",
	"CREATE TABLE p1 PARTITION OF p FOR VALUES WITH (MODULUS 4, REMAINDER 0)",
	"COMMENT ON TABLE t IS 'x'",
	"SELECT xmlelement(name foo, 'bar')",
	`SELECT 'a' AS "x", 1 "y"`,
	"RESET x",
	"SELECT pg_sleep(0.5)",
	"WITH t AS (SELECT 1 AS a) SELECT a FROM t WHERE a = 1",
	"SELECT 1 FROM t WHERE x = $1 AND y = 'z'",
	"SELECT 1 FROM t WHERE x = - 5",
	"SELECT 1 FROM t WHERE x = 3 - 5",
	"SELECT 1 FROM t WHERE x = -5",
	"SELECT E'a\\'b', E'\\\\', e'x''y' FROM t",
	"SELECT U&'d!0061t' UESCAPE '!'",
	`SELECT U&"a" FROM t`,
	"SELECT 'a'\n'b'",
	"SELECT 'a' 'b'",
	"SELECT 1 -- no newline at the end",
	"SELECT 1 /* a /* nested */ comment */ + 2",
	"SELECT 1 --\r+ 2",
	"INSERT INTO t VALUES ('a;b') ; ",
	"LOCK TABLE t IN ACCESS SHARE MODE",
	"GRANT SELECT ON t TO bob",
	"CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (START WITH 10))",
	"SELECT * FROM t WHERE ts > now() - '1 hour'::interval AND s = ANY('{a,b}')",
	"SELECT $é$x$é$, $_$y$_$ FROM t",
	"SELECT 'é', 'ü' FROM \"ü\"",
	"SELECT 1 WHERE 'a' = 'b' OR 5 > 3",
	"SELECT CASE WHEN a = 1 THEN 'x' ELSE 'y' END FROM t",
	"SELECT xmlparse(document '<a/>')",
	"SELECT * FROM t WHERE id = 1 AND name = 'O''Brien' /* q */",
	"SELECT * FROM t WHERE id = 1e400",
	"SELECT 99999999999999999999999999999999999999",
}

// literalSamples replace literals: of every kind, and lengths, with quotes,
// semicolons, comment markers, dollars and newlines inside, and some that
// are no literal or not one that normalize accepts.
var literalSamples = []string{
	"0", "7", "42", "007", "2147483647", "2147483648", "99999999999999999999",
	"1.5", ".5", "5.", "1e5", "1E-5", "1.5e+10", "0.0",
	"''", "'x'", "'it''s'", "';'", "'--'", "'/*'", "'*/'", "'$$'", "'\n;\n'", `'"'`, "'é'", `'\'`, "'a''b''c'",
	"'" + strings.Repeat("long ", 50) + "'", "'; DROP TABLE t; --'",
	"E''", `E'\''`, `E'\\'`, `E'a\nb'`, "e'x''y'", `E'\'; DROP TABLE t; --'`, `E'\t'`,
	"$$$$", "$$x$$", "$a$ $$ ' ; $a$", "$_$\n$_$", "$é$x$é$", "$$;DELETE FROM t$$",
	"B''", "B'0101'", "b'1'", "X'ff'", "x'0A1b'", "X''",
	"U&'x'", "u&'d''e'",
	// Not (accepted) literals.
	"N'x'", "-5", "- 5", "1..2", "1.e", "'unterminated", "$1", "NULL", "TRUE", "'a' 'b'", "'a'\n'b'",
	`E'\x41'`, `E'\101'`, `E'\u0041'`, `U&'\0041'`, "B'012'", "X'fg'", "1_000", "0x1F", `"a"`,
	"5; DROP TABLE t", "(SELECT 1)", "1 -- x", "'x'::int", "1abc", "$$x", "'x' || 'y'", "",
}

// commentSamples replace comments.
var commentSamples = []string{
	"/**/", "/* ' */", "/* /* nested */ */", "-- ;", "--", "/* */ /* */", "-- '", "/* $$ */", "/*", "-- x\nDROP TABLE t",
}

// corpus is every SQL text of the package's tests.
func corpus() []string {
	var out []string
	for _, tt := range analyzeTests {
		out = append(out, tt.sql)
	}
	out = append(out, lexerCases...)
	for _, bs := range benchStatements {
		out = append(out, bs.sql)
	}
	out = append(out, "SELECT 1;  INSERT INTO t VALUES ('a;b') ;\n/* c; */ DELETE FROM u -- bye;\n; ;SELECT 'é' FROM \"ü\";SELECT $$;$$")
	out = append(out, literalCorpus...)
	return out
}

// scanHoles returns the literals and comments PostgreSQL's scanner finds in
// sql, as holes.
func scanHoles(sql string) ([]hole, error) {
	res, err := pg_query.Scan(sql)
	if err != nil {
		return nil, err
	}
	var holes []hole
	for _, tok := range res.GetTokens() {
		h := hole{start: int(tok.GetStart()), end: int(tok.GetEnd())}
		switch tok.GetToken() {
		case pg_query.Token_ICONST:
			h.kind = holeInt
		case pg_query.Token_FCONST:
			h.kind = holeNumeric
		case pg_query.Token_SCONST:
			switch sql[h.start] {
			case '\'':
				h.kind = holeString
			case 'e', 'E':
				h.kind = holeEscape
			case '$':
				h.kind = holeDollar
			}
		case pg_query.Token_USCONST:
			h.kind = holeUnicode
		case pg_query.Token_BCONST:
			h.kind = holeBits
		case pg_query.Token_XCONST:
			h.kind = holeHex
		case pg_query.Token_SQL_COMMENT:
			h.kind = holeLine
		case pg_query.Token_C_COMMENT:
			h.kind = holeBlock
		default:
			continue
		}
		holes = append(holes, h)
	}
	return holes, nil
}

// checkAgainstScanner fails t if normalize accepts sql but PostgreSQL's
// scanner refuses it, or finds other literals or comments.
func checkAgainstScanner(t *testing.T, sql string) {
	t.Helper()
	n := &normalized{}
	if !normalize(sql, n) {
		return
	}
	want, err := scanHoles(sql)
	if err != nil {
		t.Errorf("normalize accepts %q, PostgreSQL's scanner refuses it: %v", sql, err)
		return
	}
	if len(n.holes) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(n.holes, want) {
		t.Errorf("holes of %q:\n normalize %v\n scanner   %v", sql, n.holes, want)
	}
}

// variants returns sql with its holes replaced by other literals and
// comments: each hole by each sample in turn, and all at once by samples of
// the same kind.
func variants(sql string, n *normalized, rng *rand.Rand) []string {
	var out []string
	replace := func(i int, with string) string {
		h := n.holes[i]
		return sql[:h.start] + with + sql[h.end:]
	}
	for i, h := range n.holes {
		samples := literalSamples
		if holeClass(h.kind) == classComment {
			samples = commentSamples
		}
		for _, s := range samples {
			out = append(out, replace(i, s))
		}
	}
	byKind := map[byte][]string{}
	for _, s := range literalSamples {
		var m normalized
		if normalize(s, &m) && len(m.holes) == 1 && m.holes[0].start == 0 && m.holes[0].end == len(s) {
			byKind[m.holes[0].kind] = append(byKind[m.holes[0].kind], s)
		}
	}
	for _, s := range commentSamples {
		var m normalized
		if normalize(s, &m) && len(m.holes) == 1 && m.holes[0].start == 0 && m.holes[0].end == len(s) {
			byKind[m.holes[0].kind] = append(byKind[m.holes[0].kind], s)
		}
	}
	for range 8 {
		var b strings.Builder
		prev := 0
		for _, h := range n.holes {
			b.WriteString(sql[prev:h.start])
			if same := byKind[h.kind]; len(same) > 0 {
				b.WriteString(same[rng.IntN(len(same))])
			} else {
				b.WriteString(sql[h.start:h.end])
			}
			prev = h.end
		}
		b.WriteString(sql[prev:])
		out = append(out, b.String())
	}
	return out
}

// sameResult fails t unless the cached analysis equals the fresh one.
func sameResult(t *testing.T, primed, sql string, got []Statement, gotErr error) bool {
	t.Helper()
	want, wantErr := Analyze(sql)
	return equalResult(t, primed, sql, got, gotErr, want, wantErr)
}

func equalResult(t *testing.T, primed, sql string, got []Statement, gotErr error, want []Statement, wantErr error) bool {
	t.Helper()
	if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
		t.Errorf("primed with %q, Analyze(%q) error = %v, fresh %v", primed, sql, gotErr, wantErr)
		return false
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("primed with %q, Analyze(%q) =\n %+v\nfresh\n %+v", primed, sql, got, want)
		return false
	}
	return true
}

func TestNormalizeMatchesScanner(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sql := range corpus() {
		checkAgainstScanner(t, sql)
		n := &normalized{}
		if normalize(sql, n) {
			for _, v := range variants(sql, n, rng) {
				checkAgainstScanner(t, v)
			}
		}
	}
	for _, s := range append(append([]string{}, literalSamples...), commentSamples...) {
		checkAgainstScanner(t, s)
		checkAgainstScanner(t, "SELECT "+s)
		checkAgainstScanner(t, "SELECT "+s+" FROM t")
		checkAgainstScanner(t, "SELECT x"+s)
		checkAgainstScanner(t, "SELECT 1"+s)
		checkAgainstScanner(t, "SELECT $1"+s)
		checkAgainstScanner(t, "SELECT a."+s)
		checkAgainstScanner(t, "SELECT "+s+"x")
		checkAgainstScanner(t, "SELECT "+s+"::text")
		checkAgainstScanner(t, "SELECT "+s+".5")
		checkAgainstScanner(t, "SELECT "+s+"\n'x'")
	}
}

// TestLiteralCacheEquivalence is the differential test: for every text of
// the corpus and many variants of it, an Analyzer primed with the text
// answers the variant exactly as a fresh analysis does, and so does one
// primed with the variant for the text.
func TestLiteralCacheEquivalence(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var checked, hits uint64
	for _, sql := range corpus() {
		n := &normalized{}
		if !normalize(sql, n) || len(n.holes) == 0 {
			continue
		}
		want, wantErr := Analyze(sql)
		primed := NewAnalyzer(Limits{}, 1024)
		primed.Analyze(sql)
		for _, v := range variants(sql, n, rng) {
			checked++
			got, err := primed.Analyze(v)
			if !sameResult(t, sql, v, got, err) {
				continue
			}
			// The other way round, with a fresh Analyzer, for the variants
			// that share the key.
			if m := (&normalized{}); normalize(v, m) && string(m.key) == string(n.key) {
				back := NewAnalyzer(Limits{}, 16)
				back.Analyze(v)
				got, err = back.Analyze(sql)
				equalResult(t, v, sql, got, err, want, wantErr)
				hits += back.Stats().LiteralHits
			}
		}
		hits += primed.Stats().LiteralHits
	}
	t.Logf("%d variants, %d literal cache hits", checked, hits)
	if hits < 1000 {
		t.Errorf("only %d literal cache hits in %d variants: the test checks too little", hits, checked)
	}
}

// TestLiteralCacheAdversarial primes an Analyzer with one text of each pair
// and analyzes the other: texts built to share a key, or to be read apart
// by a lexer that is slightly wrong. Several pairs do share a key but get no
// template (the literal is no constant). The keys that must differ are in
// TestNormalizeKeys.
func TestLiteralCacheAdversarial(t *testing.T) {
	for _, pair := range [][2]string{
		{"SELECT 'a' FROM t", `SELECT "a" FROM t`},
		{"SELECT $$a$$ FROM t", "SELECT $a$ FROM t"},
		{"SELECT $$a$$ FROM t", "SELECT $a$ FROM t $a$ FROM t"},
		{"SELECT 'a' FROM t", `SELECT E'\'' FROM t`},
		{`SELECT E'\'' FROM t`, `SELECT E'\\' FROM t`},
		{`SELECT E'\\' FROM t`, `SELECT E'\\'' FROM t'`},
		{`SELECT 'a\' FROM t`, `SELECT 'a\' FROM t WHERE '\' = ''`},
		{"SELECT 1.5 FROM t", "SELECT 1.e FROM t"},
		{"SELECT 1 FROM t", "SELECT 1..2 FROM t"},
		{"SELECT 1 FROM t", "SELECT 1e FROM t"},
		{"SELECT 1 FROM t", "SELECT 1abc FROM t"},
		{"SELECT 1 FROM t", "SELECT 2147483648 FROM t"},
		{"FETCH 1 FROM c", "FETCH 2147483648 FROM c"},
		{"SELECT 1 FROM t", "SELECT $1 FROM t"},
		{"SELECT 'x' FROM t WHERE a = $1", "SELECT 'y' FROM t WHERE a = $2"},
		{"SELECT 1 /* ' */ FROM t", "SELECT 1 /* */ ' */ FROM t"},
		{"SELECT 1 -- '\nFROM t", "SELECT 1 -- \n' FROM t"},
		{"SELECT 'a -- b' FROM t", "SELECT 'a' -- b' FROM t"},
		{"SELECT 'a /* b' FROM t", "SELECT 'a' /* b' FROM t */"},
		{"SELECT 'a;b' FROM t", "SELECT 'a'; SELECT 'b' FROM t"},
		{"SELECT 'a' FROM t", "SELECT 'a'\n'b' FROM t"},
		{"SELECT 'a' FROM t", "SELECT 'a' 'b' FROM t"},
		{"SELECT B'01' FROM t", "SELECT B'0''1' FROM t"},
		{"SELECT X'01' FROM t", "SELECT X'0''1' FROM t"},
		{"SELECT U&'a' FROM t", `SELECT U&'\0061' FROM t`},
		{"SELECT U&'a' FROM t", "SELECT U&'!0061' UESCAPE '!' FROM t"},
		{"SELECT N'a' FROM t", "SELECT N'b' FROM t"},
		{"SELECT 'x'::regclass", "SELECT 'y'::regclass"},
		{"EXPLAIN (ANALYZE 'off') DELETE FROM t", "EXPLAIN (ANALYZE 'on') DELETE FROM t"},
		{"EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t"},
		{"COPY t TO '/tmp/x'", "COPY t TO ''"},
		{"SELECT 1::float(5)", "SELECT 1::float(0)"},
		{"SELECT 1::float(5)", "SELECT 1::float(54)"},
		{"SELECT 1 FROM t WHERE a = 5", "SELECT 1 FROM t WHERE a = -5"},
		{"SELECT 1 FROM t WHERE a = - 5", "SELECT 1 FROM t WHERE a = - 2147483648"},
		{"SELECT 1 FROM t LIMIT 5", "SELECT 1 FROM t LIMIT 5.5"},
		{"SELECT E'a' FROM t", `SELECT E'\u0000' FROM t`},
		{"SELECT E'a' FROM t", `SELECT E'\xff' FROM t`},
		{"SELECT E'a' FROM t", `SELECT E'\0' FROM t`},
		{"SELECT 'a' FROM t", "SELECT 'a' FROM t; SELECT 'b' FROM u"},
		{"SELECT 'a' FROM t;", "SELECT 'a;' FROM t;"},
		{"SELECT 1 FROM t /* x */", "SELECT 1 FROM t /* x /* y */"},
		{"SELECT 1 FROM t /* x */", "SELECT 1 FROM t /* */ x */"},
		{"SELECT 1 FROM t -- x", "SELECT 1 FROM t -- x\n; DROP TABLE t"},
		{"SELECT :'x' FROM t", "SELECT :'y' FROM t"},
		{"SELECT 1 FROM t", "SELECT 1 FROM t\x00"},
		{"SELECT 'é' FROM t", "SELECT '\xe9' FROM t"},
		{"SELECT 'a' FROM t", "SELECT '" + strings.Repeat("(", 2000) + "' FROM t"},
		{"SELECT 0x1 FROM t", "SELECT 0x2 FROM t"},
		{"SELECT 1_0 FROM t", "SELECT 1_1 FROM t"},
		{"SELECT 1 FROM t WHERE a = 1", "SELECT 1 FROM t WHERE a = 1 -- x\r; DROP TABLE t"},
	} {
		for _, p := range [][2]string{pair, {pair[1], pair[0]}} {
			a := NewAnalyzer(Limits{}, 16)
			a.Analyze(p[0])
			got, err := a.Analyze(p[1])
			sameResult(t, p[0], p[1], got, err)
		}
	}
}

func TestNormalizeRefuses(t *testing.T) {
	for _, sql := range []string{
		"SELECT 'unterminated", "SELECT E'unterminated\\'", `SELECT "unterminated`, "SELECT $$unterminated",
		"SELECT 1 /* unterminated", "SELECT 1 /* /* */", `SELECT ""`,
		`SELECT U&"a!0061" UESCAPE '!'`, `SELECT U&'a!0061' UESCAPE '!'`, `SELECT U&'\0061'`,
		"SELECT :'x'", `SELECT :"x"`, "SELECT 1_000", "SELECT 0x1F", "SELECT 0o17", "SELECT 0b1", "SELECT -5", "SELECT 3-5",
		"SELECT 1.e", "SELECT 1e", "SELECT 1e+", "SELECT 1..2", "SELECT ..5", "SELECT 1.5.3", "SELECT 1abc",
		"SELECT 1$", "SELECT 'a'b", "SELECT $$a$$b", "SELECT 'a'\n'b'", "SELECT 'a' -- c\n'b'", "SELECT 'a' /* c */ 'b'",
		"SELECT 'a''", "SELECT B'0''1'", "SELECT B'012'", "SELECT X'fg'", `SELECT E'\x41'`, `SELECT E'\101'`,
		`SELECT E'\u0041'`, `SELECT E'\U00000041'`, "SELECT E'\\\xc3\xa9'", "SELECT $1abc", "SELECT $", "SELECT \\x",
		"SELECT \x01 1", "SELECT 1\x00", "SELECT \x7f",
	} {
		if n := (&normalized{}); normalize(sql, n) {
			t.Errorf("normalize accepts %q: key %q", sql, n.key)
		}
	}
}

func TestNormalizeKeys(t *testing.T) {
	key := func(sql string) string {
		n := &normalized{}
		if !normalize(sql, n) {
			t.Fatalf("normalize refuses %q", sql)
		}
		return string(n.key)
	}
	for _, tt := range []struct {
		sql, key string
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 81234;", "SELECT abalance FROM pgbench_accounts WHERE aid = \x00i;"},
		{"SELECT 2147483648, 1.5, .5e3", "SELECT \x00f, \x00f, \x00f"},
		{"SELECT 'a', E'b', $$c$$, B'1', X'f', U&'u', N'n'", "SELECT \x00s, \x00e, \x00d, \x00b, \x00x, \x00u, N\x00s"},
		{"SELECT 1 -- c\n/* d */", "SELECT \x00i \x00-\n\x00/"},
		{`SELECT "a", $1, a$$b, x[1:2] FROM t`, `SELECT "a", $1, a$$b, x[` + "\x00i:\x00i" + `] FROM t`},
		{"SELECT - 5, 3 - 5", "SELECT - \x00i, \x00i - \x00i"},
	} {
		if got := key(tt.sql); got != tt.key {
			t.Errorf("key of %q = %q, want %q", tt.sql, got, tt.key)
		}
	}
	for _, same := range [][2]string{
		{"SELECT 1 FROM t WHERE a = 5 AND b = 'x'", "SELECT 2 FROM t WHERE a = 7 AND b = 'it''s; DROP TABLE t'"},
		{"SELECT 1 /* a */", "SELECT 1000 /* 'b' */"},
		{"SELECT $$x$$", "SELECT $q$ $$ $q$"},
	} {
		if key(same[0]) != key(same[1]) {
			t.Errorf("%q and %q have different keys", same[0], same[1])
		}
	}
	for _, differ := range [][2]string{
		{"SELECT 1", "SELECT 1.0"},
		{"SELECT 1", "SELECT 2147483648"},
		{"SELECT 1", "SELECT '1'"},
		{"SELECT 'a'", "SELECT E'a'"},
		{"SELECT 'a'", "SELECT $$a$$"},
		{"SELECT 'a'", `SELECT "a"`},
		{"SELECT B'1'", "SELECT X'1'"},
		{"SELECT 1 /* c */", "SELECT 1 -- c"},
		{"SELECT 1", "SELECT  1"},
		{"SELECT 1 FROM t", "SELECT 1 FROM u"},
		{"SELECT 1 FROM t", "select 1 from t"},
	} {
		if key(differ[0]) == key(differ[1]) {
			t.Errorf("%q and %q share a key", differ[0], differ[1])
		}
	}
}

// TestLiteralCacheTemplates checks which texts the literal cache answers.
func TestLiteralCacheTemplates(t *testing.T) {
	for _, tt := range []struct {
		sql, variant string
		hit          bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 81234;", "SELECT abalance FROM pgbench_accounts WHERE aid = 7;", true},
		{"SELECT 1 /* a */", "SELECT 2 /* bb */", true},
		{"SELECT now() -- trace=1", "SELECT now() -- trace=22", true},
		{"SET application_name = 'a'", "SET application_name = 'bb'", true},
		{"SELECT set_config('a', 'b', false)", "SELECT set_config('c', 'd', false)", true},
		{"SELECT 1::numeric(10, 2)", "SELECT 2::numeric(12, 4)", true},
		{"SELECT DATE '2020-01-01', interval '1 day', 'x'::regclass", "SELECT DATE '2021-01-01', interval '2 days', 'y'::regclass", true},
		{"SELECT x FROM t WHERE a = 3 - 5", "SELECT x FROM t WHERE a = 4 - 6", true},
		// Literals that do not become constants.
		{"SELECT 1 FROM t WHERE a = - 5", "SELECT 1 FROM t WHERE a = - 6", false},
		{"COPY t TO '/tmp/a'", "COPY t TO '/tmp/b'", false},
		{"EXPLAIN (ANALYZE 'off') DELETE FROM t", "EXPLAIN (ANALYZE 'on') DELETE FROM t", false},
		{"EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t", false},
		{"FETCH 5 FROM c", "FETCH 6 FROM c", false},
		{"SELECT 1::float(5)", "SELECT 1::float(6)", false},
		{"SELECT current_time(3)", "SELECT current_time(4)", false},
		{"NOTIFY ch, 'a'", "NOTIFY ch, 'b'", false},
		{"COMMENT ON TABLE t IS 'a'", "COMMENT ON TABLE t IS 'b'", false},
		{"CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql", "CREATE FUNCTION f() RETURNS int AS 'SELECT 2' LANGUAGE sql", false},
		{"ALTER SEQUENCE s INCREMENT BY 5", "ALTER SEQUENCE s INCREMENT BY 6", false},
		// Not one statement.
		{"SELECT 1; SELECT 2", "SELECT 3; SELECT 4", false},
		{"-- nothing", "-- else", false},
		// Not normalizable.
		{"SELECT 1 FROM t WHERE a = -5", "SELECT 1 FROM t WHERE a = -6", false},
	} {
		a := NewAnalyzer(Limits{}, 16)
		a.Analyze(tt.sql)
		got, err := a.Analyze(tt.variant)
		sameResult(t, tt.sql, tt.variant, got, err)
		if hit := a.Stats().LiteralHits == 1; hit != tt.hit {
			t.Errorf("primed with %q, %q: literal cache hit = %v, want %v", tt.sql, tt.variant, hit, tt.hit)
		}
	}
}

func TestLiteralCacheStatsAndBounds(t *testing.T) {
	a := NewAnalyzer(Limits{}, 4) // 4 entries, 16 KiB per cache
	for i := range 10 {
		if _, err := a.Analyze(fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats(); s.LiteralHits != 9 || s.Misses != 1 || s.Entries != 1 || s.LiteralEntries != 1 || s.Hits != 0 {
		t.Errorf("Stats = %+v, want 9 literal hits of 1 template, 1 miss", s)
	}
	// Distinct keys: at most 4 are kept, and at most 16 KiB of them.
	pad := strings.Repeat("x", 6<<10)
	for i := range 6 {
		if _, err := a.Analyze(fmt.Sprintf("SELECT %s%d, 1", pad, i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats(); s.LiteralEntries > 2 || s.LiteralBytes > 4*CacheEntryBytes {
		t.Errorf("Stats = %+v: want at most 2 keys of 6 KiB, %d bytes", s, 4*CacheEntryBytes)
	}
	for i := range 6 {
		a.Analyze(fmt.Sprintf("SELECT c%d, 1", i))
	}
	if s := a.Stats(); s.LiteralEntries != 4 {
		t.Errorf("Stats = %+v: want 4 keys", s)
	}
	// A long literal makes no long key.
	b := NewAnalyzer(Limits{}, 4)
	for i := range 3 {
		big := fmt.Sprintf("INSERT INTO t VALUES ('%s%d')", strings.Repeat("y", 20<<10), i)
		got, err := b.Analyze(big)
		sameResult(t, "", big, got, err)
	}
	if s := b.Stats(); s.LiteralHits != 2 || s.LiteralEntries != 1 || s.Entries != 0 {
		t.Errorf("Stats = %+v: want 2 literal hits, 1 key, no text (too large)", s)
	}
}

// TestLiteralCacheConcurrent races hits, templates and evictions of both
// caches (a small Analyzer for many keys) against each other.
func TestLiteralCacheConcurrent(t *testing.T) {
	var texts []string
	for i := range 40 {
		texts = append(texts, literalVariants["pgbench"][i], literalVariants["join3"][i])
		texts = append(texts, fmt.Sprintf("SELECT c%d FROM t WHERE a = %d /* %d */", i%5, i, i))
	}
	want := make(map[string][]Statement)
	for _, sql := range texts {
		st, err := Analyze(sql)
		if err != nil {
			t.Fatal(err)
		}
		want[sql] = st
	}
	a := NewAnalyzer(Limits{}, 4)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				sql := texts[(g*13+i*7)%len(texts)]
				got, err := a.Analyze(sql)
				if err != nil || !reflect.DeepEqual(got, want[sql]) {
					t.Errorf("%q: got %+v, %v; want %+v", sql, got, err, want[sql])
					return
				}
			}
		})
	}
	wg.Wait()
	if s := a.Stats(); s.LiteralHits == 0 || s.Hits+s.LiteralHits+s.Misses != 8*300 || s.LiteralEntries > 4 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestFactsIgnoreConstants changes every constant's value and location in
// the parse trees of the corpus: the facts describe derives must not change.
func TestFactsIgnoreConstants(t *testing.T) {
	var mutated int
	for _, sql := range corpus() {
		tree, err := pg_query.Parse(sql)
		if err != nil {
			continue
		}
		for _, raw := range tree.GetStmts() {
			want := describe(raw.GetStmt())
			mutated += mutateConsts(raw.GetStmt().ProtoReflect())
			if got := describe(raw.GetStmt()); !reflect.DeepEqual(got, want) {
				t.Errorf("%q: facts with other constants %+v, want %+v", sql, got, want)
			}
		}
	}
	if mutated < 100 {
		t.Errorf("only %d constants changed", mutated)
	}
}

// mutateConsts gives every A_Const under m with a value another value of
// its type and another location, and returns how many it changed.
func mutateConsts(m protoreflect.Message) int {
	if !m.IsValid() {
		return 0
	}
	if c, ok := m.Interface().(*pg_query.A_Const); ok {
		switch v := c.GetVal().(type) {
		case *pg_query.A_Const_Ival:
			v.Ival = &pg_query.Integer{Ival: v.Ival.GetIval() ^ 12345}
		case *pg_query.A_Const_Fval:
			v.Fval = &pg_query.Float{Fval: v.Fval.GetFval() + "9"}
		case *pg_query.A_Const_Sval:
			v.Sval = &pg_query.String{Sval: "off" + v.Sval.GetSval() + "/tmp/x"}
		case *pg_query.A_Const_Bsval:
			v.Bsval = &pg_query.BitString{Bsval: v.Bsval.GetBsval() + "1"}
		default:
			return 0
		}
		c.Location += 1000
		return 1
	}
	changed := 0
	for _, fd := range messageFields[m.Descriptor().FullName()] {
		if !m.Has(fd) {
			continue
		}
		if fd.IsList() {
			l := m.Get(fd).List()
			for i := 0; i < l.Len(); i++ {
				changed += mutateConsts(l.Get(i).Message())
			}
			continue
		}
		changed += mutateConsts(m.Get(fd).Message())
	}
	return changed
}

// shaped turns arbitrary text into a literal or comment of kind k, so that
// the fuzzer's replacements often keep the key.
func shaped(k byte, s string) string {
	switch k {
	case holeInt, holeNumeric:
		var b strings.Builder
		for i := 0; i < len(s) && b.Len() < 30; i++ {
			b.WriteByte('0' + s[i]%10)
		}
		if b.Len() == 0 {
			b.WriteByte('0')
		}
		if k == holeNumeric {
			b.WriteString(".5")
		}
		return b.String()
	case holeString:
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case holeEscape:
		return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
	case holeUnicode:
		return "U&'" + strings.NewReplacer(`\`, ``, `'`, `''`).Replace(s) + "'"
	case holeDollar:
		tag := "$q$"
		for i := 0; strings.Contains(s, tag[:len(tag)-1]); i++ {
			tag = fmt.Sprintf("$q%d$", i)
		}
		return tag + s + tag
	case holeBits, holeHex:
		var b strings.Builder
		b.WriteByte(k)
		b.WriteByte('\'')
		for i := 0; i < len(s); i++ {
			if k == holeBits {
				b.WriteByte('0' + s[i]&1)
			} else {
				b.WriteByte("0123456789abcdef"[s[i]&15])
			}
		}
		b.WriteByte('\'')
		return b.String()
	case holeLine:
		return "--" + strings.NewReplacer("\n", "", "\r", "").Replace(s)
	case holeBlock:
		return "/*" + strings.NewReplacer("*/", "", "/*", "").Replace(s) + "*/"
	}
	return s
}

// FuzzLiteralCache: normalize never panics; what it accepts PostgreSQL's
// scanner reads with the same literals and comments; and an Analyzer primed
// with a text answers a variant of it (one hole replaced, verbatim and
// shaped to the hole's kind) exactly as a fresh analysis does.
func FuzzLiteralCache(f *testing.F) {
	for i, sql := range corpus() {
		f.Add(sql, uint(i), literalSamples[i%len(literalSamples)])
	}
	f.Add("SELECT abalance FROM pgbench_accounts WHERE aid = 81234;", uint(0), "';--$$\n")
	f.Add("SELECT 'a' FROM t WHERE b = $$c$$ -- d", uint(1), "$$ FROM u; DELETE FROM t; SELECT $$")
	f.Add("SELECT E'a' /* b */ FROM t", uint(0), `\'; DROP TABLE t; --`)
	f.Fuzz(func(t *testing.T, sql string, which uint, repl string) {
		n := &normalized{}
		if !normalize(sql, n) {
			return
		}
		checkAgainstScanner(t, sql)
		if len(n.holes) == 0 {
			return
		}
		h := n.holes[which%uint(len(n.holes))]
		a := NewAnalyzer(Limits{}, 8)
		a.Analyze(sql)
		for _, r := range []string{repl, shaped(h.kind, repl)} {
			v := sql[:h.start] + r + sql[h.end:]
			got, err := a.Analyze(v)
			sameResult(t, sql, v, got, err)
		}
	})
}
