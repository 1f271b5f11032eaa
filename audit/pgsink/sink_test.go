package pgsink_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/audit/pgsink"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// TestShip ships a journal, then its closing checkpoint: Run returns nil
// once the closed journal is all in the table, and the exported copy
// verifies.
func TestShip(t *testing.T) {
	srv := pgtest.Shared(t)
	key := newKey(t)
	dir := t.TempDir()
	j := openJournal(t, dir, key)
	id := audit.KeyID(j.PublicKey())

	appendN(t, j, "a", 2500)
	s := startSink(t, srv.DSN(srv.App.Name), pgsink.Options{}, j)
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s.Sink)
	appendN(t, j, "b", 2500) // while it follows
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s.Sink)
	checkShipped(t, srv, pgsink.DefaultTable, id, dir)

	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("Run after the journal closed: %v, want nil", err)
	}
	rows := checkShipped(t, srv, pgsink.DefaultTable, id, dir)
	if last := rows[len(rows)-1]; last.Type != audit.TypeCheckpoint || last.Seq != int64(j.LastSeq()) {
		t.Fatalf("last row: seq %d type %s, want the closing checkpoint at %d", last.Seq, last.Type, j.LastSeq())
	}
	st := s.Status()
	if st.JournalID != id || st.Running || st.Shipped != j.LastSeq() || st.Lag != 0 || st.Err != nil || st.Behind != 0 || st.Missed != 0 {
		t.Fatalf("Status: %+v", st)
	}
	rep := verifyExport(t, srv, id, j.PublicKey(), j.LastSeq())
	if rep.Unanchored != 0 {
		t.Fatalf("Verify: %d unanchored records, want 0 after the closing checkpoint", rep.Unanchored)
	}
}

// TestOutage stops PostgreSQL while records are being appended and
// shipped, appends more while it is down, and starts it again: every
// record arrives exactly once.
func TestOutage(t *testing.T) {
	srv := pgtest.Start(t)
	dir := t.TempDir()
	j := openJournal(t, dir, newKey(t))
	id := audit.KeyID(j.PublicKey())
	s := startSink(t, srv.DSN(srv.App.Name), fast, j)

	appendN(t, j, "before", 500)
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s.Sink)

	// An appender that runs through the outage.
	stopAppending := make(chan struct{})
	var appended atomic.Int64
	appenderDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopAppending:
				appenderDone <- nil
				return
			default:
			}
			if _, err := j.Append(context.Background(), audit.TypeStatement, map[string]any{"tag": "during", "i": i}); err != nil {
				appenderDone <- err
				return
			}
			appended.Add(1)
		}
	}()
	waitFor(t, "records appended while shipping", func() (bool, string) {
		return appended.Load() >= 1000, fmt.Sprint(appended.Load())
	})

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	appendN(t, j, "down", 1000)
	waitFor(t, "the sink to notice the outage", func() (bool, string) {
		st := s.Status()
		return st.Err != nil && !st.Since.IsZero() && st.Lag > 0, fmt.Sprintf("%+v", st)
	})
	st := s.Status()
	t.Logf("during the outage: err %v, lag %d, behind %v, %d failures", st.Err, st.Lag, st.Behind, st.Failures)
	if st.Shipped >= j.LastSeq() {
		t.Fatalf("Status during the outage: shipped %d of %d", st.Shipped, j.LastSeq())
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	close(stopAppending)
	if err := <-appenderDone; err != nil {
		t.Fatalf("Append: %v", err)
	}
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s.Sink)
	checkShipped(t, srv, pgsink.DefaultTable, id, dir)
	st = s.Status()
	if st.Err != nil || !st.Since.IsZero() || st.Failures != 0 || st.Shipped != j.LastSeq() || st.Lag != 0 {
		t.Fatalf("Status after the outage: %+v", st)
	}
	if st.Sent < st.Shipped {
		t.Fatalf("Status: sent %d < shipped %d", st.Sent, st.Shipped)
	}
}

