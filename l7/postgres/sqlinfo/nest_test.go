package sqlinfo

import "strings"

// nested builds statements whose parse trees are n levels deep, each in one
// of the ways SQL nests. The depth estimate of each is about n.
var nested = map[string]func(n int) string{
	// Left-deep operator chains: no brackets at all.
	"plus":   func(n int) string { return "SELECT 1" + strings.Repeat("+1", n) },
	"concat": func(n int) string { return "SELECT 'a'" + strings.Repeat("||'a'", n) },
	"cast":   func(n int) string { return "SELECT 1" + strings.Repeat("::int", n) },
	"isnull": func(n int) string { return "SELECT 1" + strings.Repeat(" IS NULL", n) },
	"not":    func(n int) string { return "SELECT " + strings.Repeat("NOT ", n) + "true" },
	"join":   func(n int) string { return "SELECT * FROM t0" + strings.Repeat(" JOIN t ON true", n) },
	"union":  func(n int) string { return "SELECT 1" + strings.Repeat(" UNION SELECT 1", n) },
	"between": func(n int) string {
		return "SELECT 1" + strings.Repeat(" BETWEEN 1 AND 2 IS NULL", n/2)
	},
	// Brackets.
	"paren": func(n int) string { return "SELECT " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n) },
	"sub":   func(n int) string { return "SELECT " + strings.Repeat("(SELECT ", n) + "1" + strings.Repeat(")", n) },
	"from": func(n int) string {
		return "SELECT * FROM " + strings.Repeat("(SELECT * FROM ", n) + "t" + strings.Repeat(") s", n)
	},
	"exists": func(n int) string {
		return "SELECT 1 WHERE " + strings.Repeat("EXISTS (SELECT 1 WHERE ", n) + "true" + strings.Repeat(")", n)
	},
	"arraysub": func(n int) string {
		return "SELECT " + strings.Repeat("ARRAY(SELECT ", n) + "1" + strings.Repeat(")", n)
	},
	"json": func(n int) string {
		return "SELECT " + strings.Repeat("JSON_OBJECT('k': ", n) + "1" + strings.Repeat(")", n)
	},
	"fn":    func(n int) string { return "SELECT " + strings.Repeat("f(", n) + "1" + strings.Repeat(")", n) },
	"array": func(n int) string { return "SELECT ARRAY" + strings.Repeat("[", n) + "1" + strings.Repeat("]", n) },
	"case": func(n int) string {
		return "SELECT " + strings.Repeat("CASE WHEN true THEN ", n) + "1" + strings.Repeat(" END", n)
	},
	"with": func(n int) string {
		return strings.Repeat("WITH c AS (", n) + "SELECT 1" + strings.Repeat(") SELECT * FROM c", n)
	},
	"insert": func(n int) string {
		return "INSERT INTO t " + strings.Repeat("(SELECT * FROM ", n) + "t" + strings.Repeat(")", n)
	},
}
