package audit

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pgStatement and pgResult are the canonical data of the PostgreSQL
// engine's statement and statement_result records for one pgbench -S
// transaction.
var (
	pgStatement = Canonical(`{"allow":true,"identity":"pgbench","kind":"query","policy_version":"sha256:4f9a1c0d2e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c","protocol":"simple","record":"full","session":"s_01M91BEC34AHX8JWGEZSDCTV7R","sql":"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;","target":"bench-pg"}`)
	pgResult    = Canonical(`{"commands":["SELECT 1"],"duration_us":83,"protocol":"simple","rows":1,"session":"s_01M91BEC34AHX8JWGEZSDCTV7R","statement_seq":123456}`)
)

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendPG appends a statement and a statement_result record per
// op, as the PostgreSQL engine does per transaction, from 8 sessions each
// pausing between transactions (about 16,000 transactions a second in
// all, a busy agent's rate), and reports the process's CPU time per
// transaction: the sessions', the flusher's and the kernel's for write
// and fdatasync. "none" is the same loop without the journal: the
// difference is what journaling costs.
func BenchmarkAppendPG(b *testing.B) {
	const sessions = 8
	const pause = 500 * time.Microsecond
	run := func(b *testing.B, appendTx func(ctx context.Context) error) {
		b.ReportAllocs()
		ctx := context.Background()
		var wg sync.WaitGroup
		per := b.N/sessions + 1
		b.ResetTimer()
		cpu0 := processCPU()
		for range sessions {
			wg.Go(func() {
				for range per {
					if err := appendTx(ctx); err != nil {
						b.Error(err)
						return
					}
					time.Sleep(pause)
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(processCPU()-cpu0)/float64(sessions*per), "cpu-ns/tx")
	}
	for _, d := range []Durability{Batch, Strict} {
		b.Run(string(d), func(b *testing.B) {
			j := mustOpen(b, b.TempDir(), Options{PrivateKey: newKey(b), Durability: d})
			defer j.Close()
			run(b, func(ctx context.Context) error {
				if _, err := j.Append(ctx, TypeStatement, pgStatement); err != nil {
					return err
				}
				_, err := j.Append(ctx, "statement_result", pgResult)
				return err
			})
		})
	}
	b.Run("none", func(b *testing.B) {
		run(b, func(context.Context) error { return nil })
	})
}

// BenchmarkAppendCanonical measures one goroutine's Append of the
// PostgreSQL engine's records in batch mode: the work each statement does
// under the journal's lock.
func BenchmarkAppendCanonical(b *testing.B) {
	j := mustOpen(b, b.TempDir(), Options{PrivateKey: newKey(b)})
	defer j.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.AppendCanonical(ctx, TypeStatement, pgStatement); err != nil {
			b.Fatal(err)
		}
		if _, err := j.AppendCanonical(ctx, "statement_result", pgResult); err != nil {
			b.Fatal(err)
		}
	}
}
