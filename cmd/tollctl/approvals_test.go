package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/approval/approvaltest"
	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/control"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/test/oidctest"
)

const waitLimit = 10 * time.Second

// The test binary is tollctl itself when TOLLCTL_TEST_MAIN is set: the
// tests run the real command, flags, output and exit codes included.
func TestMain(m *testing.M) {
	if os.Getenv("TOLLCTL_TEST_MAIN") == "1" {
		os.Args = append([]string{"tollctl"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tollctl runs the command with args and returns its output (stdout, then
// stderr) and exit code.
func tollctl(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "TOLLCTL_TEST_MAIN=1", "TOLLGATE_TOKEN=", "TOLLGATE_SERVER="), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String() + stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return stdout.String() + stderr.String(), 0
}

// agent is a control server whose approvals are a real broker.
type agent struct {
	b *approval.Broker
}

func (a agent) Status() control.Status                      { return control.Status{Version: "test"} }
func (a agent) Sessions() []l7.SessionInfo                  { return nil }
func (a agent) Session(string) (l7.SessionInfo, bool)       { return l7.SessionInfo{}, false }
func (a agent) Identities() []identity.InventoryEntry       { return nil }
func (a agent) AuditPublicKey() []byte                      { return nil }
func (a agent) Approvals() []approval.Request               { return a.b.List() }
func (a agent) Approval(id string) (approval.Request, bool) { return a.b.Get(id) }
func (a agent) EvalPolicy(context.Context, policy.Input) policy.Decision {
	return policy.Decision{}
}
func (a agent) KillSession(context.Context, string, control.Peer, string) error {
	return control.ErrNotFound
}
func (a agent) SessionRecords(context.Context, string, bool, func(audit.Record) error) error {
	return nil
}
func (a agent) ApproveRequest(_ context.Context, id string, who approval.Approver, reason, scope string, window time.Duration) error {
	return a.b.Approve(id, who, reason, scope, window)
}
func (a agent) DenyRequest(_ context.Context, id string, who approval.Approver, reason string) error {
	return a.b.Deny(id, who, reason)
}
func (a agent) WatchApprovals(ctx context.Context) <-chan approval.Request { return a.b.Watch(ctx) }

var _ control.ApprovalBackend = agent{}

type fixture struct {
	t      *testing.T
	b      *approval.Broker
	socket string
	events <-chan approval.Request
}

func start(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, b: approval.New(approval.Options{}), socket: filepath.Join(t.TempDir(), "tollctl.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	f.events = f.b.Watch(ctx)
	s, err := control.Listen(f.socket, -1, agent{f.b})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		cancel()
		f.b.Close()
		s.Shutdown(context.Background())
		<-done
	})
	return f
}

func (f *fixture) run(args ...string) (string, int) {
	f.t.Helper()
	return tollctl(f.t, nil, append([]string{"--socket", f.socket}, args...)...)
}

// hold holds a statement of uid and returns its request once pending.
func (f *fixture) hold(uid uint32, user, scope string, approvers ...string) (approval.Request, <-chan approval.Outcome) {
	f.t.Helper()
	return approvaltest.Hold(f.t, f.b, f.events, approval.Ask{SessionID: "s_1", Identity: "billing-export", UID: uid, User: user, PID: 4242,
		Origin: "/system.slice/billing-export.service", Target: "orders-db", SQL: "DELETE FROM invoices\n  WHERE id = 7",
		Reason: "deletes need a DBA", Approvers: approvers, Scope: scope})
}

var outcome = approvaltest.Outcome

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the control socket's peer (uid 0, root) is the approver")
	}
}

func TestApprovalsLsApproveDeny(t *testing.T) {
	needRoot(t)
	f := start(t)
	if out, code := f.run("approvals", "ls", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("ls -o json with nothing held: %d %q; want []", code, out)
	}

	r, held := f.hold(65534, "", "", "user:root")
	out, code := f.run("approvals", "ls", "-o", "json")
	var l []map[string]any
	if err := json.Unmarshal([]byte(out), &l); code != 0 || err != nil || len(l) != 1 {
		t.Fatalf("ls -o json: %d %v\n%s", code, err, out)
	}
	for k, v := range map[string]any{"id": r.ID, "state": "pending", "identity": "billing-export", "target": "orders-db",
		"sql": "DELETE FROM invoices\n  WHERE id = 7", "uid": 65534.0, "session": "s_1"} {
		if l[0][k] != v {
			t.Errorf("ls -o json: %s = %v; want %v", k, l[0][k], v)
		}
	}
	out, code = f.run("approvals", "ls")
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, r.ID+"  pending") || !strings.Contains(out, "DELETE FROM invoices WHERE id = 7") {
		t.Errorf("ls: %d\n%s", code, out)
	}
	out, code = f.run("approvals", "show", r.ID)
	if code != 0 || !strings.Contains(out, "deletes need a DBA") || !strings.Contains(out, "uid 65534 (nobody), pid 4242") {
		t.Errorf("show: %d\n%s", code, out)
	}

	// Usage errors: exit 2.
	for _, args := range [][]string{
		{"approvals", "approve", r.ID, "--scope", "forever"},
		{"approvals", "approve", r.ID, "--scope", "session", "--for", "1h"},
		{"approvals", "approve", r.ID, "--for", "soon"},
		{"approvals", "approve"},
		{"approvals", "deny", r.ID},
	} {
		if out, code := f.run(args...); code != 2 {
			t.Errorf("%v: exit %d; want 2\n%s", args, code, out)
		}
	}

	out, code = f.run("approvals", "approve", r.ID, "--reason", "OPS-12", "--scope", "session")
	if code != 0 || !strings.Contains(out, r.ID+" approved by root: this statement and the rest of session s_1") {
		t.Errorf("approve: %d\n%s", code, out)
	}
	if o := outcome(t, held); !o.Approved || o.By != "root" || o.Grant != approval.ScopeSession || o.Reason != "OPS-12" {
		t.Errorf("outcome %+v", o)
	}
	f.b.EndSession("s_1") // later holds of s_1 wait again
	// Decided already: 1; unknown: 4.
	if out, code := f.run("approvals", "approve", r.ID); code != 1 || !strings.Contains(out, "approved by root") {
		t.Errorf("approve twice: %d\n%s", code, out)
	}
	if out, code := f.run("approvals", "deny", "ap-00000000", "--reason", "x"); code != 4 || !strings.Contains(out, "not found") {
		t.Errorf("deny unknown: %d\n%s", code, out)
	}
	if out, code := f.run("approvals", "show", "ap-00000000"); code != 4 {
		t.Errorf("show unknown: %d\n%s", code, out)
	}

	// root may not decide on root's own statement: 1, saying why.
	r, held = f.hold(0, "", "")
	if out, code := f.run("approvals", "approve", r.ID); code != 1 || !strings.Contains(out, "own statement") || !strings.Contains(out, "uid 0") {
		t.Errorf("self-approval: %d\n%s", code, out)
	}
	f.b.Deny(r.ID, approval.Approver{Name: "alice"}, "cleanup")
	outcome(t, held)

	// Not among the approvers: 1.
	r, held = f.hold(65534, "", "", "group:dba")
	if out, code := f.run("approvals", "approve", r.ID); code != 1 || !strings.Contains(out, "not one of group:dba") {
		t.Errorf("not an approver: %d\n%s", code, out)
	}
	f.b.Deny(r.ID, approval.Approver{Name: "alice", Groups: []string{"dba"}}, "cleanup")
	outcome(t, held)

	// Deny.
	r, held = f.hold(65534, "", "")
	out, code = f.run("approvals", "deny", r.ID, "--reason", "not during the freeze", "-o", "json")
	var got approval.Request
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.State != approval.StateDenied || got.DecidedBy != "root" {
		t.Errorf("deny -o json: %d %v\n%s", code, err, out)
	}
	if o := outcome(t, held); o.Approved || o.Reason != "not during the freeze" {
		t.Errorf("outcome %+v", o)
	}
}

