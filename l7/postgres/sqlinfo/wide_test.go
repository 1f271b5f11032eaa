package sqlinfo

import (
	"fmt"
	"strings"
	"testing"
)

// wide builds statements near the byte limit that name many distinct
// things: their analysis must stay linear (a quadratic walk of 1 MiB would
// stall the agent).
func wide(n int) map[string]string {
	list := func(f func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = f(i)
		}
		return strings.Join(parts, ", ")
	}
	name := func(i int) string { return fmt.Sprintf("t%d", i) }
	return map[string]string{
		"tables":    "SELECT * FROM " + list(name),
		"locks":     "SELECT * FROM " + list(name) + " FOR UPDATE OF " + list(name),
		"ctes":      "WITH " + list(func(i int) string { return name(i) + " AS (SELECT 1)" }) + " SELECT * FROM " + list(name),
		"functions": "SELECT " + list(func(i int) string { return name(i) + "()" }),
		"drop":      "DROP TABLE " + list(name),
	}
}

func TestWideInput(t *testing.T) {
	const n = 20_000
	for kind, sql := range wide(n) {
		st, err := AnalyzeOne(sql)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		got := len(st.Tables) + len(st.Functions)
		want := map[string]int{"tables": n, "locks": 2 * n, "ctes": 0, "functions": n, "drop": n}[kind]
		if got != want {
			t.Errorf("%s: %d tables and functions, want %d", kind, got, want)
		}
	}
}