// TestResume stops a sink, restarts the journal, and runs a new sink on
// the same table: it starts after the table's last record and sends
// nothing twice.
func TestResume(t *testing.T) {
	srv := pgtest.Shared(t)
	key := newKey(t)
	dir := t.TempDir()
	dsn := srv.DSN(srv.App.Name)
	j := openJournal(t, dir, key)
	id := audit.KeyID(j.PublicKey())

	appendN(t, j, "first", 3000)
	s1 := startSink(t, dsn, pgsink.Options{}, j)
	waitFor(t, "the first sink to ship some records", func() (bool, string) {
		st := s1.Status()
		return st.Shipped > 0, fmt.Sprintf("%+v", st)
	})
	if err := s1.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v, want context.Canceled", err)
	}
	_, before, err := counts(srv, pgsink.DefaultTable, id)
	if err != nil {
		t.Fatal(err)
	}
	if before == 0 {
		t.Fatal("the first sink shipped nothing")
	}

	// The agent restarts: same journal directory, same key.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openJournal(t, dir, key)
	appendN(t, j, "second", 2000)

	s2 := startSink(t, dsn, pgsink.Options{}, j)
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s2.Sink)
	checkShipped(t, srv, pgsink.DefaultTable, id, dir)
	st := s2.Status()
	if st.Resumed != uint64(before) {
		t.Fatalf("second sink resumed after seq %d, want %d (the table's last)", st.Resumed, before)
	}
	if want := j.LastSeq() - uint64(before); st.Sent != want {
		t.Fatalf("second sink sent %d records, want %d (only those after seq %d)", st.Sent, want, before)
	}
}

// TestTwoJournals ships two journals, one under its key ID and one under a
// host name, into one table at the same time.
func TestTwoJournals(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(srv.App.Name)
	const table = "fleet_audit"
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := openJournal(t, dirA, newKey(t)), openJournal(t, dirB, newKey(t))
	idA, idB := audit.KeyID(a.PublicKey()), "host-b.example"

	sa := startSink(t, dsn, pgsink.Options{Table: table}, a)
	sb := startSink(t, dsn, pgsink.Options{Table: table, JournalID: idB}, b)
	var wg sync.WaitGroup
	for _, j := range []*audit.Journal{a, b} {
		wg.Go(func() { appendN(t, j, "x", 3000) })
	}
	wg.Wait()
	waitShipped(t, srv, table, idA, a, sa.Sink)
	waitShipped(t, srv, table, idB, b, sb.Sink)
	checkShipped(t, srv, table, idA, dirA)
	checkShipped(t, srv, table, idB, dirB)
	if got := sb.Status().JournalID; got != idB {
		t.Fatalf("JournalID %q, want %q", got, idB)
	}
}

