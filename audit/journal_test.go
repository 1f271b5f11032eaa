package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
	"time"
)

func TestChainAcrossRotationAndRestart(t *testing.T) {
	dir, keyDir := t.TempDir(), t.TempDir()
	opts := Options{KeyDir: keyDir, SegmentBytes: 4096, CheckpointRecords: 50}

	j := mustOpen(t, dir, opts)
	pub := j.PublicKey()
	for i := range 300 {
		mustAppend(t, j, TypeStatement, stmt{N: i, SQL: fmt.Sprintf("select %d -- ünïcødé <&>", i)})
	}
	mustClose(t, j)

	fi, err := os.Stat(filepath.Join(keyDir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("%s mode: got %04o, want 0600", PrivateKeyFile, got)
	}
	filePub, err := ReadPublicKey(filepath.Join(keyDir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !filePub.Equal(pub) {
		t.Errorf("%s does not hold the journal's public key", PublicKeyFile)
	}
	rep := mustVerify(t, dir, filePub)
	if rep.Unanchored != 0 {
		t.Errorf("after Close: unanchored %d, want 0", rep.Unanchored)
	}

	j = mustOpen(t, dir, opts)
	if !j.PublicKey().Equal(pub) {
		t.Fatal("reopened journal has another key")
	}
	for i := 300; i < 500; i++ {
		mustAppend(t, j, TypeStatement, stmt{N: i, SQL: "select 1"})
	}
	mustClose(t, j)

	rep = mustVerify(t, dir, pub)
	recs := readAll(t, dir, Filter{})
	if rep.Segments < 3 {
		t.Errorf("segments: got %d, want rotation into >= 3", rep.Segments)
	}
	if got, want := rep.Records, uint64(len(recs)); got != want {
		t.Errorf("verified records: got %d, want %d", got, want)
	}
	if rep.FirstSeq != 1 || rep.LastSeq != uint64(len(recs)) {
		t.Errorf("seqs: got %d..%d, want 1..%d", rep.FirstSeq, rep.LastSeq, len(recs))
	}
	if rep.Unanchored != 0 || rep.Checkpointed != rep.LastSeq-1 {
		t.Errorf("checkpointed %d, unanchored %d; want %d, 0", rep.Checkpointed, rep.Unanchored, rep.LastSeq-1)
	}
	if rep.Checkpoints < 10 {
		t.Errorf("checkpoints: got %d, want >= 10 (one per 50 records and at each Close)", rep.Checkpoints)
	}
	stmts := recordsOfType(recs, TypeStatement)
	if len(stmts) != 500 {
		t.Fatalf("statements: got %d, want 500", len(stmts))
	}
	for i, r := range stmts {
		if got := decode[stmt](t, r.Data); got.N != i {
			t.Fatalf("statement %d: got n=%d", i, got.N)
		}
	}
	if got := decode[stmt](t, stmts[7].Data).SQL; got != "select 7 -- ünïcødé <&>" {
		t.Errorf("sql: got %q", got)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
	}
	// Every segment is named after its first record.
	fs := loadFiles(t, dir)
	for s, name := range fs.names {
		r, err := ReadRecord(fs.lines[s][0])
		if err != nil {
			t.Fatal(err)
		}
		if name != segmentName(r.Seq) {
			t.Errorf("segment %s starts with seq %d", name, r.Seq)
		}
	}
}

func TestTimedCheckpointAndAgeRotation(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), CheckpointEvery: 20 * time.Millisecond, SegmentAge: time.Hour, Now: clk.Now})
	defer j.Close()
	mustAppend(t, j, TypeAgentStart, map[string]any{"version": "test"})
	// The flusher writes a checkpoint within CheckpointEvery.
	deadline := time.Now().Add(waitLimit)
	for {
		if err := j.Sync(); err != nil {
			t.Fatal(err)
		}
		rep := mustVerify(t, dir, j.PublicKey())
		if rep.Checkpoints == 1 && rep.Unanchored == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no timed checkpoint: %+v", rep)
		}
		time.Sleep(5 * time.Millisecond) // polling the directory
	}
	clk.Advance(2 * time.Hour)
	mustAppend(t, j, TypeAgentStop, nil)
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, j.PublicKey()); rep.Segments != 2 {
		t.Errorf("segments after SegmentAge: got %d, want 2", rep.Segments)
	}
}

