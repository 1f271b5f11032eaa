package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// checker collects the problems Validate finds.
type checker struct {
	c    *Config
	errs []error
}

func (v *checker) errorf(key, format string, args ...any) {
	v.errs = append(v.errs, v.c.errorf(key, format, args...))
}

// SetDefaults fills every key left empty with its documented default.
func (c *Config) SetDefaults() {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.ControlSocket == "" {
		c.ControlSocket = DefaultControlSocket
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	c.BPF.SetDefaults()
	c.Proxy.SetDefaults()
	c.Policy.SetDefaults()
	c.Audit.SetDefaults(c.StateDir)
	c.Approvals.SetDefaults()
	for i := range c.Targets {
		c.Targets[i].SetDefaults()
	}
}

// Validate reports every problem in c, each an *Error that names the key
// and its line, joined with errors.Join when there are several. Call it
// after SetDefaults. It also reads each target's password from its
// password_file or password_env into Credentials.Password: a password that
// cannot be read is a config error like any other. Whether each target's
// protocol has an engine is for ValidateProtocols.
func (c *Config) Validate() error {
	v := &checker{c: c}
	stateDirOK := checkAbs(v, "state_dir", c.StateDir)
	checkAbs(v, "control_socket", c.ControlSocket)
	if c.ShutdownGrace < 0 {
		v.errorf("shutdown_grace", "%s is negative", c.ShutdownGrace)
	}
	c.BPF.validate(v, "bpf")
	c.Proxy.validate(v, "proxy")
	c.Policy.validate(v, "policy")
	// An audit.dir derived from a bad state_dir is reported once, at state_dir.
	c.Audit.validate(v, "audit", !stateDirOK && c.Audit.Dir == filepath.Join(c.StateDir, "audit"))
	c.Approvals.validate(v, "approvals")

	idNames := map[string]int{}
	for i := range c.Identities {
		id := &c.Identities[i]
		key := fmt.Sprintf("identities[%d]", i)
		id.validate(v, key)
		if id.Name == "" {
			continue
		}
		if first, dup := idNames[id.Name]; dup {
			v.errorf(key+".name", "identity %q is already defined (identities[%d], line %d)", id.Name, first, c.Line(fmt.Sprintf("identities[%d]", first)))
			continue
		}
		idNames[id.Name] = i
	}

	type match struct {
		p    netip.Prefix
		port uint16
	}
	targetNames := map[string]int{}
	addrs := map[match]int{}
	for i := range c.Targets {
		t := &c.Targets[i]
		key := fmt.Sprintf("targets[%d]", i)
		t.validate(v, key)
		if t.Name != "" {
			if first, dup := targetNames[t.Name]; dup {
				v.errorf(key+".name", "target %q is already defined (targets[%d], line %d)", t.Name, first, c.Line(fmt.Sprintf("targets[%d]", first)))
			} else {
				targetNames[t.Name] = i
			}
		}
		if p, port, err := parseAddress(t.Address); err == nil {
			m := match{p, port}
			if first, dup := addrs[m]; dup {
				v.errorf(key+".address", "%s is already the address of targets[%d] (line %d)", t.Address, first, c.Line(fmt.Sprintf("targets[%d]", first)))
			} else {
				addrs[m] = i
			}
		}
	}
	return joinErrors(v.errs)
}

// ValidateProtocols reports each target whose protocol isRegistered rejects
// (the daemon passes l7.IsRegistered), naming the key and its line.
func (c *Config) ValidateProtocols(isRegistered func(protocol string) bool) error {
	var errs []error
	for i, t := range c.Targets {
		if !isRegistered(t.Protocol) {
			errs = append(errs, c.errorf(fmt.Sprintf("targets[%d].protocol", i), "no engine for protocol %q", t.Protocol))
		}
	}
	return joinErrors(errs)
}

// SetDefaults sets Cgroup to "/", PinDir to /sys/fs/bpf/tollgate and
// OnAgentDown to fail-closed when empty.
func (b *BPF) SetDefaults() {
	if b.Cgroup == "" {
		b.Cgroup = DefaultCgroup
	}
	if b.PinDir == "" {
		b.PinDir = DefaultPinDir
	}
	if b.OnAgentDown == "" {
		b.OnAgentDown = DefaultOnAgentDown
	}
}

func (b *BPF) validate(v *checker, key string) {
	checkCgroupPath(v, key+".cgroup", b.Cgroup)
	checkAbs(v, key+".pin_dir", b.PinDir)
	checkOneOf(v, key+".on_agent_down", b.OnAgentDown, FailClosed, FailOpen)
}

// SetDefaults sets Port to 15001, LinkLocal to 169.254.77.1 and Mark to
// 0x70670001 when zero.
func (p *Proxy) SetDefaults() {
	if p.Port == 0 {
		p.Port = DefaultProxyPort
	}
	if p.LinkLocal == "" {
		p.LinkLocal = DefaultLinkLocal
	}
	if p.Mark == 0 {
		p.Mark = DefaultMark
	}
}

func (p *Proxy) validate(v *checker, key string) {
	if p.Port == 0 {
		v.errorf(key+".port", "is 0")
	}
	if p.Mark == 0 {
		v.errorf(key+".mark", "is 0")
	}
	a, err := netip.ParseAddr(p.LinkLocal)
	if err != nil || !a.Is4() || !a.IsLinkLocalUnicast() {
		v.errorf(key+".link_local", "%q is not an IPv4 link-local address (169.254.0.0/16)", p.LinkLocal)
	}
	if (p.TLS.CertFile == "") != (p.TLS.KeyFile == "") {
		v.errorf(key+".tls", "set both cert_file and key_file, or neither (a self-signed certificate is generated)")
		return
	}
	for _, f := range []struct{ key, path string }{{key + ".tls.cert_file", p.TLS.CertFile}, {key + ".tls.key_file", p.TLS.KeyFile}} {
		if f.path == "" || !checkAbs(v, f.key, f.path) {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			v.errorf(f.key, "%v", err)
		}
	}
}

// SetDefaults sets Dir to /etc/tollgate/policy when empty.
func (p *Policy) SetDefaults() {
	if p.Dir == "" {
		p.Dir = DefaultPolicyDir
	}
}

func (p *Policy) validate(v *checker, key string) {
	checkAbs(v, key+".dir", p.Dir)
}

// SetDefaults sets Dir to <stateDir>/audit, Durability to batch and the
// batch intervals to 50ms (flush and sync) when unset.
func (a *Audit) SetDefaults(stateDir string) {
	if a.Dir == "" && stateDir != "" {
		a.Dir = filepath.Join(stateDir, "audit")
	}
	if a.Durability == "" {
		a.Durability = DefaultDurability
	}
	if a.FlushInterval == 0 {
		a.FlushInterval = DefaultFlushInterval
	}
	if a.SyncInterval == 0 {
		a.SyncInterval = DefaultSyncInterval
	}
}

func (a *Audit) validate(v *checker, key string, skipDir bool) {
	if !skipDir {
		checkAbs(v, key+".dir", a.Dir)
	}
	checkOneOf(v, key+".durability", a.Durability, DurabilityBatch, DurabilityStrict)
	if a.FlushInterval < 0 {
		v.errorf(key+".flush_interval", "%v is negative", a.FlushInterval)
	}
	switch {
	case a.SyncInterval < 0:
		v.errorf(key+".sync_interval", "%v is negative", a.SyncInterval)
	case a.SyncInterval > 0 && a.SyncInterval < a.FlushInterval:
		v.errorf(key+".sync_interval", "%v is shorter than flush_interval %v: a record is synced after it is written", a.SyncInterval, a.FlushInterval)
	}
	if a.Retention.MaxAge < 0 {
		v.errorf(key+".retention.max_age", "is negative")
	}
	if a.Retention.MaxBytes < 0 {
		v.errorf(key+".retention.max_bytes", "is negative")
	}
	for i := range a.Sinks {
		sk := &a.Sinks[i]
		k := fmt.Sprintf("%s.sinks[%d]", key, i)
		checkOneOf(v, k+".type", sk.Type, "postgres")
		switch {
		case sk.DSN != "" && sk.DSNFile != "":
			v.errorf(k, "dsn and dsn_file are mutually exclusive: set one")
		case sk.DSNFile != "":
			if checkAbs(v, k+".dsn_file", sk.DSNFile) {
				data, err := os.ReadFile(sk.DSNFile)
				if err != nil {
					v.errorf(k+".dsn_file", "%v", err)
				} else {
					sk.DSN = strings.TrimSpace(string(data))
				}
			}
		case sk.DSN == "":
			v.errorf(k, "needs dsn or dsn_file")
		}
	}
}

// SetDefaults sets Timeout to 10m, the webhook's Timeout to 5s,
// MaxAttempts to 5 and Backoff to 1s, and the OIDC claims to "groups" and
// "preferred_username" when zero.
func (a *Approvals) SetDefaults() {
	if a.Timeout == 0 {
		a.Timeout = DefaultApprovalTimeout
	}
	w := &a.Webhook
	if w.Timeout == 0 {
		w.Timeout = DefaultWebhookTimeout
	}
	if w.MaxAttempts == 0 {
		w.MaxAttempts = DefaultWebhookAttempts
	}
	if w.Backoff == 0 {
		w.Backoff = DefaultWebhookBackoff
	}
	if a.OIDC.GroupsClaim == "" {
		a.OIDC.GroupsClaim = DefaultGroupsClaim
	}
	if a.OIDC.UsernameClaim == "" {
		a.OIDC.UsernameClaim = DefaultUsernameClaim
	}
}

func (a *Approvals) validate(v *checker, key string) {
	if a.Timeout < 0 {
		v.errorf(key+".timeout", "is negative")
	}
	a.Webhook.validate(v, key+".webhook")

	hasTLS := a.TLS.CertFile != "" || a.TLS.KeyFile != ""
	hasOIDC := a.OIDC.Issuer != "" || a.OIDC.Audience != ""
	if a.Listen == "" {
		if hasTLS {
			v.errorf(key+".tls", "is set but %s.listen is empty: nothing serves it", key)
		}
		if hasOIDC {
			v.errorf(key+".oidc", "is set but %s.listen is empty: nothing serves it", key)
		}
		return
	}
	if err := checkListen(a.Listen); err != nil {
		v.errorf(key+".listen", "%v", err)
	}
	switch {
	case !hasTLS:
		v.errorf(key+".tls", "is required with listen: set cert_file and key_file (remote approvers send tokens only over TLS)")
	case a.TLS.CertFile == "" || a.TLS.KeyFile == "":
		v.errorf(key+".tls", "set both cert_file and key_file")
	default:
		certOK := checkAbs(v, key+".tls.cert_file", a.TLS.CertFile)
		keyOK := checkAbs(v, key+".tls.key_file", a.TLS.KeyFile)
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(a.TLS.CertFile, a.TLS.KeyFile); err != nil {
				v.errorf(key+".tls.cert_file", "%v", err)
			}
		}
	}
	o := &a.OIDC
	if !hasOIDC {
		v.errorf(key+".oidc", "is required with listen: set issuer and audience (remote approvers present ID tokens)")
		return
	}
	if u, err := url.Parse(o.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		v.errorf(key+".oidc.issuer", "%q is not an http(s) issuer URL", o.Issuer)
	}
	if o.Audience == "" {
		v.errorf(key+".oidc.audience", "is empty: tokens must be issued for this agent (the OIDC client id)")
	}
}

