package l7

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/identity"
)

// Session states, as SessionInfo.State reports them.
const (
	StateOpen   = "open"
	StateClosed = "closed"
)

// SessionInfo is a point-in-time copy of a session, shaped for the control
// API and `tollctl sessions`.
type SessionInfo struct {
	ID       string `json:"id"`
	Target   string `json:"target"`
	Protocol string `json:"protocol"`
	// Identity and Known repeat the workload's configured identity name and
	// whether it matched one, for tables that show only these.
	Identity    string            `json:"identity"`
	Known       bool              `json:"known"`
	Workload    identity.Workload `json:"workload"`
	Dst         netip.AddrPort    `json:"dst"`
	CgroupID    uint64            `json:"cgroup_id"`
	PID         uint32            `json:"pid"`
	UID         uint32            `json:"uid"`
	NetnsCookie uint64            `json:"netns_cookie"`
	Started     time.Time         `json:"started"`
	Ended       time.Time         `json:"ended,omitzero"`
	BytesIn     int64             `json:"bytes_in"`
	BytesOut    int64             `json:"bytes_out"`
	// Attrs are protocol facts: database, user, application_name, ...
	Attrs      map[string]string `json:"attrs,omitempty"`
	Statements int64             `json:"statements"`
	Denied     int64             `json:"denied"`
	// State is StateOpen or StateClosed.
	State string `json:"state"`
}

// Snapshot copies what is known about s now. It is safe to call while the
// session runs, provided the session's plain fields (ID, Target, Origin,
// Workload, Start) are not changed after it is shared.
func (s *Session) Snapshot() SessionInfo {
	info := SessionInfo{
		ID:          s.ID,
		Identity:    s.Workload.Name,
		Known:       s.Workload.Known,
		Workload:    s.Identity(),
		Dst:         s.Origin.Dst,
		CgroupID:    s.Origin.CgroupID,
		PID:         s.Origin.PID,
		UID:         s.Origin.UID,
		NetnsCookie: s.Origin.NetnsCookie,
		Started:     s.Start,
		Ended:       s.End(),
		BytesIn:     s.BytesIn.Load(),
		BytesOut:    s.BytesOut.Load(),
		Attrs:       s.Attrs(),
		Statements:  s.Statements.Load(),
		Denied:      s.Denied.Load(),
		State:       StateOpen,
	}
	if s.Target != nil {
		info.Target = s.Target.Name
		info.Protocol = s.Target.Protocol
	}
	if !info.Ended.IsZero() {
		info.State = StateClosed
	}
	return info
}

// DefaultKeep is how many ended sessions a Table remembers when NewTable is
// given 0.
const DefaultKeep = 1000

// Table holds the live sessions and the most recently ended ones. It is
// safe for concurrent use.
type Table struct {
	// Now is the table's clock, read when Done records a session's end.
	// Default: time.Now. Set it before the table is shared.
	Now func() time.Time

	mu     sync.Mutex
	keep   int
	live   map[string]*Session
	ended  map[string]*Session
	recent []*Session // ring of ended sessions, len <= keep
	next   int        // where the next ended session goes once the ring is full
}

// NewTable returns a table that remembers the last keep ended sessions:
// DefaultKeep when keep is 0, none when keep is negative.
func NewTable(keep int) *Table {
	switch {
	case keep == 0:
		keep = DefaultKeep
	case keep < 0:
		keep = 0
	}
	return &Table{
		Now:   time.Now,
		keep:  keep,
		live:  make(map[string]*Session),
		ended: make(map[string]*Session),
	}
}

// Add records s as live. Session ids must be unique (see NewID); a session
// added under an id already present replaces the earlier one.
func (t *Table) Add(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.ended, s.ID)
	t.live[s.ID] = s
}

// Done records that s ended: it sets the session's end time (once) and
// moves it from the live sessions to the recent ones. Done on a session that
// is not live only records its end time.
func (t *Table) Done(s *Session) {
	s.Finish(t.Now())

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.live[s.ID] != s {
		return
	}
	delete(t.live, s.ID)
	if t.keep == 0 {
		return
	}
	if len(t.recent) < t.keep {
		t.recent = append(t.recent, s)
	} else {
		old := t.recent[t.next]
		if t.ended[old.ID] == old {
			delete(t.ended, old.ID)
		}
		t.recent[t.next] = s
		t.next = (t.next + 1) % t.keep
	}
	t.ended[s.ID] = s
}

// Live returns the live sessions, oldest first (ordered by id).
func (t *Table) Live() []*Session {
	t.mu.Lock()
	out := make([]*Session, 0, len(t.live))
	for _, s := range t.live {
		out = append(out, s)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Recent returns the remembered ended sessions in the order they ended,
// oldest first.
func (t *Table) Recent() []*Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Session, 0, len(t.recent))
	out = append(out, t.recent[t.next:]...)
	return append(out, t.recent[:t.next]...)
}

// Get returns the live or remembered session with this id.
func (t *Table) Get(id string) (*Session, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.live[id]; ok {
		return s, true
	}
	s, ok := t.ended[id]
	return s, ok
}

// Count reports how many sessions are live.
func (t *Table) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live)
}
