package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const secret = "s3cr3t-Hunter2-do-not-print"

// fixture holds the files a test config refers to.
type fixture struct {
	dir     string // an existing directory
	pwFile  string // holds secret
	ca      string // a PEM certificate
	notPEM  string // a file that is not PEM
	cert    string // a PEM certificate ...
	key     string // ... and its key
	webhook string // holds a webhook URL whose path is secret
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{
		dir:    dir,
		pwFile: filepath.Join(dir, "orders-db"),
		ca:     filepath.Join(dir, "ca.pem"),
		notPEM: filepath.Join(dir, "not.pem"),
	}
	writeFile(t, f.pwFile, secret+"\n")
	writeFile(t, f.ca, string(selfSignedPEM(t)))
	writeFile(t, f.notPEM, "not a certificate\n")
	f.cert, f.key, f.webhook = filepath.Join(dir, "control.pem"), filepath.Join(dir, "control.key"), filepath.Join(dir, "webhook")
	cert, key := keyPairPEM(t)
	writeFile(t, f.cert, string(cert))
	writeFile(t, f.key, string(key))
	writeFile(t, f.webhook, "https://hooks.example.com/services/T0/B0/"+secret+"\n")
	return f
}

// keyPairPEM returns a self-signed server certificate and its key.
func keyPairPEM(t testing.TB) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "tollgate control"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// render replaces $PW, $DIR, $CA, $NOTPEM, $CERT, $KEY and $WEBHOOK in a
// test config with the fixture's paths.
func (f fixture) render(s string) string {
	return strings.NewReplacer("$PW", f.pwFile, "$DIR", f.dir, "$CA", f.ca, "$NOTPEM", f.notPEM,
		"$CERT", f.cert, "$KEY", f.key, "$WEBHOOK", f.webhook).Replace(s)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func selfSignedPEM(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tollgate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func u32(v uint32) *uint32 { return &v }

func TestParseFull(t *testing.T) {
	f := newFixture(t)
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.NewReplacer(
		"/etc/tollgate/secrets/orders-db", f.pwFile,
		"/etc/tollgate/ca/analytics.pem", f.ca,
		"/etc/tollgate/secrets/approvals-webhook", f.webhook,
		"/etc/tollgate/tls/control.pem", f.cert,
		"/etc/tollgate/tls/control.key", f.key,
	).Replace(string(data)))
	t.Setenv("TOLLGATE_ANALYTICS_PASSWORD", "analytics-secret")

	c, err := Parse(data, "full.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := c.ShutdownGrace, 30*time.Second; got != want {
		t.Errorf("got shutdown_grace %v; want %v", got, want)
	}
	if !c.Proxy.ShortcutOn() || c.Proxy.Shortcut == nil {
		t.Errorf("proxy.shortcut = %v; want set to true", c.Proxy.Shortcut)
	}
	c.Proxy.Shortcut = nil
	if got, want := c.Proxy, (Proxy{Port: 15001, LinkLocal: "169.254.77.1", Mark: 0x70670001}); got != want {
		t.Errorf("got proxy %+v; want %+v", got, want)
	}

	wantIDs := []Identity{
		{Name: "billing-export", Owner: "team-billing", Purpose: "Nightly invoice export",
			Match: IdentityMatch{Cgroup: "/system.slice/billing-export.service"}, Line: 23},
		{Name: "reporting", Owner: "team-data", Purpose: "Dashboards, read only",
			Match: IdentityMatch{SystemdUnit: "reporting.service", UID: u32(1001)}, Line: 27},
		{Name: "batch-jobs", Owner: "team-platform", Purpose: "Anything under the batch slice",
			Match: IdentityMatch{Cgroup: "/batch.slice/**"}, Line: 33},
	}
	if len(c.Identities) != len(wantIDs) {
		t.Fatalf("got %d identities; want %d", len(c.Identities), len(wantIDs))
	}
	for i, want := range wantIDs {
		got := c.Identities[i]
		gotUID, wantUID := got.Match.UID, want.Match.UID
		got.Match.UID, want.Match.UID = nil, nil
		if got != want || (gotUID == nil) != (wantUID == nil) || gotUID != nil && *gotUID != *wantUID {
			t.Errorf("identities[%d]: got %+v (uid %v); want %+v (uid %v)", i, got, gotUID, want, wantUID)
		}
	}

	wantTargets := []Target{
		{Name: "orders-db", Protocol: "postgres", Address: "127.77.0.5:5432", Upstream: "127.77.0.5:5432",
			Credentials: Credentials{Username: "app_ro", Password: secret, PasswordFile: f.pwFile},
			TLS:         TLS{Mode: TLSDisable}, Line: 42},
		{Name: "analytics-db", Protocol: "postgres", Address: "127.77.1.0/24:5432", Upstream: "analytics.db.internal:5432",
			Credentials: Credentials{Username: "analytics", Password: "analytics-secret", PasswordEnv: "TOLLGATE_ANALYTICS_PASSWORD"},
			TLS:         TLS{Mode: TLSVerifyFull, CAFile: f.ca}, Line: 51},
		{Name: "legacy-db", Protocol: "postgres", Address: "[::1]:5433", Upstream: "[::1]:5433",
			Credentials: Credentials{Passthrough: true}, TLS: TLS{Mode: TLSDisable}, Line: 60},
		{Name: "cache", Protocol: "tcp", Address: "[fd00:77::/64]:6379", Upstream: "[fd00:77::10]:6379",
			TLS: TLS{Mode: TLSDisable}, Line: 65},
	}
	if len(c.Targets) != len(wantTargets) {
		t.Fatalf("got %d targets; want %d", len(c.Targets), len(wantTargets))
	}
	for i, want := range wantTargets {
		if got := c.Targets[i]; got != want {
			t.Errorf("targets[%d]:\ngot  %#v\nwant %#v", i, got, want)
		}
	}
	if got, want := c.Audit, (Audit{Dir: "/var/lib/tollgate/audit", Durability: DurabilityBatch, FlushInterval: DefaultFlushInterval, SyncInterval: DefaultSyncInterval}); !reflect.DeepEqual(got, want) {
		t.Errorf("got audit %+v; want %+v", got, want)
	}
	if got, want := c.Line("targets[1].tls.ca_file"), 58; got != want {
		t.Errorf("got Line(targets[1].tls.ca_file) %d; want %d", got, want)
	}
	wantApprovals := Approvals{
		Timeout: 15 * time.Minute,
		Webhook: Webhook{URL: "https://hooks.example.com/services/T0/B0/" + secret, URLFile: f.webhook,
			Timeout: 5 * time.Second, MaxAttempts: 5, Backoff: time.Second},
		Listen: "127.0.0.1:7443",
		TLS:    ServerTLS{CertFile: f.cert, KeyFile: f.key},
		OIDC: ApproverOIDC{Issuer: "https://login.example.com", Audience: "tollgate-approvals",
			GroupsClaim: "groups", UsernameClaim: "preferred_username"},
	}
	if c.Approvals != wantApprovals {
		t.Errorf("approvals:\ngot  %+v\nwant %+v", c.Approvals, wantApprovals)
	}
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{
		{"empty file", ""},
		{"comment only", "# nothing\n"},
		{"empty mapping", "{}\n"},
		{"null sections", "bpf:\nproxy:\npolicy: ~\naudit:\ntargets:\nidentities:\napprovals:\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "tollgate.yaml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := Config{
				StateDir:      "/var/lib/tollgate",
				ControlSocket: "/run/tollgate/tollctl.sock",
				BPF:           BPF{Cgroup: "/", PinDir: "/sys/fs/bpf/tollgate", OnAgentDown: "fail-closed"},
				Proxy:         Proxy{Port: 15001, LinkLocal: "169.254.77.1", Mark: 0x70670001},
				Policy:        Policy{Dir: "/etc/tollgate/policy"},
				Audit:         Audit{Dir: "/var/lib/tollgate/audit", Durability: "batch", FlushInterval: 50 * time.Millisecond, SyncInterval: 50 * time.Millisecond},
				Approvals: Approvals{
					Timeout: 10 * time.Minute,
					Webhook: Webhook{Timeout: 5 * time.Second, MaxAttempts: 5, Backoff: time.Second},
					OIDC:    ApproverOIDC{GroupsClaim: "groups", UsernameClaim: "preferred_username"},
				},
				ShutdownGrace: 10 * time.Second,
			}
			got := *c
			got.file, got.lines = "", nil
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}

	t.Run("derived", func(t *testing.T) {
		c, err := Parse([]byte(`state_dir: /srv/tg
targets:
  - name: a
    protocol: tcp
    address: 127.77.0.5:5432
`), "tollgate.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Audit.Dir, "/srv/tg/audit"; got != want {
			t.Errorf("got audit.dir %q; want %q", got, want)
		}
		if got, want := c.Targets[0].Upstream, "127.77.0.5:5432"; got != want {
			t.Errorf("got upstream %q; want %q", got, want)
		}
		if got, want := c.Targets[0].TLS.Mode, "disable"; got != want {
			t.Errorf("got tls.mode %q; want %q", got, want)
		}
	})
}

// target is a valid target that test configs start from: lines 1-4.
const target = `targets:
  - name: orders-db
    protocol: postgres
    address: 127.77.0.5:5432
`

var errorTests = []struct {
	name string
	yaml string
	want string // contained in the error
}{
	// decoding
	{"unknown key", "state_dir: /var/lib/tollgate\n\ntagets: []\n",
		`tollgate.yaml:3: unknown key "tagets" (did you mean "targets"?)`},
	{"unknown nested key", target + "    adress: 127.77.0.6:5432\n",
		`tollgate.yaml:5: unknown key "targets[0].adress" (did you mean "address"?)`},
	{"unknown key no hint", "bpf:\n  zzzzzz: 1\n",
		`tollgate.yaml:2: unknown key "bpf.zzzzzz"`},
	{"password in config", target + "    credentials: {username: a, password: " + secret + "}\n",
		`tollgate.yaml:5: unknown key "targets[0].credentials.password" (the config never holds a secret`},
	{"duplicate key", "bpf:\n  cgroup: /\n  cgroup: /a\n",
		`tollgate.yaml:3: bpf.cgroup: duplicate key (first at line 2)`},
	{"type port", "proxy:\n  port: abc\n",
		"tollgate.yaml:2: proxy.port: cannot unmarshal !!str `abc` into uint16"},
	{"type port range", "proxy:\n  port: 70000\n",
		"tollgate.yaml:2: proxy.port: cannot unmarshal !!int `70000` into uint16"},
	{"type duration", "shutdown_grace: 10\n",
		"tollgate.yaml:1: shutdown_grace: cannot unmarshal !!int `10` into time.Duration"},
	{"type uid", "identities:\n  - name: a\n    match: {uid: root}\n",
		"tollgate.yaml:3: identities[0].match.uid: cannot unmarshal !!str `root` into uint32"},
	{"section not mapping", "bpf: [a]\n", "tollgate.yaml:1: bpf: want a mapping, got a list"},
	{"list not list", "targets:\n  name: a\n", "tollgate.yaml:1: targets: want a list, got a mapping"},
	{"string not scalar", target + "    upstream: [a]\n", "tollgate.yaml:5: targets[0].upstream: cannot unmarshal !!seq into string"},
	{"credentials scalar", target + "    credentials: " + secret + "\n",
		`tollgate.yaml:5: targets[0].credentials: want a mapping (username, password_file or password_env) or "passthrough", got a string`},
	{"credentials passthrough mapping", target + "    credentials: {passthrough: true}\n",
		`tollgate.yaml:5: unknown key "targets[0].credentials.passthrough" (write "credentials: passthrough")`},
	{"syntax", "bpf:\n  cgroup: /\n pin_dir: x\n", "tollgate.yaml:2: did not find expected key"},
	{"root not mapping", "- a\n- b\n", "tollgate.yaml:1: the config must be a mapping of keys, got a list"},
	{"two documents", "bpf: {}\n---\nproxy: {}\n", "tollgate.yaml:2: a second YAML document"},
	{"merge self", "bpf: &b\n  <<: *b\n", "a mapping merges itself"},
	{"merge not mapping", "bpf:\n  <<: [a]\n", "tollgate.yaml:2: <<: a merge key wants a mapping"},

	// top level and sections
	{"state_dir relative", "state_dir: var/lib/tollgate\n", `tollgate.yaml:1: state_dir: "var/lib/tollgate" is not an absolute path`},
	{"control_socket relative", "control_socket: tollctl.sock\n", `tollgate.yaml:1: control_socket: "tollctl.sock" is not an absolute path`},
	{"shutdown_grace negative", "shutdown_grace: -1s\n", "tollgate.yaml:1: shutdown_grace: -1s is negative"},
	{"bpf.cgroup relative", "bpf:\n  cgroup: system.slice\n", `tollgate.yaml:2: bpf.cgroup: "system.slice" is not an absolute cgroup path`},
	{"bpf.cgroup dotdot", "bpf:\n  cgroup: /a/../b\n", `tollgate.yaml:2: bpf.cgroup: "/a/../b": a cgroup path may not contain ..`},
	{"bpf.pin_dir relative", "bpf: {pin_dir: fs/bpf}\n", `tollgate.yaml:1: bpf.pin_dir: "fs/bpf" is not an absolute path`},
	{"on_agent_down", "bpf:\n  cgroup: /\n  on_agent_down: fail-safe\n", `tollgate.yaml:3: bpf.on_agent_down: "fail-safe" is not one of fail-closed, fail-open`},
	{"link_local", "proxy:\n  link_local: 10.0.0.1\n", `tollgate.yaml:2: proxy.link_local: "10.0.0.1" is not an IPv4 link-local address`},
	{"policy.dir relative", "policy:\n  dir: policy\n", `tollgate.yaml:2: policy.dir: "policy" is not an absolute path`},
	{"audit.dir relative", "audit:\n  dir: audit\n", `tollgate.yaml:2: audit.dir: "audit" is not an absolute path`},
	{"durability", "audit:\n  durability: always\n", `tollgate.yaml:2: audit.durability: "always" is not one of batch, strict`},
	{"sync_interval below flush_interval", "audit:\n  flush_interval: 20ms\n  sync_interval: 10ms\n",
		"tollgate.yaml:3: audit.sync_interval: 10ms is shorter than flush_interval 20ms: a record is synced after it is written"},
	{"flush_interval negative", "audit:\n  flush_interval: -5ms\n", "tollgate.yaml:2: audit.flush_interval: -5ms is negative"},

	// identities
	{"identity name empty", "identities:\n  - owner: x\n    match: {uid: 0}\n", "tollgate.yaml:2: identities[0].name: an identity needs a name"},
	{"identity name duplicate", "identities:\n  - name: a\n    match: {uid: 1}\n  - name: a\n    match: {uid: 2}\n",
		`tollgate.yaml:4: identities[1].name: identity "a" is already defined (identities[0], line 2)`},
	{"identity match missing", "identities:\n  - name: a\n    owner: x\n", "tollgate.yaml:2: identities[0].match: matches nothing: set cgroup, systemd_unit or uid"},
	{"identity match empty", "identities:\n  - name: a\n    match: {}\n", "tollgate.yaml:3: identities[0].match: matches nothing"},
	{"identity cgroup relative", "identities:\n  - name: a\n    match:\n      cgroup: system.slice/x.service\n",
		`tollgate.yaml:4: identities[0].match.cgroup: "system.slice/x.service" is not an absolute cgroup path`},
	{"identity cgroup star", "identities:\n  - name: a\n    match: {cgroup: /a/*/b}\n",
		`tollgate.yaml:3: identities[0].match.cgroup: "/a/*/b": "*" may only end the path`},

	// targets
	{"target name empty", "targets:\n  - protocol: tcp\n    address: 127.77.0.5:5432\n", "tollgate.yaml:2: targets[0].name: a target needs a name"},
	{"target name duplicate", target + "  - name: orders-db\n    protocol: postgres\n    address: 127.77.0.6:5432\n",
		`tollgate.yaml:5: targets[1].name: target "orders-db" is already defined (targets[0], line 2)`},
	{"protocol empty", "targets:\n  - name: a\n    address: 127.77.0.5:5432\n", "tollgate.yaml:2: targets[0].protocol: is empty"},
	{"address empty", "targets:\n  - name: a\n    protocol: tcp\n", "tollgate.yaml:2: targets[0].address: is empty"},
	{"address no port", "targets:\n  - name: a\n    protocol: tcp\n    address: 127.77.0.5\n",
		`tollgate.yaml:4: targets[0].address: "127.77.0.5" is not host:port or CIDR:port: missing port in address`},
	{"address hostname", "targets:\n  - name: a\n    protocol: tcp\n    address: db.internal:5432\n",
		`tollgate.yaml:4: targets[0].address: "db.internal:5432": a host name is not allowed in address, because the kernel matches the IP address`},
	{"address not ip", "targets:\n  - name: a\n    protocol: tcp\n    address: 127.77.0.300:5432\n",
		`tollgate.yaml:4: targets[0].address: "127.77.0.300:5432": "127.77.0.300" is not an IP address`},
	{"address ipv6 brackets", "targets:\n  - name: a\n    protocol: tcp\n    address: \"::1:5432\"\n",
		`tollgate.yaml:4: targets[0].address: "::1:5432" is not host:port or CIDR:port: too many colons in address (write IPv6 in brackets`},
	{"address cidr host bits", "targets:\n  - name: a\n    protocol: tcp\n    address: 127.77.0.5/24:5432\n    upstream: 127.77.0.5:5432\n",
		`tollgate.yaml:4: targets[0].address: "127.77.0.5/24:5432": 127.77.0.5/24 has bits set past the /24 mask: write 127.77.0.0/24`},
	{"address bad cidr", "targets:\n  - name: a\n    protocol: tcp\n    address: 127.77.0.0/33:5432\n    upstream: 127.77.0.5:5432\n",
		`tollgate.yaml:4: targets[0].address: "127.77.0.0/33:5432": "127.77.0.0/33" is not a CIDR prefix`},
	{"address port zero", "targets:\n  - name: a\n    protocol: tcp\n    address: 127.77.0.5:0\n",
		`tollgate.yaml:4: targets[0].address: "127.77.0.5:0": port "0" is not a number from 1 to 65535`},
	{"address port name", "targets:\n  - name: a\n    protocol: tcp\n    address: 127.77.0.5:postgresql\n",
		`tollgate.yaml:4: targets[0].address: "127.77.0.5:postgresql": port "postgresql" is not a number`},
	{"address zone", "targets:\n  - name: a\n    protocol: tcp\n    address: \"[fe80::1%lo]:5432\"\n",
		`tollgate.yaml:4: targets[0].address: "[fe80::1%lo]:5432": an IPv6 zone is not allowed`},
	{"address duplicate", target + "  - name: b\n    protocol: tcp\n    address: 127.77.0.5:5432\n",
		`tollgate.yaml:7: targets[1].address: 127.77.0.5:5432 is already the address of targets[0] (line 2)`},
	{"cidr needs upstream", "targets:\n  - name: a\n    protocol: tcp\n    address: \"[fd00:77::/64]:5432\"\n",
		`tollgate.yaml:2: targets[0].upstream: is required when address is a CIDR ([fd00:77::/64]:5432)`},
	{"upstream cidr", target + "    upstream: 127.77.0.0/24:5432\n",
		`tollgate.yaml:5: targets[0].upstream: "127.77.0.0/24:5432": upstream is one host, not a CIDR`},
	{"upstream no port", target + "    upstream: db.internal\n",
		`tollgate.yaml:5: targets[0].upstream: "db.internal" is not host:port: missing port in address`},
	{"upstream bad host", target + "    upstream: \"db internal:5432\"\n",
		`tollgate.yaml:5: targets[0].upstream: "db internal:5432": "db internal" is neither an IP address nor a host name`},
	{"credentials exclusive", target + "    credentials:\n      username: app\n      password_file: $PW\n      password_env: HOME\n",
		"tollgate.yaml:5: targets[0].credentials: password_file and password_env are mutually exclusive"},
	{"password_file missing", target + "    credentials:\n      username: app\n      password_file: $DIR/missing\n",
		"tollgate.yaml:7: targets[0].credentials.password_file: read $DIR/missing: no such file or directory"},
	{"password_file directory", target + "    credentials: {username: app, password_file: $DIR}\n",
		"tollgate.yaml:5: targets[0].credentials.password_file: read $DIR: is a directory"},
	{"password_file relative", target + "    credentials: {username: app, password_file: " + secret + "}\n",
		"tollgate.yaml:5: targets[0].credentials.password_file: is not an absolute path"},
	{"password_env unset", target + "    credentials:\n      password_env: TOLLGATE_TEST_UNSET_VAR\n",
		"tollgate.yaml:6: targets[0].credentials.password_env: environment variable TOLLGATE_TEST_UNSET_VAR is not set"},
	{"password_env empty", target + "    credentials:\n      password_env: TOLLGATE_TEST_EMPTY_VAR\n",
		"tollgate.yaml:6: targets[0].credentials.password_env: environment variable TOLLGATE_TEST_EMPTY_VAR is empty"},
	{"password_env not a name", target + "    credentials:\n      password_env: \"" + secret + "!\"\n",
		"tollgate.yaml:6: targets[0].credentials.password_env: is not an environment variable name"},
	{"tls mode", target + "    tls:\n      mode: verify-ca\n",
		`tollgate.yaml:6: targets[0].tls.mode: "verify-ca" is not one of disable, require, verify-full`},
	{"ca_file with disable", target + "    tls: {ca_file: $CA}\n",
		"tollgate.yaml:5: targets[0].tls.ca_file: is set but tls.mode is disable"},
	{"ca_file missing", target + "    tls: {mode: verify-full, ca_file: $DIR/missing.pem}\n",
		"tollgate.yaml:5: targets[0].tls.ca_file: open $DIR/missing.pem: no such file or directory"},
	{"ca_file not pem", target + "    tls:\n      mode: require\n      ca_file: $NOTPEM\n",
		"tollgate.yaml:7: targets[0].tls.ca_file: $NOTPEM holds no PEM certificate"},

	// approvals
	{"approvals unknown key", "approvals:\n  timout: 5m\n", `tollgate.yaml:2: unknown key "approvals.timout" (did you mean "timeout"?)`},
	{"approvals timeout negative", "approvals:\n  timeout: -1m\n", "tollgate.yaml:2: approvals.timeout: is negative"},
	{"approvals timeout type", "approvals:\n  timeout: 10\n", "tollgate.yaml:2: approvals.timeout: cannot unmarshal !!int `10` into time.Duration"},
	{"webhook url not http", "approvals:\n  webhook:\n    url: ftp://hooks.example.com/" + secret + "\n",
		"tollgate.yaml:3: approvals.webhook.url: is not an http(s) URL"},
	{"webhook url and file", "approvals:\n  webhook:\n    url: https://x.example\n    url_file: $WEBHOOK\n",
		"tollgate.yaml:2: approvals.webhook: url and url_file are mutually exclusive"},
	{"webhook url_file missing", "approvals:\n  webhook: {url_file: $DIR/missing}\n",
		"tollgate.yaml:2: approvals.webhook.url_file: open $DIR/missing: no such file or directory"},
	{"webhook url_file not a url", "approvals:\n  webhook:\n    url_file: $PW\n",
		"tollgate.yaml:3: approvals.webhook.url_file: $PW holds no http(s) URL"},
	{"webhook max_attempts negative", "approvals:\n  webhook:\n    url: https://x.example\n    max_attempts: -1\n",
		"tollgate.yaml:4: approvals.webhook.max_attempts: is negative"},
	{"webhook backoff type", "approvals:\n  webhook:\n    backoff: soon\n",
		"tollgate.yaml:3: approvals.webhook.backoff: cannot unmarshal !!str `soon` into time.Duration"},
	{"listen without tls and oidc", "approvals:\n  listen: 127.0.0.1:7443\n",
		"tollgate.yaml:1: approvals.tls: is required with listen"},
	{"listen without oidc", "approvals:\n  listen: 127.0.0.1:7443\n  tls: {cert_file: $CERT, key_file: $KEY}\n",
		"tollgate.yaml:1: approvals.oidc: is required with listen"},
	{"listen bad port", "approvals:\n  listen: 127.0.0.1:99999\n  tls: {cert_file: $CERT, key_file: $KEY}\n  oidc: {issuer: https://i.example, audience: a}\n",
		`tollgate.yaml:2: approvals.listen: "127.0.0.1:99999": port "99999" is not a number from 1 to 65535`},
	{"listen no port", "approvals:\n  listen: 127.0.0.1\n  tls: {cert_file: $CERT, key_file: $KEY}\n  oidc: {issuer: https://i.example, audience: a}\n",
		`tollgate.yaml:2: approvals.listen: "127.0.0.1" is not host:port: missing port in address`},
	{"tls one file", "approvals:\n  listen: :7443\n  tls:\n    cert_file: $CERT\n  oidc: {issuer: https://i.example, audience: a}\n",
		"tollgate.yaml:3: approvals.tls: set both cert_file and key_file"},
	{"tls not a pair", "approvals:\n  listen: :7443\n  tls:\n    cert_file: $CERT\n    key_file: $CA\n  oidc: {issuer: https://i.example, audience: a}\n",
		"tollgate.yaml:4: approvals.tls.cert_file: tls:"},
	{"tls relative", "approvals:\n  listen: :7443\n  tls:\n    cert_file: control.pem\n    key_file: $KEY\n  oidc: {issuer: https://i.example, audience: a}\n",
		`tollgate.yaml:4: approvals.tls.cert_file: "control.pem" is not an absolute path`},
	{"tls without listen", "approvals:\n  tls: {cert_file: $CERT, key_file: $KEY}\n",
		"tollgate.yaml:2: approvals.tls: is set but approvals.listen is empty"},
	{"oidc without listen", "approvals:\n  oidc:\n    issuer: https://i.example\n",
		"tollgate.yaml:2: approvals.oidc: is set but approvals.listen is empty"},
	{"oidc bad issuer", "approvals:\n  listen: :7443\n  tls: {cert_file: $CERT, key_file: $KEY}\n  oidc:\n    issuer: login.example.com\n    audience: a\n",
		`tollgate.yaml:5: approvals.oidc.issuer: "login.example.com" is not an http(s) issuer URL`},
	{"oidc no audience", "approvals:\n  listen: :7443\n  tls: {cert_file: $CERT, key_file: $KEY}\n  oidc:\n    issuer: https://i.example\n",
		"tollgate.yaml:4: approvals.oidc.audience: is empty"},
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	t.Setenv("TOLLGATE_TEST_EMPTY_VAR", "")
	os.Unsetenv("TOLLGATE_TEST_UNSET_VAR")
	for _, tc := range errorTests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(f.render(tc.yaml)), "tollgate.yaml")
			if err == nil {
				t.Fatalf("got config %+v; want error %q", c, f.render(tc.want))
			}
			if got, want := err.Error(), f.render(tc.want); !strings.Contains(got, want) {
				t.Errorf("got error\n  %s\nwant it to contain\n  %s", got, want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error holds the secret: %s", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("got %T; want an *Error in the chain", err)
			}
		})
	}
}

