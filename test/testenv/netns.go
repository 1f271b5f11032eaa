package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

var podSeq atomic.Uint32

// Pod is a network namespace joined to the host by a veth pair, with a
// default route to the host: what a Kubernetes pod looks like to the agent.
type Pod struct {
	Name   string // the netns name (ip netns)
	HostIP string // the host end of the veth
	PodIP  string // the pod end of the veth
}

// NewPod creates the namespace and veth pair. They use 169.254.78.0/24
// link-local addresses, so nothing is routed off the machine; both are
// removed at cleanup.
func NewPod(t testing.TB) Pod {
	t.Helper()
	n := podSeq.Add(1)
	p := Pod{
		Name:   fmt.Sprintf("tgpod-%d-%d", os.Getpid()%100000, n),
		HostIP: fmt.Sprintf("169.254.78.%d", 4*(n%60)+1),
		PodIP:  fmt.Sprintf("169.254.78.%d", 4*(n%60)+2),
	}
	host := fmt.Sprintf("tgh%d-%d", os.Getpid()%100000, n)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", p.Name).Run()
		exec.Command("ip", "link", "del", host).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", p.Name},
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.Name},
		{"addr", "add", p.HostIP + "/30", "dev", host},
		{"link", "set", host, "up"},
		{"-n", p.Name, "addr", "add", p.PodIP + "/30", "dev", "eth0"},
		{"-n", p.Name, "link", "set", "eth0", "up"},
		{"-n", p.Name, "link", "set", "lo", "up"},
		{"-n", p.Name, "route", "add", "default", "via", p.HostIP},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return p
}

// Command wraps cmd to run inside the pod's network namespace.
func (p Pod) Command(cmd *exec.Cmd) *exec.Cmd {
	wrapped := exec.Command("ip", append([]string{"netns", "exec", p.Name, cmd.Path}, cmd.Args[1:]...)...)
	wrapped.Env = cmd.Env
	return wrapped
}
