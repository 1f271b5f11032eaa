package audit

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestReaderFilters(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	start := clk.Now()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), SegmentBytes: 512, CheckpointEvery: time.Hour, Now: clk.Now})
	for i := range 30 {
		typ := TypeStatement
		if i%3 == 0 {
			typ = TypeSessionStart
		}
		mustAppend(t, j, typ, stmt{N: i})
		clk.Advance(time.Minute)
	}
	mustClose(t, j)

	for _, tc := range []struct {
		name string
		f    Filter
		want []int // stmt.N of the records, -1 for a record without n
	}{
		{"from seq", Filter{FromSeq: 28}, []int{27, 28, 29, -1}},
		{"type", Filter{Types: []string{TypeSessionStart}, FromSeq: 19}, []int{18, 21, 24, 27}},
		{"since until", Filter{Since: start.Add(10 * time.Minute), Until: start.Add(13 * time.Minute)}, []int{10, 11, 12}},
		{"all filters", Filter{FromSeq: 5, Since: start.Add(2 * time.Minute), Until: start.Add(20 * time.Minute), Types: []string{TypeSessionStart}},
			[]int{6, 9, 12, 15, 18}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for _, r := range readAll(t, dir, tc.f) {
				n := -1
				if r.Type != TypeCheckpoint {
					n = decode[stmt](t, r.Data).N
				}
				got = append(got, n)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestReaderTailsLiveJournal(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), SegmentBytes: 300, Durability: Strict, CheckpointEvery: time.Hour})
	defer j.Close()
	r, err := NewReader(dir, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("empty journal: got %v, want io.EOF", err)
	}
	for i := range 10 {
		seq := mustAppend(t, j, TypeStatement, stmt{N: i})
		rec, err := r.Next()
		if err != nil || rec.Seq != seq {
			t.Fatalf("after append %d: got %d, %v", seq, rec.Seq, err)
		}
		if _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("caught up: got %v, want io.EOF", err)
		}
	}
}

func TestFollow(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), SegmentBytes: 400, CheckpointEvery: time.Hour})
	for i := range 20 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	history, err := j.Follow(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	live, err := j.Follow(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		select {
		case r := <-history:
			if r.Seq != uint64(i+1) {
				t.Fatalf("history: got seq %d, want %d", r.Seq, i+1)
			}
		case <-time.After(waitLimit):
			t.Fatalf("history: record %d did not come", i+1)
		}
	}
	var worst time.Duration
	for i := range 10 {
		appended := time.Now()
		seq := mustAppend(t, j, TypeStatement, stmt{N: 100 + i})
		for _, ch := range []<-chan Record{live, history} {
			select {
			case r := <-ch:
				if r.Seq != seq {
					t.Fatalf("followed seq %d, want %d", r.Seq, seq)
				}
				worst = max(worst, time.Since(appended))
			case <-time.After(waitLimit):
				t.Fatalf("record %d not followed", seq)
			}
		}
	}
	if worst > 100*time.Millisecond {
		t.Errorf("slowest follow: %v, want within 100ms", worst)
	}
	t.Logf("slowest follow: %v (batch)", worst)

	// Close delivers the final checkpoint, then closes the channels.
	mustClose(t, j)
	for _, ch := range []<-chan Record{live, history} {
		var last Record
		for r := range ch {
			last = r
		}
		if last.Type != TypeCheckpoint {
			t.Errorf("last followed record: %+v, want the final checkpoint", last)
		}
	}
	if _, err := j.Follow(ctx, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Follow after Close: got %v, want ErrClosed", err)
	}
}

// TestFollowDuringClose calls Follow while Close is writing what was
// buffered: the ErrClosed it returns comes only once the records are on
// disk, so a reader opened after it (as a sink drains) finds all of them.
func TestFollowDuringClose(t *testing.T) {
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: newKey(t), FlushInterval: time.Hour, SyncInterval: time.Hour, FlushRecords: 1 << 20, CheckpointRecords: -1})
	ctx := context.Background()
	const n = 3000
	for i := 0; i < n; i++ {
		if _, err := j.Append(ctx, TypeStatement, map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- j.Close() }()
	for {
		fctx, cancel := context.WithCancel(ctx)
		ch, err := j.Follow(fctx, 1)
		cancel()
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for range ch {
		}
	}
	got := readAll(t, dir, Filter{Types: []string{TypeStatement}})
	if len(got) != n {
		t.Errorf("after Follow returned ErrClosed: %d statements on disk, want %d", len(got), n)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

func TestFollowStopsWithContext(t *testing.T) {
	j := mustOpen(t, t.TempDir(), Options{PrivateKey: newKey(t)})
	defer j.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := j.Follow(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, open := <-ch:
		if open {
			t.Fatal("got a record, want the channel closed")
		}
	case <-time.After(waitLimit):
		t.Fatal("channel not closed after cancel")
	}
}
