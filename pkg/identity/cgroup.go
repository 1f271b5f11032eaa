package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrNotCgroup2 is returned by CgroupID for a path that is not a directory
// of a cgroup v2 hierarchy.
var ErrNotCgroup2 = errors.New("not a cgroup v2 directory")

// cgroup2Magic is CGROUP2_SUPER_MAGIC from linux/magic.h.
const cgroup2Magic = 0x63677270

// cgroupInfo is what the cache knows about one cgroup.
type cgroupInfo struct {
	path        string // relative to the mount, "/" for the root
	unit        string
	containerID string
	podUID      string
	name        string // name of the workload when no identity matches
}

func newCgroupInfo(p string) cgroupInfo {
	unit, containerID, podUID := parseCgroupPath(p)
	return cgroupInfo{
		path:        p,
		unit:        unit,
		containerID: containerID,
		podUID:      podUID,
		name:        fallbackName(p, unit, podUID),
	}
}

func cleanMount(m string) string {
	if m == "" {
		return "/"
	}
	return filepath.Clean(m)
}

// CgroupPath reports the path, relative to the cgroup2 mount, of the cgroup
// whose id (directory inode) is id, walking the tree when the cache does not
// know it.
func (r *Resolver) CgroupPath(id uint64) (string, bool) {
	ci, ok := r.lookup(id)
	return ci.path, ok
}

// CgroupID returns the id (directory inode) of the cgroup at p, a path
// relative to the cgroup2 mount such as "/" or "/system.slice". It fails with
// ErrNotCgroup2 when p is not a cgroup v2 directory.
func (r *Resolver) CgroupID(p string) (uint64, error) {
	if !path.IsAbs(p) {
		return 0, fmt.Errorf("cgroup id of %q: path must start with /", p)
	}
	p = path.Clean(p)
	full := filepath.Join(r.mount, filepath.FromSlash(p))
	fi, err := os.Stat(full)
	if err != nil {
		return 0, fmt.Errorf("cgroup id of %q: %w", p, err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(full, &sfs); err != nil {
		return 0, fmt.Errorf("cgroup id of %q: statfs %s: %w", p, full, err)
	}
	if !fi.IsDir() || sfs.Type != cgroup2Magic {
		return 0, fmt.Errorf("cgroup id of %q: %s: %w", p, full, ErrNotCgroup2)
	}
	id := fi.Sys().(*syscall.Stat_t).Ino
	r.mu.Lock()
	if ci, ok := r.byID[id]; !ok || ci.path != p {
		r.byID[id] = newCgroupInfo(p)
	}
	delete(r.negative, id)
	r.mu.Unlock()
	return id, nil
}

// Refresh walks the cgroup tree now and replaces the cache with what it
// finds. Resolve does this by itself on a miss; the daemon may call Refresh
// at start to fill the cache and learn early that the mount is wrong.
func (r *Resolver) Refresh() error {
	r.walkMu.Lock()
	defer r.walkMu.Unlock()
	return r.refreshLocked()
}

// lookup finds the cgroup with id id: in the cache, else by walking the tree
// unless id was found missing less than negativeTTL ago.
//
// A miss is answered by any walk that started after it was seen, so misses
// that wait while a walk runs share the next one instead of walking each.
func (r *Resolver) lookup(id uint64) (cgroupInfo, bool) {
	if id == 0 {
		return cgroupInfo{}, false
	}
	r.mu.RLock()
	ci, ok := r.byID[id]
	exp, neg := r.negative[id]
	r.mu.RUnlock()
	if ok {
		return ci, true
	}
	if neg && r.now().Before(exp) {
		return cgroupInfo{}, false
	}

	started := r.walkStarts.Load()
	if r.testHookMiss != nil {
		r.testHookMiss()
	}
	r.walkMu.Lock()
	if r.walkStarts.Load() == started {
		// No walk started since the miss: this one must. An error (the
		// mount is gone) leaves the cache as it was; the miss stands.
		_ = r.refreshLocked()
	}
	r.walkMu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if ci, ok := r.byID[id]; ok {
		return ci, true
	}
	r.negative[id] = r.now().Add(negativeTTL)
	return cgroupInfo{}, false
}

// refreshLocked walks the tree and swaps the result in. r.walkMu is held.
func (r *Resolver) refreshLocked() error {
	r.walkStarts.Add(1)

	r.mu.RLock()
	size := len(r.byID)
	r.mu.RUnlock()

	found := make(map[uint64]cgroupInfo, size)
	err := filepath.WalkDir(r.mount, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == r.mount {
				return err
			}
			return nil // removed or unreadable while walking: skip it
		}
		if !d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel := "/" + strings.TrimPrefix(filepath.ToSlash(p[len(r.mount):]), "/")
		found[st.Ino] = newCgroupInfo(rel)
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk cgroup tree %s: %w", r.mount, err)
	}

	now := r.now()
	r.mu.Lock()
	r.byID = found
	for id, exp := range r.negative {
		if _, ok := found[id]; ok || !now.Before(exp) {
			delete(r.negative, id)
		}
	}
	r.mu.Unlock()
	return nil
}
