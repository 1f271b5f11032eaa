// Package redirect loads tollgate's eBPF programs, attaches them to the
// governed cgroup with pinned bpf_links, keeps the target table up to date
// and tells the proxy where each accepted connection came from.
//
// Links and maps are pinned under a bpffs directory. When the agent dies the
// programs stay attached and keep steering governed connections to the
// proxy port, where nothing listens: they are refused (fail-closed). A
// restarted agent adopts the pinned links and replaces their programs
// atomically, so there is no moment when a governed connection goes direct.
package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tollgate-dev/tollgate/bpf"
	"github.com/tollgate-dev/tollgate/pkg/cgroup2"
)

// ErrNoOrigin is returned by Lookup for a connection the kernel did not
// redirect (or whose record is gone).
var ErrNoOrigin = errors.New("redirect: no origin recorded for connection")

// Target is one entry of the kernel's target table: connections to an
// address in Prefix on Port are redirected.
type Target struct {
	ID     uint32
	Prefix netip.Prefix
	Port   uint16
}

// Proxy is where redirected connections land.
type Proxy struct {
	Port uint16
	// V4 is the IPv4 address for clients in the agent's network namespace
	// (normally 127.0.0.1).
	V4 netip.Addr
	// Remote is the IPv4 address for clients in other network namespaces:
	// a link-local address on the host they reach through their default route.
	Remote netip.Addr
	// V6 is the IPv6 address for IPv6 dials (normally ::1).
	V6 netip.Addr
}

// Options configure Attach.
type Options struct {
	// Cgroup is the filesystem path of the governed cgroup v2 directory.
	Cgroup string
	// PinDir is a directory on bpffs for the pinned links and maps.
	PinDir string
	Proxy  Proxy
	// Mark is the SO_MARK of the agent's upstream sockets; they are never
	// redirected. Zero disables the check.
	Mark uint32
	// Exempt lists cgroup ids whose processes are never redirected (the
	// agent's own cgroup).
	Exempt  []uint64
	Targets []Target
	// Shortcut lets a governed client and the agent exchange bytes
	// straight between their sockets rather than through the TCP/IP stack
	// (see Shortcut). Off, or on a kernel that cannot run it, connections
	// work the same over TCP.
	Shortcut bool
}

// Config flags (struct config.flags in bpf/tollgate.c).
const (
	flagBreakGlass = 1
	flagShortcut   = 2
)

// ErrShortcutOff is Shortcut's answer when the shortcut is not in use.
var ErrShortcutOff = errors.New("redirect: the same-host shortcut is off")

// programs lists what is attached, in attach order: the programs that only
// read records first, connect last, so a redirected socket always finds the
// programs that follow it.
var programs = []struct {
	name   string
	attach ebpf.AttachType
	prog   func(*bpf.TollgatePrograms) *ebpf.Program
}{
	{"sockops", ebpf.AttachCGroupSockOps, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgSockops }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgGetpeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgGetpeername6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgSendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgSendmsg6 }},
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *bpf.TollgatePrograms) *ebpf.Program { return p.TgConnect6 }},
}

// Redirector owns the loaded programs, maps and links.
type Redirector struct {
	objs    bpf.TollgateObjects
	links   []link.Link
	pinDir  string
	cgroup  uint64
	adopted bool

	mu      sync.Mutex // serialises target table updates
	targets map[bpf.TollgateTargetKey]bpf.TollgateTargetVal

	shortcut    bool  // tg_skmsg is attached and the agent serves the shortcut
	shortcutErr error // why this kernel cannot run tg_skmsg
}

// Attach loads the programs and attaches them to opts.Cgroup, adopting links
// and maps already pinned under opts.PinDir by an earlier run.
func Attach(opts Options) (r *Redirector, err error) {
	if opts.Proxy.Port == 0 || !opts.Proxy.V4.Is4() || !opts.Proxy.Remote.Is4() || !opts.Proxy.V6.Is6() {
		return nil, fmt.Errorf("redirect: proxy needs a port, IPv4, remote IPv4 and IPv6 addresses")
	}
	cgID, err := cgroup2.ID(opts.Cgroup, "")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
		return nil, fmt.Errorf("redirect: pin dir: %w", err)
	}
	r = &Redirector{pinDir: opts.PinDir, cgroup: cgID}
	if err := r.load(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if opts.Shortcut && r.shortcutErr == nil {
		// On tg_socks itself, so it lives as long as the pinned map
		// (attaching again replaces it); before configure sets the flag
		// that has sockops fill tg_socks.
		err := link.RawAttachProgram(link.RawAttachProgramOptions{
			Target: r.objs.TgSocks.FD(), Program: r.objs.TgSkmsg, Attach: ebpf.AttachSkMsgVerdict})
		if err != nil {
			return nil, fmt.Errorf("redirect: attach sk_msg: %w", err)
		}
		r.shortcut = true
	}
	if err := r.configure(opts); err != nil {
		return nil, err
	}
	if err := r.SetExempt(opts.Exempt); err != nil {
		return nil, err
	}
	if err := r.SetTargets(opts.Targets); err != nil {
		return nil, err
	}
	if err := r.attach(opts.Cgroup); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Redirector) load() error {
	spec, err := bpf.LoadTollgate()
	if err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: r.pinDir}}
	r.shortcutErr, err = loadObjects(spec, &r.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// A different agent version pinned maps of another shape. Old links
		// keep the old maps alive until their programs are replaced below.
		for name := range spec.Maps {
			os.Remove(filepath.Join(r.pinDir, name))
		}
		r.shortcutErr, err = loadObjects(spec, &r.objs, opts)
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("redirect: load programs: %+v", verr)
		}
		return fmt.Errorf("redirect: load programs: %w", err)
	}
	return nil
}

