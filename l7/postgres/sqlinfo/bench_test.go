package sqlinfo

import (
	"fmt"
	"math/rand/v2"
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

// literalVariants are texts as a client that inlines its constants sends
// them: pgbench -S (built-in select-only script, simple protocol) with a
// random aid each time, and a longer query with varying constants.
var literalVariants = func() map[string][]string {
	rng := rand.New(rand.NewPCG(1, 2))
	m := map[string][]string{}
	for range 1 << 14 {
		m["pgbench"] = append(m["pgbench"], fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", 1+rng.IntN(100000)))
		m["join3"] = append(m["join3"], fmt.Sprintf("SELECT o.id, c.name, p.title FROM orders o JOIN customers c ON c.id = o.customer_id "+
			"JOIN products p ON p.id = o.product_id WHERE o.created_at > now() - interval '%d day' AND c.country = '%c%c' ORDER BY o.id LIMIT %d",
			1+rng.IntN(30), 'A'+rng.IntN(26), 'A'+rng.IntN(26), 10+rng.IntN(90)))
	}
	return m
}()

// BenchmarkAnalyzeLiteralVariants is the steady state of such a client
// through an Analyzer of the proxy's size (10,000): with the cache of exact
// texts alone, as before the literal cache, nearly every text misses and is
// parsed; with the literal cache, one template answers them all.
func BenchmarkAnalyzeLiteralVariants(b *testing.B) {
	for _, name := range []string{"pgbench", "join3"} {
		texts := literalVariants[name]
		for _, mode := range []string{"exact-only", "literal"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				a := NewAnalyzer(Limits{}, 10000)
				if mode == "exact-only" {
					a.literal = lru{}
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := a.Analyze(texts[i%len(texts)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
