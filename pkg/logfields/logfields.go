// Package logfields names the structured log fields used across tollgate, so
// every component logs the same thing under the same key.
package logfields

const (
	Session     = "session"
	Target      = "target"
	Protocol    = "protocol"
	Identity    = "identity"
	Cgroup      = "cgroup"
	CgroupID    = "cgroup_id"
	PID         = "pid"
	UID         = "uid"
	Dst         = "dst"
	Peer        = "peer"
	NetnsCookie = "netns_cookie"
	BytesIn     = "bytes_in"
	BytesOut    = "bytes_out"
	Duration    = "duration"
	Error       = "error"
	Config      = "config"
	PinDir      = "pin_dir"
	Listen      = "listen"
)
