package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// reasonPolicy denies everything with reason r: a policy whose version a
// decision shows.
func reasonPolicy(r string) string {
	return fmt.Sprintf("package tollgate\n\ndecision := {\"allow\": false, \"reason\": %q, \"cache\": true}\n", r)
}

// eventually polls f until it is true or the bound passes.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type reloadLog struct {
	mu    sync.Mutex
	calls []string // "version" or "version: error"
}

func (l *reloadLog) hook(v string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.calls = append(l.calls, v+": "+err.Error())
		return
	}
	l.calls = append(l.calls, v)
}

func (l *reloadLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

func reasonOf(e *Engine) string {
	return e.Decide(context.Background(), connectReq(workload("app", true), "orders-db")).Reason
}

func TestReloadKeepsPolicyOnError(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("v1")})
	var log reloadLog
	e := newEngine(t, dir, Options{OnReload: log.hook})
	v1 := e.Version()

	writeFiles(t, dir, map[string]string{"p.rego": "package tollgate\ndecision := {\"allow\": \n"})
	err := e.Reload()
	if err == nil || !strings.Contains(err.Error(), "p.rego:") {
		t.Fatalf("Reload of a broken file = %v, want an error naming the file", err)
	}
	if got := reasonOf(e); got != "v1" || e.Version() != v1 {
		t.Errorf("after a broken reload: reason %q version %s; want v1 still in force", got, e.Version())
	}
	s := e.Status()
	if s.LastError != err.Error() || s.LastErrorAt.IsZero() || s.Version != v1 {
		t.Errorf("Status = %+v, want LastError %q and version %s", s, err, v1)
	}
	// The same broken files again: the same error, reported once.
	if err2 := e.Reload(); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second Reload = %v, want %v", err2, err)
	}
	calls := log.get()
	if len(calls) != 2 || calls[0] != v1 || calls[1] != v1+": "+err.Error() {
		t.Errorf("OnReload calls = %q, want [v1, v1: error]", calls)
	}

	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("v2")})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := reasonOf(e); got != "v2" || e.Status().LastError != "" {
		t.Errorf("after a fix: reason %q, LastError %q; want v2 and none", got, e.Status().LastError)
	}
	// Unchanged files: nothing happens.
	if err := e.Reload(); err != nil || len(log.get()) != 3 {
		t.Errorf("Reload of unchanged files: %v, OnReload calls %q", err, log.get())
	}
	// Back to the files in force after a failure: the error is gone.
	writeFiles(t, dir, map[string]string{"p.rego": "package tollgate\n\ndecision := \n"})
	_ = e.Reload()
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("v2")})
	if err := e.Reload(); err != nil || e.Status().LastError != "" {
		t.Errorf("Reload back to the policy in force: %v, LastError %q", err, e.Status().LastError)
	}
	// Removing every file leaves no policy: deny everything.
	if err := os.Remove(filepath.Join(dir, "p.rego")); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := reasonOf(e); !strings.HasPrefix(got, "no policy loaded") || e.Version() != "" {
		t.Errorf("after removing the policy: reason %q version %q", got, e.Version())
	}
}

