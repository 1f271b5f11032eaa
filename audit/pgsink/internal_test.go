package pgsink

import (
	"testing"
	"time"
)

func TestHasNUL(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{`{}`, false},
		{`{"s":"a\u0000b"}`, true},
		{`{"s":"\u0000"}`, true},
		{`{"s":"a\\u0000b"}`, false}, // an escaped backslash, then text
		{`{"s":"a\\\u0000b"}`, true}, // an escaped backslash, then NUL
		{`{"s":"\u00001"}`, true},    // NUL then "1"
		{`{"s":"\u0001"}`, false},    // another control character
		{`{"s":"\"u0000"}`, false},   // an escaped quote
		{`{"s":"x"}\`, false},        // a trailing backslash (not canonical, still no NUL)
		{`{"s":"\u000"}`, false},     // short
	} {
		if got := hasNUL([]byte(tc.data)); got != tc.want {
			t.Errorf("hasNUL(%s) = %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	ceil := b.min
	for i := range 20 {
		d := b.next()
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: wait %v, want within [%v, %v]", i, d, ceil/2, ceil)
		}
		ceil = min(2*ceil, b.max)
	}
	b.reset()
	if d := b.next(); d > b.min {
		t.Fatalf("after reset: wait %v, want at most %v", d, b.min)
	}
}
