package sqlinfo

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The estimate must never be below the nesting it measures, or input could
// slip past the cap, and should not be far above it, or valid SQL would be
// refused.
func TestDepthEstimate(t *testing.T) {
	for kind, build := range nested {
		for _, n := range []int{10, 100, 1000} {
			sql := build(n)
			if !depthExceeds(sql, n-1) {
				t.Errorf("%s nested %d deep: estimate below %d", kind, n, n)
			}
			if depthExceeds(sql, n+1) {
				t.Errorf("%s nested %d deep: estimate above %d", kind, n, n+1)
			}
		}
	}
}

// treeDepth is how deeply the messages of a parse tree nest: what libpg_query's
// recursive output and fingerprint code pay C stack for (about 176 bytes per
// level: chains of UNION, one message deep per step, crash at 47,600 steps
// on an 8 MiB stack).
func treeDepth(m protoreflect.Message) int {
	deepest := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() != protoreflect.MessageKind:
		case fd.IsList():
			for i, l := 0, v.List(); i < l.Len(); i++ {
				deepest = max(deepest, treeDepth(l.Get(i).Message()))
			}
		default:
			deepest = max(deepest, treeDepth(v.Message()))
		}
		return true
	})
	return deepest + 1
}

// treeBound is the tree depth an estimate allows: a nested sub-select, the
// deepest construct per level found, is 6 messages deep per bracket.
func treeBound(estimate int) int { return 8*estimate + 32 }

// What the cap really limits is the parse tree's depth: it must stay within
// treeBound of the estimate, so that DefaultMaxDepth bounds it to about
// 8,000 messages (1.4 MiB of C stack, below Go's protobuf limit of 10,000).
func TestDepthEstimateBoundsTree(t *testing.T) {
	corpus := []string{}
	for _, build := range nested {
		corpus = append(corpus, build(1), build(100))
	}
	for _, tt := range analyzeTests {
		corpus = append(corpus, tt.sql)
	}
	for _, sql := range corpus {
		tree, err := pg_query.Parse(sql)
		if err != nil {
			t.Fatalf("%q: %v", sql, err)
		}
		est, depth := estimateDepth(sql, 1<<30), treeDepth(tree.ProtoReflect())
		if depth > treeBound(est) {
			t.Errorf("%q: tree %d deep, estimate %d allows %d", sql, depth, est, treeBound(est))
		}
	}
}

func TestDepthEstimateExamples(t *testing.T) {
	for _, tt := range []struct {
		sql   string
		depth int // the smallest max that accepts sql
	}{
		{"SELECT 1", 0},
		{"SELECT (1)", 1},
		{"SELECT ((1)), ((2))", 2},
		{"SELECT a + b * c", 2},
		{"SELECT a || b || c", 2},
		{"SELECT a +- b", 2},           // "+-" is read as "+" and "-"
		{"SELECT a -> 'k' ->> 'l'", 2}, // "->" and "->>" are one operator each
		{"SELECT * FROM t", 0},
		{"SELECT t.*, count(*) FROM t", 1},
		{"SELECT a * b FROM t", 1},
		{"SELECT 1 WHERE a = 1 AND b = 2 AND c = 3 OR d = 4", 1},
		{"SELECT x IN (1, 2, 3), y", 2},
		{"SELECT a BETWEEN 1 AND 2 IS NULL", 2},
		{"SELECT CASE WHEN a = 1 THEN b + 1 ELSE c END", 2},
		{"SELECT * FROM a JOIN b ON a.x = b.x JOIN c ON c.y = b.y", 4}, // ON ends no chain
		{"SELECT 1 UNION SELECT 2 UNION SELECT 3", 2},
		{"SELECT 1 + 1 + 1; SELECT 2", 2},
		{"SELECT '((((', \"((((\", $$((((($$, $q$(((($q$, E'\\'((((' -- ((((\n/* ( /* ( */ ( */", 0},
		{"SELECT a$$b, $1 + 1", 1}, // $ inside an identifier starts no dollar quote
	} {
		got := 0
		for depthExceeds(tt.sql, got) {
			got++
		}
		if got != tt.depth {
			t.Errorf("depth of %q = %d, want %d", tt.sql, got, tt.depth)
		}
	}
}

// lexerBrackets counts ( and [ outside strings, quoted identifiers and
// comments, as the depth estimate sees them.
func lexerBrackets(sql string) int {
	lx := lexer{s: sql}
	n := 0
	for {
		kind, text := lx.next()
		if kind == tokEOF {
			return n
		}
		if kind == tokPunct && (text == "(" || text == "[") {
			n++
		}
	}
}

// scannerBrackets counts them with PostgreSQL's own scanner.
func scannerBrackets(sql string) (int, bool) {
	res, err := pg_query.Scan(sql)
	if err != nil {
		return 0, false
	}
	n := 0
	for _, tok := range res.GetTokens() {
		if tok.GetToken() == pg_query.Token_ASCII_40 || tok.GetToken() == pg_query.Token_ASCII_91 {
			n++
		}
	}
	return n, true
}

// lexerCases are texts whose quoting the pre-scan must read as PostgreSQL
// does.
var lexerCases = []string{
	`SELECT '(', "(", $$($$, $a$ $$ ( $a$, E'\'(', E'''(', B'0', X'0F', N'(', U&'(' , U&"(" FROM t`,
	`SELECT 'it''s (' , "a""(" , 'x' '(' FROM t`,
	"SELECT 1 /* ( /* ( */ ( */ , 2 -- (\n, (3)",
	"SELECT 1 --\r(\n",
	"SELECT a$$b, c$d$e, $1, $12 FROM t WHERE x = $$a$$",
	"SELECT 1$$ ( $$",
	"SELECT $_$ ( $_$, $é$ ( $é$",
	"SELECT 1 +/* ( */ 2, 3 *-- (\n 4",
	"SELECT e'\\\\' || '(' , ee'(' FROM t",
	"SELECT ARRAY[1, (2)], a[1:2] FROM t",
	"SELECT 'a\\' , '(' FROM t",
}

func TestLexerMatchesScanner(t *testing.T) {
	corpus := append([]string{}, lexerCases...)
	for _, tt := range analyzeTests {
		corpus = append(corpus, tt.sql)
	}
	for _, sql := range corpus {
		want, ok := scannerBrackets(sql)
		if !ok {
			t.Errorf("PostgreSQL's scanner refuses %q", sql)
			continue
		}
		if got := lexerBrackets(sql); got != want {
			t.Errorf("brackets in %q: pre-scan sees %d, PostgreSQL %d", sql, got, want)
		}
	}
}

func BenchmarkDepthEstimate(b *testing.B) {
	sql := strings.Repeat("SELECT a.x + 1, (SELECT max(y) FROM b WHERE b.id = a.id) FROM a WHERE a.z IN (1, 2, 3); ", 10)
	b.SetBytes(int64(len(sql)))
	b.ReportAllocs()
	for b.Loop() {
		depthExceeds(sql, DefaultMaxDepth)
	}
}
