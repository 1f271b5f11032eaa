package l7

import (
	"strings"
	"testing"
	"time"
)

func TestNewID(t *testing.T) {
	const n = 10000
	prev := ""
	for range n {
		id := NewID()
		if len(id) != len(IDPrefix)+26 || !strings.HasPrefix(id, IDPrefix) {
			t.Fatalf("NewID: got %q; want %q and 26 base32 characters", id, IDPrefix)
		}
		if strings.Trim(id[len(IDPrefix):], crockford) != "" {
			t.Fatalf("NewID: got %q; want Crockford base32 only", id)
		}
		if id <= prev {
			t.Fatalf("NewID: got %q after %q; want strictly increasing", id, prev)
		}
		prev = id
	}
}

func TestIDGen(t *testing.T) {
	zero := func(b []byte) { clear(b) }
	ones := func(b []byte) {
		for i := range b {
			b[i] = 0xff
		}
	}
	at := func(ms int64) time.Time { return time.UnixMilli(ms) }

	for _, tc := range []struct {
		name   string
		random func([]byte)
		times  []int64
		want   []string
	}{
		// The ULID specification's example time: 1469918176385 is 01ARYZ6S41.
		{"spec time", zero, []int64{1469918176385}, []string{"s_01ARYZ6S410000000000000000"}},
		{"max", ones, []int64{1<<48 - 1}, []string{"s_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"}},
		{"same millisecond increments", zero, []int64{5, 5, 5},
			[]string{"s_00000000050000000000000000", "s_00000000050000000000000001", "s_00000000050000000000000002"}},
		{"clock steps back", zero, []int64{5, 3},
			[]string{"s_00000000050000000000000000", "s_00000000050000000000000001"}},
		{"random part overflows", ones, []int64{5, 5},
			[]string{"s_0000000005ZZZZZZZZZZZZZZZZ", "s_00000000060000000000000000"}},
		{"carry into the high bits", func(b []byte) { clear(b); copy(b[2:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) },
			[]int64{5, 5},
			[]string{"s_0000000005000FZZZZZZZZZZZZ", "s_0000000005000G000000000000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := idGen{random: tc.random}
			for i, ms := range tc.times {
				if got := g.next(at(ms)); got != tc.want[i] {
					t.Errorf("id %d: got %s; want %s", i, got, tc.want[i])
				}
			}
		})
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NewID()
	}
}
