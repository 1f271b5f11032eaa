// Package agent assembles the tollgate daemon: it attaches the redirect,
// listens where redirected connections land, identifies each one and hands
// it to the protocol engine of its target.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/audit/pgsink"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/bpffs"
	"github.com/tollgate-dev/tollgate/pkg/certs"
	"github.com/tollgate-dev/tollgate/pkg/cgroup2"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/control"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	lf "github.com/tollgate-dev/tollgate/pkg/logfields"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/redirect"
)

// Version is the agent's version, set by the build.
var Version = "dev"

// Agent is a running tollgate daemon.
type Agent struct {
	log       *zap.Logger
	cfgPath   string
	mount     string
	sessions  *l7.Table
	resolver  *identity.Resolver
	inventory *identity.Inventory
	policy    *policy.Engine
	journal   *audit.Journal
	approvals *approval.Broker
	webhook   *approval.Webhook // nil: none configured
	started   time.Time

	state atomic.Pointer[state]

	// set by Run
	redir     *redirect.Redirector
	listen    []string
	reloadMu  sync.Mutex
	sessionWG sync.WaitGroup
}

// state is what a config (re)load produces; sessions keep the target they
// started with.
type state struct {
	cfg     *config.Config
	targets []*target
	loaded  time.Time
}

type target struct {
	cfg    *config.Target
	prefix netip.Prefix
	port   uint16
	engine l7.Engine
}

// New prepares an agent from the config at path. Nothing is attached or
// listened on until Run.
func New(cfgPath string, log *zap.Logger) (*Agent, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	mount, err := cgroup2.Mount()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		log:      log,
		cfgPath:  cfgPath,
		mount:    mount,
		sessions: l7.NewTable(0),
		started:  time.Now(),
	}
	// The journal first: everything after, the policy load included, is
	// evidence.
	a.journal, err = audit.Open(cfg.Audit.Dir, audit.Options{
		Durability:    audit.Durability(cfg.Audit.Durability),
		FlushInterval: cfg.Audit.FlushInterval,
		SyncInterval:  cfg.Audit.SyncInterval,
		KeyDir:        filepath.Join(cfg.StateDir, "keys"),
	})
	if err != nil {
		return nil, cfg.KeyError("audit.dir", err)
	}
	a.policy, err = policy.New(cfg.Policy.Dir, policy.Options{
		OnReload: func(version string, err error) {
			rec := map[string]any{"version": version, "dir": cfg.Policy.Dir}
			if err != nil {
				rec["error"] = err.Error()
			}
			a.journal.Append(context.Background(), audit.TypePolicyLoaded, rec)
			switch {
			case err != nil && version != "":
				log.Error("policy failed to load; the previous policy stays in force", zap.String("policy_version", version), zap.Error(err))
			case err != nil:
				log.Error("no policy in force: every connection and statement is denied", zap.String("policy_dir", cfg.Policy.Dir), zap.Error(err))
			default:
				log.Info("policy loaded", zap.String("policy_version", version))
			}
		},
		// The detail of an evaluation error can quote SQL: it belongs in
		// the audit journal, never in logs.
		OnError: func(error) { log.Warn("policy evaluation failed; the request was denied") },
	})
	if err != nil {
		a.journal.Close()
		return nil, cfg.KeyError("policy.dir", err)
	}
	var notifier approval.Notifier
	if wh := cfg.Approvals.Webhook; wh.URL != "" {
		a.webhook = approval.NewWebhook(approval.WebhookOptions{
			URL: wh.URL, Timeout: wh.Timeout, MaxAttempts: wh.MaxAttempts, Backoff: wh.Backoff,
			Log: func(msg string, err error) { log.Warn("approval webhook: "+msg, zap.Error(err)) },
		})
		notifier = a.webhook
	}
	a.approvals = approval.New(approval.Options{Journal: a.journal, Notifier: notifier, DefaultTimeout: cfg.Approvals.Timeout})
	st, err := a.build(cfg)
	if err != nil {
		a.approvals.Close()
		if a.webhook != nil {
			a.webhook.Close()
		}
		a.journal.Close()
		return nil, err
	}
	a.state.Store(st)
	a.resolver = identity.NewResolver(mount, cfg.Identities)
	a.inventory = identity.NewInventory(cfg.Identities)
	for _, m := range a.inventory.Missing() {
		log.Warn("identity lacks what an auditor will ask for", zap.String("problem", m))
	}
	return a, nil
}

