package redirect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tollgate-dev/tollgate/bpf"
)

// ProbeResult says whether one program could be loaded and attached.
type ProbeResult struct {
	Program string
	Err     error
	// Optional: the agent runs without it (the same-host shortcut).
	Optional bool
}

// Probe loads every program without pinning anything and attaches each one
// with a bpf_link to a throwaway cgroup it creates under cgroupMount (never
// the root), then removes it all. It tells whether this kernel can run the
// agent.
func Probe(cgroupMount string) ([]ProbeResult, error) {
	spec, err := bpf.LoadTollgate()
	if err != nil {
		return nil, err
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs bpf.TollgateObjects
	shortcutErr, err := loadObjects(spec, &objs, nil)
	if err != nil {
		return nil, fmt.Errorf("load programs: %w", withVerifierLog(err))
	}
	defer objs.Close()

	dir := filepath.Join(cgroupMount, fmt.Sprintf("tollgate-probe-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create probe cgroup: %w", err)
	}
	defer os.Remove(dir)
	cg, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer cg.Close()

	var out []ProbeResult
	for _, p := range programs {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: p.prog(&objs.TollgatePrograms), Attach: p.attach})
		if err == nil {
			err = l.Close()
		}
		out = append(out, ProbeResult{Program: p.name, Err: err})
	}
	if shortcutErr == nil {
		shortcutErr = link.RawAttachProgram(link.RawAttachProgramOptions{
			Target: objs.TgSocks.FD(), Program: objs.TgSkmsg, Attach: ebpf.AttachSkMsgVerdict})
	}
	if shortcutErr != nil {
		shortcutErr = fmt.Errorf("%w: clients reach the agent over TCP (proxy.shortcut needs BTF and Linux 5.9)", withVerifierLog(shortcutErr))
	}
	out = append(out, ProbeResult{Program: "sk_msg", Err: shortcutErr, Optional: true})
	return out, nil
}

// withVerifierLog adds the end of the verifier's log to a refused load.
func withVerifierLog(err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("%w (verifier: %s)", err, lastLines(verr.Log, 3))
	}
	return err
}

func lastLines(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}