func TestAppendRejects(t *testing.T) {
	j := mustOpen(t, t.TempDir(), Options{PrivateKey: newKey(t), MaxRecordBytes: 100})
	defer j.Close()
	ctx := context.Background()
	for _, typ := range []string{"", "Statement", "a b", TypeCheckpoint, TypeRetention, TypeRecovery, strings.Repeat("a", 65)} {
		if _, err := j.Append(ctx, typ, nil); !errors.Is(err, ErrInvalidType) {
			t.Errorf("Append(%q): got %v, want ErrInvalidType", typ, err)
		}
	}
	if _, err := j.Append(ctx, TypeStatement, map[string]string{"sql": strings.Repeat("x", 200)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large record: got %v, want ErrTooLarge", err)
	}
	if _, err := j.Append(ctx, TypeStatement, []byte(`{"a":`)); err == nil {
		t.Error("invalid JSON data: got nil error")
	}
	if _, err := j.Append(ctx, TypeStatement, func() {}); err == nil {
		t.Error("unencodable data: got nil error")
	}
	seq := mustAppend(t, j, TypeStatement, []byte(` { "b" : 1.0, "a" : [ true , null ] } `))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(ctx, TypeStatement, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
	recs := readAll(t, j.Dir(), Filter{})
	if got := string(recs[seq-1].Data); got != `{"a":[true,null],"b":1}` {
		t.Errorf("canonical data: got %s", got)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t)})
	defer j.Close()
	if _, err := Open(dir, Options{PrivateKey: newKey(t)}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
}

func TestConcurrentAppendsBatch(t *testing.T) {
	const goroutines, each = 200, 500
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), SegmentBytes: 1 << 20})
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if _, err := j.Append(context.Background(), TypeStatement, map[string]int{"g": g, "i": i}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustClose(t, j)
	rep := mustVerify(t, dir, j.PublicKey())
	recs := readAll(t, dir, Filter{Types: []string{TypeStatement}})
	if len(recs) != goroutines*each {
		t.Fatalf("statements: got %d, want %d", len(recs), goroutines*each)
	}
	seen := make(map[[2]int]bool, len(recs))
	for _, r := range recs {
		d := decode[map[string]int](t, r.Data)
		seen[[2]int{d["g"], d["i"]}] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("distinct statements: got %d, want %d", len(seen), goroutines*each)
	}
	if rep.Unanchored != 0 || rep.Checkpoints < goroutines*each/10000 {
		t.Errorf("checkpoints %d, unanchored %d", rep.Checkpoints, rep.Unanchored)
	}
}

func TestTornTailRecovery(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"partial line", []byte(`{"data":{"n":9`)},
		{"zeros", make([]byte, 100)},
		{"complete but garbled last line", []byte("{\"data\":{\"n\":9}\x00\x00\x00\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{PrivateKey: newKey(t), CheckpointEvery: time.Hour}
			j := mustOpen(t, dir, opts)
			for i := range 20 {
				mustAppend(t, j, TypeStatement, stmt{N: i})
			}
			mustClose(t, j)
			last := lastSegment(t, dir)
			appendFile(t, last, tc.tail)

			if rep, _ := Verify(dir, opts.PrivateKey.Public().(ed25519.PublicKey)); rep.OK() || rep.Problem.Seq != 22 {
				t.Errorf("torn journal: got %+v, want a problem at seq 22", rep.Problem)
			}
			j = mustOpen(t, dir, opts)
			mustAppend(t, j, TypeStatement, stmt{N: 20})
			mustClose(t, j)

			rep := mustVerify(t, dir, j.PublicKey())
			recs := readAll(t, dir, Filter{})
			notes := recordsOfType(recs, TypeRecovery)
			if len(notes) != 1 || notes[0].Seq != 22 {
				t.Fatalf("recovery records: %v, want one at seq 22", notes)
			}
			note := decode[Recovery](t, notes[0].Data)
			dropped, _ := base64.StdEncoding.DecodeString(note.Dropped)
			if note.Event != "torn_tail" || string(dropped) != string(tc.tail) || note.DroppedBytes != len(tc.tail) ||
				note.Segment != filepath.Base(last) {
				t.Errorf("note: %+v", note)
			}
			if got := len(recordsOfType(recs, TypeStatement)); got != 21 || rep.LastSeq != 24 {
				t.Errorf("statements %d, last seq %d; want 21, 24", got, rep.LastSeq)
			}
		})
	}
}

