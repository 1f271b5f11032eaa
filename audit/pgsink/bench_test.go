package pgsink_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/audit/pgsink"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// BenchmarkShip ships a closed journal of 20000 statements into a fresh
// table per iteration, side by side with a plain COPY of the same rows
// into a table of the same shape (the floor: no journal reading, no
// staging, no conflict check).
func BenchmarkShip(b *testing.B) {
	const records = 20000
	srv := pgtest.Shared(b)
	dsn := srv.DSN(srv.App.Name)
	dir := b.TempDir()
	j, err := audit.Open(dir, audit.Options{PrivateKey: newKey(b), CheckpointEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	appendN(b, j, "bench", records)
	if err := j.Close(); err != nil {
		b.Fatal(err)
	}
	n := j.LastSeq()
	ctx := context.Background()
	table := 0
	nextTable := func() string { table++; return fmt.Sprintf("bench_%d", table) }

	b.Run("sink", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := pgsink.New(dsn, pgsink.Options{Table: nextTable()}).Run(ctx, j); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})

	b.Run("copy", func(b *testing.B) {
		b.ReportAllocs()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		for b.Loop() {
			t := nextTable()
			if _, err := conn.Exec(ctx, `CREATE TABLE `+t+` (journal_id text NOT NULL, seq bigint NOT NULL, time timestamptz NOT NULL,
				type text NOT NULL, prev text NOT NULL, hash text NOT NULL, data jsonb, line text NOT NULL, PRIMARY KEY (journal_id, seq))`); err != nil {
				b.Fatal(err)
			}
			rd, err := audit.NewReader(dir, audit.Filter{})
			if err != nil {
				b.Fatal(err)
			}
			var rows [][]any
			for rec, err := range rd.All() {
				if err != nil {
					b.Fatal(err)
				}
				line, err := rec.MarshalJSON()
				if err != nil {
					b.Fatal(err)
				}
				sum := sha256.Sum256(line)
				rows = append(rows, []any{"bench", int64(rec.Seq), rec.Time, rec.Type, rec.Prev, hex.EncodeToString(sum[:]), string(rec.Data), string(line)})
				if len(rows) == 1000 {
					if _, err := conn.CopyFrom(ctx, pgx.Identifier{t}, []string{"journal_id", "seq", "time", "type", "prev", "hash", "data", "line"}, pgx.CopyFromRows(rows)); err != nil {
						b.Fatal(err)
					}
					rows = rows[:0]
				}
			}
			rd.Close()
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{t}, []string{"journal_id", "seq", "time", "type", "prev", "hash", "data", "line"}, pgx.CopyFromRows(rows)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}
