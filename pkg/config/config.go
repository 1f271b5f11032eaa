// Package config reads and validates the tollgate agent's YAML configuration.
package config

import "time"

// Config is the whole agent configuration. The keys below are a public
// contract (DESIGN.md, "Config contract"): add keys, never rename or remove.
type Config struct {
	// StateDir holds the journal, keys and runtime state. Default /var/lib/tollgate.
	StateDir string `yaml:"state_dir"`
	// ControlSocket is the unix socket of the control API. Default /run/tollgate/tollctl.sock.
	ControlSocket string `yaml:"control_socket"`
	BPF           BPF        `yaml:"bpf"`
	Proxy         Proxy      `yaml:"proxy"`
	Identities    []Identity `yaml:"identities"`
	Targets       []Target   `yaml:"targets"`
	Policy        Policy     `yaml:"policy"`
	Audit         Audit      `yaml:"audit"`
	// ShutdownGrace bounds how long SIGTERM waits for sessions to drain. Default 10s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// BPF configures the kernel side.
type BPF struct {
	// Cgroup is the cgroup v2 subtree (relative to the cgroup2 mount) whose
	// processes are governed. Default "/".
	Cgroup string `yaml:"cgroup"`
	// PinDir is where links and maps are pinned on bpffs. Default /sys/fs/bpf/tollgate.
	PinDir string `yaml:"pin_dir"`
	// OnAgentDown is fail-closed (default) or fail-open.
	OnAgentDown string `yaml:"on_agent_down"`
}

// Proxy configures where redirected connections land.
type Proxy struct {
	// Port is the TCP port the proxy listens on (IPv4 loopback, IPv6
	// loopback and the link-local address). Default 15001.
	Port uint16 `yaml:"port"`
	// LinkLocal is the /32 address added for clients in other network
	// namespaces (pods). Default 169.254.77.1.
	LinkLocal string `yaml:"link_local"`
	// Mark is the SO_MARK set on the agent's upstream sockets; such sockets
	// are never redirected. Default 0x70670001.
	Mark uint32 `yaml:"mark"`
}

// Identity is a configured workload identity.
type Identity struct {
	Name    string        `yaml:"name"`
	Owner   string        `yaml:"owner"`
	Purpose string        `yaml:"purpose"`
	Match   IdentityMatch `yaml:"match"`
	// Line is the line in the config file where this identity starts.
	Line int `yaml:"-"`
}

// IdentityMatch selects the workloads an identity covers. All set fields
// must match.
type IdentityMatch struct {
	// Cgroup matches a cgroup v2 path exactly, or a subtree when it ends in "/*" or "/**".
	Cgroup string `yaml:"cgroup"`
	// SystemdUnit matches the workload's systemd unit name.
	SystemdUnit string `yaml:"systemd_unit"`
	// UID matches the dialling process's uid.
	UID *uint32 `yaml:"uid"`
}

// Target is a protected resource.
type Target struct {
	Name string `yaml:"name"`
	// Protocol names a registered l7 engine: postgres | tcp.
	Protocol string `yaml:"protocol"`
	// Address is what clients dial: host:port, or CIDR:port ("10.20.0.0/16:5432").
	Address string `yaml:"address"`
	// Upstream is where the agent connects. Default: Address (which must then be host:port).
	Upstream    string      `yaml:"upstream"`
	Credentials Credentials `yaml:"credentials"`
	TLS         TLS         `yaml:"tls"`
	// Line is the line in the config file where this target starts.
	Line int `yaml:"-"`
}

// Credentials are injected upstream; the client never sees them.
type Credentials struct {
	Username     string `yaml:"username"`
	Password     string `yaml:"-"` // read from PasswordFile or PasswordEnv at load
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// TLS configures the agent's upstream connection.
type TLS struct {
	// Mode is disable (default) | require | verify-full.
	Mode   string `yaml:"mode"`
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
}
