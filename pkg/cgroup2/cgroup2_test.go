package cgroup2

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, info, want string
		wantErr          bool
	}{
		{"hybrid", "30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n35 30 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified", false},
		{"unified", "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup", false},
		{"escaped space", `40 1 0:40 / /mnt/my\040cgroups rw - cgroup2 none rw` + "\n", "/mnt/my cgroups", false},
		{"v1 only", "33 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "", true},
		{"optional fields", "35 30 0:30 / /cg rw shared:1 master:2 - cgroup2 cgroup2 rw\n", "/cg", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "mountinfo")
			os.WriteFile(p, []byte(tc.info), 0o600)
			f, _ := os.Open(p)
			defer f.Close()
			got, err := parseMountinfo(f)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestProcPathAndID(t *testing.T) {
	mount, err := Mount()
	if err != nil {
		t.Skip("no cgroup v2 mount:", err)
	}
	p, err := ProcPath(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p == "" || p[0] != '/' {
		t.Errorf("ProcPath = %q; want an absolute cgroup path", p)
	}
	if id, err := ID(mount, p); err != nil || id == 0 {
		t.Errorf("ID(%q) = %d, %v", p, id, err)
	}
}