func TestApprovalsAgentDown(t *testing.T) {
	out, code := tollctl(t, nil, "--socket", filepath.Join(t.TempDir(), "absent.sock"), "approvals", "ls")
	if code != 3 || !strings.Contains(out, "not running") {
		t.Errorf("agent down: %d\n%s", code, out)
	}
}

func TestApprovalsWatch(t *testing.T) {
	needRoot(t)
	f := start(t)
	first, held1 := f.hold(65534, "", "")
	for _, mode := range []string{"json", "table"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "--socket", f.socket, "approvals", "watch", "-o", mode)
			cmd.Env = append(os.Environ(), "TOLLCTL_TEST_MAIN=1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 10)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			next := func() string {
				t.Helper()
				select {
				case l := <-lines:
					return l
				case <-time.After(waitLimit):
					t.Fatalf("no line from watch; stderr: %s", stderr.String())
				}
				return ""
			}
			// The pending request first, then what happens.
			if l := next(); !strings.Contains(l, first.ID) || !strings.Contains(l, "pending") {
				t.Errorf("first line %q; want the pending request", l)
			}
			r, held := f.hold(65534, "", "")
			l := next()
			if mode == "json" {
				var got approval.Request
				if err := json.Unmarshal([]byte(l), &got); err != nil || got.ID != r.ID || got.State != approval.StatePending || got.SQL == "" {
					t.Errorf("line %q: %+v, %v", l, got, err)
				}
			} else if !strings.Contains(l, r.ID+"  pending") || !strings.Contains(l, "billing-export (uid 65534) on orders-db") {
				t.Errorf("line %q", l)
			}
			if out, code := f.run("approvals", "approve", r.ID, "--reason", "fine"); code != 0 {
				t.Fatalf("approve: %d %s", code, out)
			}
			outcome(t, held)
			if l := next(); !strings.Contains(l, r.ID) || !strings.Contains(l, "approved") || !strings.Contains(l, "fine") {
				t.Errorf("line %q; want the approval", l)
			}
			cmd.Process.Signal(syscall.SIGINT)
			if err := cmd.Wait(); err != nil {
				t.Errorf("watch after Ctrl-C: %v; want exit 0\n%s", err, stderr.String())
			}
		})
	}
	f.b.Close()
	outcome(t, held1)
}

