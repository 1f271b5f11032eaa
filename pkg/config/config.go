// Package config reads and validates the tollgate agent's YAML configuration.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	"gopkg.in/yaml.v3"
)

// Values of the enumerated keys.
const (
	FailClosed = "fail-closed" // bpf.on_agent_down: connections to targets are refused while the agent is down
	FailOpen   = "fail-open"   // bpf.on_agent_down: connections go straight to the target while the agent is down

	DurabilityBatch  = "batch"  // audit.durability: group commit
	DurabilityStrict = "strict" // audit.durability: a statement is forwarded only after its record is on disk

	TLSDisable    = "disable"     // tls.mode: plain TCP upstream
	TLSRequire    = "require"     // tls.mode: TLS, certificate not verified
	TLSVerifyFull = "verify-full" // tls.mode: TLS, certificate chain and host name verified
)

// Defaults applied by SetDefaults.
const (
	DefaultStateDir      = "/var/lib/tollgate"
	DefaultControlSocket = "/run/tollgate/tollctl.sock"
	DefaultCgroup        = "/"
	DefaultPinDir        = "/sys/fs/bpf/tollgate"
	DefaultOnAgentDown   = FailClosed
	DefaultProxyPort     = 15001
	DefaultLinkLocal     = "169.254.77.1"
	DefaultMark          = 0x70670001
	DefaultPolicyDir     = "/etc/tollgate/policy"
	DefaultDurability    = DurabilityBatch
	DefaultFlushInterval = 50 * time.Millisecond
	DefaultSyncInterval  = 50 * time.Millisecond
	DefaultShutdownGrace = 10 * time.Second
	DefaultTLSMode       = TLSDisable

	DefaultApprovalTimeout = 10 * time.Minute
	DefaultWebhookTimeout  = 5 * time.Second
	DefaultWebhookAttempts = 5
	DefaultWebhookBackoff  = time.Second
	DefaultGroupsClaim     = "groups"
	DefaultUsernameClaim   = "preferred_username"
)

// Config is the whole agent configuration. The keys below are a public
// contract (DESIGN.md, "Config contract"): add keys, never rename or remove.
//
// Every path in the file (directories, sockets, password_file, ca_file)
// must be absolute: the daemon's working directory is no anchor.
type Config struct {
	// StateDir holds the journal, keys and runtime state. Default /var/lib/tollgate.
	StateDir string `yaml:"state_dir"`
	// ControlGroup, when set, is a group whose members may also use the
	// control socket (mode 0660). Default: root only (0600).
	ControlGroup string `yaml:"control_group"`
	// ControlSocket is the unix socket of the control API. Default /run/tollgate/tollctl.sock.
	ControlSocket string     `yaml:"control_socket"`
	BPF           BPF        `yaml:"bpf"`
	Proxy         Proxy      `yaml:"proxy"`
	Identities    []Identity `yaml:"identities"`
	Targets       []Target   `yaml:"targets"`
	Policy        Policy     `yaml:"policy"`
	Audit         Audit      `yaml:"audit"`
	Approvals     Approvals  `yaml:"approvals"`
	// ShutdownGrace bounds how long SIGTERM waits for sessions to drain,
	// written as a Go duration ("30s"). Default (and when 0) 10s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`

	file  string         // name given to Parse, for errors
	lines map[string]int // key path ("targets[1].address") -> line of the key
}

// BPF configures the kernel side.
type BPF struct {
	// Cgroup is the cgroup v2 subtree (an absolute path relative to the
	// cgroup2 mount) whose processes are governed. Default "/".
	Cgroup string `yaml:"cgroup"`
	// PinDir is where links and maps are pinned on bpffs. Default /sys/fs/bpf/tollgate.
	PinDir string `yaml:"pin_dir"`
	// OnAgentDown is fail-closed (default) or fail-open.
	OnAgentDown string `yaml:"on_agent_down"`
}

// Proxy configures where redirected connections land.
type Proxy struct {
	// Port is the TCP port the proxy listens on (IPv4 loopback, IPv6
	// loopback and the link-local address). Default (and when 0) 15001.
	Port uint16 `yaml:"port"`
	// LinkLocal is the IPv4 link-local (169.254.0.0/16) address added as a
	// /32 for clients in other network namespaces (pods). Default 169.254.77.1.
	LinkLocal string `yaml:"link_local"`
	// Mark is the SO_MARK set on the agent's upstream sockets; such sockets
	// are never redirected. Default (and when 0) 0x70670001.
	Mark uint32 `yaml:"mark"`
	// Shortcut lets a governed client on this host and the agent exchange
	// bytes straight between their sockets (eBPF sk_msg), skipping the
	// TCP/IP stack on the hop that never leaves the host; a send that
	// could overtake bytes already sent by TCP, or that finds its reader
	// 4 MiB behind, goes by TCP. Clients see no difference but speed.
	// Default true; the kernel needs BTF and Linux 5.9 or newer, else the
	// agent logs why and uses TCP.
	Shortcut *bool `yaml:"shortcut"`
	// TLS is the certificate the proxy presents to clients that ask for
	// TLS (PostgreSQL sslmode=require). Default: a self-signed certificate
	// generated once into <state_dir>/tls.
	TLS ProxyTLS `yaml:"tls"`
}

