package policy

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkDecide judges a read by a known workload with the example
// policy, the decision cache off: the cost of one Rego evaluation, with
// the identity as a pkg/identity.Workload and as a PreparedIdentity.
func BenchmarkDecide(b *testing.B) {
	b.Run("identity=workload", func(b *testing.B) { benchmarkDecide(b, Options{CacheSize: -1}, false, false) })
	b.Run("identity=prepared", func(b *testing.B) { benchmarkDecide(b, Options{CacheSize: -1}, true, false) })
}

// BenchmarkDecideCached judges the same statement from the decision cache.
func BenchmarkDecideCached(b *testing.B) {
	b.Run("identity=workload", func(b *testing.B) { benchmarkDecide(b, Options{}, false, true) })
	b.Run("identity=prepared", func(b *testing.B) { benchmarkDecide(b, Options{}, true, true) })
}

func benchmarkDecide(b *testing.B, opts Options, prepared, wantCached bool) {
	e := newEngine(b, examplePolicy, opts)
	var id any = workload("reporting-cron", true)
	if prepared {
		p, err := PrepareIdentity(id)
		if err != nil {
			b.Fatal(err)
		}
		id = p
	}
	in := stmtReq(id, "orders-db", "SELECT",
		[]Table{{Schema: "public", Name: "customers", Access: "select"}, {Schema: "public", Name: "orders", Access: "select"}},
		[]string{"lower", "count"}, true)
	in.Request.SQL = "SELECT c.id, lower(c.email), count(o.id) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = 42 GROUP BY 1, 2"
	ctx := context.Background()
	if d := e.Decide(ctx, in); !d.Allow || d.Error != "" {
		b.Fatalf("Decide = %+v, want allow", d)
	}
	const maxSamples = 1 << 20
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		d := e.Decide(ctx, in)
		if len(lat) < maxSamples {
			lat = append(lat, time.Since(t0))
		}
		if !d.Allow || d.Cached != wantCached {
			b.Fatalf("Decide = %+v, want allow, cached %v", d, wantCached)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
