package postgres_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// BenchmarkSelect runs pgbench's select-only transaction (a point lookup by
// primary key) and a 1000-row scan, alternating a direct pgx connection and
// one through the engine in the same loop, and reports both times and their
// ratio (tollgate/direct).
func BenchmarkSelect(b *testing.B) {
	srv := pgtest.Shared(b)
	srv.Exec(b, `CREATE TABLE accounts (aid int PRIMARY KEY, abalance int, filler char(84));
INSERT INTO accounts SELECT g, g % 1000, '' FROM generate_series(1, 100000) g;
ANALYZE accounts;
GRANT SELECT ON accounts TO `+srv.App.Name)
	p := startProxy(b, srv, nil)

	for _, bc := range []struct {
		name string
		sql  string
		mode pgx.QueryExecMode
	}{
		{"point/prepared", "SELECT abalance FROM accounts WHERE aid = $1", pgx.QueryExecModeCacheStatement},
		{"point/simple", "SELECT abalance FROM accounts WHERE aid = $1", pgx.QueryExecModeSimpleProtocol},
		{"scan1000/prepared", "SELECT aid, abalance, filler FROM accounts WHERE aid > $1 ORDER BY aid LIMIT 1000", pgx.QueryExecModeCacheStatement},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dc, pc := direct(b, srv), p.connect(b)
			ctx := b.Context()
			query := func(c *pgx.Conn, aid int) {
				rows, err := c.Query(ctx, bc.sql, bc.mode, aid)
				if err != nil {
					b.Fatal(err)
				}
				for rows.Next() {
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var n int
			var dDur, pDur time.Duration
			b.ReportAllocs()
			for b.Loop() {
				aid := 1 + rng.IntN(99000)
				t0 := time.Now()
				query(dc, aid)
				t1 := time.Now()
				query(pc, aid)
				pDur += time.Since(t1)
				dDur += t1.Sub(t0)
				n++
			}
			b.ReportMetric(float64(dDur.Nanoseconds())/float64(n), "direct-ns/op")
			b.ReportMetric(float64(pDur.Nanoseconds())/float64(n), "tollgate-ns/op")
			b.ReportMetric(float64(pDur)/float64(dDur), "tollgate/direct")
		})
	}
}
