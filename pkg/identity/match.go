package identity

import (
	"path"
	"strings"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

// patternKind says how a cgroup pattern compares to a path.
type patternKind int

const (
	patternExact    patternKind = iota // the path itself
	patternChildren                    // "/a/*": a direct child of /a
	patternSubtree                     // "/a/**": /a or any descendant
)

// cgroupPattern is a compiled match.cgroup.
type cgroupPattern struct {
	kind patternKind
	base string // cleaned, starts with "/"
}

// compilePattern compiles a match.cgroup value: an exact cgroup path, or
// "<path>/*" for its direct children, or "<path>/**" for the path and all
// its descendants. A missing leading "/" is assumed.
func compilePattern(s string) cgroupPattern {
	kind := patternExact
	if b, ok := strings.CutSuffix(s, "/**"); ok {
		kind, s = patternSubtree, b
	} else if b, ok := strings.CutSuffix(s, "/*"); ok {
		kind, s = patternChildren, b
	}
	return cgroupPattern{kind: kind, base: path.Clean("/" + s)}
}

// matches reports whether cgroup path p (as Workload.Cgroup holds it)
// matches the pattern. An empty p, an unresolved cgroup, matches nothing.
func (c cgroupPattern) matches(p string) bool {
	if p == "" {
		return false
	}
	if c.kind == patternExact {
		return p == c.base
	}
	if c.kind == patternSubtree && p == c.base {
		return true
	}
	var rest string
	if c.base == "/" {
		rest = p[1:]
	} else {
		var ok bool
		if rest, ok = strings.CutPrefix(p, c.base); !ok || len(rest) < 2 || rest[0] != '/' {
			return false
		}
		rest = rest[1:]
	}
	if rest == "" {
		return false
	}
	return c.kind == patternSubtree || !strings.Contains(rest, "/")
}

// matcher is a compiled config.Identity.
type matcher struct {
	name, owner, purpose string

	cgroup    cgroupPattern
	hasCgroup bool
	unit      string
	uid       uint32
	hasUID    bool
}

func compileMatcher(id config.Identity) matcher {
	m := matcher{name: id.Name, owner: id.Owner, purpose: id.Purpose, unit: id.Match.SystemdUnit}
	if id.Match.Cgroup != "" {
		m.cgroup, m.hasCgroup = compilePattern(id.Match.Cgroup), true
	}
	if id.Match.UID != nil {
		m.uid, m.hasUID = *id.Match.UID, true
	}
	return m
}

// matches reports whether every field the identity's match sets matches w.
// A match that sets nothing matches nothing: a catch-all would hand every
// workload a name that policy trusts.
func (m *matcher) matches(w *Workload) bool {
	if !m.hasCgroup && m.unit == "" && !m.hasUID {
		return false
	}
	if m.hasCgroup && !m.cgroup.matches(w.Cgroup) {
		return false
	}
	if m.unit != "" && m.unit != w.SystemdUnit {
		return false
	}
	if m.hasUID && m.uid != w.UID {
		return false
	}
	return true
}
