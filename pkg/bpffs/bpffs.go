// Package bpffs checks for and mounts the bpf filesystem that holds pinned
// eBPF links and maps.
package bpffs

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// IsMounted reports whether dir is on a bpf filesystem.
func IsMounted(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// Mount mounts a bpf filesystem at dir unless one is there already.
func Mount(dir string) error {
	if IsMounted(dir) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs: %w", err)
	}
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("bpffs: mount bpffs at %s: %w", dir, err)
	}
	return nil
}