// build checks cfg against this host and makes its engines.
func (a *Agent) build(cfg *config.Config) (*state, error) {
	if err := cfg.ValidateProtocols(l7.IsRegistered); err != nil {
		return nil, err
	}
	dir := filepath.Join(a.mount, cfg.BPF.Cgroup)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, cfg.KeyError("bpf.cgroup", fmt.Errorf("%q is not a cgroup v2 directory under %s", cfg.BPF.Cgroup, a.mount))
	}
	st := &state{cfg: cfg, loaded: time.Now()}
	clientTLS, err := a.clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	deps := l7.Deps{Dial: a.dialer(cfg.Proxy.Mark), Log: a.log, ClientTLS: clientTLS, StateDir: cfg.StateDir, Policy: a.policy, Journal: a.journal, Approvals: a.approvals}
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		prefix, port, err := t.Match()
		if err != nil {
			return nil, err
		}
		eng, err := l7.New(t, deps)
		if err != nil {
			return nil, err
		}
		st.targets = append(st.targets, &target{cfg: t, prefix: prefix, port: port, engine: eng})
	}
	return st, nil
}

// clientTLS is the certificate presented to clients that ask for TLS: the
// configured one, or a self-signed one kept in <state_dir>/tls whose names
// include every target's address.
func (a *Agent) clientTLS(cfg *config.Config) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	if cfg.Proxy.TLS.CertFile != "" {
		cert, err = certs.Load(cfg.Proxy.TLS.CertFile, cfg.Proxy.TLS.KeyFile)
		if err != nil {
			return nil, cfg.KeyError("proxy.tls", err)
		}
	} else {
		var hosts []string
		for i := range cfg.Targets {
			if p, _, err := cfg.Targets[i].Match(); err == nil && p.IsSingleIP() {
				hosts = append(hosts, p.Addr().String())
			}
		}
		cert, err = certs.SelfSigned(filepath.Join(cfg.StateDir, "tls"), hosts, time.Now())
		if err != nil {
			return nil, err
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"postgresql"}}, nil
}

// dialer opens upstream connections with the agent's SO_MARK, which the
// kernel programs never redirect.
func (a *Agent) dialer(mark uint32) func(ctx context.Context, network, address string) (net.Conn, error) {
	d := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
			}); err != nil {
				return err
			}
			return serr
		},
	}
	return d.DialContext
}

func (st *state) redirectTargets() []redirect.Target {
	out := make([]redirect.Target, len(st.targets))
	for i, t := range st.targets {
		out[i] = redirect.Target{ID: uint32(i + 1), Prefix: t.prefix, Port: t.port}
	}
	return out
}

// match finds the target a connection to dst was meant for.
func (st *state) match(dst netip.AddrPort) *target {
	var best *target
	for _, t := range st.targets {
		if t.port == dst.Port() && t.prefix.Contains(dst.Addr()) && (best == nil || t.prefix.Bits() > best.prefix.Bits()) {
			best = t
		}
	}
	return best
}