// ShortcutOn reports whether proxy.shortcut is on.
func (p Proxy) ShortcutOn() bool { return p.Shortcut == nil || *p.Shortcut }

// ProxyTLS names a certificate and key (PEM). Both or neither.
type ProxyTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Identity is a configured workload identity. No defaults.
type Identity struct {
	// Name is required and unique among identities.
	Name    string `yaml:"name"`
	Owner   string `yaml:"owner"`
	Purpose string `yaml:"purpose"`
	// Match must set at least one field.
	Match IdentityMatch `yaml:"match"`
	// Line is the line in the config file where this identity starts.
	Line int `yaml:"-"`
}

// IdentityMatch selects the workloads an identity covers. All set fields
// must match.
type IdentityMatch struct {
	// Cgroup matches an absolute cgroup v2 path exactly, its direct
	// children when it ends in "/*", or the path and its whole subtree
	// when it ends in "/**".
	Cgroup string `yaml:"cgroup"`
	// SystemdUnit matches the workload's systemd unit name.
	SystemdUnit string `yaml:"systemd_unit"`
	// UID matches the dialling process's uid.
	UID *uint32 `yaml:"uid"`
}

// Target is a protected resource.
type Target struct {
	// Name is required and unique among targets.
	Name string `yaml:"name"`
	// Protocol names a registered l7 engine: postgres | tcp. Required.
	Protocol string `yaml:"protocol"`
	// Address is what clients dial: IP:port ("10.20.0.5:5432",
	// "[fd00::5]:5432") or CIDR:port ("10.20.0.0/16:5432",
	// "[fd00::/64]:5432"). Never a host name: the kernel matches IP
	// addresses. See Match.
	Address string `yaml:"address"`
	// Upstream is where the agent connects: host:port, where host may be a
	// name. Default: Address, when Address is a single IP; required when
	// Address is a CIDR.
	Upstream string `yaml:"upstream"`
	// Credentials are injected upstream. Default: none.
	Credentials Credentials `yaml:"credentials"`
	// IdleTimeout ends a session whose client sent nothing for this long
	// while nothing it asked for was running. Default 0: no limit.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	TLS         TLS           `yaml:"tls"`
	// Line is the line in the config file where this target starts.
	Line int `yaml:"-"`
}

// TLS configures the agent's upstream connection.
type TLS struct {
	// Mode is disable (default) | require | verify-full.
	Mode string `yaml:"mode"`
	// CAFile is a PEM bundle of the CAs trusted for the upstream (modes
	// require and verify-full). Default: the system roots.
	CAFile string `yaml:"ca_file"`
}

// Policy configures the Rego policy.
type Policy struct {
	// Dir holds *.rego files. Default /etc/tollgate/policy.
	Dir string `yaml:"dir"`
}

// Audit configures the journal.
type Audit struct {
	// Dir holds journal segments. Default <state_dir>/audit.
	Dir string `yaml:"dir"`
	// Durability is batch (default) or strict.
	Durability string `yaml:"durability"`
	// FlushInterval (batch) is how long a record waits in memory at most
	// before it is written to its segment file: what a crash of the agent
	// can lose. Default 50ms.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// SyncInterval (batch) is how long a written record waits at most
	// before it is synced to disk: what a crash of the machine can lose.
	// Default 50ms; at least FlushInterval.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// Retention removes whole old segments. Default: keep everything.
	Retention Retention `yaml:"retention"`
	// Sinks ship the journal elsewhere as well. Default: none.
	Sinks []Sink `yaml:"sinks"`
}

// Retention bounds the journal on disk; removals are themselves journaled
// and signed, so what remains still verifies.
type Retention struct {
	// MaxAge removes segments whose records are all older. 0: no limit.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes removes the oldest segments while the journal is larger. 0:
	// no limit.
	MaxBytes int64 `yaml:"max_bytes"`
}

// Sink is a destination the journal is shipped to.
type Sink struct {
	// Type is postgres.
	Type string `yaml:"type"`
	// DSN is the PostgreSQL connection string (keep secrets in DSNFile).
	DSN string `yaml:"dsn"`
	// DSNFile is an absolute path to a file holding the DSN.
	DSNFile string `yaml:"dsn_file"`
}