// loadObjects loads spec into objs. The shortcut's program needs more of
// the kernel (BTF, Linux 5.9) than the rest, so it is loaded on its own,
// onto the maps the rest created: when it alone cannot load, a program
// that sends everything by TCP takes its place (never attached), and its
// error is returned apart.
func loadObjects(spec *ebpf.CollectionSpec, objs *bpf.TollgateObjects, opts *ebpf.CollectionOptions) (shortcutErr, err error) {
	if opts == nil {
		opts = &ebpf.CollectionOptions{}
	}
	rest := spec.Copy()
	rest.Programs[bpf.TollgateProgTgSkmsg] = &ebpf.ProgramSpec{
		Name: bpf.TollgateProgTgSkmsg, Type: ebpf.SkMsg, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1 /* SK_PASS */), asm.Return()},
	}
	coll, err := ebpf.NewCollectionWithOptions(rest, *opts)
	if err != nil {
		return nil, err
	}
	defer coll.Close() // what Assign did not take
	one := spec.Copy()
	one.Programs = map[string]*ebpf.ProgramSpec{bpf.TollgateProgTgSkmsg: one.Programs[bpf.TollgateProgTgSkmsg]}
	shortcut, shortcutErr := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{Programs: opts.Programs, MapReplacements: coll.Maps})
	if shortcutErr == nil {
		coll.Programs[bpf.TollgateProgTgSkmsg].Close()
		coll.Programs[bpf.TollgateProgTgSkmsg] = shortcut.DetachProgram(bpf.TollgateProgTgSkmsg)
		shortcut.Close() // its clones of the maps
	}
	return shortcutErr, coll.Assign(objs)
}

func (r *Redirector) configure(opts Options) error {
	cookie, err := hostNetnsCookie()
	if err != nil {
		return err
	}
	cfg := bpf.TollgateConfig{
		HostNetnsCookie: cookie,
		Mark:            opts.Mark,
		Proxy4:          be32(opts.Proxy.V4),
		Proxy4Remote:    be32(opts.Proxy.Remote),
		Port:            opts.Proxy.Port,
	}
	v6 := opts.Proxy.V6.As16()
	for i := range cfg.Proxy6 {
		cfg.Proxy6[i] = nativeU32(v6[i*4 : i*4+4])
	}
	var old bpf.TollgateConfig
	if err := r.objs.TgConfig.Lookup(uint32(0), &old); err == nil {
		cfg.Flags = old.Flags & flagBreakGlass // break-glass survives a restart
	}
	if r.shortcut {
		cfg.Flags |= flagShortcut
	}
	if err := r.objs.TgConfig.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("redirect: write config: %w", err)
	}
	return nil
}

func (r *Redirector) attach(cgroupPath string) error {
	cg, err := os.Open(cgroupPath)
	if err != nil {
		return fmt.Errorf("redirect: open cgroup: %w", err)
	}
	defer cg.Close()
	for _, p := range programs {
		prog := p.prog(&r.objs.TollgatePrograms)
		pin := filepath.Join(r.pinDir, "link_"+p.name)
		l, adopted, err := r.adopt(pin, prog)
		if err != nil {
			return fmt.Errorf("redirect: %s: %w", p.name, err)
		}
		if !adopted {
			// A raw bpf_link never falls back to a legacy attach, whose
			// detach-on-close would make fail-closed impossible.
			l, err = link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: prog, Attach: p.attach})
			if err != nil {
				return fmt.Errorf("redirect: attach %s (needs bpf_link support, Linux 5.7+): %w", p.name, err)
			}
			if err := l.Pin(pin); err != nil {
				l.Close()
				return fmt.Errorf("redirect: pin %s: %w", p.name, err)
			}
		}
		r.adopted = r.adopted || adopted
		r.links = append(r.links, l)
	}
	return nil
}