// Run attaches, serves until ctx is cancelled, then drains sessions for at
// most the configured grace and lets go of the kernel side according to
// bpf.on_agent_down.
func (a *Agent) Run(ctx context.Context) (err error) {
	cfg := a.state.Load().cfg
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	if err := bpffs.Mount("/sys/fs/bpf"); err != nil {
		return err
	}
	if !bpffs.IsMounted(filepath.Dir(cfg.BPF.PinDir)) && !bpffs.IsMounted(cfg.BPF.PinDir) {
		return fmt.Errorf("bpf.pin_dir: %s is not on a bpf filesystem", cfg.BPF.PinDir)
	}

	v4 := netip.MustParseAddr("127.0.0.1")
	v6 := netip.MustParseAddr("::1")
	remote, err := netip.ParseAddr(cfg.Proxy.LinkLocal)
	if err != nil {
		return fmt.Errorf("proxy.link_local: %w", err)
	}
	removeAddr, err := redirect.AddLocalAddress(remote)
	if err != nil {
		return err
	}

	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for _, addr := range []netip.Addr{v4, v6, remote} {
		ap := netip.AddrPortFrom(addr, cfg.Proxy.Port)
		l, err := net.Listen("tcp", ap.String())
		if err != nil {
			if addr == v6 {
				a.log.Warn("no IPv6 loopback; IPv6 dials to targets will be refused", zap.Error(err))
				continue
			}
			return fmt.Errorf("proxy listen %s: %w", ap, err)
		}
		lns = append(lns, l)
		a.listen = append(a.listen, ap.String())
	}

	// The control socket first: a second agent on the same config stops
	// here, before touching the kernel side the first one owns.
	gid := -1
	if cfg.ControlGroup != "" {
		g, err := user.LookupGroup(cfg.ControlGroup)
		if err != nil {
			return cfg.KeyError("control_group", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	ctrl, err := control.Listen(cfg.ControlSocket, gid, a)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			ctrl.Shutdown(context.Background())
		}
	}()
	var remoteCtl *control.Server
	if ap := cfg.Approvals; ap.Listen != "" {
		tlsConf, err := control.ServerTLSConfig(ap.TLS.CertFile, ap.TLS.KeyFile)
		if err != nil {
			return cfg.KeyError("approvals.tls", err)
		}
		v := control.NewOIDCVerifier(control.OIDCOptions{
			Issuer: ap.OIDC.Issuer, Audience: ap.OIDC.Audience,
			GroupsClaim: ap.OIDC.GroupsClaim, UsernameClaim: ap.OIDC.UsernameClaim,
		})
		if remoteCtl, err = control.ListenTCP(ap.Listen, tlsConf, v, a); err != nil {
			return cfg.KeyError("approvals.listen", err)
		}
		defer func() {
			if err != nil {
				remoteCtl.Shutdown(context.Background())
			}
		}()
	}

	exempt, err := a.ownCgroup()
	if err != nil {
		return err
	}
	a.redir, err = redirect.Attach(redirect.Options{
		Cgroup:   filepath.Join(a.mount, cfg.BPF.Cgroup),
		PinDir:   cfg.BPF.PinDir,
		Proxy:    redirect.Proxy{Port: cfg.Proxy.Port, V4: v4, Remote: remote, V6: v6},
		Mark:     cfg.Proxy.Mark,
		Shortcut: cfg.Proxy.ShortcutOn(),
		Exempt:   exempt,
		Targets:  a.state.Load().redirectTargets(),
	})
	if err != nil {
		return err
	}
	a.journal.Append(ctx, audit.TypeAgentStart, map[string]any{
		"version": Version, "pid": os.Getpid(), "config": a.cfgPath, "cgroup": cfg.BPF.Cgroup,
		"policy_version": a.policy.Version(), "adopted_pinned_links": a.redir.Adopted(),
	})
	a.log.Info("redirect attached",
		zap.String(lf.Cgroup, cfg.BPF.Cgroup), zap.String(lf.PinDir, cfg.BPF.PinDir),
		zap.Bool("adopted", a.redir.Adopted()), zap.Strings(lf.Listen, a.listen))
	if err := a.redir.ShortcutErr(); err != nil && cfg.Proxy.ShortcutOn() {
		a.log.Warn("same-host shortcut unavailable on this kernel: clients reach the agent over TCP", zap.Error(err))
	}

	sessCtx, cancelSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSessions()
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		g.Go(func() error { return a.accept(sessCtx, l) })
	}
	// The control API stays up while sessions drain.
	ctrlErr := make(chan error, 2)
	go func() { ctrlErr <- ctrl.Serve() }()
	if remoteCtl != nil {
		go func() { ctrlErr <- remoteCtl.Serve() }()
	}
	for i, sk := range cfg.Audit.Sinks {
		// The journal on disk is the sink's buffer: an unreachable
		// PostgreSQL delays shipping, it never blocks statements.
		sink := pgsink.New(sk.DSN, pgsink.Options{Logger: a.log.With(zap.Int("audit_sink", i))})
		g.Go(func() error {
			if err := sink.Run(gctx, a.journal); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("audit sink stopped", zap.Int("audit_sink", i), zap.Error(err))
			}
			return nil
		})
	}
	if r := cfg.Audit.Retention; r.MaxAge > 0 || r.MaxBytes > 0 {
		g.Go(func() error { a.retain(gctx, r); return nil })
	}
	g.Go(func() error {
		if err := a.policy.Watch(gctx); err != nil {
			a.log.Warn("policy files are not watched; reload with SIGHUP", zap.Error(err))
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		for _, l := range lns {
			l.Close()
		}
		return nil
	})
	<-gctx.Done()
	runErr := g.Wait()
	// Held statements end now, refused, journaled as abandoned: nothing
	// is approved by a restart.
	a.approvals.Close()

	// Drain: sessions get the grace period to finish, then are cut.
	drained := make(chan struct{})
	go func() { a.sessionWG.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(cfg.ShutdownGrace):
		a.log.Warn("shutdown grace over; closing sessions", zap.Int("sessions_open", a.sessions.Count()))
		cancelSessions()
		<-drained
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	shutErr := ctrl.Shutdown(shutCtx)
	ctrlErrs := <-ctrlErr
	if remoteCtl != nil {
		shutErr = errors.Join(shutErr, remoteCtl.Shutdown(shutCtx))
		ctrlErrs = errors.Join(ctrlErrs, <-ctrlErr)
	}
	if a.webhook != nil {
		a.webhook.Close()
	}
	relErr := a.release(cfg, removeAddr)
	a.journal.Append(context.Background(), audit.TypeAgentStop, map[string]any{"pid": os.Getpid(), "on_agent_down": cfg.BPF.OnAgentDown})
	return errors.Join(runErr, shutErr, ctrlErrs, relErr, a.journal.Close())
}

// release lets go of the kernel side. Fail-closed keeps the programs
// attached and the proxy address in place, so governed connections are
// refused until an agent returns; fail-open detaches everything.
func (a *Agent) release(cfg *config.Config, removeAddr func() error) error {
	if cfg.BPF.OnAgentDown == "fail-open" {
		a.log.Warn("fail-open: detaching; governed connections now go direct")
		return errors.Join(a.redir.Detach(), removeAddr())
	}
	return a.redir.Close()
}

// ownCgroup is the agent's own cgroup id: its sockets are never redirected
// (the SO_MARK covers upstream dials; this covers everything else).
func (a *Agent) ownCgroup() ([]uint64, error) {
	p, err := cgroup2.ProcPath(os.Getpid())
	if err != nil {
		return nil, err
	}
	id, err := cgroup2.ID(a.mount, p)
	if err != nil {
		return nil, err
	}
	return []uint64{id}, nil
}

func (a *Agent) accept(ctx context.Context, l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			a.log.Warn("accept", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: don't spin
			continue
		}
		a.sessionWG.Add(1)
		go func() {
			defer a.sessionWG.Done()
			a.handle(ctx, c)
		}()
	}
}

