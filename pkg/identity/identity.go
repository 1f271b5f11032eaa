// Package identity turns the kernel's record of who dialled (cgroup, pid,
// uid, network namespace) into a workload: a cgroup path, a systemd unit or
// pod, an executable, and the configured identity it matches.
package identity

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/redirect"
)

// Workload is a resolved workload identity; it is the policy input's
// "identity" object (DESIGN.md, "Policy").
type Workload struct {
	// Name is the matched configured identity's name or, when Known is
	// false, a readable name derived from the workload: "pod:<uid>", the
	// systemd unit, the cgroup path, or "uid:<n>", the first that exists.
	Name string `json:"name"`
	// Known reports whether a configured identity matched.
	Known   bool   `json:"known"`
	Owner   string `json:"owner"`
	Purpose string `json:"purpose"`
	// Cgroup is the cgroup v2 path relative to the cgroup2 mount ("/" is
	// the root), or empty when the cgroup id could not be resolved.
	Cgroup string `json:"cgroup"`
	// SystemdUnit is the system manager's unit that owns the cgroup
	// (e.g. "billing-export.service", "session-3.scope"), or empty.
	SystemdUnit string `json:"systemd_unit"`
	// Pod is set when the cgroup belongs to a Kubernetes pod.
	Pod *Pod `json:"pod,omitempty"`
	// ContainerID is the 64-hex container id parsed from the cgroup path.
	ContainerID string `json:"container_id,omitempty"`
	PID         uint32 `json:"pid"`
	UID         uint32 `json:"uid"`
	GID         uint32 `json:"gid"`
	// User is the user name of UID, or UID in decimal when it has none.
	User string `json:"user"`
	// Exe is the dialling process's executable as read from
	// /proc/<pid>/exe at resolve time; empty when the process is gone.
	Exe         string `json:"exe"`
	NetnsCookie uint64 `json:"netns_cookie"`
	// Claims are the verified claims of a token the connection carried.
	// Resolve leaves them empty; the protocol engine adds them.
	Claims map[string]any `json:"claims,omitempty"`
}

// Pod identifies a Kubernetes pod.
type Pod struct {
	UID string `json:"uid"`
}

const (
	// negativeTTL is how long an unresolvable cgroup id is remembered as
	// such before another miss on it walks the cgroup tree again.
	negativeTTL = 5 * time.Second
	// userRetry is how long a uid without a user name keeps its numeric
	// fallback before the user database is asked again.
	userRetry = time.Minute
)

// Resolver resolves redirect.Origin values into workloads. It is safe for
// concurrent use.
type Resolver struct {
	mount string           // cgroup2 mount point, cleaned
	now   func() time.Time // clock; tests replace it

	idents atomic.Pointer[[]matcher]

	mu       sync.RWMutex
	byID     map[uint64]cgroupInfo // cgroup id → path, replaced by each walk
	negative map[uint64]time.Time  // unresolvable cgroup id → expiry

	walkMu     sync.Mutex    // serializes walks of the cgroup tree
	walkStarts atomic.Uint64 // walks started; incremented under walkMu

	users userCache

	testHookMiss func() // called by lookup on a miss, before it waits to walk
}

// NewResolver returns a Resolver for the cgroup2 hierarchy mounted at
// cgroupMount (e.g. /sys/fs/cgroup or, on hybrid hosts,
// /sys/fs/cgroup/unified) that matches workloads against ids. The cgroup
// tree is walked lazily, on the first id the cache does not know.
func NewResolver(cgroupMount string, ids []config.Identity) *Resolver {
	r := &Resolver{
		mount:    cleanMount(cgroupMount),
		now:      time.Now,
		byID:     make(map[uint64]cgroupInfo),
		negative: make(map[uint64]time.Time),
	}
	r.users.m = make(map[uint32]userEntry)
	r.SetIdentities(ids)
	return r
}

// SetIdentities replaces the configured identities; Resolve calls that
// start afterwards use the new ones. The first identity that matches, in
// slice order, wins. An identity whose match sets no field matches nothing.
func (r *Resolver) SetIdentities(ids []config.Identity) {
	ms := make([]matcher, 0, len(ids))
	for _, id := range ids {
		ms = append(ms, compileMatcher(id))
	}
	r.idents.Store(&ms)
}

// Resolve describes the workload that made the connection o records. It
// never fails: what cannot be found (a cgroup removed since, a process that
// exited) is left empty, and a workload no identity matches has Known false.
//
// Exe is read from /proc/<pid>/exe now, not at connect time: if the process
// exited and its pid was reused in between, Exe names the new process.
func (r *Resolver) Resolve(o redirect.Origin) Workload {
	w := Workload{
		PID:         o.PID,
		UID:         o.UID,
		GID:         o.GID,
		NetnsCookie: o.NetnsCookie,
		User:        r.users.name(o.UID, r.now),
		Exe:         exe(o.PID),
	}
	ci, ok := r.lookup(o.CgroupID)
	if ok {
		w.Cgroup = ci.path
		w.SystemdUnit = ci.unit
		w.ContainerID = ci.containerID
		if ci.podUID != "" {
			w.Pod = &Pod{UID: ci.podUID}
		}
	}
	for _, m := range *r.idents.Load() {
		if m.matches(&w) {
			w.Name, w.Owner, w.Purpose = m.name, m.owner, m.purpose
			w.Known = true
			return w
		}
	}
	if ok && ci.name != "" {
		w.Name = ci.name
	} else {
		w.Name = "uid:" + strconv.FormatUint(uint64(o.UID), 10)
	}
	return w
}

// fallbackName is the name of an unmatched workload in cgroup p. A pod comes
// before the unit because a pod's unit is its container's scope, named after
// a container id that changes on every restart.
func fallbackName(p, unit, podUID string) string {
	switch {
	case podUID != "":
		return "pod:" + podUID
	case unit != "":
		return unit
	default:
		return p
	}
}

// exe reads the executable of process pid; empty when it cannot.
func exe(pid uint32) string {
	if pid == 0 {
		return ""
	}
	var buf [32]byte
	p := strconv.AppendUint(append(buf[:0], "/proc/"...), uint64(pid), 10)
	p = append(p, "/exe"...)
	s, err := os.Readlink(string(p))
	if err != nil {
		return ""
	}
	// An executable replaced or removed after exec (a package upgrade) is
	// still the path it was started from.
	return strings.TrimSuffix(s, " (deleted)")
}
