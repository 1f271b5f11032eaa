// Package cgroup2 finds the cgroup v2 hierarchy and the cgroups of processes.
package cgroup2

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrNotMounted is returned when no cgroup2 filesystem is mounted.
var ErrNotMounted = errors.New("cgroup v2 is not mounted")

// Mount returns where the cgroup2 filesystem is mounted, from
// /proc/self/mountinfo. Hybrid hosts mount it at /sys/fs/cgroup/unified.
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cgroup2: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

func parseMountinfo(f *os.File) (string, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return unescape(fields[4]), nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("cgroup2: read mountinfo: %w", err)
	}
	return "", ErrNotMounted
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ProcPath returns the cgroup v2 path of process pid ("/" for the root),
// from /proc/<pid>/cgroup.
func ProcPath(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("cgroup2: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("cgroup2: process %d has no cgroup v2 entry", pid)
}

// ID returns the id of the cgroup at path under mount: its directory's inode.
func ID(mount, path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mount, path), &st); err != nil {
		return 0, fmt.Errorf("cgroup2: %w", err)
	}
	return st.Ino, nil
}