// handle identifies an accepted connection and runs its session.
func (a *Agent) handle(ctx context.Context, c net.Conn) {
	origin, err := a.redir.LookupConn(c)
	if err != nil {
		// Not redirected by our programs (someone dialled the proxy port
		// directly) or the record is gone: refuse, never guess.
		a.log.Warn("connection without origin refused", zap.String(lf.Peer, c.RemoteAddr().String()), zap.Error(err))
		c.Close()
		return
	}
	if err := a.redir.Shortcut(c); err != nil && !errors.Is(err, redirect.ErrShortcutOff) {
		a.log.Debug("same-host shortcut not taken: the connection uses TCP", zap.Error(err))
	}
	st := a.state.Load()
	t := st.match(origin.Dst)
	if t == nil {
		a.log.Warn("connection to a target no longer configured refused", zap.Stringer(lf.Dst, origin.Dst))
		c.Close()
		return
	}
	s := &l7.Session{
		ID:       l7.NewID(),
		Target:   t.cfg,
		Origin:   origin,
		Workload: a.resolver.Resolve(origin),
		Start:    time.Now(),
	}
	s.Log = a.log.With(zap.String(lf.Session, s.ID), zap.String(lf.Target, t.cfg.Name))
	s.Log.Info("session start",
		zap.String(lf.Identity, s.Workload.Name), zap.Bool("known", s.Workload.Known),
		zap.Stringer(lf.Dst, origin.Dst), zap.Uint64(lf.CgroupID, origin.CgroupID),
		zap.Uint32(lf.PID, origin.PID), zap.Uint32(lf.UID, origin.UID), zap.Uint64(lf.NetnsCookie, origin.NetnsCookie))
	a.sessions.Add(s)
	a.inventory.Seen(s.Workload, t.cfg.Name, s.Start)
	seq, err := a.journal.Append(ctx, audit.TypeSessionStart, sessionStartRecord(s))
	if err != nil {
		// No evidence, no access.
		s.Log.Warn("session refused: the audit journal cannot be written", zap.Error(err))
		t.engine.SendError(c, fmt.Errorf("tollgate cannot record this session: %w", err))
		c.Close()
		a.sessions.Done(s)
		return
	}
	s.AuditStart = seq
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.SetCancel(cancel)
	err = t.engine.Serve(sctx, s, c)
	a.approvals.EndSession(s.ID)
	a.sessions.Done(s)
	a.journal.Append(context.Background(), audit.TypeSessionEnd, sessionEndRecord(s, err))
	denied := s.Denied.Load()
	a.inventory.Statements(s.Workload.Name, s.Statements.Load()-denied, denied)
	fields := []zap.Field{zap.Int64(lf.BytesIn, s.BytesIn.Load()), zap.Int64(lf.BytesOut, s.BytesOut.Load()), zap.Duration(lf.Duration, s.End().Sub(s.Start))}
	if err != nil && !errors.Is(err, context.Canceled) {
		fields = append(fields, zap.Error(err))
	}
	s.Log.Info("session end", fields...)
}