func TestWatch(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "policy")
	var log reloadLog
	e := newEngine(t, dir, Options{Debounce: 20 * time.Millisecond, OnReload: log.hook})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	want := func(r string) {
		t.Helper()
		eventually(t, "decision "+r, func() bool { return reasonOf(e) == r })
	}

	// The directory appears.
	tmp := filepath.Join(base, "staging")
	writeFiles(t, tmp, map[string]string{"p.rego": reasonPolicy("created")})
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	want("created")

	// A plain write.
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("written")})
	want("written")

	// An editor's save: write a temporary file, rename it over.
	writeFiles(t, dir, map[string]string{".p.rego.swp": reasonPolicy("renamed")})
	if err := os.Rename(filepath.Join(dir, ".p.rego.swp"), filepath.Join(dir, "p.rego")); err != nil {
		t.Fatal(err)
	}
	want("renamed")

	// A new subdirectory, then a file in it.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"p.rego": "package tollgate\n\nimport data.tollgate.sub\n\ndecision := sub.decision\n"})
	writeFiles(t, dir, map[string]string{"sub/s.rego": "package tollgate.sub\n\ndecision := {\"reason\": \"sub\"}\n"})
	want("sub")
	writeFiles(t, dir, map[string]string{"sub/s.rego": "package tollgate.sub\n\ndecision := {\"reason\": \"sub edited\"}\n"})
	want("sub edited")

	// A broken save keeps the policy in force and says why.
	before := len(log.get())
	writeFiles(t, dir, map[string]string{"sub/s.rego": "package tollgate.sub\n\ndecision := {\n"})
	eventually(t, "the failed reload", func() bool { return e.Status().LastError != "" })
	if got := reasonOf(e); got != "sub edited" {
		t.Errorf("after a broken save: reason %q, want the previous policy's", got)
	}
	if calls := log.get(); len(calls) != before+1 || !strings.Contains(calls[before], "rego_parse_error") {
		t.Errorf("OnReload calls after a broken save: %q", calls[before:])
	}

	// The whole directory swapped for another.
	writeFiles(t, tmp, map[string]string{"p.rego": reasonPolicy("swapped")})
	old := filepath.Join(base, "old")
	if err := os.Rename(dir, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	want("swapped")
	writeFiles(t, dir, map[string]string{"p.rego": reasonPolicy("swapped, then written")})
	want("swapped, then written")
}

// TestWatchConfigMap follows a Kubernetes ConfigMap volume's update: the
// visible files are symlinks through "..data", a symlink to a hidden
// timestamped directory that is swapped by rename.
func TestWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"..2026_01_01/tollgate.rego": reasonPolicy("one")})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_01_01", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/tollgate.rego", filepath.Join(dir, "tollgate.rego")))
	e := newEngine(t, dir, Options{Debounce: 20 * time.Millisecond})
	if got := reasonOf(e); got != "one" {
		t.Fatalf("reason %q, want one", got)
	}
	if s := e.Status(); len(s.Files) != 1 || s.Files[0] != "tollgate.rego" {
		t.Errorf("Files = %q, want the one visible file", s.Files)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	defer func() { cancel(); <-done }()

	writeFiles(t, dir, map[string]string{"..2026_01_02/tollgate.rego": reasonPolicy("two")})
	must(os.Symlink("..2026_01_02", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..2026_01_01")))
	eventually(t, "decision two", func() bool { return reasonOf(e) == "two" })
}

func TestWatchEnds(t *testing.T) {
	e := newEngine(t, t.TempDir(), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.Watch(ctx); err != nil {
		t.Errorf("Watch = %v, want nil when ctx ends", err)
	}
	e = newEngine(t, "/nonexistent-tollgate-parent/policy", Options{})
	if err := e.Watch(context.Background()); err == nil {
		t.Error("Watch with no parent dir succeeded")
	}
}

// TestConcurrentDecideAndReload runs Decide from several goroutines while
// the policy is rewritten and reloaded: every decision comes whole from
// one policy version (its reason and PolicyVersion agree). Run with -race.
func TestConcurrentDecideAndReload(t *testing.T) {
	dir := t.TempDir()
	policies := map[string]string{}
	versions := map[string]string{} // version → reason
	for _, r := range []string{"a", "b", "c"} {
		policies[r] = reasonPolicy(r)
		writeFiles(t, dir, map[string]string{"p.rego": policies[r]})
		e := newEngine(t, dir, Options{})
		versions[e.Version()] = r
	}
	// A time-out would be right too, but is not what this test is about:
	// with -race on two cores, 50ms can pass.
	e := newEngine(t, dir, Options{CacheSize: 8, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				in := stmtReq(workload("app", true), "orders-db", "SELECT", nil, nil, true)
				in.Request.Fingerprint = fmt.Sprint(g, i%16)
				d := e.Decide(context.Background(), in)
				if d.Error != "" || versions[d.PolicyVersion] != d.Reason {
					errs <- fmt.Errorf("decision %+v: reason and version disagree", d)
					return
				}
			}
		})
	}
	for i := range 30 {
		r := []string{"a", "b", "c"}[i%3]
		writeFiles(t, dir, map[string]string{"p.rego": policies[r]})
		if err := e.Reload(); err != nil {
			t.Error(err)
		}
		_ = e.Status()
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
