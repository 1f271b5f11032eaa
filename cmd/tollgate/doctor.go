package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tollgate-dev/tollgate/pkg/bpffs"
	"github.com/tollgate-dev/tollgate/pkg/cgroup2"
	"github.com/tollgate-dev/tollgate/redirect"
)

type check struct {
	name, status, detail string
}

func doctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run the agent, and say what is missing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := doctor()
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CHECK\tSTATUS\tDETAIL")
			failed := 0
			for _, c := range checks {
				if c.status == "FAIL" {
					failed++
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", c.name, c.status, c.detail)
			}
			w.Flush()
			if failed > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "\n%d check(s) failed: this host cannot run tollgate until they pass.\n", failed)
				return exitCode(1)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "\nAll checks passed.")
			return nil
		},
	}
}

func doctor() []check {
	var out []check
	ok := func(name, detail string) { out = append(out, check{name, "ok", detail}) }
	fail := func(name, detail string) { out = append(out, check{name, "FAIL", detail}) }
	warn := func(name, detail string) { out = append(out, check{name, "warn", detail}) }

	var uts unix.Utsname
	unix.Uname(&uts)
	rel := unix.ByteSliceToString(uts.Release[:])
	if major, minor := kernelVersion(rel); major > 5 || major == 5 && minor >= 8 {
		ok("kernel", rel+" (5.8 or newer needed)")
	} else {
		fail("kernel", rel+" is older than 5.8: upgrade the kernel (bpf_link for cgroups, sockops cookies)")
	}

	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		ok("btf", "/sys/kernel/btf/vmlinux")
	} else {
		warn("btf", "no /sys/kernel/btf/vmlinux: the same-host shortcut (proxy.shortcut) needs it; build the kernel with CONFIG_DEBUG_INFO_BTF=y")
	}

	mount, err := cgroup2.Mount()
	if err == nil {
		ok("cgroup v2", "mounted at "+mount)
	} else {
		fail("cgroup v2", "not mounted: mount it (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1")
	}

	if bpffs.IsMounted("/sys/fs/bpf") {
		ok("bpffs", "mounted at /sys/fs/bpf")
	} else {
		warn("bpffs", "not mounted at /sys/fs/bpf: tollgate run mounts it; to keep pins across reboots add it to /etc/fstab")
	}

	capEff := effectiveCaps()
	var missing []string
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_PERFMON, "CAP_PERFMON"}} {
		if capEff&(1<<c.bit) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) == 0 {
		ok("capabilities", "CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON")
	} else {
		fail("capabilities", "missing "+strings.Join(missing, ", ")+": run as root or grant them (systemd AmbientCapabilities=)")
	}

	if mount == "" {
		fail("programs", "not tried: no cgroup v2 mount")
		return out
	}
	results, err := redirect.Probe(mount)
	if err != nil {
		fail("programs", err.Error())
		return out
	}
	for _, r := range results {
		switch {
		case r.Err == nil && r.Optional:
			ok("program "+r.Program, "loaded and attached (same-host shortcut)")
		case r.Err == nil:
			ok("program "+r.Program, "loaded and attached with a bpf_link")
		case r.Optional:
			warn("program "+r.Program, r.Err.Error())
		default:
			fail("program "+r.Program, r.Err.Error())
		}
	}
	return out
}

func kernelVersion(rel string) (int, int) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	major, _ := strconv.Atoi(parts[0])
	minor, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major, minor
}

func effectiveCaps() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n
		}
	}
	return 0
}
