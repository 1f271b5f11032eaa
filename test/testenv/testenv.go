// Package testenv gives privileged tests what they share: a root check that
// fails instead of skipping in CI, throwaway cgroups, bpffs, child processes
// started inside a cgroup, and network namespaces. Everything made is
// removed in t.Cleanup, also when the test fails.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/bpffs"
	"github.com/tollgate-dev/tollgate/pkg/cgroup2"
)

// RequirePrivileged skips a test that needs root and a cgroup v2 mount, or
// fails it when CI=true: CI never skips the privileged suite silently.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := cgroup2.Mount(); err != nil {
		why = "needs a cgroup v2 mount: " + err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("privileged test cannot run: %s", why)
	}
	t.Skipf("privileged test skipped: %s", why)
}

// BPFFS makes sure a bpffs is mounted at /sys/fs/bpf and returns a fresh pin
// directory under it, removed at cleanup.
func BPFFS(t testing.TB) string {
	t.Helper()
	if err := bpffs.Mount("/sys/fs/bpf"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("tollgate-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	t.Cleanup(func() { removePins(dir) })
	return dir
}

func removePins(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	os.Remove(dir)
}

// Cgroup is a throwaway cgroup v2 directory.
type Cgroup struct {
	Mount string // the cgroup2 mount
	Path  string // relative to Mount, starting with "/"
	ID    uint64
}

// Dir is the cgroup's directory on the filesystem.
func (c Cgroup) Dir() string { return filepath.Join(c.Mount, c.Path) }

// NewCgroup creates a cgroup named after the test under the cgroup2 mount
// (or under parent when given). At cleanup every process still in it is
// killed and the directory removed.
func NewCgroup(t testing.TB, parent ...Cgroup) Cgroup {
	t.Helper()
	mount, err := cgroup2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	base := "/"
	if len(parent) > 0 {
		base = parent[0].Path
	}
	name := fmt.Sprintf("tollgate-test-%s-%d", sanitize(t.Name()), time.Now().UnixNano())
	c := Cgroup{Mount: mount, Path: filepath.Join(base, name)}
	if err := os.Mkdir(c.Dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveCgroup(c.Dir()) })
	if c.ID, err = cgroup2.ID(mount, c.Path); err != nil {
		t.Fatal(err)
	}
	return c
}

// RemoveCgroup kills what runs in the cgroup tree at dir and removes it.
func RemoveCgroup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			RemoveCgroup(filepath.Join(dir, e.Name()))
		}
	}
	for i := 0; i < 100; i++ {
		data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		pids := strings.Fields(string(data))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			var pid int
			fmt.Sscan(p, &pid)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 100; i++ {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, s)
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// InCgroup makes cmd start directly inside cgroup c (clone3 with
// CLONE_INTO_CGROUP): the process never runs outside it.
func InCgroup(t testing.TB, cmd *exec.Cmd, c Cgroup) {
	t.Helper()
	f, err := os.Open(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
}