// adopt takes over a link pinned by an earlier run when it is attached to
// the same cgroup, swapping in prog. A link on another cgroup is removed.
func (r *Redirector) adopt(pin string, prog *ebpf.Program) (link.Link, bool, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("load pinned link: %w", err)
	}
	info, err := l.Info()
	if err == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == r.cgroup {
		if err := l.Update(prog); err != nil {
			l.Close()
			return nil, false, fmt.Errorf("update pinned link: %w", err)
		}
		return l, true, nil
	}
	// Attached elsewhere (the governed cgroup changed): let it go.
	l.Unpin()
	l.Close()
	return nil, false, nil
}

// Adopted reports whether Attach took over links pinned by an earlier run.
func (r *Redirector) Adopted() bool { return r.adopted }

// SetTargets replaces the kernel's target table.
func (r *Redirector) SetTargets(targets []Target) error {
	want := make(map[bpf.TollgateTargetKey]bpf.TollgateTargetVal, len(targets))
	for _, t := range targets {
		k, err := targetKey(t)
		if err != nil {
			return err
		}
		want[k] = bpf.TollgateTargetVal{Id: t.ID}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range want {
		if err := r.objs.TgTargets.Put(&k, &v); err != nil {
			return fmt.Errorf("redirect: add target: %w", err)
		}
	}
	// Remove what is no longer configured, including entries a previous run
	// left in the pinned map.
	var (
		k     bpf.TollgateTargetKey
		v     bpf.TollgateTargetVal
		stale []bpf.TollgateTargetKey
	)
	it := r.objs.TgTargets.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("redirect: list targets: %w", err)
	}
	for _, k := range stale {
		if err := r.objs.TgTargets.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("redirect: remove target: %w", err)
		}
	}
	r.targets = want
	return nil
}

// SetExempt replaces the set of exempt cgroup ids.
func (r *Redirector) SetExempt(ids []uint64) error {
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
		if err := r.objs.TgExempt.Put(id, uint8(1)); err != nil {
			return fmt.Errorf("redirect: exempt cgroup: %w", err)
		}
	}
	var (
		k     uint64
		v     uint8
		stale []uint64
	)
	it := r.objs.TgExempt.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		r.objs.TgExempt.Delete(k)
	}
	return it.Err()
}

// SetBreakGlass turns redirection off (true) or back on (false) without
// detaching: governed connections go direct while it is on.
func (r *Redirector) SetBreakGlass(on bool) error {
	var cfg bpf.TollgateConfig
	if err := r.objs.TgConfig.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("redirect: read config: %w", err)
	}
	if on {
		cfg.Flags |= flagBreakGlass
	} else {
		cfg.Flags &^= flagBreakGlass
	}
	return r.objs.TgConfig.Put(uint32(0), &cfg)
}

// Lookup returns the origin of the accepted connection whose client address
// is peer and whose local (proxy) address is local, and forgets it.
func (r *Redirector) Lookup(peer, local netip.AddrPort) (Origin, error) {
	k := bpf.TollgateTuple{
		SrcAddr: peer.Addr().As16(),
		DstAddr: local.Addr().As16(),
		SrcPort: peer.Port(),
		DstPort: local.Port(),
	}
	var o bpf.TollgateOrigin
	if err := r.objs.TgByTuple.LookupAndDelete(&k, &o); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Origin{}, ErrNoOrigin
		}
		// LRU hash maps support LookupAndDelete only on newer kernels.
		if err := r.objs.TgByTuple.Lookup(&k, &o); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return Origin{}, ErrNoOrigin
			}
			return Origin{}, fmt.Errorf("redirect: lookup origin: %w", err)
		}
		r.objs.TgByTuple.Delete(&k)
	}
	dst := netip.AddrFrom16(o.DstAddr)
	if o.Family == unix.AF_INET {
		dst = dst.Unmap()
	}
	return Origin{
		Dst:         netip.AddrPortFrom(dst, o.DstPort),
		TargetID:    o.TargetId,
		CgroupID:    o.CgroupId,
		PID:         o.Pid,
		UID:         o.Uid,
		GID:         o.Gid,
		NetnsCookie: o.NetnsCookie,
	}, nil
}

// LookupConn is Lookup for an accepted TCP connection.
func (r *Redirector) LookupConn(c net.Conn) (Origin, error) {
	peer, local, err := connAddrs(c)
	if err != nil {
		return Origin{}, err
	}
	return r.Lookup(peer, local)
}

// connAddrs returns an accepted connection's client and local addresses,
// IPv4 unmapped.
func connAddrs(c net.Conn) (peer, local netip.AddrPort, err error) {
	p, err1 := netip.ParseAddrPort(c.RemoteAddr().String())
	l, err2 := netip.ParseAddrPort(c.LocalAddr().String())
	if err := errors.Join(err1, err2); err != nil {
		return peer, local, fmt.Errorf("redirect: connection addresses: %w", err)
	}
	return netip.AddrPortFrom(p.Addr().Unmap(), p.Port()), netip.AddrPortFrom(l.Addr().Unmap(), l.Port()), nil
}

