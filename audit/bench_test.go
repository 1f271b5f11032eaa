package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// benchStatement is a typical statement record's data.
type benchStatement struct {
	Session    string  `json:"session"`
	SQL        string  `json:"sql"`
	Decision   string  `json:"decision"`
	Rows       int64   `json:"rows"`
	DurationMS float64 `json:"duration_ms"`
}

var benchData = benchStatement{
	Session:    "s_01M91BEC34AHX8JWGEZSDCTV7R",
	SQL:        "SELECT id, email, created_at FROM public.customers WHERE id = $1 AND tenant = $2",
	Decision:   "allow",
	Rows:       1,
	DurationMS: 0.731,
}

func recordsPerSecond(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppendBatch compares the journal in batch mode (buffered, group
// commit, hash chain, checkpoints) with the floor: the same records
// marshalled and written through a buffer, no chain, one sync at the end.
func BenchmarkAppendBatch(b *testing.B) {
	b.Run("journal", func(b *testing.B) {
		j := mustOpen(b, b.TempDir(), Options{PrivateKey: newKey(b)})
		defer j.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := j.Append(context.Background(), TypeStatement, benchData); err != nil {
					b.Error(err)
					return
				}
			}
		})
		if err := j.Sync(); err != nil {
			b.Fatal(err)
		}
		recordsPerSecond(b)
	})
	b.Run("baseline", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "log.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		w := bufio.NewWriterSize(f, 1<<20)
		var mu sync.Mutex
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				line, _ := json.Marshal(benchData)
				mu.Lock()
				w.Write(line)
				w.WriteByte('\n')
				mu.Unlock()
			}
		})
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(f); err != nil {
			b.Fatal(err)
		}
		recordsPerSecond(b)
	})
}

// BenchmarkAppendStrict compares the journal in strict mode (each Append
// waits for its sync; concurrent appends share one) with the naive way: a
// write and a sync per record.
func BenchmarkAppendStrict(b *testing.B) {
	b.Run("journal", func(b *testing.B) {
		j := mustOpen(b, b.TempDir(), Options{PrivateKey: newKey(b), Durability: Strict})
		defer j.Close()
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := j.Append(context.Background(), TypeStatement, benchData); err != nil {
					b.Error(err)
					return
				}
			}
		})
		recordsPerSecond(b)
	})
	b.Run("sync-each", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "log.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		var mu sync.Mutex
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				line, _ := json.Marshal(benchData)
				line = append(line, '\n')
				mu.Lock()
				_, err := f.Write(line)
				if err == nil {
					err = fdatasync(f)
				}
				mu.Unlock()
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		recordsPerSecond(b)
	})
}

// BenchmarkVerify measures offline verification.
func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	j := mustOpen(b, dir, Options{PrivateKey: newKey(b)})
	for range 20000 {
		mustAppend(b, j, TypeStatement, benchData)
	}
	mustClose(b, j)
	pub := j.PublicKey()
	b.ReportAllocs()
	for b.Loop() {
		if rep, err := Verify(dir, pub); err != nil || !rep.OK() {
			b.Fatal(err, rep.Problem)
		}
	}
	b.ReportMetric(float64(b.N)*20000/b.Elapsed().Seconds(), "records/s")
}