func TestTornNewSegment(t *testing.T) {
	// A crash right after rotation: the new segment holds only a torn line.
	dir := t.TempDir()
	opts := Options{PrivateKey: newKey(t), CheckpointEvery: time.Hour}
	j := mustOpen(t, dir, opts)
	for i := range 5 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	mustClose(t, j) // seq 6 is the checkpoint
	if err := os.WriteFile(filepath.Join(dir, segmentName(7)), []byte(`{"data":{`), 0o640); err != nil {
		t.Fatal(err)
	}
	j = mustOpen(t, dir, opts)
	if got := j.LastSeq(); got != 7 {
		t.Errorf("last seq after recovery: got %d, want 7 (the recovery record)", got)
	}
	mustClose(t, j)
	rep := mustVerify(t, dir, j.PublicKey())
	if rep.Segments != 1 || rep.LastSeq != 8 {
		t.Errorf("segments %d, last seq %d; want 1, 8", rep.Segments, rep.LastSeq)
	}
}

func TestOpenRefusesCorruption(t *testing.T) {
	dir := t.TempDir()
	opts := Options{PrivateKey: newKey(t)}
	j := mustOpen(t, dir, opts)
	for i := range 10 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	mustClose(t, j)
	fs := loadFiles(t, dir)
	fs.lines[0][4][0] = 'x' // a bad line with good records after it
	fs.write(t)
	if _, err := Open(dir, opts); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: got %v, want ErrCorrupt", err)
	}
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := listSegments(os.DirFS(dir))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	return filepath.Join(dir, segs[len(segs)-1].name)
}

func appendFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	j := mustOpen(t, t.TempDir(), Options{PrivateKey: newKey(t), Durability: Strict})
	ctx := context.Background()
	live, err := j.Follow(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	all, err := j.Follow(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	mustClose(t, j)
	for _, ch := range []<-chan Record{live, all} {
		n := 0
		for range ch {
			n++
		}
		if n != 11 { // 10 statements and the final checkpoint
			t.Errorf("followed %d records, want 11", n)
		}
	}
	deadline := time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond) // polling the count, not waiting for an event
	}
}

func TestReopenAnchorsCrashedTail(t *testing.T) {
	// A journal killed before its next checkpoint: the next Close signs
	// what it left, even with nothing new appended.
	dir, key := t.TempDir(), newKey(t)
	opts := Options{PrivateKey: key, CheckpointEvery: time.Hour}
	j := mustOpen(t, dir, opts)
	for i := range 3 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	mustClose(t, j)
	fs := loadFiles(t, dir)
	fs.lines[0] = fs.lines[0][:3] // as if killed before the final checkpoint
	fs.write(t)
	if rep := mustVerify(t, dir, key.Public().(ed25519.PublicKey)); rep.Unanchored != 3 {
		t.Fatalf("unanchored: %d, want 3", rep.Unanchored)
	}
	j = mustOpen(t, dir, opts)
	mustClose(t, j)
	if rep := mustVerify(t, dir, j.PublicKey()); rep.Unanchored != 0 || rep.Checkpointed != 3 {
		t.Errorf("after reopen and close: %+v", rep)
	}
}

func TestStrictGroupCommit(t *testing.T) {
	const goroutines, each = 64, 20
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), Durability: Strict, CheckpointEvery: time.Hour})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				seq, err := j.Append(context.Background(), TypeStatement, map[string]int{"g": g, "i": i})
				if err != nil {
					t.Error(err)
					return
				}
				if st := j.Status(); st.Durable < seq {
					t.Errorf("strict Append of %d returned with durable %d", seq, st.Durable)
					return
				}
			}
		})
	}
	wg.Wait()
	j.mu.Lock()
	syncs := j.attempts
	j.mu.Unlock()
	mustClose(t, j)
	mustVerify(t, dir, j.PublicKey())
	if syncs >= goroutines*each/2 {
		t.Errorf("%d syncs for %d strict appends: want them shared", syncs, goroutines*each)
	}
	t.Logf("%d strict appends, %d syncs", goroutines*each, syncs)
}