// Shortcut lets an accepted connection and its client exchange bytes
// straight between their two sockets, skipping the TCP/IP stack on both
// sides, when the client's socket is one the programs redirected on this
// host (sockops put it in tg_socks). Each send takes the shortcut only
// when it cannot overtake bytes sent by TCP, and falls back to TCP past
// 4 MiB its peer has not read, for TCP's flow control (tg_skmsg in
// bpf/tollgate.c). The connection behaves the same either way, so a
// failure only costs speed. Call it before the first write.
func (r *Redirector) Shortcut(c net.Conn) error {
	if !r.shortcut {
		return ErrShortcutOff
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("redirect: shortcut: %T has no socket", c)
	}
	peer, local, err := connAddrs(c)
	if err != nil {
		return err
	}
	k := bpf.TollgateTuple{
		SrcAddr: local.Addr().As16(),
		DstAddr: peer.Addr().As16(),
		SrcPort: local.Port(),
		DstPort: peer.Port(),
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("redirect: shortcut: %w", err)
	}
	// A fresh record: the tuple may have served an earlier connection.
	if err := r.objs.TgHops.Update(&k, &bpf.TollgateHop{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("redirect: shortcut: %w", err)
	}
	var uerr error
	if err := raw.Control(func(fd uintptr) {
		uerr = r.objs.TgSocks.Update(&k, uint64(fd), ebpf.UpdateAny)
	}); err != nil {
		return fmt.Errorf("redirect: shortcut: %w", err)
	}
	if uerr != nil {
		return fmt.Errorf("redirect: shortcut: %w", uerr)
	}
	return nil
}

// ShortcutErr says why this kernel cannot run the shortcut, nil when it
// can.
func (r *Redirector) ShortcutErr() error { return r.shortcutErr }

// Stats are the kernel side's event counters, summed over CPUs.
type Stats = bpf.TollgateStats

// Stats reads the counters.
func (r *Redirector) Stats() (Stats, error) {
	var per []bpf.TollgateStats
	if err := r.objs.TgStats.Lookup(uint32(0), &per); err != nil {
		return Stats{}, fmt.Errorf("redirect: read stats: %w", err)
	}
	var s Stats
	for _, p := range per {
		s.Redirected += p.Redirected
		s.Exempt += p.Exempt
		s.DeniedUdp += p.DeniedUdp
		s.Established += p.Established
		s.NotConfigured += p.NotConfigured
		s.Shortcut += p.Shortcut
		s.ShortcutTcp += p.ShortcutTcp
	}
	return s, nil
}

// Close releases the agent's handles. Links and maps stay pinned, so
// governed connections keep landing on the (now closed) proxy port and are
// refused: this is the fail-closed exit.
func (r *Redirector) Close() error {
	var errs []error
	for _, l := range r.links {
		errs = append(errs, l.Close())
	}
	r.links = nil
	errs = append(errs, r.objs.Close())
	return errors.Join(errs...)
}

// Detach removes the programs from the cgroup and the pins from bpffs:
// governed connections go direct afterwards (fail-open exit, uninstall).
func (r *Redirector) Detach() error {
	var errs []error
	if r.shortcut && len(r.links) > 0 { // attached, and still open
		errs = append(errs, link.RawDetachProgram(link.RawDetachProgramOptions{
			Target: r.objs.TgSocks.FD(), Program: r.objs.TgSkmsg, Attach: ebpf.AttachSkMsgVerdict}))
	}
	for _, l := range r.links {
		errs = append(errs, l.Unpin())
	}
	errs = append(errs, r.Close())
	errs = append(errs, Unpin(r.pinDir))
	return errors.Join(errs...)
}

// Unpin removes every tollgate pin under pinDir and the directory itself.
// Links whose pins are removed detach once no process holds them.
func Unpin(pinDir string) error {
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func targetKey(t Target) (bpf.TollgateTargetKey, error) {
	if !t.Prefix.IsValid() || t.Port == 0 {
		return bpf.TollgateTargetKey{}, fmt.Errorf("redirect: target %d: needs an address prefix and a port", t.ID)
	}
	p := t.Prefix.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.TollgateTargetKey{
		Prefixlen: uint32(16 + bits),
		Port:      t.Port,
		Addr:      p.Addr().As16(),
	}, nil
}

func hostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("redirect: socket: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("redirect: netns cookie (needs Linux 5.14+): %w", err)
	}
	return c, nil
}

// be32 gives an IPv4 address as the kernel holds it: network byte order
// read as a native integer.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return nativeU32(b[:])
}

func nativeU32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }
