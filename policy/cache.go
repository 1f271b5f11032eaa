package policy

import (
	"container/list"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// cacheKey is everything a cached decision may depend on (Decision.Cache),
// and the generation of the policy that made it.
type cacheKey struct {
	gen         uint64
	identity    identityKey
	target      string
	user        string
	database    string
	kind        string
	fingerprint string
}

type identityKey struct {
	name   string
	known  bool
	uid    uint64
	cgroup string
}

// keyOf reports the cache key of in under the policy of generation gen,
// and whether in may use the cache at all: only statements with a
// fingerprint and an identity whose key fields can be read.
func keyOf(gen uint64, in *Input) (cacheKey, bool) {
	if in.Request.Kind != KindStatement || in.Request.Fingerprint == "" {
		return cacheKey{}, false
	}
	id, ok := identityKeyOf(in.Identity)
	if !ok {
		return cacheKey{}, false
	}
	return cacheKey{
		gen:         gen,
		identity:    id,
		target:      in.Target.Name,
		user:        in.Session.User,
		database:    in.Session.Database,
		kind:        in.Request.Kind,
		fingerprint: in.Request.Fingerprint,
	}, true
}

// identityKeyOf reads the "name", "known", "uid" and "cgroup" fields of an
// identity: a map[string]any or a struct (or pointer to one) with those
// JSON names, such as pkg/identity.Workload, or a PreparedIdentity.
func identityKeyOf(id any) (identityKey, bool) {
	if p, ok := id.(*PreparedIdentity); ok {
		return p.key, p.keyOK
	}
	if m, ok := id.(map[string]any); ok {
		var k identityKey
		var ok1, ok2, ok3 bool
		k.name, ok1 = m["name"].(string)
		k.known, ok2 = m["known"].(bool)
		k.cgroup, _ = m["cgroup"].(string)
		k.uid, ok3 = uintOf(m["uid"])
		return k, ok1 && ok2 && (ok3 || m["uid"] == nil)
	}
	v := reflect.ValueOf(id)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return identityKey{}, false
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return identityKey{}, false
	}
	f := fieldsOf(v.Type())
	if f.name == nil || f.known == nil {
		return identityKey{}, false
	}
	var k identityKey
	k.name = v.FieldByIndex(f.name).String()
	k.known = v.FieldByIndex(f.known).Bool()
	if f.cgroup != nil {
		k.cgroup = v.FieldByIndex(f.cgroup).String()
	}
	if f.uid != nil {
		u := v.FieldByIndex(f.uid)
		if u.CanUint() {
			k.uid = u.Uint()
		} else if u.CanInt() && u.Int() >= 0 {
			k.uid = uint64(u.Int())
		} else {
			return identityKey{}, false
		}
	}
	return k, true
}

func uintOf(v any) (uint64, bool) {
	switch n := v.(type) {
	case uint32:
		return uint64(n), true
	case uint64:
		return n, true
	case int:
		return uint64(n), n >= 0
	case int64:
		return uint64(n), n >= 0
	case float64:
		return uint64(n), n >= 0 && n <= math.MaxUint32 && n == math.Trunc(n)
	case json.Number:
		u, err := strconv.ParseUint(string(n), 10, 64)
		return u, err == nil
	}
	return 0, false
}

// identityFields are the indexes of a struct type's key fields; nil when
// absent or of a type the key cannot hold.
type identityFields struct{ name, known, uid, cgroup []int }

var fieldCache sync.Map // reflect.Type → identityFields

func fieldsOf(t reflect.Type) identityFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(identityFields)
	}
	var f identityFields
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		k := sf.Type.Kind()
		switch {
		case name == "name" && k == reflect.String:
			f.name = sf.Index
		case name == "known" && k == reflect.Bool:
			f.known = sf.Index
		case name == "cgroup" && k == reflect.String:
			f.cgroup = sf.Index
		case name == "uid" && (reflect.Int <= k && k <= reflect.Uint64):
			f.uid = sf.Index
		}
	}
	fieldCache.Store(t, f)
	return f
}

// decisionCache is a bounded LRU of decisions. Its key holds the policy's
// generation, so an entry of an older policy (stored by a Decide that
// overlapped a reload) is never returned; reload also purges the cache to
// free the memory at once.
type decisionCache struct {
	size   int
	hits   atomic.Uint64
	misses atomic.Uint64

	mu    sync.Mutex
	ll    *list.List // front: most recently used; values *cacheEntry
	items map[cacheKey]*list.Element
}

type cacheEntry struct {
	key cacheKey
	d   Decision
}

func newDecisionCache(size int) *decisionCache {
	return &decisionCache{size: size, ll: list.New(), items: make(map[cacheKey]*list.Element)}
}

func (c *decisionCache) get(k cacheKey) (Decision, bool) {
	c.mu.Lock()
	e, ok := c.items[k]
	if ok {
		c.ll.MoveToFront(e)
	}
	c.mu.Unlock()
	if !ok {
		c.misses.Add(1)
		return Decision{}, false
	}
	c.hits.Add(1)
	return e.Value.(*cacheEntry).d.clone(), true
}

func (c *decisionCache) put(k cacheKey, d Decision) {
	d = d.clone()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		e.Value.(*cacheEntry).d = d
		c.ll.MoveToFront(e)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, d: d})
	for c.ll.Len() > c.size {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

func (c *decisionCache) purge() {
	c.mu.Lock()
	c.ll.Init()
	clear(c.items)
	c.mu.Unlock()
}

func (c *decisionCache) stats() CacheStats {
	c.mu.Lock()
	n := c.ll.Len()
	c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Entries: n}
}
