// Package identity turns the kernel's record of who dialled (cgroup, pid,
// uid, network namespace) into a workload: a cgroup path, a systemd unit or
// pod, an executable, and the configured identity it matches.
package identity

// Workload is a resolved workload identity; it is the policy input's
// "identity" object.
type Workload struct {
	Name string `json:"name"`
	Known bool `json:"known"`
}