// TestBatchWindow: in batch mode every record is written within
// FlushInterval of its Append, with nothing else (Sync, a checkpoint, a
// full batch) to push it out.
func TestBatchWindow(t *testing.T) {
	const window = 20 * time.Millisecond
	j := mustOpen(t, t.TempDir(), Options{
		PrivateKey: newKey(t), FlushInterval: window,
		CheckpointEvery: time.Hour, CheckpointRecords: -1,
	})
	defer j.Close()
	for round := range 20 {
		var seq uint64
		for range round%4*10 + 1 {
			seq = mustAppend(t, j, TypeStatement, benchData)
		}
		deadline := time.Now().Add(waitLimit)
		for j.Status().Durable < seq {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: record %d not written after %v (window %v)", round, seq, waitLimit, window)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(round%3) * window / 2)
	}
}

// countSyncs counts the journal's syncs of segment data until the test
// ends; fail, when it returns an error, makes that sync fail instead.
func countSyncs(t *testing.T, fail func() error) *atomic.Int64 {
	var n atomic.Int64
	syncFile = func(f *os.File) error {
		n.Add(1)
		if fail != nil {
			if err := fail(); err != nil {
				return err
			}
		}
		return fdatasync(f)
	}
	t.Cleanup(func() { syncFile = fdatasync })
	return &n
}

// segmentBytes returns the journal's segment files, concatenated.
func segmentBytes(t *testing.T, dir string) []byte {
	t.Helper()
	segs, err := listSegments(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, s := range segs {
		b, err := os.ReadFile(filepath.Join(dir, s.name))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// TestBatchWritesBeforeSync: in batch mode a record reaches the segment
// file within FlushInterval (a crash of the process cannot lose it) and is
// synced within SyncInterval with nothing else to push it out; the syncs
// follow SyncInterval, not the writes.
func TestBatchWritesBeforeSync(t *testing.T) {
	syncs := countSyncs(t, nil)
	const syncEvery = 2 * time.Second
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{
		PrivateKey: newKey(t), FlushInterval: time.Millisecond, SyncInterval: syncEvery,
		CheckpointEvery: time.Hour, CheckpointRecords: -1,
	})
	defer j.Close()
	start := time.Now()
	seq := mustAppend(t, j, TypeStatement, map[string]string{"sql": "SELECT 'written-before-synced'"})
	for !bytes.Contains(segmentBytes(t, dir), []byte("written-before-synced")) {
		if time.Since(start) > waitLimit {
			t.Fatalf("record %d not in the segment file after %v", seq, waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
	if st := j.Status(); st.Durable >= seq && time.Since(start) < syncEvery {
		t.Fatalf("record %d durable %v after its append, sync interval %v", seq, time.Since(start), syncEvery)
	}
	for j.Status().Durable < seq {
		if time.Since(start) > waitLimit+syncEvery {
			t.Fatalf("record %d written but not synced after %v", seq, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took < syncEvery {
		t.Errorf("record %d synced after %v, before the sync interval %v", seq, took, syncEvery)
	}

	mustClose(t, j)
	mustVerify(t, dir, j.PublicKey())

	// A stream of records: written every millisecond, synced every 100.
	dir = t.TempDir()
	j = mustOpen(t, dir, Options{
		PrivateKey: newKey(t), FlushInterval: time.Millisecond, SyncInterval: 100 * time.Millisecond,
		CheckpointEvery: time.Hour, CheckpointRecords: -1,
	})
	syncs.Store(0)
	const stream = time.Second
	for begin := time.Now(); time.Since(begin) < stream; time.Sleep(time.Millisecond) {
		mustAppend(t, j, TypeStatement, benchData)
	}
	if n := syncs.Load(); n > int64(stream/(100*time.Millisecond))+3 {
		t.Errorf("%d syncs while appending for %v with a 100ms sync interval", n, stream)
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	mustClose(t, j)
	mustVerify(t, dir, j.PublicKey())
}

// TestBatchSyncFailureRewrites: records written but not yet synced when a
// sync fails are truncated away and written again once the journal
// recovers; none is lost or duplicated, and an outage record says what
// happened.
func TestBatchSyncFailureRewrites(t *testing.T) {
	var failing atomic.Bool
	countSyncs(t, func() error {
		if failing.Load() {
			return syscall.EIO
		}
		return nil
	})
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{
		PrivateKey: newKey(t), FlushInterval: time.Millisecond, SyncInterval: time.Hour,
		RetryInterval: 20 * time.Millisecond, CheckpointEvery: time.Hour, CheckpointRecords: -1,
	})
	defer j.Close()
	var seqs []uint64
	for i := range 10 {
		seqs = append(seqs, mustAppend(t, j, TypeStatement, map[string]int{"i": i}))
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 20; i++ {
		seqs = append(seqs, mustAppend(t, j, TypeStatement, map[string]int{"i": i}))
	}
	// Wait until the second ten are written, unsynced.
	deadline := time.Now().Add(waitLimit)
	for bytes.Count(segmentBytes(t, dir), []byte("\n")) < 20 {
		if time.Now().After(deadline) {
			t.Fatal("records not written")
		}
		time.Sleep(time.Millisecond)
	}
	failing.Store(true)
	if err := j.Sync(); !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync with a failing disk: %v, want ErrUnavailable wrapping EIO", err)
	}
	if n := bytes.Count(segmentBytes(t, dir), []byte("\n")); n != 10 {
		t.Fatalf("after the failed sync the segment holds %d lines, want the 10 synced ones", n)
	}
	failing.Store(false)
	for {
		seq, err := j.Append(context.Background(), TypeStatement, map[string]int{"i": len(seqs)})
		if err == nil {
			seqs = append(seqs, seq)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appends did not resume: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mustClose(t, j)
	mustVerify(t, dir, j.PublicKey())
	var got []int
	for _, r := range readAll(t, dir, Filter{Types: []string{TypeStatement}}) {
		got = append(got, decode[map[string]int](t, r.Data)["i"])
	}
	for i := range got {
		if got[i] != i {
			t.Fatalf("statements after the outage: %v, want 0..%d in order", got, len(seqs)-1)
		}
	}
	if len(got) != len(seqs) {
		t.Fatalf("%d statements on disk, %d accepted", len(got), len(seqs))
	}
	if notes := recordsOfType(readAll(t, dir, Filter{}), TypeRecovery); len(notes) != 1 || !strings.Contains(decode[Recovery](t, notes[0].Data).Error, "input/output error") {
		t.Errorf("recovery records: %+v", notes)
	}
}

// TestReservationGivenBack: the writer reserves blocks ahead of its writes
// (so a full disk fails a write before any of it lands); rotated and
// closed segments hold no more blocks than their bytes need.
func TestReservationGivenBack(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), SegmentBytes: 64 << 10, FlushInterval: time.Millisecond})
	for range 600 {
		mustAppend(t, j, TypeStatement, benchData)
	}
	mustClose(t, j)
	segs, err := listSegments(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	for _, s := range segs {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, s.name), &st); err != nil {
			t.Fatal(err)
		}
		if held, need := st.Blocks*512, (st.Size+4095)/4096*4096; held > need {
			t.Errorf("%s: %d bytes hold %d bytes of blocks, want at most %d", s.name, st.Size, held, need)
		}
	}
}

// TestBatchEqualIntervalsSyncWithTheWrite: with flush and sync intervals
// equal (the default), a record is written and synced by the same flush,
// within one interval of its append, not two.
func TestBatchEqualIntervalsSyncWithTheWrite(t *testing.T) {
	const interval = time.Second
	j := mustOpen(t, t.TempDir(), Options{
		PrivateKey: newKey(t), FlushInterval: interval, SyncInterval: interval,
		CheckpointEvery: time.Hour, CheckpointRecords: -1,
	})
	defer j.Close()
	start := time.Now()
	seq := mustAppend(t, j, TypeStatement, benchData)
	for j.Status().Durable < seq {
		if time.Since(start) > waitLimit {
			t.Fatalf("record %d not durable after %v", seq, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if took := time.Since(start); took >= 2*interval {
		t.Errorf("record %d durable after %v: the sync waited for a second interval of %v", seq, took, interval)
	}
}

func TestInsertIntoQueuedRecord(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), FlushInterval: time.Hour, SyncInterval: time.Hour})
	a := mustAppend(t, j, TypeStatement, stmt{N: 1, SQL: "select 1"})
	b := mustAppend(t, j, TypeStatement, stmt{N: 2, SQL: "select 2"})

	// Queued: a field goes in where the caller says.
	at := len(`{"n":1`)
	if ok, err := j.InsertCanonical(a, TypeStatement, at, []byte(`,"rows":1`)); err != nil || !ok {
		t.Fatalf("insert: got %v, %v; want true", ok, err)
	}
	// Another type, an unknown seq, an offset out of the data and too
	// much data are refused.
	if ok, _ := j.InsertCanonical(b, "masking", 1, []byte(`"x":1,`)); ok {
		t.Error("inserted into a record of another type")
	}
	if ok, _ := j.InsertCanonical(b+1, TypeStatement, 1, []byte(`"x":1,`)); ok {
		t.Error("inserted into a record never appended")
	}
	if _, err := j.InsertCanonical(b, TypeStatement, 1000, []byte(`"x":1,`)); err == nil {
		t.Error("inserted past the end of the data")
	}
	if _, err := j.InsertCanonical(b, TypeStatement, 1, bytes.Repeat([]byte("x"), j.opts.MaxRecordBytes)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: got %v, want ErrTooLarge", err)
	}

	// Once chained, a record stands as it is.
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	if ok, err := j.InsertCanonical(b, TypeStatement, 1, []byte(`"x":1,`)); ok || err != nil {
		t.Errorf("insert after Sync: got %v, %v; want false, nil", ok, err)
	}
	pub := j.PublicKey()
	mustClose(t, j)
	mustVerify(t, dir, pub)
	stmts := recordsOfType(readAll(t, dir, Filter{}), TypeStatement)
	if len(stmts) != 2 {
		t.Fatalf("statements: got %d, want 2", len(stmts))
	}
	for i, want := range []string{`{"n":1,"rows":1,"sql":"select 1"}`, `{"n":2,"sql":"select 2"}`} {
		if got := string(stmts[i].Data); got != want {
			t.Errorf("statement %d: got %s, want %s", i+1, got, want)
		}
	}
}

func TestInsertStrictNever(t *testing.T) {
	j := mustOpen(t, t.TempDir(), Options{PrivateKey: newKey(t), Durability: Strict})
	seq := mustAppend(t, j, TypeStatement, stmt{N: 1})
	if ok, err := j.InsertCanonical(seq, TypeStatement, 1, []byte(`"x":1,`)); ok || err != nil {
		t.Errorf("strict: got %v, %v; want false, nil: the record was on disk when Append returned", ok, err)
	}
	mustClose(t, j)
}

// TestSyncedPagesLeaveCache: the whole pages a sync made durable leave the
// page cache at the next sync (followers read them until then), but the
// one the next write goes on, so an agent journaling all day does not grow
// the cache with lines nobody reads.
func TestSyncedPagesLeaveCache(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the page cache is tmpfs's storage")
	}
	j := mustOpen(t, dir, Options{
		PrivateKey: newKey(t), FlushInterval: time.Hour, SyncInterval: time.Hour,
		CheckpointEvery: time.Hour, CheckpointRecords: -1,
	})
	defer mustClose(t, j)
	var firstSync int64
	for i := range 2 {
		for range 200 {
			mustAppend(t, j, TypeStatement, benchData)
		}
		if err := j.Sync(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			firstSync = j.w.off
		}
	}
	segs, err := listSegments(os.DirFS(dir))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v: want one", segs, err)
	}
	f, err := os.Open(filepath.Join(dir, segs[0].name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < 4*pageSize {
		t.Fatalf("segment of %d bytes: want several pages", st.Size())
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	resident := make([]byte, (len(m)+pageSize-1)/pageSize)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&resident[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	if firstSync < 4*pageSize {
		t.Fatalf("the first sync covered %d bytes: want several pages", firstSync)
	}
	kept := int(firstSync / pageSize) // the page the second sync's lines begin on
	for i, r := range resident {
		if cached := r&1 != 0; cached != (i >= kept) {
			t.Errorf("page %d of %d (the second sync's from page %d on): cached %v", i, len(resident), kept, cached)
		}
	}
}