// TestConcurrentAppenders ships 200×500 records from concurrent appenders
// while they append.
func TestConcurrentAppenders(t *testing.T) {
	const appenders, each = 200, 500
	srv := pgtest.Shared(t)
	dir := t.TempDir()
	j := openJournal(t, dir, newKey(t))
	id := audit.KeyID(j.PublicKey())
	s := startSink(t, srv.DSN(srv.App.Name), pgsink.Options{}, j)

	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for g := range appenders {
		wg.Go(func() {
			for i := range each {
				if _, err := j.Append(context.Background(), audit.TypeStatement, map[string]any{"g": g, "i": i}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.wait(t); err != nil {
		t.Fatalf("Run after the journal closed: %v", err)
	}
	rows := checkShipped(t, srv, pgsink.DefaultTable, id, dir)
	if len(rows) < appenders*each {
		t.Fatalf("%d rows, want at least %d", len(rows), appenders*each)
	}
	var distinct int
	err := connect(t, srv).QueryRow(context.Background(),
		`SELECT count(DISTINCT (data->>'g', data->>'i')) FROM tollgate_audit WHERE journal_id = $1 AND type = 'statement'`, id).Scan(&distinct)
	if err != nil {
		t.Fatal(err)
	}
	if distinct != appenders*each {
		t.Fatalf("%d distinct statements, want %d", distinct, appenders*each)
	}
	verifyExport(t, srv, id, j.PublicKey(), j.LastSeq())
}

// TestDiverged runs a sink for a second journal under an id the table
// already holds another journal's records for: Run refuses, and the
// table keeps only the first journal's records.
func TestDiverged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second int // records in the second journal
	}{
		{"shorter", 10},
		{"same length", 101}, // the first has 100 and its closing checkpoint
		{"longer", 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := pgtest.Shared(t)
			dsn := srv.DSN(srv.App.Name)
			opts := pgsink.Options{JournalID: "shared-name"}
			dirA := t.TempDir()
			a := openJournal(t, dirA, newKey(t))
			appendN(t, a, "a", 100)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := pgsink.New(dsn, opts).Run(context.Background(), a); err != nil {
				t.Fatalf("Run of the first journal: %v", err)
			}

			b := openJournal(t, t.TempDir(), newKey(t))
			appendN(t, b, "b", tc.second)
			if err := b.Sync(); err != nil {
				t.Fatal(err)
			}
			s := pgsink.New(dsn, opts)
			err := s.Run(context.Background(), b)
			if !errors.Is(err, pgsink.ErrDiverged) {
				t.Fatalf("Run of the second journal: %v, want ErrDiverged", err)
			}
			t.Logf("Run: %v", err)
			if st := s.Status(); !errors.Is(st.Err, pgsink.ErrDiverged) {
				t.Fatalf("Status: %+v, want Err ErrDiverged", st)
			}
			checkShipped(t, srv, pgsink.DefaultTable, "shared-name", dirA)
		})
	}
}

// TestNULData ships a record whose data holds a \u0000 escape, which jsonb
// refuses: data is NULL, and the line keeps it.
func TestNULData(t *testing.T) {
	srv := pgtest.Shared(t)
	dir := t.TempDir()
	j := openJournal(t, dir, newKey(t))
	id := audit.KeyID(j.PublicKey())
	for _, v := range []string{"a\x00b", `a\u0000b`, "plain"} {
		if _, err := j.Append(context.Background(), audit.TypeStatement, map[string]any{"sql": v}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pgsink.New(srv.DSN(srv.App.Name), pgsink.Options{}).Run(context.Background(), j); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rows := rowsOf(t, srv, pgsink.DefaultTable, id)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 3 statements and the closing checkpoint", len(rows))
	}
	if rows[0].Data != nil {
		t.Fatalf("seq 1: data %s, want NULL", *rows[0].Data)
	}
	for _, r := range rows[1:] {
		if r.Data == nil {
			t.Fatalf("seq %d: data NULL, want it", r.Seq)
		}
	}
	verifyExport(t, srv, id, j.PublicKey(), j.LastSeq())
}

// TestRunning refuses a second Run of the same Sink.
func TestRunning(t *testing.T) {
	srv := pgtest.Shared(t)
	j := openJournal(t, t.TempDir(), newKey(t))
	s := startSink(t, srv.DSN(srv.App.Name), pgsink.Options{}, j)
	waitFor(t, "Run to start", func() (bool, string) { return s.Status().Running, "" })
	if err := s.Run(context.Background(), j); !errors.Is(err, pgsink.ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts pgsink.Options
		ok   bool
	}{
		{pgsink.Options{}, true},
		{pgsink.Options{Table: "audit.records"}, true},
		{pgsink.Options{Table: "Mixed_Case"}, true},
		{pgsink.Options{Table: "a.b.c"}, false},
		{pgsink.Options{Table: ".records"}, false},
		{pgsink.Options{Table: "records."}, false},
		{pgsink.Options{JournalID: "a\x00b"}, false},
	} {
		if err := tc.opts.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok %v", tc.opts, err, tc.ok)
		}
	}
}

func TestBadDSN(t *testing.T) {
	j := openJournal(t, t.TempDir(), newKey(t))
	if err := pgsink.New("postgres://%zz", pgsink.Options{}).Run(context.Background(), j); err == nil {
		t.Fatal("Run with a malformed DSN: nil error")
	}
}

func TestExportErrors(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(srv.App.Name)
	j := openJournal(t, t.TempDir(), newKey(t))
	appendN(t, j, "x", 5)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pgsink.New(dsn, pgsink.Options{}).Run(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	if _, err := pgsink.Export(context.Background(), dsn, "no-such-journal", t.TempDir()); !errors.Is(err, pgsink.ErrNoRecords) {
		t.Fatalf("Export of an unknown id: %v, want ErrNoRecords", err)
	}
	dir := t.TempDir()
	id := audit.KeyID(j.PublicKey())
	if _, err := pgsink.Export(context.Background(), dsn, id, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := pgsink.Export(context.Background(), dsn, id, dir); err == nil {
		t.Fatal("Export into a directory with segments: nil error")
	}
}

// TestTamperedJournal alters a record on disk that is not shipped yet so
// that it no longer chains onto the last shipped one: Run refuses it and
// the table keeps what was shipped before.
func TestTamperedJournal(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(srv.App.Name)
	dir := t.TempDir()
	j := openJournal(t, dir, newKey(t))
	id := audit.KeyID(j.PublicKey())
	appendN(t, j, "a", 10)
	s := startSink(t, dsn, pgsink.Options{}, j)
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s.Sink)
	if err := s.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}

	appendN(t, j, "b", 10)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	path, off, prev := locate(t, dir, 11)
	overwrite(t, path, off, bytes.Repeat([]byte("1"), len(prev)))

	err := pgsink.New(dsn, pgsink.Options{}).Run(context.Background(), j)
	if !errors.Is(err, pgsink.ErrDiverged) {
		t.Fatalf("Run over a tampered record: %v, want ErrDiverged", err)
	}
	t.Logf("Run: %v", err)
	rows := rowsOf(t, srv, pgsink.DefaultTable, id)
	if len(rows) != 10 || rows[9].Seq != 10 {
		t.Fatalf("table: %d rows, want seq 1..10", len(rows))
	}
}

// TestTwoSinksOneJournal runs two sinks on the same journal and table at
// once, as after a batch is written again: both write the same rows, and
// each lands once.
func TestTwoSinksOneJournal(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(srv.App.Name)
	dir := t.TempDir()
	j := openJournal(t, dir, newKey(t))
	id := audit.KeyID(j.PublicKey())
	appendN(t, j, "before", 2000)
	s1 := startSink(t, dsn, pgsink.Options{BatchRecords: 100}, j)
	s2 := startSink(t, dsn, pgsink.Options{BatchRecords: 150}, j)
	appendN(t, j, "while", 3000)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*running{s1, s2} {
		if err := s.wait(t); err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	checkShipped(t, srv, pgsink.DefaultTable, id, dir)
	t.Logf("sent %d + %d records for %d rows", s1.Status().Sent, s2.Status().Sent, j.LastSeq())
}

// TestUnreadableJournal makes a record unreadable before the sink comes to
// it: the sink ships what comes before, reports the read error and
// retries, and ships the rest once the record reads again.
func TestUnreadableJournal(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.DSN(srv.App.Name)
	dir := t.TempDir()
	j := openJournal(t, dir, newKey(t))
	id := audit.KeyID(j.PublicKey())
	appendN(t, j, "x", 20)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	// Overwrite the record's prev in place (the file never shrinks, as
	// nothing but the journal ever writes it): not hex, so not a record.
	path, off, prev := locate(t, dir, 15)
	overwrite(t, path, off, bytes.Repeat([]byte("g"), len(prev)))

	s := startSink(t, dsn, fast, j)
	waitFor(t, "the read error", func() (bool, string) {
		st := s.Status()
		return st.Shipped == 14 && errors.Is(st.Err, audit.ErrMalformed), fmt.Sprintf("%+v", st)
	})
	t.Logf("Status: %v", s.Status().Err)
	overwrite(t, path, off, []byte(prev))
	waitShipped(t, srv, pgsink.DefaultTable, id, j, s.Sink)
	checkShipped(t, srv, pgsink.DefaultTable, id, dir)
	if st := s.Status(); st.Err != nil {
		t.Fatalf("Status after the record reads again: %+v", st)
	}
}

// locate finds record seq in the journal in dir: the segment file, and the
// offset and text of its prev.
func locate(t *testing.T, dir string, seq uint64) (path string, off int64, prev string) {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	start := 0
	for line := range bytes.Lines(data) {
		rec, err := audit.ReadRecord(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq == seq {
			i := bytes.Index(line, []byte(`"prev":"`+rec.Prev))
			return segs[0], int64(start + i + len(`"prev":"`)), rec.Prev
		}
		start += len(line)
	}
	t.Fatalf("no record %d in %s", seq, segs[0])
	return "", 0, ""
}

// overwrite writes b at off in the file at path, in place.
func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