func TestErrorKinds(t *testing.T) {
	_, err := Parse([]byte("tagets: []\n"), "tollgate.yaml")
	if got, want := err.Error(), `tollgate.yaml:1: unknown key "tagets" (did you mean "targets"?)`; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	if !errors.Is(err, ErrUnknownKey) {
		t.Errorf("got errors.Is(err, ErrUnknownKey) false; want true")
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 1 || e.Key != "tagets" || e.File != "tollgate.yaml" {
		t.Errorf("got %#v; want File tollgate.yaml, Line 1, Key tagets", e)
	}
}

func TestSeveralErrors(t *testing.T) {
	_, err := Parse([]byte(`audit:
  durability: never
bpf:
  on_agent_down: maybe
targets:
  - name: a
    protocol: tcp
    address: db:5432
`), "tollgate.yaml")
	if err == nil {
		t.Fatal("got nil error; want three")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"tollgate.yaml:2: audit.durability", "tollgate.yaml:4: bpf.on_agent_down", "tollgate.yaml:8: targets[0].address"}
	if len(lines) != len(want) {
		t.Fatalf("got %d errors:\n%s\nwant %d", len(lines), err, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]+": ") {
			t.Errorf("got error %d %q; want it to start with %q", i, lines[i], want[i])
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	writeFile(t, path, "bpf:\n  on_agent_down: fail-open\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.BPF.OnAgentDown, FailOpen; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	writeFile(t, path, "bpf:\n  on_agent_down: fail-soft\n")
	_, err = Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: bpf.on_agent_down: ") {
		t.Errorf("got %v; want an error at %s:2", err, path)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v; want os.ErrNotExist", err)
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	f := newFixture(t)
	t.Setenv("TOLLGATE_TEST_SECRET", secret)
	// Valid credentials, then an unrelated error: the passwords are read
	// by the time the error is reported.
	const tmpl = `targets:
  - name: a
    protocol: postgres
    address: 127.77.0.5:5432
    credentials: {username: app, password_file: $PW}
  - name: b
    protocol: postgres
    address: 127.77.0.6:5432
    credentials: {username: app, password_env: TOLLGATE_TEST_SECRET}
`
	c, err := Parse([]byte(f.render(tmpl)), "tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, tg := range c.Targets {
		if tg.Credentials.Password != secret {
			t.Errorf("targets[%d]: got password %q; want the secret", i, tg.Credentials.Password)
		}
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"String": c.Targets[0].Credentials.String(),
		"json":   string(js),
		"yaml":   string(ys),
	}
	// Every verb, on the config, a target and the credentials.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for name, v := range map[string]any{"config": c, "*config": *c, "target": c.Targets[1], "credentials": c.Targets[0].Credentials} {
			outputs[verb+" "+name] = fmt.Sprintf(verb, v)
		}
	}
	bad := f.render(tmpl + "    tls: {mode: verify-full, ca_file: $NOTPEM}\nbpf: {on_agent_down: x}\n")
	_, err = Parse([]byte(bad), "tollgate.yaml")
	if err == nil {
		t.Fatal("got nil error; want two")
	}
	outputs["error"] = err.Error()
	for name, out := range outputs {
		if strings.Contains(out, secret) {
			t.Errorf("%s output holds the secret: %s", name, out)
		}
	}
	if got, want := c.Targets[0].Credentials.String(), "{username: app, password_file: "+f.pwFile+", password: <redacted>}"; got != want {
		t.Errorf("got String %q; want %q", got, want)
	}
}

func TestPassthrough(t *testing.T) {
	c, err := Parse([]byte(target+"    credentials: passthrough\n"), "tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Targets[0].Credentials, (Credentials{Passthrough: true}); got != want {
		t.Errorf("got %+v; want %+v", got, want)
	}
	out, err := yaml.Marshal(c.Targets[0].Credentials)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "passthrough\n"; got != want {
		t.Errorf("got marshalled %q; want %q", got, want)
	}

	// Plain yaml.v3 decoding (not strict) understands both forms too.
	for _, tc := range []struct {
		in   string
		want Credentials
	}{
		{"passthrough", Credentials{Passthrough: true}},
		{"{username: app, password_env: X}", Credentials{Username: "app", PasswordEnv: "X"}},
	} {
		var got Credentials
		if err := yaml.Unmarshal([]byte(tc.in), &got); err != nil {
			t.Errorf("yaml.Unmarshal(%q): %v", tc.in, err)
		} else if got != tc.want {
			t.Errorf("yaml.Unmarshal(%q): got %+v; want %+v", tc.in, got, tc.want)
		}
	}
	var got Credentials
	if err := yaml.Unmarshal([]byte("[a]"), &got); err == nil {
		t.Error("yaml.Unmarshal of a list: got nil error; want one")
	}

	// Passthrough set with a username in code is a contradiction.
	c.Targets[0].Credentials.Username = "app"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "targets[0].credentials: passthrough injects nothing") {
		t.Errorf("got %v; want a passthrough error", err)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		address string
		prefix  string
		port    uint16
	}{
		{"127.77.0.5:5432", "127.77.0.5/32", 5432},
		{"127.77.0.0/16:5432", "127.77.0.0/16", 5432},
		{"[::1]:5432", "::1/128", 5432},
		{"[fd00:77::/64]:6379", "fd00:77::/64", 6379},
		{"[::ffff:127.77.0.5]:5432", "127.77.0.5/32", 5432},
		{"[::ffff:127.77.0.0/112]:5432", "127.77.0.0/16", 5432},
		{"[127.77.0.5]:1", "127.77.0.5/32", 1},
		{"0.0.0.0/0:65535", "0.0.0.0/0", 65535},
	} {
		tg := Target{Name: "t", Address: tc.address}
		p, port, err := tg.Match()
		if err != nil {
			t.Errorf("Match(%q): %v", tc.address, err)
			continue
		}
		if p != netip.MustParsePrefix(tc.prefix) || port != tc.port {
			t.Errorf("Match(%q): got %s, %d; want %s, %d", tc.address, p, port, tc.prefix, tc.port)
		}
	}
	for _, bad := range []string{"", "127.77.0.5", "db:5432", "::1:5432", "127.77.0.5:0", "127.77.0.5/8:1", "[fe80::1%lo]:1"} {
		tg := Target{Name: "t", Address: bad}
		if _, _, err := tg.Match(); err == nil {
			t.Errorf("Match(%q): got nil error; want one", bad)
		}
	}
}

