package postgres_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// heapWatch samples the heap in use until stopped and keeps the largest.
type heapWatch struct {
	base uint64
	stop chan struct{}
	done sync.WaitGroup
	max  uint64
}

func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapInuse, stop: make(chan struct{})}
	h.done.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			h.max = max(h.max, ms.HeapInuse)
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	})
	return h
}

// peak stops the sampling and returns how far the heap grew above where it
// started.
func (h *heapWatch) peak() uint64 {
	close(h.stop)
	h.done.Wait()
	if h.max < h.base {
		return 0
	}
	return h.max - h.base
}

// TestLargeResultMemory streams a result of about 1 GB (a million rows of
// 1000 bytes) through the engine and checks that the process heap stays
// flat: results stream, nothing holds a whole result. A client that stops
// reading for a while must not make the engine buffer what the server
// keeps sending either.
func TestLargeResultMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GB; skipped with -short")
	}
	checkLeaks(t)
	srv := pgtest.Shared(t)
	p := startProxy(t, srv, nil)
	const limit = 64 << 20
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			c := p.connect(t)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			h := watchHeap()
			rows, err := c.Query(ctx, "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)", mode)
			if err != nil {
				h.peak()
				t.Fatal(err)
			}
			var n, size int64
			for rows.Next() {
				n++
				size += int64(len(rows.RawValues()[0]))
				if n == 100000 {
					time.Sleep(time.Second) // a client that stops reading while the server sends
				}
			}
			err = rows.Err()
			grew := h.peak()
			if err != nil || n != 1000000 || size != 1000000*1000 {
				t.Fatalf("%d rows, %d bytes, %v", n, size, err)
			}
			t.Logf("heap in use grew by %.1f MiB while %d MB streamed", float64(grew)/(1<<20), size/1e6)
			if grew > limit {
				t.Errorf("heap in use grew by %d MiB; want under %d MiB", grew>>20, limit>>20)
			}
		})
	}
}