// retain applies the retention limits now and every minute. Whole segments
// go; the journal records (and signs) what was removed.
func (a *Agent) retain(ctx context.Context, r config.Retention) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		removed, err := a.journal.Prune(r.MaxAge, r.MaxBytes)
		switch {
		case err != nil:
			a.log.Warn("audit retention failed", zap.Error(err))
		case len(removed) > 0:
			a.log.Info("audit retention removed old segments", zap.Int("segments", len(removed)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sessionStartRecord(s *l7.Session) map[string]any {
	return map[string]any{
		"session":  s.ID,
		"identity": s.Workload,
		"target":   map[string]any{"name": s.Target.Name, "protocol": s.Target.Protocol, "address": s.Target.Address},
		"origin": map[string]any{
			"dst": s.Origin.Dst.String(), "cgroup_id": s.Origin.CgroupID, "pid": s.Origin.PID,
			"uid": s.Origin.UID, "gid": s.Origin.GID, "netns_cookie": s.Origin.NetnsCookie,
		},
	}
}

func sessionEndRecord(s *l7.Session, err error) map[string]any {
	rec := map[string]any{
		"session":     s.ID,
		"identity":    s.Workload.Name,
		"target":      s.Target.Name,
		"attrs":       s.Attrs(),
		"bytes_in":    s.BytesIn.Load(),
		"bytes_out":   s.BytesOut.Load(),
		"statements":  s.Statements.Load(),
		"denied":      s.Denied.Load(),
		"duration_us": s.End().Sub(s.Start).Microseconds(),
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		rec["error"] = err.Error()
	}
	return rec
}

// Reload re-reads the config file: targets and identities change for new
// sessions; live sessions keep what they started with. Keys that need a
// restart (bpf, proxy, state_dir, control_socket) are reported and kept.
func (a *Agent) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	// The policy is re-read even when the config is broken.
	a.policy.Reload()
	cfg, err := config.Load(a.cfgPath)
	if err != nil {
		return err
	}
	old := a.state.Load().cfg
	if cfg.BPF != old.BPF || cfg.Proxy != old.Proxy || cfg.StateDir != old.StateDir || cfg.ControlSocket != old.ControlSocket {
		a.log.Warn("bpf, proxy, state_dir and control_socket changes take effect at the next restart")
		cfg.BPF, cfg.Proxy, cfg.StateDir, cfg.ControlSocket = old.BPF, old.Proxy, old.StateDir, old.ControlSocket
	}
	st, err := a.build(cfg)
	if err != nil {
		return err
	}
	if a.redir != nil {
		if err := a.redir.SetTargets(st.redirectTargets()); err != nil {
			return err
		}
	}
	a.resolver.SetIdentities(cfg.Identities)
	a.inventory.SetIdentities(cfg.Identities)
	a.state.Store(st)
	a.log.Info("config reloaded", zap.Int("targets", len(st.targets)), zap.Int("identities", len(cfg.Identities)))
	return nil
}

// Status implements control.Backend.
func (a *Agent) Status() control.Status {
	st := a.state.Load()
	s := control.Status{
		Version:      Version,
		PID:          os.Getpid(),
		Started:      a.started,
		Cgroup:       st.cfg.BPF.Cgroup,
		PinDir:       st.cfg.BPF.PinDir,
		OnAgentDown:  st.cfg.BPF.OnAgentDown,
		Listen:       a.listen,
		SessionsOpen: a.sessions.Count(),
		ConfigLoaded: st.loaded,
	}
	js := a.journal.Status()
	s.Audit = control.AuditStatus{
		Dir: st.cfg.Audit.Dir, Durability: st.cfg.Audit.Durability, KeyID: audit.KeyID(a.journal.PublicKey()),
		LastSeq: js.LastSeq, Durable: js.Durable, Since: js.Since, Refused: js.Refused,
	}
	if js.Err != nil {
		s.Audit.Error = js.Err.Error()
	}
	ps := a.policy.Status()
	s.Policy = control.PolicyStatus{Dir: ps.Dir, Version: ps.Version, Loaded: ps.Loaded, Files: ps.Files, LastError: ps.LastError, LastErrorAt: ps.LastErrorAt}
	for _, t := range st.targets {
		s.Targets = append(s.Targets, control.TargetStatus{Name: t.cfg.Name, Protocol: t.cfg.Protocol, Address: t.cfg.Address, Upstream: t.cfg.Upstream})
	}
	if a.redir != nil {
		s.Adopted = a.redir.Adopted()
		if k, err := a.redir.Stats(); err == nil {
			s.Kernel = control.KernelCounters{Redirected: k.Redirected, Exempt: k.Exempt, DeniedUDP: k.DeniedUdp, Established: k.Established, NotConfigured: k.NotConfigured,
				ShortcutSends: k.Shortcut, ShortcutTCPSends: k.ShortcutTcp}
		}
	}
	return s
}

// Sessions implements control.Backend: live sessions first, then recent.
func (a *Agent) Sessions() []l7.SessionInfo {
	var out []l7.SessionInfo
	for _, s := range a.sessions.Live() {
		out = append(out, s.Snapshot())
	}
	for _, s := range a.sessions.Recent() {
		out = append(out, s.Snapshot())
	}
	return out
}

// Session implements control.Backend.
func (a *Agent) Session(id string) (l7.SessionInfo, bool) {
	s, ok := a.sessions.Get(id)
	if !ok {
		return l7.SessionInfo{}, false
	}
	return s.Snapshot(), true
}

// Identities implements control.Backend.
func (a *Agent) Identities() []identity.InventoryEntry { return a.inventory.List() }

// KillSession implements control.Backend: the session ends, its client
// gets an error, and the kill is journaled with who asked.
func (a *Agent) KillSession(ctx context.Context, id string, peer control.Peer, reason string) error {
	s, ok := a.sessions.Get(id)
	if !ok || !s.End().IsZero() {
		return fmt.Errorf("%w: no live session %s", control.ErrNotFound, id)
	}
	if _, err := a.journal.Append(ctx, audit.TypeControlAction, map[string]any{
		"action": "kill_session", "session": id, "identity": s.Workload.Name, "target": s.Target.Name,
		"reason": reason, "peer": peer,
	}); err != nil {
		return fmt.Errorf("the kill cannot be journaled, so it is not done: %w", err)
	}
	s.Log.Info("session killed from the control API", zap.Uint32("peer_uid", peer.UID))
	why := "session killed by an operator"
	if reason != "" {
		why += ": " + reason
	}
	s.Kill(&l7.KillError{Reason: why})
	return nil
}

// SessionRecords implements control.Backend: the journal records of one
// session, from its start; with follow, new ones as they are written until
// the session's end record.
func (a *Agent) SessionRecords(ctx context.Context, id string, follow bool, fn func(audit.Record) error) error {
	var from uint64 = 1
	if s, ok := a.sessions.Get(id); ok && s.AuditStart > 0 {
		from = s.AuditStart
	}
	mine := func(r audit.Record) bool {
		var d struct {
			Session string `json:"session"`
		}
		json.Unmarshal(r.Data, &d)
		return d.Session == id
	}
	if follow {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := a.journal.Follow(ctx, from)
		if err != nil {
			return err
		}
		for r := range ch {
			if !mine(r) {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
			if r.Type == audit.TypeSessionEnd {
				return nil
			}
		}
		return ctx.Err()
	}
	a.journal.Sync()
	rd, err := audit.NewReader(a.journal.Dir(), audit.Filter{FromSeq: from})
	if err != nil {
		return err
	}
	defer rd.Close()
	for {
		r, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if mine(r) {
			if err := fn(r); err != nil {
				return err
			}
			if r.Type == audit.TypeSessionEnd {
				return nil
			}
		}
	}
}

// AuditPublicKey implements control.Backend.
func (a *Agent) AuditPublicKey() []byte {
	der, err := x509.MarshalPKIXPublicKey(a.journal.PublicKey())
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// EvalPolicy implements control.Backend.
func (a *Agent) EvalPolicy(ctx context.Context, in policy.Input) policy.Decision {
	return a.policy.Decide(ctx, in)
}

var _ control.Backend = (*Agent)(nil)

var _ control.ApprovalBackend = (*Agent)(nil)

// Approvals lists held and recently decided statements.
func (a *Agent) Approvals() []approval.Request { return a.approvals.List() }

// Approval returns one request.
func (a *Agent) Approval(id string) (approval.Request, bool) { return a.approvals.Get(id) }

// ApproveRequest approves a held statement on behalf of who.
func (a *Agent) ApproveRequest(_ context.Context, id string, who approval.Approver, reason, scope string, window time.Duration) error {
	err := a.approvals.Approve(id, who, reason, scope, window)
	if err == nil {
		a.log.Info("approval granted", zap.String("approval", id), zap.String("approver", who.Name), zap.String("via", who.Via))
	}
	return err
}

// DenyRequest denies a held statement on behalf of who.
func (a *Agent) DenyRequest(_ context.Context, id string, who approval.Approver, reason string) error {
	err := a.approvals.Deny(id, who, reason)
	if err == nil {
		a.log.Info("approval denied", zap.String("approval", id), zap.String("approver", who.Name), zap.String("via", who.Via))
	}
	return err
}

// WatchApprovals streams new and changed requests until ctx ends.
func (a *Agent) WatchApprovals(ctx context.Context) <-chan approval.Request {
	return a.approvals.Watch(ctx)
}