func (w *Webhook) validate(v *checker, key string) {
	switch {
	case w.URL != "" && w.URLFile != "":
		v.errorf(key, "url and url_file are mutually exclusive: set one")
	case w.URLFile != "":
		if !checkAbs(v, key+".url_file", w.URLFile) {
			break
		}
		data, err := os.ReadFile(w.URLFile)
		if err != nil {
			v.errorf(key+".url_file", "%v", err)
			break
		}
		w.URL = strings.TrimSpace(string(data))
		if !isHTTPURL(w.URL) {
			v.errorf(key+".url_file", "%s holds no http(s) URL", w.URLFile)
		}
	case w.URL != "":
		if !isHTTPURL(w.URL) {
			// Not quoted: a webhook URL may carry a token.
			v.errorf(key+".url", "is not an http(s) URL")
		}
	}
	if w.Timeout < 0 {
		v.errorf(key+".timeout", "is negative")
	}
	if w.MaxAttempts < 0 {
		v.errorf(key+".max_attempts", "is negative")
	}
	if w.Backoff < 0 {
		v.errorf(key+".backoff", "is negative")
	}
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// checkListen checks a listen address: host:port, where host is an IP, a
// name or empty (every address).
func checkListen(s string) error {
	host, portStr, err := splitHostPort(s, "host:port", "[::1]:7443")
	if err != nil {
		return err
	}
	if _, err := parsePort(portStr); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !isHostname(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	return nil
}

func (id *Identity) validate(v *checker, key string) {
	if id.Name == "" {
		v.errorf(key+".name", "an identity needs a name")
	}
	m := &id.Match
	if m.Cgroup == "" && m.SystemdUnit == "" && m.UID == nil {
		v.errorf(key+".match", "matches nothing: set cgroup, systemd_unit or uid")
	}
	if m.Cgroup != "" {
		base := m.Cgroup
		if b, ok := strings.CutSuffix(base, "/**"); ok {
			base = b
		} else if b, ok := strings.CutSuffix(base, "/*"); ok {
			base = b
		}
		if base == "" {
			base = "/"
		}
		if strings.Contains(base, "*") {
			v.errorf(key+".match.cgroup", `%q: "*" may only end the path, as "/*" (children) or "/**" (subtree)`, m.Cgroup)
		} else {
			checkCgroupPath(v, key+".match.cgroup", base)
		}
	}
}

// SetDefaults sets Upstream to Address when Upstream is empty and Address
// is not a CIDR, and applies the TLS defaults.
func (t *Target) SetDefaults() {
	if t.Upstream == "" && !strings.Contains(t.Address, "/") {
		t.Upstream = t.Address
	}
	t.TLS.SetDefaults()
}

func (t *Target) validate(v *checker, key string) {
	if t.IdleTimeout < 0 {
		v.errorf(key+".idle_timeout", "is negative")
	}
	if t.Name == "" {
		v.errorf(key+".name", "a target needs a name")
	}
	if t.Protocol == "" {
		v.errorf(key+".protocol", "is empty: name the protocol engine, such as postgres or tcp")
	}
	p, _, addrErr := parseAddress(t.Address)
	if addrErr != nil {
		v.errorf(key+".address", "%v", addrErr)
	}
	switch {
	case t.Upstream == "" && addrErr == nil && !p.IsSingleIP():
		v.errorf(key+".upstream", "is required when address is a CIDR (%s): the agent must know where to connect", t.Address)
	case t.Upstream == "" && addrErr == nil:
		v.errorf(key+".upstream", "is empty")
	case t.Upstream == t.Address && addrErr != nil:
		// The default copied a bad address; it is reported once, above.
	case t.Upstream != "":
		if err := checkUpstream(t.Upstream); err != nil {
			v.errorf(key+".upstream", "%v", err)
		}
	}
	t.Credentials.validate(v, key+".credentials")
	t.TLS.validate(v, key+".tls")
}

// SetDefaults sets Mode to disable when empty.
func (t *TLS) SetDefaults() {
	if t.Mode == "" {
		t.Mode = DefaultTLSMode
	}
}

func (t *TLS) validate(v *checker, key string) {
	checkOneOf(v, key+".mode", t.Mode, TLSDisable, TLSRequire, TLSVerifyFull)
	if t.CAFile == "" {
		return
	}
	if t.Mode == TLSDisable {
		v.errorf(key+".ca_file", "is set but tls.mode is %s: set mode to require or verify-full, or remove ca_file", t.Mode)
		return
	}
	if !checkAbs(v, key+".ca_file", t.CAFile) {
		return
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		v.errorf(key+".ca_file", "%v", err)
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		v.errorf(key+".ca_file", "%s holds no PEM certificate", t.CAFile)
	}
}

// checkAbs reports a path that is empty or not absolute, and reports
// whether it is fine.
func checkAbs(v *checker, key, p string) bool {
	switch {
	case p == "":
		v.errorf(key, "is empty")
	case !filepath.IsAbs(p):
		v.errorf(key, "%q is not an absolute path", p)
	default:
		return true
	}
	return false
}

// checkCgroupPath reports a cgroup path that is not absolute or climbs with "..".
func checkCgroupPath(v *checker, key, p string) {
	switch {
	case p == "":
		v.errorf(key, "is empty")
	case !strings.HasPrefix(p, "/"):
		v.errorf(key, "%q is not an absolute cgroup path (relative to the cgroup2 mount, starting with /)", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		v.errorf(key, "%q: a cgroup path may not contain ..", p)
	}
}

// checkOneOf reports a value outside allowed.
func checkOneOf(v *checker, key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.errorf(key, "%q is not one of %s", val, strings.Join(allowed, ", "))
	}
}
