package pgsink_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/audit/pgsink"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// waitLimit bounds every wait in these tests; reaching it is a failure.
// It is generous because the machines that run them are often busy.
const waitLimit = 3 * time.Minute

// fast makes retries quick so outages heal within the test.
var fast = pgsink.Options{
	BatchInterval: 20 * time.Millisecond,
	MinBackoff:    10 * time.Millisecond,
	MaxBackoff:    200 * time.Millisecond,
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// openJournal opens the journal in dir; checkpoints come only every 10000
// records and at Close, so what a test appends is what it counts.
func openJournal(t testing.TB, dir string, key ed25519.PrivateKey) *audit.Journal {
	t.Helper()
	j, err := audit.Open(dir, audit.Options{PrivateKey: key, CheckpointEvery: time.Hour})
	if err != nil {
		t.Fatalf("audit.Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func appendN(t testing.TB, j *audit.Journal, tag string, n int) {
	t.Helper()
	for i := range n {
		if _, err := j.Append(context.Background(), audit.TypeStatement, map[string]any{"tag": tag, "i": i, "sql": "SELECT 1"}); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
}

// running is a Sink whose Run runs in a goroutine.
type running struct {
	*pgsink.Sink
	cancel context.CancelFunc
	done   chan error
}

// startSink runs a new Sink on j until stop or the end of the test.
func startSink(t testing.TB, dsn string, opts pgsink.Options, j *audit.Journal) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Sink: pgsink.New(dsn, opts), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx, j) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns what it returned.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// wait waits for Run to return.
func (r *running) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for a later stop
		return err
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %v", waitLimit)
		return nil
	}
}

// shippedRow is a row of the sink's table.
type shippedRow struct {
	Seq              int64
	Time             time.Time
	Type, Prev, Hash string
	Data             *string
	Line             string
	// DataOK: data equals the data of line, as jsonb (NULL when data is).
	DataOK *bool
}

func connect(t testing.TB, srv *pgtest.Server) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN(srv.App.Name))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// rowsOf returns the table's rows for journal id, by seq.
func rowsOf(t testing.TB, srv *pgtest.Server, table, id string) []shippedRow {
	t.Helper()
	conn := connect(t, srv)
	rows, err := conn.Query(context.Background(),
		`SELECT seq, time, type, prev, hash, data::text, line,
			CASE WHEN data IS NULL THEN NULL ELSE data = (line::jsonb -> 'data') END
		FROM `+pgx.Identifier{table}.Sanitize()+` WHERE journal_id = $1 ORDER BY seq`, id)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (shippedRow, error) {
		var s shippedRow
		err := r.Scan(&s.Seq, &s.Time, &s.Type, &s.Prev, &s.Hash, &s.Data, &s.Line, &s.DataOK)
		return s, err
	})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	return got
}

// counts returns the number of rows for id and the largest seq, or an
// error when the server cannot be reached.
func counts(srv *pgtest.Server, table, id string) (n, maxSeq int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN(srv.App.Name))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0) FROM `+pgx.Identifier{table}.Sanitize()+` WHERE journal_id = $1`, id).Scan(&n, &maxSeq)
	return n, maxSeq, err
}

// waitFor polls cond until it reports true, failing the test at the
// deadline with what cond last said.
func waitFor(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %v: %s", what, waitLimit, state)
		}
		<-tick.C
	}
}

// waitShipped waits until the table holds every record of j under id.
func waitShipped(t testing.TB, srv *pgtest.Server, table, id string, j *audit.Journal, s *pgsink.Sink) {
	t.Helper()
	if err := j.Sync(); err != nil && !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("Sync: %v", err)
	}
	waitFor(t, "every record shipped", func() (bool, string) {
		want := int64(j.LastSeq())
		n, maxSeq, err := counts(srv, table, id)
		if err != nil {
			return false, err.Error()
		}
		return n == want && maxSeq == want, fmt.Sprintf("table has %d rows up to seq %d, journal ends at %d; sink %+v", n, maxSeq, want, s.Status())
	})
}

// checkShipped checks that the table holds exactly the journal's records
// under id: seq 1..last with no gap and no duplicate, each row's line the
// journal's canonical line, its hash that line's hash, its prev the hash
// of the row before it, and the other columns equal to the record's.
func checkShipped(t testing.TB, srv *pgtest.Server, table, id string, dir string) []shippedRow {
	t.Helper()
	rows := rowsOf(t, srv, table, id)
	rd, err := audit.NewReader(dir, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	i := 0
	for rec, err := range rd.All() {
		if err != nil {
			t.Fatalf("read journal: %v", err)
		}
		if i >= len(rows) {
			t.Fatalf("journal has seq %d, the table ends at %d rows", rec.Seq, len(rows))
		}
		row := rows[i]
		line, err := rec.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(line) // what rec.Hash() returns, without encoding the line again
		hash := hex.EncodeToString(sum[:])
		switch {
		case row.Seq != int64(rec.Seq):
			t.Fatalf("row %d: seq %d, want %d", i, row.Seq, rec.Seq)
		case row.Line != string(line):
			t.Fatalf("seq %d: line\n%s\nwant\n%s", rec.Seq, row.Line, line)
		case row.Hash != hash:
			t.Fatalf("seq %d: hash %s, want %s", rec.Seq, row.Hash, hash)
		case row.Prev != rec.Prev:
			t.Fatalf("seq %d: prev %s, want %s", rec.Seq, row.Prev, rec.Prev)
		case i == 0 && row.Prev != audit.ZeroHash:
			t.Fatalf("seq %d: prev %s, want the zero hash", rec.Seq, row.Prev)
		case i > 0 && row.Prev != rows[i-1].Hash:
			t.Fatalf("seq %d: prev %s does not chain onto seq %d (hash %s)", rec.Seq, row.Prev, rows[i-1].Seq, rows[i-1].Hash)
		case row.Type != rec.Type:
			t.Fatalf("seq %d: type %s, want %s", rec.Seq, row.Type, rec.Type)
		case !row.Time.Equal(rec.Time.Truncate(time.Microsecond)):
			t.Fatalf("seq %d: time %v, want %v", rec.Seq, row.Time, rec.Time)
		case row.Data == nil:
			t.Fatalf("seq %d: data is NULL", rec.Seq)
		case row.DataOK == nil || !*row.DataOK:
			t.Fatalf("seq %d: data %s, want %s", rec.Seq, *row.Data, rec.Data)
		}
		i++
	}
	if i != len(rows) {
		t.Fatalf("the table has %d rows, the journal %d records", len(rows), i)
	}
	return rows
}

// verifyExport exports id's rows and verifies them with pub.
func verifyExport(t testing.TB, srv *pgtest.Server, id string, pub ed25519.PublicKey, wantLast uint64) audit.Report {
	t.Helper()
	dir := t.TempDir()
	rep, err := pgsink.Export(context.Background(), srv.DSN(srv.App.Name), id, dir)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if rep.FirstSeq != 1 || rep.LastSeq != wantLast || rep.Records != wantLast {
		t.Fatalf("Export: %+v, want records 1..%d", rep, wantLast)
	}
	vr, err := audit.Verify(dir, pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !vr.OK() || vr.LastSeq != wantLast {
		t.Fatalf("Verify of the shipped copy: %+v (problem %v), want OK through seq %d", vr, vr.Problem, wantLast)
	}
	return vr
}
