package redirect

import "net/netip"

// Origin is what the kernel recorded about a redirected connection at
// connect() time, in the dialling process's context.
type Origin struct {
	// Dst is the address and port the client dialled.
	Dst netip.AddrPort
	// TargetID is the index of the configured target that matched Dst.
	TargetID uint32
	// CgroupID is the cgroup v2 id (the cgroup directory's inode number)
	// of the dialling task.
	CgroupID uint64
	// PID is the dialling task's thread group id.
	PID uint32
	// UID and GID are the dialling task's real user and group ids.
	UID, GID uint32
	// NetnsCookie identifies the network namespace of the dialling socket.
	NetnsCookie uint64
}