func TestValidateProtocols(t *testing.T) {
	c, err := Parse([]byte(target+"  - name: b\n    protocol: mongodb\n    address: 127.77.0.6:27017\n"), "tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	registered := func(p string) bool { return p == "postgres" || p == "tcp" }
	err = c.ValidateProtocols(registered)
	if got, want := fmt.Sprint(err), `tollgate.yaml:6: targets[1].protocol: no engine for protocol "mongodb"`; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	if err := c.ValidateProtocols(func(string) bool { return true }); err != nil {
		t.Errorf("got %v; want nil", err)
	}
}

func TestKeyError(t *testing.T) {
	c, err := Parse([]byte("bpf:\n  cgroup: /system.slice\n"+target), "tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want string
	}{
		{"bpf.cgroup", "tollgate.yaml:2: bpf.cgroup: boom"},
		{"targets[0].upstream", "tollgate.yaml:4: targets[0].upstream: boom"}, // not written: the target's line
		{"policy.dir", "tollgate.yaml: policy.dir: boom"},                     // not written, nor its section
	} {
		if got := c.KeyError(tc.key, errors.New("boom")).Error(); got != tc.want {
			t.Errorf("KeyError(%q): got %q; want %q", tc.key, got, tc.want)
		}
	}
}

func TestAliasesAndMerge(t *testing.T) {
	f := newFixture(t)
	c, err := Parse([]byte(f.render(`targets:
  - &pg
    name: a
    protocol: postgres
    address: 127.77.0.5:5432
    credentials: &creds {username: app, password_file: $PW}
  - <<: *pg
    name: b
    address: 127.77.0.6:5432
  - name: c
    protocol: tcp
    address: 127.77.0.7:5432
    credentials: *creds
`)), "tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		name, protocol, address string
		line                    int
	}{{"a", "postgres", "127.77.0.5:5432", 2}, {"b", "postgres", "127.77.0.6:5432", 7}, {"c", "tcp", "127.77.0.7:5432", 10}} {
		tg := c.Targets[i]
		if tg.Name != want.name || tg.Protocol != want.protocol || tg.Address != want.address || tg.Line != want.line || tg.Credentials.Password != secret {
			t.Errorf("targets[%d]: got %s %s %s line %d; want %s %s %s line %d, password read",
				i, tg.Name, tg.Protocol, tg.Address, tg.Line, want.name, want.protocol, want.address, want.line)
		}
	}
}

func TestAliasBomb(t *testing.T) {
	// Each identity merges the previous one ten times: 10^n expansion.
	var b strings.Builder
	b.WriteString("identities:\n  - &i0 {name: a, match: {uid: 1}}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  - &i%d {<<: [", i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*i%d", i-1)
		}
		b.WriteString("]}\n")
	}
	start := time.Now()
	_, err := Parse([]byte(b.String()), "tollgate.yaml")
	if err == nil || !strings.Contains(err.Error(), "document too complex") {
		t.Errorf("got %v; want a too complex error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestApprovalsWebhookURL(t *testing.T) {
	c, err := Parse([]byte("approvals:\n  webhook: {url: \"http://127.0.0.1:9/hook\", max_attempts: 3, backoff: 2s}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Webhook{URL: "http://127.0.0.1:9/hook", Timeout: 5 * time.Second, MaxAttempts: 3, Backoff: 2 * time.Second}
	if c.Approvals.Webhook != want || c.Approvals.Listen != "" {
		t.Errorf("approvals %+v; want webhook %+v", c.Approvals, want)
	}
	if got, want := c.Line("approvals.webhook.url"), 2; got != want {
		t.Errorf("Line(approvals.webhook.url) = %d; want %d", got, want)
	}
}

func TestBadStateDirReportedOnce(t *testing.T) {
	_, err := Parse([]byte("state_dir: var/lib/tollgate\n"), "tollgate.yaml")
	if got, want := fmt.Sprint(err), `tollgate.yaml:1: state_dir: "var/lib/tollgate" is not an absolute path`; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestProxyTLSNeedsBoth(t *testing.T) {
	_, err := Parse([]byte("proxy:\n  tls:\n    cert_file: /etc/x.crt\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "t.yaml:2: proxy.tls") {
		t.Errorf("err = %v; want it to name proxy.tls and its line", err)
	}
	_, err = Parse([]byte("proxy:\n  tls:\n    cert_file: /nonexistent/x.crt\n    key_file: /nonexistent/x.key\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "proxy.tls.cert_file") {
		t.Errorf("err = %v; want an unreadable cert_file named", err)
	}
}

func TestClientToken(t *testing.T) {
	c, err := Parse([]byte("targets:\n  - name: db\n    protocol: postgres\n    address: 127.77.0.5:5432\n    credentials:\n      client_token: {issuer: \"https://issuer.example\", audience: orders-db}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ct := c.Targets[0].Credentials.ClientToken; ct == nil || ct.Issuer != "https://issuer.example" || ct.Audience != "orders-db" {
		t.Errorf("client_token = %+v", ct)
	}
	_, err = Parse([]byte("targets:\n  - name: db\n    protocol: postgres\n    address: 127.77.0.5:5432\n    credentials:\n      client_token: {issuer: \"ftp://x\"}\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "client_token.issuer") || !strings.Contains(err.Error(), "client_token.audience") {
		t.Errorf("err = %v; want issuer and audience named", err)
	}
}

func TestAuditRetentionAndSinks(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "dsn")
	os.WriteFile(dsn, []byte("postgres://audit@127.0.0.1/audit\n"), 0o600)
	c, err := Parse([]byte("audit:\n  retention: {max_age: 720h, max_bytes: 1073741824}\n  sinks:\n    - {type: postgres, dsn_file: "+dsn+"}\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit.Retention.MaxAge != 720*time.Hour || c.Audit.Retention.MaxBytes != 1<<30 || c.Audit.Sinks[0].DSN != "postgres://audit@127.0.0.1/audit" {
		t.Errorf("audit = %+v", c.Audit)
	}
	_, err = Parse([]byte("audit:\n  sinks:\n    - {type: kafka}\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "audit.sinks[0].type") || !strings.Contains(err.Error(), "audit.sinks[0]: needs dsn") {
		t.Errorf("err = %v", err)
	}
}
