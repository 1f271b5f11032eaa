package audit

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPruneBySize(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	opts := Options{PrivateKey: key, SegmentBytes: 1024, CheckpointEvery: time.Hour}
	j := mustOpen(t, dir, opts)
	for i := range 200 {
		mustAppend(t, j, TypeStatement, stmt{N: i, SQL: "select 1"})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	before, _ := listSegments(os.DirFS(dir))
	var total int64
	for _, s := range before {
		total += s.size
	}
	removed, err := j.Prune(0, total/2)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) == 0 || removed[0].FirstSeq != 1 {
		t.Fatalf("removed: %+v", removed)
	}
	last := removed[len(removed)-1]
	for _, r := range removed {
		if _, err := os.Stat(filepath.Join(dir, r.Name)); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", r.Name, err)
		}
	}
	rep := mustVerify(t, dir, j.PublicKey())
	if rep.PrunedThrough != last.LastSeq || rep.FirstSeq != last.LastSeq+1 {
		t.Errorf("pruned through %d, first %d; want %d, %d", rep.PrunedThrough, rep.FirstSeq, last.LastSeq, last.LastSeq+1)
	}
	rets := readAll(t, dir, Filter{Types: []string{TypeRetention}})
	if len(rets) != 1 {
		t.Fatalf("retention records: got %d, want 1", len(rets))
	}
	rt := decode[Retention](t, rets[0].Data)
	if rt.FirstSeq != 1 || rt.LastSeq != last.LastSeq || rt.LastHash != last.LastHash || len(rt.Segments) != len(removed) {
		t.Errorf("retention: %+v", rt)
	}

	// Restart and prune again: the new retention record vouches for the
	// new start.
	mustClose(t, j)
	j = mustOpen(t, dir, opts)
	for i := range 100 {
		mustAppend(t, j, TypeStatement, stmt{N: 200 + i})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	removed2, err := j.Prune(0, 1) // everything that may go
	if err != nil {
		t.Fatal(err)
	}
	if len(removed2) == 0 || removed2[0].FirstSeq != last.LastSeq+1 {
		t.Fatalf("second prune: %+v", removed2)
	}
	mustClose(t, j)
	segs, _ := listSegments(os.DirFS(dir))
	// Left: the segment that was active, and the ones its retention
	// record and checkpoint started (they do not fit in 1 KiB segments).
	if len(segs) > 3 {
		t.Errorf("segments after pruning all it may: got %d, want <= 3", len(segs))
	}
	rep = mustVerify(t, dir, j.PublicKey())
	if rep.PrunedThrough != removed2[len(removed2)-1].LastSeq {
		t.Errorf("pruned through %d, want %d", rep.PrunedThrough, removed2[len(removed2)-1].LastSeq)
	}
}

func TestPruneByAge(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), SegmentBytes: 1024, CheckpointEvery: time.Hour, Now: clk.Now})
	defer j.Close()
	for i := range 50 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	clk.Advance(48 * time.Hour)
	for i := range 50 {
		mustAppend(t, j, TypeStatement, stmt{N: 50 + i})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	removed, err := j.Prune(24*time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) == 0 {
		t.Fatal("nothing removed")
	}
	recs := readAll(t, dir, Filter{})
	old := 0
	for _, r := range recs {
		if r.Type == TypeStatement && decode[stmt](t, r.Data).N < 50 {
			old++
		}
	}
	// Only segments whose last record is old go: a segment that holds
	// both old and new records stays.
	if old > 15 {
		t.Errorf("%d old statements left", old)
	}
	for _, r := range recs {
		if r.Type == TypeStatement && decode[stmt](t, r.Data).N >= 50 && r.Seq <= removed[len(removed)-1].LastSeq {
			t.Errorf("new record %d removed", r.Seq)
		}
	}
	mustVerify(t, dir, j.PublicKey())
	if again, err := j.Prune(24*time.Hour, 0); err != nil || len(again) != 0 {
		t.Errorf("second prune: %v, %v; want nothing", again, err)
	}
}

func TestVerifyNeedsRetentionForPrunedStart(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	j := mustOpen(t, dir, Options{PrivateKey: key, SegmentBytes: 1024, CheckpointEvery: time.Hour})
	for i := range 200 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	removed, err := j.Prune(0, 1)
	if err != nil || len(removed) < 3 {
		t.Fatalf("prune: %v, %v", removed, err)
	}
	mustClose(t, j)
	pub := j.PublicKey()
	pruned := removed[len(removed)-1].LastSeq

	rep := mustVerify(t, dir, pub)
	if rep.FirstSeq != pruned+1 {
		t.Fatalf("first seq %d, want %d", rep.FirstSeq, pruned+1)
	}
	// Removing the first remaining record by hand is not vouched for.
	fs := loadFiles(t, dir)
	if r, err := ReadRecord(fs.lines[0][0]); err != nil || r.Type != TypeStatement || r.Seq != pruned+1 {
		t.Fatalf("first record: %+v, %v", r, err)
	}
	fs.lines[0] = fs.lines[0][1:]
	fs.names[0] = segmentName(pruned + 2)
	fs.write(t)
	rep, err = Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problem.Kind != KindMissing || rep.Problem.Seq != pruned+1 {
		t.Fatalf("got %v, want records from %d missing", rep.Problem, pruned+1)
	}
}

func TestPruneKeepsActiveSegment(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t)})
	defer j.Close()
	for i := range 10 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	removed, err := j.Prune(time.Nanosecond, 1)
	if err != nil || len(removed) != 0 {
		t.Fatalf("prune of a one-segment journal: %v, %v", removed, err)
	}
}
