package postgres

import "testing"

// TestRequestQueue: requests come off the queue in the order they went on,
// the array is reused once all are answered, and a client that pipelines
// without pause (the queue never empties) does not grow it past what is
// outstanding.
func TestRequestQueue(t *testing.T) {
	r := &relay{e: &engine{}}
	var pushed, popped int
	push := func() {
		pushed++
		r.push(&request{index: pushed})
	}
	pop := func() {
		h := r.head()
		if h == nil {
			t.Fatalf("head is nil with %d outstanding", pushed-popped)
		}
		popped++
		if h.index != popped {
			t.Fatalf("popped request %d, want %d", h.index, popped)
		}
		r.pop()
	}

	push()
	pop()
	if r.head() != nil || len(r.queue) != 0 || cap(r.queue) == 0 {
		t.Fatalf("drained queue: len %d cap %d head %v; want empty, its array kept", len(r.queue), cap(r.queue), r.head())
	}
	for range 3 {
		push()
	}
	for range 10000 { // always three outstanding
		pop()
		push()
	}
	if c := cap(r.queue); c > 8 {
		t.Errorf("queue array grew to %d for 3 outstanding requests", c)
	}
	for pushed > popped {
		pop()
	}

	// After an error, the requests up to the Sync are skipped.
	push()
	r.push(&request{kind: 'S'})
	if skipped := r.skipToSync(); len(skipped) != 1 || skipped[0].index != pushed {
		t.Fatalf("skipped %v; want request %d", skipped, pushed)
	}
	if h := r.head(); h == nil || h.kind != 'S' {
		t.Fatalf("head after skipToSync: %+v; want the Sync", h)
	}
}
