package l7

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/redirect"
)

// clock is a test clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func newSession(id string) *Session {
	return &Session{ID: id, Start: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func idsOf(ss []*Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func TestTable(t *testing.T) {
	clk := &clock{now: time.Date(2025, 1, 2, 4, 0, 0, 0, time.UTC)}
	tab := NewTable(3)
	tab.Now = clk.Now

	ss := make([]*Session, 6)
	for i := range ss {
		ss[i] = newSession(fmt.Sprintf("s_%d", i))
		tab.Add(ss[i])
	}
	if got, want := tab.Count(), 6; got != want {
		t.Fatalf("Count: got %d; want %d", got, want)
	}
	// End them out of order: 4, 0, 2, 1, 3; 5 stays live.
	for _, i := range []int{4, 0, 2, 1, 3} {
		tab.Done(ss[i])
	}
	tab.Done(ss[3]) // twice: no second entry

	if got, want := tab.Count(), 1; got != want {
		t.Errorf("Count: got %d; want %d", got, want)
	}
	if got, want := idsOf(tab.Live()), []string{"s_5"}; !slices.Equal(got, want) {
		t.Errorf("Live: got %v; want %v", got, want)
	}
	if got, want := idsOf(tab.Recent()), []string{"s_2", "s_1", "s_3"}; !slices.Equal(got, want) {
		t.Errorf("Recent: got %v; want %v", got, want)
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{{"s_5", true}, {"s_3", true}, {"s_2", true}, {"s_0", false}, {"s_4", false}, {"nope", false}} {
		if s, ok := tab.Get(tc.id); ok != tc.ok || (ok && s.ID != tc.id) {
			t.Errorf("Get(%q): got %v, %v; want ok %v", tc.id, s, ok, tc.ok)
		}
	}
	if got := ss[0].End(); !got.Equal(clk.now) {
		t.Errorf("End: got %v; want %v", got, clk.now)
	}
	if got := ss[5].End(); !got.IsZero() {
		t.Errorf("End of a live session: got %v; want zero", got)
	}
}

func TestTableKeep(t *testing.T) {
	for _, tc := range []struct {
		keep, want int
	}{{0, DefaultKeep}, {-1, 0}, {2, 2}} {
		tab := NewTable(tc.keep)
		for i := range DefaultKeep + 10 {
			s := newSession(fmt.Sprintf("s_%05d", i))
			tab.Add(s)
			tab.Done(s)
		}
		if got := len(tab.Recent()); got != tc.want {
			t.Errorf("NewTable(%d): remembers %d; want %d", tc.keep, got, tc.want)
		}
	}
}

func TestSnapshot(t *testing.T) {
	s := &Session{
		ID:       "s_1",
		Target:   &config.Target{Name: "orders-db", Protocol: "postgres"},
		Origin:   redirect.Origin{Dst: netip.MustParseAddrPort("10.20.0.5:5432"), CgroupID: 7, PID: 42, UID: 1001, NetnsCookie: 9},
		Workload: identity.Workload{Name: "billing-export", Known: true},
		Start:    time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	s.BytesIn.Add(10)
	s.BytesOut.Add(20)

	got := jsonMap(t, s.Snapshot())
	want := map[string]any{
		"id": "s_1", "target": "orders-db", "protocol": "postgres",
		"identity": "billing-export", "known": true,
		"dst": "10.20.0.5:5432", "cgroup_id": 7.0, "pid": 42.0, "uid": 1001.0, "netns_cookie": 9.0,
		"started": "2025-01-02T03:04:05Z", "bytes_in": 10.0, "bytes_out": 20.0, "state": "open",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %#v; want %#v", k, got[k], v)
		}
	}
	if w, ok := got["workload"].(map[string]any); !ok || w["name"] != "billing-export" || w["known"] != true {
		t.Errorf("workload: got %#v", got["workload"])
	}
	if _, ok := got["ended"]; ok {
		t.Errorf("ended: present on an open session: %v", got["ended"])
	}

	s.Finish(time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC))
	got = jsonMap(t, s.Snapshot())
	if got["state"] != StateClosed || got["ended"] != "2025-01-02T03:05:00Z" {
		t.Errorf("closed session: got state %v, ended %v", got["state"], got["ended"])
	}

	// A session without a target still snapshots.
	if info := (&Session{ID: "s_2"}).Snapshot(); info.Target != "" || info.State != StateOpen {
		t.Errorf("no target: got %+v", info)
	}
}

func jsonMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTableConcurrent is for -race: sessions come and go, count bytes and
// are listed and snapshotted at the same time.
func TestTableConcurrent(t *testing.T) {
	tab := NewTable(50)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				s := &Session{ID: NewID(), Start: time.Now()}
				tab.Add(s)
				s.BytesIn.Add(1)
				s.BytesOut.Add(2)
				tab.Done(s)
			}
		})
		wg.Go(func() {
			for range 200 {
				for _, s := range tab.Live() {
					s.Snapshot()
				}
				for _, s := range tab.Recent() {
					if _, ok := tab.Get(s.ID); !ok {
						// It may have been evicted since Recent; that is fine.
						continue
					}
					s.Snapshot()
				}
				tab.Count()
			}
		})
	}
	wg.Wait()
	if got := tab.Count(); got != 0 {
		t.Errorf("Count: got %d; want 0", got)
	}
	if got := len(tab.Recent()); got != 50 {
		t.Errorf("Recent: got %d; want 50", got)
	}
}

// TestPolicyInput: the input every engine starts from, with the session's
// identity or one the engine prepared, and the dialled address.
func TestPolicyInput(t *testing.T) {
	s := newSession("s_1")
	s.Target = &config.Target{Name: "orders-db", Protocol: "postgres"}
	s.Origin = redirect.Origin{Dst: netip.MustParseAddrPort("127.77.0.5:5432")}
	s.Workload = identity.Workload{Name: "billing", Known: true}
	s.SetClaims(map[string]any{"sub": "ci"})

	in := s.PolicyInput()
	w, ok := in.Identity.(identity.Workload)
	if !ok || w.Name != "billing" || w.Claims["sub"] != "ci" {
		t.Errorf("identity = %#v; want the workload with its claims", in.Identity)
	}
	if in.Session.ID != "s_1" || in.Target.Name != "orders-db" || in.Target.Protocol != "postgres" || in.Target.Address != "127.77.0.5:5432" {
		t.Errorf("input = %+v", in)
	}
	prepared := &struct{ name string }{"prepared"}
	as := s.PolicyInputAs(prepared)
	if as.Identity != any(prepared) || as.Target != in.Target || as.Session.ID != in.Session.ID {
		t.Errorf("PolicyInputAs = %+v; want %+v with the prepared identity", as, in)
	}
}
