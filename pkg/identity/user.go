package identity

import (
	"os/user"
	"strconv"
	"sync"
	"time"
)

// userCache maps uids to user names. Names found are kept; a uid without one
// keeps its numeric fallback for userRetry.
type userCache struct {
	mu sync.RWMutex
	m  map[uint32]userEntry
}

type userEntry struct {
	name    string
	expires time.Time // zero: never
}

// name returns the user name of uid, or uid in decimal when it has none.
func (c *userCache) name(uid uint32, now func() time.Time) string {
	c.mu.RLock()
	e, ok := c.m[uid]
	c.mu.RUnlock()
	if ok && (e.expires.IsZero() || now().Before(e.expires)) {
		return e.name
	}
	id := strconv.FormatUint(uint64(uid), 10)
	e = userEntry{name: id, expires: now().Add(userRetry)}
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		e = userEntry{name: u.Username}
	}
	c.mu.Lock()
	c.m[uid] = e
	c.mu.Unlock()
	return e.name
}
