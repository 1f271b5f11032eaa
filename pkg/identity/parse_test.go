package identity

import (
	"strings"
	"testing"
)

const (
	cid1 = "3f2a9c4e5b6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b"
	cid2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var parseTests = []struct {
	path                 string
	unit, container, pod string
}{
	{path: "/"},
	{path: ""},
	{path: "/init.scope", unit: "init.scope"},
	{path: "/system.slice"},
	{path: "/system.slice/billing-export.service", unit: "billing-export.service"},
	{path: "/system.slice/nginx.service/worker", unit: "nginx.service"},
	{path: "/system.slice/system-getty.slice/getty@tty1.service", unit: "getty@tty1.service"},
	{path: "/system.slice/postgresql@15-main.service", unit: "postgresql@15-main.service"},
	{path: "/system.slice/sshd.socket", unit: "sshd.socket"},
	{path: "/user.slice/user-1000.slice/session-3.scope", unit: "session-3.scope"},
	// Inside user@.service everything is the user manager's, whatever the
	// user names it: no spoofing the system's billing-export.service.
	{path: "/user.slice/user-1000.slice/user@1000.service/init.scope", unit: "user@1000.service"},
	{path: "/user.slice/user-1000.slice/user@1000.service/app.slice/billing-export.service", unit: "user@1000.service"},
	{path: "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-5f3e.scope", unit: "user@1000.service"},
	{path: "/.service"},

	// Docker, systemd and cgroupfs drivers, and docker in docker.
	{path: "/system.slice/docker-" + cid1 + ".scope", unit: "docker-" + cid1 + ".scope", container: cid1},
	{path: "/docker/" + cid1, container: cid1},
	{path: "/docker/" + cid1 + "/docker/" + cid2, container: cid1},
	{path: "/system.slice/docker-" + cid1 + ".scope/system.slice/billing-export.service", unit: "docker-" + cid1 + ".scope", container: cid1},
	{path: "/docker/" + cid1[:63]},
	{path: "/docker/" + strings.ToUpper(cid1)},
	// Podman, rootful and rootless; nerdctl.
	{path: "/machine.slice/libpod-" + cid1 + ".scope/container", unit: "libpod-" + cid1 + ".scope", container: cid1},
	{path: "/machine.slice/libpod-conmon-" + cid1 + ".scope", unit: "libpod-conmon-" + cid1 + ".scope"},
	{path: "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + cid1 + ".scope", unit: "user@1000.service", container: cid1},
	{path: "/system.slice/nerdctl-" + cid1 + ".scope", unit: "nerdctl-" + cid1 + ".scope", container: cid1},

	// Kubernetes, systemd driver: burstable, guaranteed, besteffort; containerd and CRI-O.
	{
		path:      "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_4abc_9def_0123456789ab.slice/cri-containerd-" + cid1 + ".scope",
		unit:      "cri-containerd-" + cid1 + ".scope",
		container: cid1,
		pod:       "1234abcd-5678-4abc-9def-0123456789ab",
	},
	{
		path:      "/kubepods.slice/kubepods-pod8f1c2d3e_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/crio-" + cid2 + ".scope",
		unit:      "crio-" + cid2 + ".scope",
		container: cid2,
		pod:       "8f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
	},
	{
		path:      "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8f1c2d3e_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/crio-" + cid2 + ".scope/container",
		unit:      "crio-" + cid2 + ".scope",
		container: cid2,
		pod:       "8f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
	},
	{
		path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8f1c2d3e_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/crio-conmon-" + cid2 + ".scope",
		unit: "crio-conmon-" + cid2 + ".scope",
		pod:  "8f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
	},
	{
		// The pod slice itself (kubelet's pod-level cgroup).
		path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_4abc_9def_0123456789ab.slice",
		pod:  "1234abcd-5678-4abc-9def-0123456789ab",
	},
	{
		// A static pod: its UID is kubelet's 32-hex hash of the manifest.
		path:      "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d2b3c1c0f5e4a7b8c9d0e1f2a3b4c5d.slice/cri-containerd-" + cid1 + ".scope",
		unit:      "cri-containerd-" + cid1 + ".scope",
		container: cid1,
		pod:       "6d2b3c1c0f5e4a7b8c9d0e1f2a3b4c5d",
	},
	{
		// kubelet with --cgroup-root=/kubelet.
		path:      "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1234abcd_5678_4abc_9def_0123456789ab.slice/cri-containerd-" + cid1 + ".scope",
		unit:      "cri-containerd-" + cid1 + ".scope",
		container: cid1,
		pod:       "1234abcd-5678-4abc-9def-0123456789ab",
	},
	// Kubernetes, cgroupfs driver.
	{path: "/kubepods/burstable/pod1234abcd-5678-4abc-9def-0123456789ab/" + cid1, container: cid1, pod: "1234abcd-5678-4abc-9def-0123456789ab"},
	{path: "/kubepods/besteffort/pod1234abcd-5678-4abc-9def-0123456789ab/" + cid1, container: cid1, pod: "1234abcd-5678-4abc-9def-0123456789ab"},
	{path: "/kubepods/pod1234abcd-5678-4abc-9def-0123456789ab/" + cid1, container: cid1, pod: "1234abcd-5678-4abc-9def-0123456789ab"},
	{path: "/kubepods/burstable/pod1234abcd-5678-4abc-9def-0123456789ab", pod: "1234abcd-5678-4abc-9def-0123456789ab"},
	{path: "/kubepods/burstable/podnot-a-uid/" + cid1, container: cid1},
	// Pod-looking cgroups a user or a container made in its own delegated
	// subtree are not pods.
	{path: "/user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod1234abcd_5678_4abc_9def_0123456789ab.slice", unit: "user@1000.service"},
	{path: "/docker/" + cid1 + "/kubepods/pod1234abcd-5678-4abc-9def-0123456789ab", container: cid1},
	{path: "/system.slice/docker-" + cid1 + ".scope/kubepods.slice/kubepods-pod1234abcd_5678_4abc_9def_0123456789ab.slice", unit: "docker-" + cid1 + ".scope", container: cid1},
	{path: "/system.slice/somepod-pod1234abcd_5678_4abc_9def_0123456789ab.slice/x.service", unit: "x.service"},
}

func TestParseCgroupPath(t *testing.T) {
	for _, tt := range parseTests {
		unit, container, pod := parseCgroupPath(tt.path)
		if unit != tt.unit || container != tt.container || pod != tt.pod {
			t.Errorf("parseCgroupPath(%q)\n got unit=%q container=%q pod=%q\nwant unit=%q container=%q pod=%q",
				tt.path, unit, container, pod, tt.unit, tt.container, tt.pod)
		}
	}
}

func TestFallbackName(t *testing.T) {
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_4abc_9def_0123456789ab.slice/cri-containerd-" + cid1 + ".scope"
	for _, tt := range []struct{ path, want string }{
		{"/system.slice/billing-export.service", "billing-export.service"},
		{"/user.slice/user-1000.slice/session-3.scope", "session-3.scope"},
		{pod, "pod:1234abcd-5678-4abc-9def-0123456789ab"},
		{"/docker/" + cid1, "/docker/" + cid1},
		{"/", "/"},
	} {
		if got := newCgroupInfo(tt.path).name; got != tt.want {
			t.Errorf("name of unmatched workload in %q = %q; want %q", tt.path, got, tt.want)
		}
	}
}

// FuzzParseCgroupPath checks that whatever it is given, the parser returns
// only well-formed values taken from the path, and never panics.
func FuzzParseCgroupPath(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.path)
	}
	f.Fuzz(func(t *testing.T, p string) {
		unit, container, pod := parseCgroupPath(p)
		if unit != "" && (!isUnit(unit) || !strings.Contains(p, unit)) {
			t.Errorf("parseCgroupPath(%q): unit %q", p, unit)
		}
		if container != "" && (!isHex64(container) || !strings.Contains(p, container)) {
			t.Errorf("parseCgroupPath(%q): container %q", p, container)
		}
		if pod != "" && (!isPodUID(pod) || !strings.Contains(p, "kubepods")) {
			t.Errorf("parseCgroupPath(%q): pod %q", p, pod)
		}
	})
}
