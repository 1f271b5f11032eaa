package sqlinfo

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestAnalyzerCaches(t *testing.T) {
	a := NewAnalyzer(Limits{}, 16)
	const sql = "SELECT * FROM t WHERE id = 1"
	first, err := a.Analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	if &first[0] != &second[0] {
		t.Error("second Analyze of the same text did not return the cached result")
	}
	s := a.Stats()
	want := CacheStats{Entries: 1, Bytes: s.Bytes, Hits: 1, Misses: 1, LiteralEntries: 1, LiteralBytes: s.LiteralBytes}
	if s != want || s.Bytes <= len(sql) || s.LiteralBytes <= len(sql) {
		t.Errorf("Stats = %+v, want %+v with Bytes and LiteralBytes > %d", s, want, len(sql))
	}
	direct, _ := Analyze(sql)
	if !reflect.DeepEqual(first, direct) {
		t.Errorf("cached %+v, direct %+v", first, direct)
	}
	// A caller that appends gets its own array, not the cache's.
	_ = append(first[0].Tables, Table{Name: "x"})
	_ = append(first, Statement{})
	again, _ := a.Analyze(sql)
	if !reflect.DeepEqual(again, direct) {
		t.Errorf("cache changed by a caller's append: %+v", again)
	}
}

func TestAnalyzerCachesSyntaxErrors(t *testing.T) {
	a := NewAnalyzer(Limits{MaxDepth: 2}, 16)
	for range 2 {
		if _, err := a.Analyze("SELEC 1"); !errors.Is(err, ErrSyntax) {
			t.Fatalf("error = %v, want ErrSyntax", err)
		}
		if _, err := a.Analyze("SELECT (((1)))"); !errors.Is(err, ErrTooDeep) {
			t.Fatalf("error = %v, want ErrTooDeep", err)
		}
	}
	if s := a.Stats(); s.Entries != 1 || s.Hits != 1 {
		t.Errorf("Stats = %+v: want the syntax error cached and hit, the refusal not cached", s)
	}
}

// cached reports whether the cache of exact texts holds sql.
func (a *Analyzer) cached(sql string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.exact.byKey[sql]
	return ok
}

func TestAnalyzerEvicts(t *testing.T) {
	a := NewAnalyzer(Limits{}, 3)
	for i := range 5 {
		if _, err := a.Analyze(fmt.Sprintf("SELECT c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	a.Analyze("SELECT c2") // most recently used now: c2, c4, c3
	a.Analyze("SELECT c5") // evicts c3
	if s := a.Stats(); s.Entries != 3 || s.Hits != 1 {
		t.Fatalf("Stats = %+v, want 3 entries and 1 hit", s)
	}
	for _, tt := range []struct {
		sql    string
		cached bool
	}{{"SELECT c2", true}, {"SELECT c4", true}, {"SELECT c5", true}, {"SELECT c3", false}, {"SELECT c0", false}} {
		if cached := a.cached(tt.sql); cached != tt.cached {
			t.Errorf("%q cached = %v, want %v", tt.sql, cached, tt.cached)
		}
	}
}

func TestAnalyzerBoundsBytes(t *testing.T) {
	a := NewAnalyzer(Limits{}, 4) // 4 entries, 16 KiB
	big := "SELECT " + strings.Repeat("x", 6<<10)
	for i := range 4 {
		if _, err := a.Analyze(fmt.Sprintf("%s, c%d", big, i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats(); s.Bytes > 4*CacheEntryBytes || s.Entries > 2 {
		t.Errorf("Stats = %+v: want at most %d bytes, so at most 2 of the 6 KiB texts", s, 4*CacheEntryBytes)
	}
	huge := "SELECT " + strings.Repeat("x", 20<<10)
	if _, err := a.Analyze(huge); err != nil {
		t.Fatal(err)
	}
	if a.cached(huge) {
		t.Error("a text bigger than the whole budget was cached")
	}
}

func TestAnalyzerWithoutCache(t *testing.T) {
	a := NewAnalyzer(Limits{}, 0)
	for range 2 {
		if _, err := a.Analyze("SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats(); s != (CacheStats{}) {
		t.Errorf("Stats = %+v, want zero", s)
	}
}

func TestAnalyzerConcurrent(t *testing.T) {
	a := NewAnalyzer(Limits{}, 8) // smaller than the working set: evictions race with hits
	want := make(map[string][]Statement)
	for _, tt := range analyzeTests[:24] {
		st, err := Analyze(tt.sql)
		if err != nil {
			t.Fatal(err)
		}
		want[tt.sql] = st
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				tt := analyzeTests[(g*7+i)%24]
				got, err := a.Analyze(tt.sql)
				if err != nil {
					t.Errorf("%q: %v", tt.sql, err)
					return
				}
				if !reflect.DeepEqual(got, want[tt.sql]) {
					t.Errorf("%q: got %+v, want %+v", tt.sql, got, want[tt.sql])
					return
				}
				if _, err := a.AnalyzeOne(tt.sql); err != nil {
					t.Errorf("AnalyzeOne %q: %v", tt.sql, err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := a.Stats()
	if s.Entries > 8 || s.LiteralEntries > 8 || s.Hits+s.LiteralHits+s.Misses != 8*200*2 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestTemplateHitsKeepDepthCap: a text answered from a literal template is
// not scanned for depth (the parser never sees it), so its answer must be
// what the capped, uncached analysis gives: texts differing from an
// accepted one only in constants are as deep as it, and those nested
// deeper than the cap never fit its template.
func TestTemplateHitsKeepDepthCap(t *testing.T) {
	limits := Limits{MaxDepth: 6}
	a := NewAnalyzer(limits, 16)
	primed := "SELECT ((a + 1) * (b - 2)) FROM t WHERE c = 'x' AND d IN (1, 2)"
	if _, err := a.Analyze(primed); err != nil {
		t.Fatalf("primed: %v", err)
	}
	for _, sql := range []string{
		"SELECT ((a + 7) * (b - 9)) FROM t WHERE c = '((((((((' AND d IN (3, 4)",
		"SELECT ((a + 1) * (b - 2)) FROM t WHERE c = ')))))))' AND d IN (1, 2)",
		"SELECT ((a + ((((((((1)))))))) * (b - 2)) FROM t WHERE c = 'x' AND d IN (1, 2)",
		"SELECT ((a + 1) * (b - 2)) FROM t WHERE c = 'x' AND d IN (1, (((((((((2))))))))))",
	} {
		got, err := a.Analyze(sql)
		want, wantErr := analyze(sql, limits.withDefaults())
		equalResult(t, primed, sql, got, err, want, wantErr)
	}
	if s := a.Stats(); s.LiteralHits != 2 {
		t.Errorf("Stats = %+v: want the two constant variants answered from the template", s)
	}
}
