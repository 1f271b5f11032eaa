package sqlinfo

import (
	"container/list"
	"errors"
	"sync"
)

// CacheEntryBytes is the share of a cache's byte budget each entry is
// granted: each of an Analyzer's two caches retains at most n entries and at
// most n*CacheEntryBytes bytes of SQL text (or keys) and facts, for an
// Analyzer of size n.
const CacheEntryBytes = 4 << 10

// Analyzer is Analyze with its own Limits and two least-recently-used
// caches, for the statements a service sends again and again: one keyed by
// the exact SQL text, and one keyed by the text with its constant literals
// and comments left out (see literal.go), which answers texts that differ
// only in those without parsing them. It is safe for concurrent use.
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

	mu          sync.Mutex
	exact       lru // by the exact text: results of texts that were parsed
	literal     lru // by normalize's key: templates, or nil for keys that have none
	hits        uint64
	literalHits uint64
	misses      uint64
}

// lru is a least-recently-used map from strings to entries.
type lru struct {
	bytes int
	order *list.List // of *cacheEntry, most recently used first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key   string
	stmts []Statement // exact: the result
	err   error       // exact: the syntax error
	tmpl  *template   // literal: the template, nil if the key has none
	size  int
}

func newLRU(size int) lru {
	return lru{order: list.New(), byKey: make(map[string]*list.Element, size)}
}

// NewAnalyzer returns an Analyzer that applies limits (zero fields mean the
// defaults) and caches the results of up to size distinct texts, and the
// templates of up to size distinct keys; size zero or less disables the
// caches.
func NewAnalyzer(limits Limits, size int) *Analyzer {
	a := &Analyzer{limits: limits.withDefaults()}
	if size > 0 {
		a.maxEntries = size
		a.maxBytes = size * CacheEntryBytes
		a.exact = newLRU(size)
		a.literal = newLRU(size)
	}
	return a
}

// Analyze is the package's Analyze with a's Limits, answered from the caches
// when the same text, or one that differs only in constants and comments, was
// analyzed before. Syntax errors are cached too (by exact text); texts
// refused by the Limits are not (refusing them is cheap).
func (a *Analyzer) Analyze(sql string) ([]Statement, error) {
	if a.exact.order == nil {
		return analyze(sql, a.limits)
	}
	a.mu.Lock()
	if el, ok := a.exact.byKey[sql]; ok {
		a.exact.order.MoveToFront(el)
		a.hits++
		e := el.Value.(*cacheEntry)
		a.mu.Unlock()
		return e.stmts, e.err
	}
	a.mu.Unlock()

	if err := checkText(sql, a.limits); err != nil {
		a.refused()
		return nil, err
	}
	n := getNormalized()
	defer putNormalized(n)
	keyed := a.literal.order != nil && normalize(sql, n) && len(n.holes) > 0
	known := false // the key is cached without a template
	a.mu.Lock()
	if keyed {
		if el, ok := a.literal.byKey[string(n.key)]; ok {
			a.literal.order.MoveToFront(el)
			t := el.Value.(*cacheEntry).tmpl
			if start, end, ok := t.cut(sql, n); ok {
				a.literalHits++
				a.mu.Unlock()
				return t.instantiate(sql, start, end), nil
			}
			known = t == nil
		}
	}
	a.mu.Unlock()

	// The depth cap guards the parser; a text that fits a template is not
	// parsed (it has the template's structure, and so its depth).
	if err := checkDepth(sql, a.limits); err != nil {
		a.refused()
		return nil, err
	}
	a.mu.Lock()
	a.misses++
	a.mu.Unlock()
	stmts, tree, consts, err := parse(sql, keyed && !known)
	if err != nil && !errors.Is(err, ErrSyntax) {
		return nil, err
	}
	a.store(&a.exact, &cacheEntry{key: sql, stmts: stmts, err: err, size: entrySize(sql, stmts)})
	if keyed && !known && err == nil {
		e := &cacheEntry{key: string(n.key), tmpl: newTemplate(sql, n, tree, stmts, consts)}
		e.size = entrySize(e.key, nil)
		if e.tmpl != nil {
			e.size = entrySize(e.key, stmts)
		}
		a.store(&a.literal, e)
	}
	return stmts, err
}

// refused counts a text the Limits refused as a miss.
func (a *Analyzer) refused() {
	a.mu.Lock()
	a.misses++
	a.mu.Unlock()
}

// AnalyzeOne is the package's AnalyzeOne with a's Limits and caches.
func (a *Analyzer) AnalyzeOne(sql string) (Statement, error) {
	return one(a.Analyze(sql))
}

func (a *Analyzer) store(c *lru, e *cacheEntry) {
	if e.size > a.maxBytes {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := c.byKey[e.key]; ok {
		return // another caller stored it meanwhile
	}
	c.byKey[e.key] = c.order.PushFront(e)
	c.bytes += e.size
	for c.order.Len() > a.maxEntries || c.bytes > a.maxBytes {
		old := c.order.Back()
		oe := old.Value.(*cacheEntry)
		c.order.Remove(old)
		delete(c.byKey, oe.key)
		c.bytes -= oe.size
	}
}

// CacheStats describes an Analyzer's caches.
type CacheStats struct {
	Entries int    // texts cached
	Bytes   int    // their estimated retained size
	Hits    uint64 // lookups answered from the cache of exact texts
	Misses  uint64 // lookups that parsed (or were refused by the Limits)

	LiteralEntries int    // keys cached (texts less constants and comments)
	LiteralBytes   int    // their estimated retained size
	LiteralHits    uint64 // lookups answered from the cache of keys
}

// Stats reports the caches' sizes and hit counts.
func (a *Analyzer) Stats() CacheStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := CacheStats{
		Bytes: a.exact.bytes, Hits: a.hits, Misses: a.misses,
		LiteralBytes: a.literal.bytes, LiteralHits: a.literalHits,
	}
	if a.exact.order != nil {
		s.Entries = a.exact.order.Len()
	}
	if a.literal.order != nil {
		s.LiteralEntries = a.literal.order.Len()
	}
	return s
}

// entryOverhead is the estimated size of a string or slice header, roughly.
const entryOverhead = 64

// entrySize estimates the memory an entry retains: the text (each
// statement's SQL is a substring of it), the strings it produced and a fixed
// overhead for headers, list and map.
func entrySize(sql string, stmts []Statement) int {
	n := len(sql) + 4*entryOverhead
	for _, s := range stmts {
		n += 8 * entryOverhead
		n += len(s.Fingerprint)
		for _, c := range s.Commands {
			n += len(c) + entryOverhead
		}
		for _, t := range s.Tables {
			n += len(t.Schema) + len(t.Name) + len(t.Access) + entryOverhead
		}
		for _, f := range s.Functions {
			n += len(f) + entryOverhead
		}
	}
	return n
}
