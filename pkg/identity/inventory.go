package identity

import (
	"sort"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

// InventoryEntry is one workload identity as the agent knows it: configured,
// seen, or both. It answers `tollctl identities ls`.
type InventoryEntry struct {
	Name       string `json:"name"`
	Known      bool   `json:"known"`
	Configured bool   `json:"configured"`
	Owner      string `json:"owner"`
	Purpose    string `json:"purpose"`
	// Problems lists what the configured identity lacks (an owner, a purpose).
	Problems []string  `json:"problems,omitempty"`
	Cgroups  []string  `json:"cgroups"`
	Targets  []string  `json:"targets"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Sessions int64     `json:"sessions"`
	Allowed  int64     `json:"statements_allowed"`
	Denied   int64     `json:"statements_denied"`
}

// Inventory keeps every configured identity and every workload seen, with
// what each did. It is safe for concurrent use.
type Inventory struct {
	mu      sync.Mutex
	entries map[string]*invEntry
}

type invEntry struct {
	InventoryEntry
	cgroups map[string]bool
	targets map[string]bool
}

// maxDiscovered bounds how many unconfigured workloads are remembered, so a
// host that churns pods cannot grow the inventory without end.
const maxDiscovered = 10000

// NewInventory starts an inventory with the configured identities.
func NewInventory(ids []config.Identity) *Inventory {
	inv := &Inventory{entries: map[string]*invEntry{}}
	inv.SetIdentities(ids)
	return inv
}

// SetIdentities records the configured identities (after a reload);
// what was seen is kept.
func (inv *Inventory) SetIdentities(ids []config.Identity) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, e := range inv.entries {
		e.Configured = false
	}
	for _, id := range ids {
		e := inv.entry(id.Name)
		e.Configured, e.Known = true, true
		e.Owner, e.Purpose = id.Owner, id.Purpose
		e.Problems = nil
		if id.Owner == "" {
			e.Problems = append(e.Problems, "no owner")
		}
		if id.Purpose == "" {
			e.Problems = append(e.Problems, "no purpose")
		}
	}
}

// Missing lists configured identities without an owner or a purpose, as
// "name: problem" lines, for the agent to report at start.
func (inv *Inventory) Missing() []string {
	var out []string
	for _, e := range inv.List() {
		for _, p := range e.Problems {
			out = append(out, e.Name+": "+p)
		}
	}
	return out
}

func (inv *Inventory) entry(name string) *invEntry {
	e, ok := inv.entries[name]
	if !ok {
		e = &invEntry{InventoryEntry: InventoryEntry{Name: name}, cgroups: map[string]bool{}, targets: map[string]bool{}}
		inv.entries[name] = e
	}
	return e
}

// Seen records a session of w to target at t.
func (inv *Inventory) Seen(w Workload, target string, t time.Time) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if _, ok := inv.entries[w.Name]; !ok && !w.Known && len(inv.entries) >= maxDiscovered {
		return
	}
	e := inv.entry(w.Name)
	e.Known = e.Known || w.Known
	if w.Cgroup != "" {
		e.cgroups[w.Cgroup] = true
	}
	e.targets[target] = true
	e.Sessions++
	if t.After(e.LastSeen) {
		e.LastSeen = t
	}
}

// Statements adds statement counts to the workload named name.
func (inv *Inventory) Statements(name string, allowed, denied int64) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if e, ok := inv.entries[name]; ok {
		e.Allowed += allowed
		e.Denied += denied
	}
}

// List returns every entry, configured ones first, then by name.
func (inv *Inventory) List() []InventoryEntry {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := make([]InventoryEntry, 0, len(inv.entries))
	for _, e := range inv.entries {
		ie := e.InventoryEntry
		ie.Cgroups = sortedKeys(e.cgroups)
		ie.Targets = sortedKeys(e.targets)
		ie.Problems = append([]string(nil), e.Problems...)
		out = append(out, ie)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Configured != out[j].Configured {
			return out[i].Configured
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
