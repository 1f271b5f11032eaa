package sqlinfo

import (
	"strconv"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

var benchStatements = []struct{ name, sql string }{
	{"pgbench", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213"},
	{"join3", "SELECT o.id, c.name, p.title FROM orders o JOIN customers c ON c.id = o.customer_id " +
		"JOIN products p ON p.id = o.product_id WHERE o.created_at > now() - interval '1 day' AND c.country = 'DE' ORDER BY o.id LIMIT 50"},
}

// BenchmarkAnalyzeCached is the steady state of a service that sends the
// same statements again and again.
func BenchmarkAnalyzeCached(b *testing.B) {
	for _, bs := range benchStatements {
		b.Run(bs.name, func(b *testing.B) {
			a := NewAnalyzer(Limits{}, 1024)
			if _, err := a.Analyze(bs.sql); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Analyze(bs.sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAnalyzeUncached parses every time: each run's text differs in a
// comment, as statements with literal constants do.
func BenchmarkAnalyzeUncached(b *testing.B) {
	for _, bs := range benchStatements {
		b.Run(bs.name, func(b *testing.B) {
			texts := make([]string, 1024)
			for i := range texts {
				texts[i] = bs.sql + " -- " + strconv.Itoa(i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := Analyze(texts[i%len(texts)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkParseOnly is the floor beside BenchmarkAnalyzeUncached: what
// pg_query alone costs for the parse and fingerprint Analyze needs.
func BenchmarkParseOnly(b *testing.B) {
	for _, bs := range benchStatements {
		b.Run(bs.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pg_query.Parse(bs.sql); err != nil {
					b.Fatal(err)
				}
				if _, err := pg_query.Fingerprint(bs.sql); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
