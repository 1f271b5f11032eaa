package sqlinfo

import (
	"container/list"
	"errors"
	"sync"
)

// CacheEntryBytes is the share of the cache's byte budget each entry is
// granted: an Analyzer of size n retains at most n entries and at most
// n*CacheEntryBytes bytes of SQL text and facts.
const CacheEntryBytes = 4 << 10

// Analyzer is Analyze with its own Limits and a least-recently-used cache
// keyed by the exact SQL text, for the statements a service sends again and
// again. It is safe for concurrent use.
//
// Results are shared between callers: the returned slices and everything
// they hold must not be modified. (Their capacity is trimmed, so an append
// copies instead of writing into the cache.) The cache keeps the SQL text it
// was given, so that text must be an ordinary Go string, not one aliasing a
// buffer that is reused (such as a protocol message's bytes).
type Analyzer struct {
	limits     Limits
	maxEntries int
	maxBytes   int

	mu     sync.Mutex
	bytes  int
	order  *list.List // of *cacheEntry, most recently used first
	byText map[string]*list.Element
	hits   uint64
	misses uint64
}

type cacheEntry struct {
	sql   string
	stmts []Statement
	err   error
	size  int
}

// NewAnalyzer returns an Analyzer that applies limits (zero fields mean the
// defaults) and caches the results of up to size distinct texts; size zero
// or less disables the cache.
func NewAnalyzer(limits Limits, size int) *Analyzer {
	a := &Analyzer{limits: limits.withDefaults()}
	if size > 0 {
		a.maxEntries = size
		a.maxBytes = size * CacheEntryBytes
		a.order = list.New()
		a.byText = make(map[string]*list.Element, size)
	}
	return a
}

// Analyze is the package's Analyze with a's Limits, answered from the cache
// when the same text was analyzed before. Syntax errors are cached too;
// texts refused by the Limits are not (refusing them is cheap).
func (a *Analyzer) Analyze(sql string) ([]Statement, error) {
	if a.order == nil {
		return analyze(sql, a.limits)
	}
	a.mu.Lock()
	if el, ok := a.byText[sql]; ok {
		a.order.MoveToFront(el)
		a.hits++
		e := el.Value.(*cacheEntry)
		a.mu.Unlock()
		return e.stmts, e.err
	}
	a.misses++
	a.mu.Unlock()

	stmts, err := analyze(sql, a.limits)
	if err != nil && !errors.Is(err, ErrSyntax) {
		return nil, err
	}
	a.store(&cacheEntry{sql: sql, stmts: stmts, err: err, size: entrySize(sql, stmts)})
	return stmts, err
}

// AnalyzeOne is the package's AnalyzeOne with a's Limits and cache.
func (a *Analyzer) AnalyzeOne(sql string) (Statement, error) {
	return one(a.Analyze(sql))
}

func (a *Analyzer) store(e *cacheEntry) {
	if e.size > a.maxBytes {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.byText[e.sql]; ok {
		return // another caller stored it meanwhile
	}
	a.byText[e.sql] = a.order.PushFront(e)
	a.bytes += e.size
	for a.order.Len() > a.maxEntries || a.bytes > a.maxBytes {
		old := a.order.Back()
		oe := old.Value.(*cacheEntry)
		a.order.Remove(old)
		delete(a.byText, oe.sql)
		a.bytes -= oe.size
	}
}

// CacheStats describes an Analyzer's cache.
type CacheStats struct {
	Entries int    // texts cached
	Bytes   int    // their estimated retained size
	Hits    uint64 // lookups answered from the cache
	Misses  uint64 // lookups that parsed
}

// Stats reports the cache's size and hit counts.
func (a *Analyzer) Stats() CacheStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := CacheStats{Bytes: a.bytes, Hits: a.hits, Misses: a.misses}
	if a.order != nil {
		s.Entries = a.order.Len()
	}
	return s
}

// entrySize estimates the memory an entry retains: the text (each
// statement's SQL is a substring of it), the strings it produced and a fixed
// overhead for headers, list and map.
func entrySize(sql string, stmts []Statement) int {
	const overhead = 64 // per string or slice header, roughly
	n := len(sql) + 4*overhead
	for _, s := range stmts {
		n += 8 * overhead
		n += len(s.Fingerprint)
		for _, c := range s.Commands {
			n += len(c) + overhead
		}
		for _, t := range s.Tables {
			n += len(t.Schema) + len(t.Name) + len(t.Access) + overhead
		}
		for _, f := range s.Functions {
			n += len(f) + overhead
		}
	}
	return n
}
