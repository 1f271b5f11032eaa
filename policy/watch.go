package policy

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads the policy when files under the policy directory change,
// until ctx ends (then it returns nil). Events are debounced
// (Options.Debounce) and then Reload runs, so a burst of writes is one
// load and a load that would change nothing does nothing.
//
// It watches the directory tree (new subdirectories included) and the
// directory's parent, so it sees the directory itself created, removed or
// swapped (a symlink or a rename: `mv new policy`), files replaced by
// rename as editors save them, and a Kubernetes ConfigMap's "..data"
// symlink swap.
func (e *Engine) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy dir: %w", err)
	}
	defer w.Close()
	parent := filepath.Dir(e.dir)
	if err := w.Add(parent); err != nil {
		return fmt.Errorf("watch policy dir parent %s: %w", parent, err)
	}
	watchTree(w, e.dir)
	// Whatever changed between New and now.
	_ = e.Reload()

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			// The parent's other entries are none of our business.
			if ev.Op == fsnotify.Chmod || (filepath.Dir(ev.Name) == parent && ev.Name != e.dir) {
				continue
			}
			debounce.Reset(e.opts.Debounce)
		case _, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow lost events: reload to catch up. Reload
			// reports its own failures.
			debounce.Reset(e.opts.Debounce)
		case <-debounce.C:
			watchTree(w, e.dir)
			_ = e.Reload()
		}
	}
}

// watchTree adds dir (through a symlink, if it is one) and its
// subdirectories, hidden ones aside, to w. dir is watched afresh, since it
// may now be another directory (or point to one); adding a watched
// subdirectory again is harmless; one that vanished meanwhile is skipped.
func watchTree(w *fsnotify.Watcher, dir string) {
	_ = w.Remove(dir)
	_ = w.Add(dir)
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return
	}
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if path != root {
			if strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			_ = w.Add(path)
		}
		return nil
	})
}