func TestApprovalsRemote(t *testing.T) {
	f := start(t)
	is := oidctest.Start(t)
	conf, caPEM := serverCert(t)
	s, err := control.ListenTCP("127.0.0.1:0", conf, control.NewOIDCVerifier(control.OIDCOptions{Issuer: is.URL, Audience: "tollgate-approvals"}), agent{f.b})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, caPEM, 0o600)
	tokenFile := func(c oidctest.Claims) string {
		p := filepath.Join(dir, fmt.Sprintf("token-%d", time.Now().UnixNano()))
		os.WriteFile(p, []byte(is.Token(t, c)+"\n"), 0o600)
		return p
	}
	alice := tokenFile(oidctest.Claims{Audience: []string{"tollgate-approvals"},
		Extra: map[string]any{"preferred_username": "alice", "groups": []string{"dba"}}})
	expired := tokenFile(oidctest.Claims{Audience: []string{"tollgate-approvals"}, Expiry: time.Now().Add(-time.Minute),
		Extra: map[string]any{"preferred_username": "alice", "groups": []string{"dba"}}})
	server := "https://" + s.Addr().String()

	r, held := f.hold(1001, "billing", "", "group:dba")
	if out, code := tollctl(t, nil, "--server", server, "--ca-file", ca, "--token-file", expired, "approvals", "approve", r.ID); code != 1 ||
		!strings.Contains(out, "unauthorized") || !strings.Contains(out, "expired") {
		t.Errorf("expired token: %d\n%s", code, out)
	}
	if out, code := tollctl(t, nil, "--server", server, "--ca-file", ca, "approvals", "ls"); code != 2 || !strings.Contains(out, "TOLLGATE_TOKEN") {
		t.Errorf("no token: %d\n%s", code, out)
	}
	if out, code := tollctl(t, nil, "--server", server, "--ca-file", ca, "--token-file", alice, "status"); code != 2 {
		t.Errorf("status with --server: %d\n%s", code, out)
	}
	if out, code := tollctl(t, nil, "--server", server, "--token-file", alice, "approvals", "ls"); code != 1 || !strings.Contains(out, "certificate") {
		t.Errorf("untrusted certificate: %d\n%s", code, out)
	}
	out, code := tollctl(t, []string{"TOLLGATE_SERVER=" + server}, "--ca-file", ca, "--token-file", alice, "approvals", "ls", "-o", "json")
	if code != 0 || !strings.Contains(out, r.ID) {
		t.Errorf("ls over TCP: %d\n%s", code, out)
	}
	out, code = tollctl(t, nil, "--server", server, "--ca-file", ca, "--token-file", alice, "approvals", "approve", r.ID, "--for", "30m")
	if code != 0 || !strings.Contains(out, "approved by alice: billing-export on orders-db until") {
		t.Errorf("approve over TCP: %d\n%s", code, out)
	}
	if o := outcome(t, held); !o.Approved || o.By != "alice" || o.Grant != approval.ScopeWindow {
		t.Errorf("outcome %+v", o)
	}
}

// serverCert is a self-signed certificate for 127.0.0.1, and its PEM.
func serverCert(t *testing.T) (*tls.Config, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "tollgate control"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