// Approvals configures statements that the policy holds for a human's
// approval (decision.approval.required): how long they wait, who is told,
// and the optional TCP control API where remote approvers decide with an
// OIDC ID token. Local approvers use tollctl on the control socket.
type Approvals struct {
	// Timeout is how long a held statement waits when the policy's
	// approval names no timeout; then it is refused. Default (and when 0)
	// 10m.
	Timeout time.Duration `yaml:"timeout"`
	// Webhook is told of each new request. Default: none.
	Webhook Webhook `yaml:"webhook"`
	// Listen, when set, is the host:port where the agent serves the
	// approvals part of the control API (and status) over TLS to callers
	// with an OIDC ID token ("127.0.0.1:7443"). Default: none, the control
	// socket only. With listen, tls and oidc are required.
	Listen string `yaml:"listen"`
	// TLS is the certificate of the TCP control API. Required with listen.
	TLS ServerTLS `yaml:"tls"`
	// OIDC says whose ID tokens the TCP control API accepts. Required with
	// listen.
	OIDC ApproverOIDC `yaml:"oidc"`
}

// Webhook is an endpoint that receives a Slack-compatible JSON message
// ({"text", "blocks"}) for each new approval request. It is enabled when
// url or url_file is set.
type Webhook struct {
	// URL is the http(s) endpoint. A Slack webhook URL is a secret: keep it
	// in url_file instead. Errors never quote it.
	URL string `yaml:"url"`
	// URLFile is an absolute path to a file holding the URL; Validate
	// reads it into URL. Mutually exclusive with url.
	URLFile string `yaml:"url_file"`
	// Timeout bounds one delivery attempt. Default (and when 0) 5s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts bounds the attempts per message (network errors, 5xx and
	// 429 are retried; other answers are not). Default (and when 0) 5.
	MaxAttempts int `yaml:"max_attempts"`
	// Backoff is the wait after the first failed attempt, doubled after
	// each further one up to 30s; a Retry-After answer replaces it.
	// Default (and when 0) 1s.
	Backoff time.Duration `yaml:"backoff"`
}

// ServerTLS names the PEM certificate (chain) and key a server presents.
// Both are required.
type ServerTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ApproverOIDC configures the OIDC ID tokens that remote approvers present:
// go-oidc checks the signature (the issuer's JWKS), issuer, audience and
// expiry; the claims name the approver and their groups, which the policy's
// approvers ("user:NAME", "group:NAME") are matched against.
type ApproverOIDC struct {
	// Issuer is the issuer URL (its discovery document is fetched). Required.
	Issuer string `yaml:"issuer"`
	// Audience is the client id the tokens must be issued for. Required.
	Audience string `yaml:"audience"`
	// GroupsClaim is the claim listing the approver's groups. Default "groups".
	GroupsClaim string `yaml:"groups_claim"`
	// UsernameClaim is the claim naming the approver; when a token lacks it,
	// email, then sub. Default "preferred_username".
	UsernameClaim string `yaml:"username_claim"`
}

// Load reads the config file at path and returns it parsed, defaulted and
// validated, as Parse does. Errors name the file as path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes data strictly (see Decode), applies SetDefaults and runs
// Validate, which also reads each target's password. name is the file name
// used in error messages ("tollgate.yaml:12: targets[1].address: ...").
func Parse(data []byte, name string) (*Config, error) {
	c, err := Decode(data, name)
	if err != nil {
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Decode decodes one YAML document strictly: a key the config does not
// define, a duplicate key or a value of the wrong type is an error that names
// the key and its line. It applies no defaults and validates nothing else;
// it touches neither files nor the environment (tollctl uses it to find the
// control socket without reading secrets). The errors are *Error values,
// joined with errors.Join when there are several.
func Decode(data []byte, name string) (*Config, error) {
	c := &Config{file: name, lines: map[string]int{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil // an empty file: all defaults
		}
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(name, err)
	case !isEmptyDocument(&extra):
		return nil, &Error{File: name, Line: extra.Line, Err: errors.New("a second YAML document; the config is one document")}
	}

	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	d := &decoder{file: name, lines: c.lines, budget: 10000 + 10*countNodes(root, 0)}
	if r := d.resolve(root); r != nil && r.Kind != yaml.MappingNode && !isNull(r) {
		return nil, &Error{File: name, Line: r.Line, Err: fmt.Errorf("the config must be a mapping of keys, got %s", describe(r))}
	}
	d.decodeValue(root, reflect.ValueOf(c).Elem(), "", root.Line)
	if err := joinErrors(d.errs); err != nil {
		return nil, err
	}
	return c, nil
}

// Line reports the line in the file where key (a path such as
// "targets[1].credentials.password_file") is written; for a key the file
// leaves out, the line of the nearest enclosing key that it writes; 0 when
// the config did not come from Parse or Decode.
func (c *Config) Line(key string) int {
	for k := key; k != ""; k = parentKey(k) {
		if l, ok := c.lines[k]; ok {
			return l
		}
	}
	return 0
}

// KeyError returns err as an *Error at key, with the file name and the key's
// line: for checks that only the daemon can make (does bpf.cgroup exist, is
// the protocol registered), reported the way Validate reports its own.
func (c *Config) KeyError(key string, err error) error {
	return &Error{File: c.file, Line: c.Line(key), Key: key, Err: err}
}

func (c *Config) errorf(key, format string, args ...any) error {
	return c.KeyError(key, fmt.Errorf(format, args...))
}
