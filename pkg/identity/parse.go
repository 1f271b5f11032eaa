package identity

import "strings"

// unitSuffixes are the systemd unit types that can own a cgroup with
// processes (slices are inner nodes only). Timers own none but are cheap to
// recognize.
var unitSuffixes = []string{".service", ".scope", ".socket", ".mount", ".swap", ".timer"}

// containerPrefixes precede a 64-hex container id in a systemd scope name:
// docker, containerd's CRI plugin, CRI-O, podman and nerdctl. CRI-O's and
// podman's "-conmon-" scopes hold the monitor, not the container, and do not
// match.
var containerPrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-", "nerdctl-"}

// parseCgroupPath extracts from a cgroup v2 path the systemd unit, the
// container id and the Kubernetes pod UID it shows, each empty when absent.
//
// Only what the host's managers created counts. Below a unit's cgroup
// everything belongs to that unit, and a delegated subtree (user@.service,
// a container with its own systemd) can name its cgroups as it likes: a
// user's "app.slice/billing-export.service" must not pass for the system's
// billing-export.service. So the unit is the first non-slice element after
// the chain of slices from the root, the pod UID is read only from that
// chain (systemd driver) or from fixed positions under /kubepods (cgroupfs
// driver), and the container id is the outermost one.
func parseCgroupPath(p string) (unit, containerID, podUID string) {
	rest := strings.Trim(p, "/")
	// Systemd: slices from the root, then the unit that owns the rest.
	for rest != "" {
		el, tail, _ := strings.Cut(rest, "/")
		if !isSlice(el) {
			if isUnit(el) {
				unit = el
			}
			break
		}
		if podUID == "" {
			podUID = slicePodUID(el)
		}
		rest = tail
	}
	if podUID == "" {
		podUID = cgroupfsPodUID(p)
	}
	return unit, outerContainerID(p), podUID
}

func isSlice(el string) bool {
	return len(el) > len(".slice") && strings.HasSuffix(el, ".slice")
}

func isUnit(el string) bool {
	for _, s := range unitSuffixes {
		if len(el) > len(s) && strings.HasSuffix(el, s) {
			return true
		}
	}
	return false
}

// slicePodUID reads the pod UID from a kubelet slice (systemd cgroup
// driver) such as "kubepods-burstable-pod1234abcd_5678_....slice", where
// systemd's escaping turned the UID's dashes into underscores.
func slicePodUID(el string) string {
	name := strings.TrimSuffix(el, ".slice")
	i := strings.LastIndex(name, "-pod")
	if i < 0 || !strings.Contains(name[:i], "kubepods") {
		return ""
	}
	uid := strings.ReplaceAll(name[i+len("-pod"):], "_", "-")
	if !isPodUID(uid) {
		return ""
	}
	return uid
}

// cgroupfsPodUID reads the pod UID from a kubelet path under the cgroupfs
// driver: /kubepods/pod<uid>/... (guaranteed QoS) or
// /kubepods/{burstable,besteffort}/pod<uid>/....
func cgroupfsPodUID(p string) string {
	rest, ok := strings.CutPrefix(p, "/kubepods/")
	if !ok {
		return ""
	}
	el, tail, _ := strings.Cut(rest, "/")
	if el == "burstable" || el == "besteffort" {
		el, _, _ = strings.Cut(tail, "/")
	}
	uid, ok := strings.CutPrefix(el, "pod")
	if !ok || !isPodUID(uid) {
		return ""
	}
	return uid
}

// isPodUID reports whether s looks like a pod UID: a UUID in its 8-4-4-4-12
// form, or the 32 hex digits kubelet gives static pods.
func isPodUID(s string) bool {
	switch len(s) {
	case 32:
		return isHex(s)
	case 36:
		for i := 0; i < len(s); i++ {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if s[i] != '-' {
					return false
				}
			} else if !isHexDigit(s[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// outerContainerID returns the first (outermost) container id in p: an
// element that is 64 hex digits (cgroupfs: /docker/<id>,
// /kubepods/burstable/pod<uid>/<id>) or a runtime's scope such as
// docker-<id>.scope, cri-containerd-<id>.scope or crio-<id>.scope.
func outerContainerID(p string) string {
	rest := strings.Trim(p, "/")
	for rest != "" {
		var el string
		el, rest, _ = strings.Cut(rest, "/")
		if isHex64(el) {
			return el
		}
		core, ok := strings.CutSuffix(el, ".scope")
		if !ok {
			continue
		}
		for _, pre := range containerPrefixes {
			if id, ok := strings.CutPrefix(core, pre); ok && isHex64(id) {
				return id
			}
		}
	}
	return ""
}

func isHex64(s string) bool { return len(s) == 64 && isHex(s) }

// isHex reports whether s is lowercase hex digits only, as runtimes write
// container ids and kubelet pod UIDs.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
