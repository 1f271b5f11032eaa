package sqlinfo

import (
	"errors"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// FuzzAnalyze: Analyze never panics (nor crashes the process), and either
// refuses the text with one of its errors or returns statements whose text
// is part of the input. For text it accepts, the depth pre-scan must have
// found the brackets PostgreSQL's scanner finds and its estimate must bound
// the parse tree's depth, or the cap could be bypassed.
func FuzzAnalyze(f *testing.F) {
	for _, tt := range analyzeTests {
		f.Add(tt.sql)
	}
	for _, sql := range lexerCases {
		f.Add(sql)
	}
	for _, build := range nested {
		f.Add(build(3))
	}
	f.Add("SELECT 1;  INSERT INTO t VALUES ('a;b') ;\n/* c; */ DELETE FROM u -- bye;\n; ;SELECT 'é'")
	f.Add("SELECT $a$ $$ $a$; SELECT E'\\'; SELECT 1 /* /* */ */; SELECT \"a\"\"b\" FROM x")
	f.Fuzz(func(t *testing.T, sql string) {
		stmts, err := Analyze(sql)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrTooDeep) && !errors.Is(err, ErrTooLarge) &&
				!errors.Is(err, ErrEncoding) {
				t.Fatalf("Analyze(%q): unexpected error %v", sql, err)
			}
			return
		}
		for _, st := range stmts {
			if st.SQL == "" || !strings.Contains(sql, st.SQL) {
				t.Fatalf("Analyze(%q): statement text %q is not part of the input", sql, st.SQL)
			}
			if len(st.Commands) == 0 || len(st.Fingerprint) != 16 || st.Tables == nil || st.Functions == nil {
				t.Fatalf("Analyze(%q): incomplete statement %+v", sql, st)
			}
		}
		if tree, err := pg_query.Parse(sql); err == nil {
			if est, depth := estimateDepth(sql, 1<<30), treeDepth(tree.ProtoReflect()); depth > treeBound(est) {
				t.Fatalf("%q: tree %d deep, estimate %d allows %d", sql, depth, est, treeBound(est))
			}
		}
		if want, ok := scannerBrackets(sql); ok {
			if got := lexerBrackets(sql); got != want {
				t.Fatalf("brackets in %q: pre-scan sees %d, PostgreSQL %d", sql, got, want)
			}
		}
	})
}
