package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/test/oidctest"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

func init() {
	// TestMain (agent_test.go) runs the helpers after every init.
	testenv.RegisterHelper("pgxapprovaltx", pgxApprovalTx)
}

// approverAudience is the OIDC client id the agent's TCP control API
// accepts ID tokens for.
const approverAudience = "tollgate-approvers"

// updateSQL is the statement the approval policy holds.
const updateSQL = "UPDATE accounts SET balance = balance + 1 WHERE id = 1"

// approvalPolicy holds every UPDATE for an approver of group dba and allows
// everything else.
func approvalPolicy(scope, timeout string) string {
	return fmt.Sprintf(`package tollgate

import rego.v1

default decision := {"allow": true}

decision := {
	"allow": true,
	"reason": "UPDATE changes data",
	"approval": {"required": true, "approvers": ["group:dba"], "scope": %q, "timeout": %q},
} if {
	input.request.kind == "statement"
	"UPDATE" in input.request.commands
}
`, scope, timeout)
}

// approvalFixture is a pgFixture whose agent holds statements for approval
// and serves approvals on TCP+TLS to OIDC approvers of an in-process issuer.
type approvalFixture struct {
	*pgFixture
	is     *oidctest.Issuer
	server string // https://127.0.0.1:port
	caFile string
	hook   *webhookSink // nil unless asked for
}

// newApprovalPG starts PostgreSQL with an accounts table (id 1, balance
// 100) behind an agent running rego, with approvals.listen/tls/oidc set and,
// with withHook, approvals.webhook pointing at a sink in the test.
func newApprovalPG(t *testing.T, rego string, withHook bool) *approvalFixture {
	t.Helper()
	is := oidctest.Start(t)
	f := newPG(t)
	f.pg.Exec(t, "CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 100); GRANT ALL ON accounts TO "+f.pg.App.Name)
	f.stop(syscall.SIGTERM)

	af := &approvalFixture{pgFixture: f, is: is}
	certFile, keyFile := writeServerCert(t, f.dir)
	af.caFile = certFile
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	af.server = "https://" + listen
	f.extra += fmt.Sprintf(`approvals:
  listen: %s
  tls: {cert_file: %s, key_file: %s}
  oidc: {issuer: %q, audience: %s}
`, listen, certFile, keyFile, is.URL, approverAudience)
	if withHook {
		af.hook = startWebhookSink(t)
		f.extra += fmt.Sprintf("  webhook: {url: %q, backoff: 100ms}\n", af.hook.srv.URL)
	}
	f.writeConfig()
	f.writePolicy(rego)
	f.start()
	return af
}

// writeServerCert writes a self-signed ECDSA certificate for 127.0.0.1
// (its own CA) and its key into dir.
func writeServerCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "tollgate e2e control API"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "control.crt"), filepath.Join(dir, "control.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// token is an ID token for the agent's approvers audience naming user, in
// groups, that expires at exp (zero: in an hour).
func (af *approvalFixture) token(user string, groups []string, exp time.Time) string {
	af.t.Helper()
	return af.is.Token(af.t, oidctest.Claims{
		Audience: []string{approverAudience},
		Subject:  "sub-" + user,
		Expiry:   exp,
		Extra:    map[string]any{"preferred_username": user, "groups": groups},
	})
}

// alice is an approver of group dba.
func (af *approvalFixture) alice() string {
	return af.token("alice", []string{"dba", "staff"}, time.Time{})
}

// remote runs tollctl against the agent's TCP control API with token; it
// returns stdout and stderr, and the exit code.
func (af *approvalFixture) remote(token string, args ...string) (string, int) {
	af.t.Helper()
	tf, err := os.CreateTemp(af.t.TempDir(), "token")
	if err != nil {
		af.t.Fatal(err)
	}
	io.WriteString(tf, token+"\n")
	tf.Close()
	cmd := exec.Command(filepath.Join(binDir, "tollctl"),
		append([]string{"--server", af.server, "--ca-file", af.caFile, "--token-file", tf.Name()}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		af.t.Fatal(err)
	}
	return string(out), 0
}

// approvals lists requests on the control socket.
func (a *agent) approvals() []approval.Request {
	a.t.Helper()
	out, code := a.tollctl("approvals", "ls", "-o", "json")
	var l []approval.Request
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
		a.t.Fatalf("approvals ls -o json: exit %d: %s", code, out)
	}
	return l
}

// waitPending waits until a pending request other than those in seen is
// listed, and returns it.
func (a *agent) waitPending(seen ...string) approval.Request {
	a.t.Helper()
	var got approval.Request
	waitFor(a.t, "a pending approval request", func() bool {
		for _, r := range a.approvals() {
			if r.State == approval.StatePending && !slices.Contains(seen, r.ID) {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// bgCmd is a client started in the background.
type bgCmd struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
	err  error
	exit bool
}

// startInCgroup starts name with args inside the governed cgroup c.
func startInCgroup(t *testing.T, c testenv.Cgroup, name string, args ...string) *bgCmd {
	t.Helper()
	b := &bgCmd{t: t, cmd: exec.Command(name, args...), out: &syncBuffer{}, done: make(chan error, 1)}
	b.cmd.Env = append(os.Environ(), "PGPASSWORD=", "PGCONNECT_TIMEOUT=10")
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	testenv.InCgroup(t, b.cmd, c)
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() {
		if !b.exit {
			b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// psqlArgs runs each of sqls as its own Query in one psql session.
func (f *pgFixture) psqlArgs(sqls ...string) []string {
	args := []string{"-X", "-At", "-v", "VERBOSITY=verbose", f.conninfo("")}
	for _, s := range sqls {
		args = append(args, "-c", s)
	}
	return args
}

// running reports whether the command has not exited yet.
func (b *bgCmd) running() bool {
	if b.exit {
		return false
	}
	select {
	case b.err = <-b.done:
		b.exit = true
		return false
	default:
		return true
	}
}

// wait waits up to d for the command to exit and returns its output and
// error; it fails the test if the command is still running then.
func (b *bgCmd) wait(d time.Duration) (string, error) {
	b.t.Helper()
	if !b.exit {
		select {
		case b.err = <-b.done:
			b.exit = true
		case <-time.After(d):
			b.t.Fatalf("%s still running after %v; output so far:\n%s", b.cmd, d, b.out.String())
		}
	}
	return b.out.String(), b.err
}

// balance reads account 1 on a direct connection (not through the agent).
func (f *pgFixture) balance() string {
	f.t.Helper()
	return string(f.pg.Exec(f.t, "SELECT balance FROM accounts WHERE id = 1")[0].Rows[0][0])
}

// updatesOnServer counts the server backends that run or last ran an
// UPDATE of accounts.
func (f *pgFixture) updatesOnServer() string {
	f.t.Helper()
	r := f.pg.Exec(f.t, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'UPDATE accounts%'")
	return string(r[0].Rows[0][0])
}

// journal reads every record of the agent's audit journal.
func (a *agent) journal() []audit.Record {
	a.t.Helper()
	rd, err := audit.NewReader(filepath.Join(a.dir, "state", "audit"), audit.Filter{})
	if err != nil {
		a.t.Fatal(err)
	}
	defer rd.Close()
	var recs []audit.Record
	for r, err := range rd.All() {
		if err != nil {
			a.t.Fatalf("read journal: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

// journalWith polls the running agent's journal (batch durability: an
// appended record reaches the disk within a flush interval) until ok holds.
func (a *agent) journalWith(what string, ok func([]audit.Record) bool) []audit.Record {
	a.t.Helper()
	var recs []audit.Record
	waitFor(a.t, what+" in the journal", func() bool {
		recs = a.journal()
		return ok(recs)
	})
	return recs
}

func recordData(t *testing.T, r audit.Record) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatalf("record %d data %s: %v", r.Seq, r.Data, err)
	}
	return d
}

// approvalRecords returns the journal's approval records of request id
// (and, with id "", the standing grants of session), in order.
func approvalRecords(t *testing.T, recs []audit.Record, id, session string) []audit.Record {
	t.Helper()
	var out []audit.Record
	for _, r := range recs {
		if !strings.HasPrefix(r.Type, "approval_") {
			continue
		}
		d := recordData(t, r)
		if id != "" && d["request"] == id || id == "" && d["session"] == session && d["standing"] == true {
			out = append(out, r)
		}
	}
	return out
}

func types(recs []audit.Record) []string {
	var ts []string
	for _, r := range recs {
		ts = append(ts, r.Type)
	}
	return ts
}

// webhookSink is an approval webhook endpoint that fails its first
// delivery with a 500 and accepts the others.
type webhookSink struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []webhookCall
}

type webhookCall struct {
	status      int
	contentType string
	body        []byte
}

func startWebhookSink(t *testing.T) *webhookSink {
	s := &webhookSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		status := http.StatusOK
		if len(s.calls) == 0 {
			status = http.StatusInternalServerError
		}
		s.calls = append(s.calls, webhookCall{status: status, contentType: r.Header.Get("Content-Type"), body: body})
		s.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *webhookSink) received() []webhookCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Held UPDATE, self-approval refused, OIDC approvers over TCP+TLS (wrong
// group, expired, own user name refused; a dba approves), watch, webhook,
// journal and replay.
func TestApprovalHeldUntilOIDCApproverApproves(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "1m"), true)

	// A watcher, started before anything is held.
	wctx, wcancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer wcancel()
	watch := exec.CommandContext(wctx, filepath.Join(binDir, "tollctl"), "--socket", f.socket, "approvals", "watch", "-o", "json")
	wout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var werr syncBuffer
	watch.Stderr = &werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	watchExited := false
	t.Cleanup(func() {
		if !watchExited {
			watch.Process.Kill()
			watch.Wait()
		}
	})
	watched := make(chan approval.Request, 100)
	go func() {
		defer close(watched)
		sc := bufio.NewScanner(wout)
		for sc.Scan() {
			var r approval.Request
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("approvals watch -o json printed %q: %v", sc.Text(), err)
				continue
			}
			watched <- r
		}
	}()

	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req := f.waitPending()

	// What is listed.
	if !strings.HasPrefix(req.ID, "ap-") || req.Identity != "reporting" || req.Target != "orders-db" || req.SQL != updateSQL ||
		req.UID != uint32(os.Getuid()) || req.Session == "" || req.Scope != "statement" ||
		!slices.Equal(req.Approvers, []string{"group:dba"}) || req.Reason != "UPDATE changes data" {
		t.Errorf("listed request = %+v", req)
	}
	if d := req.Expires.Sub(req.Created); d != time.Minute {
		t.Errorf("request expires %v after it was made; want the policy's 1m", d)
	}

	// Held: nothing reached the server.
	if !psql.running() {
		out, err := psql.wait(0)
		t.Fatalf("psql ended while its UPDATE was held: %v\n%s", err, out)
	}
	if b := f.balance(); b != "100" {
		t.Errorf("balance while held = %s; want 100", b)
	}
	if n := f.updatesOnServer(); n != "0" {
		t.Errorf("%s server backends saw the held UPDATE; want 0", n)
	}

	// The client's own uid may not decide on the socket.
	out, code := f.tollctl("approvals", "approve", req.ID, "--reason", "mine")
	if code != 1 || !strings.Contains(out, "may not decide on their own statement") {
		t.Errorf("self-approval on the socket: exit %d: %s; want exit 1 refusing self-approval", code, out)
	}
	out, code = f.tollctl("approvals", "deny", req.ID, "--reason", "mine")
	if code != 1 || !strings.Contains(out, "may not decide on their own statement") {
		t.Errorf("self-denial on the socket: exit %d: %s; want exit 1 refusing self-approval", code, out)
	}

	// Remote approvers who may not approve.
	user := req.User
	if user == "" {
		user = "root"
	}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"wrong group", f.token("mallory", []string{"devs"}, time.Time{}), "not an approver"},
		{"no groups", f.token("mallory", nil, time.Time{}), "not an approver"},
		{"expired token", f.token("alice", []string{"dba"}, time.Now().Add(-time.Minute)), "expired"},
		{"token for another audience", f.is.Token(t, oidctest.Claims{Audience: []string{"someone-else"},
			Extra: map[string]any{"preferred_username": "alice", "groups": []string{"dba"}}}), "audience"},
		{"token signed by a key the issuer never published", f.is.ForeignToken(t, oidctest.Claims{Audience: []string{approverAudience},
			Extra: map[string]any{"preferred_username": "alice", "groups": []string{"dba"}}}), "token refused"},
		{"the client's own user name", f.token(user, []string{"dba"}, time.Time{}), "may not decide on their own statement"},
	} {
		out, code := f.remote(tc.token, "approvals", "approve", req.ID, "--reason", "try")
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d: %s; want exit 1 mentioning %q", tc.name, code, out, tc.want)
		}
	}
	if b := f.balance(); b != "100" || !psql.running() {
		t.Fatalf("after refused approvals: balance %s, psql running %v; want 100 and still held", b, psql.running())
	}

	// A remote approver lists it, then approves it.
	out, code = f.remote(f.alice(), "approvals", "ls", "-o", "json")
	var remoteList []approval.Request
	if code != 0 || json.Unmarshal([]byte(out), &remoteList) != nil || len(remoteList) != 1 || remoteList[0].ID != req.ID {
		t.Errorf("remote approvals ls: exit %d: %s", code, out)
	}
	out, code = f.remote(f.alice(), "approvals", "approve", req.ID, "--reason", "ticket OPS-42")
	if code != 0 || !strings.Contains(out, req.ID+" approved by alice") {
		t.Fatalf("alice approves: exit %d: %s", code, out)
	}
	pout, perr := psql.wait(15 * time.Second)
	if perr != nil || !strings.Contains(pout, "UPDATE 1") {
		t.Errorf("psql after the approval: %v\n%s; want UPDATE 1", perr, pout)
	}
	if b := f.balance(); b != "101" {
		t.Errorf("balance after the approval = %s; want 101", b)
	}
	if out, code := f.remote(f.alice(), "approvals", "approve", req.ID); code != 1 || !strings.Contains(out, "no longer pending") {
		t.Errorf("approving again: exit %d: %s; want exit 1, no longer pending", code, out)
	}
	l := f.approvals()
	if len(l) != 1 {
		t.Fatalf("approvals after the decision = %+v; want the one request", l)
	}
	if r := l[0]; r.State != approval.StateApproved || r.DecidedBy != "alice" || r.DecidedVia != approval.ViaOIDC ||
		r.DecisionReason != "ticket OPS-42" || r.Grant != "statement" {
		t.Errorf("decided request = %+v", r)
	}

	// The watcher printed the request, then its approval.
	var sawPending, sawApproved bool
	timeout := time.After(10 * time.Second)
	for !sawPending || !sawApproved {
		select {
		case r, ok := <-watched:
			if !ok {
				t.Fatalf("approvals watch ended early: %s", werr.String())
			}
			if r.ID == req.ID && r.State == approval.StatePending && r.SQL == updateSQL {
				sawPending = true
			}
			if r.ID == req.ID && r.State == approval.StateApproved && r.DecidedBy == "alice" {
				sawApproved = true
			}
		case <-timeout:
			t.Fatalf("approvals watch -o json: pending shown %v, approval shown %v", sawPending, sawApproved)
		}
	}
	watch.Process.Signal(os.Interrupt)
	if err := watch.Wait(); err != nil {
		t.Errorf("approvals watch after Ctrl-C: %v: %s", err, werr.String())
	}
	watchExited = true

	// The webhook: a 500, then one delivery of the same Slack-style message.
	waitFor(t, "the webhook to be retried after its 500", func() bool { return len(f.hook.received()) >= 2 })
	calls := f.hook.received()
	if calls[0].status != 500 || calls[1].status != 200 || string(calls[0].body) != string(calls[1].body) {
		t.Errorf("webhook calls: %d then %d, same body %v; want the message again after the 500",
			calls[0].status, calls[1].status, string(calls[0].body) == string(calls[1].body))
	}
	var msg struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(calls[1].body, &msg); err != nil {
		t.Fatalf("webhook body %s: %v", calls[1].body, err)
	}
	if mt, _, _ := mime.ParseMediaType(calls[1].contentType); mt != "application/json" {
		t.Errorf("webhook Content-Type %q", calls[1].contentType)
	}
	if !strings.Contains(msg.Text, req.ID) || !strings.Contains(msg.Text, "orders-db") || len(msg.Blocks) == 0 ||
		!strings.Contains(string(calls[1].body), "tollctl approvals approve "+req.ID) {
		t.Errorf("webhook message does not name the request, target and how to approve: %s", calls[1].body)
	}

	// The session's replay shows the approval.
	out, code = f.tollctl("sessions", "replay", req.Session, "--speed", "0")
	t.Logf("sessions replay %s:\n%s", req.Session, out)
	if code != 0 || !strings.Contains(out, "approval "+req.ID+" requested: "+updateSQL) ||
		!strings.Contains(out, "approval "+req.ID+" granted by alice (statement): ticket OPS-42") {
		t.Errorf("sessions replay %s: exit %d\n%s", req.Session, code, out)
	}

	// The journal: requested, then granted by alice over OIDC, before the
	// statement went on.
	recs := f.journalWith("the UPDATE's statement record", func(recs []audit.Record) bool {
		for _, r := range recs {
			if r.Type == "statement" && recordData(t, r)["sql"] == updateSQL {
				return true
			}
		}
		return false
	})
	ap := approvalRecords(t, recs, req.ID, "")
	if got := types(ap); !slices.Equal(got, []string{approval.TypeRequested, approval.TypeGranted}) {
		t.Fatalf("approval records of %s = %v", req.ID, got)
	}
	g := recordData(t, ap[1])
	if g["by"] != "alice" || g["via"] != "oidc" || g["decision_reason"] != "ticket OPS-42" || g["sql"] != updateSQL || g["session"] != req.Session {
		t.Errorf("approval_granted = %v", g)
	}
	var stmtSeq uint64
	for _, r := range recs {
		if d := recordData(t, r); r.Type == "statement" && d["sql"] == updateSQL && d["allow"] == true {
			stmtSeq = r.Seq
		}
	}
	if stmtSeq == 0 || stmtSeq < ap[1].Seq {
		t.Errorf("statement record of the UPDATE at seq %d; want one after approval_granted (seq %d)", stmtSeq, ap[1].Seq)
	}

	// The webhook got nothing more.
	if n := len(f.hook.received()); n != 2 {
		t.Errorf("webhook called %d times; want 2 (one 500, one delivery)", n)
	}
}

// Deny with a reason: psql sees 42501 with it and the approver's name; pgx
// inside a transaction (extended protocol) sees the transaction aborted and
// a usable session after ROLLBACK.
func TestApprovalDenyReachesClient(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "1m"), false)

	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req := f.waitPending()
	if out, code := f.remote(f.alice(), "approvals", "deny", req.ID); code != 2 || !strings.Contains(out, "--reason") {
		t.Errorf("deny without a reason: exit %d: %s; want usage (2) asking for --reason", code, out)
	}
	out, code := f.remote(f.alice(), "approvals", "deny", req.ID, "--reason", "not during the freeze")
	if code != 0 || !strings.Contains(out, req.ID+" denied by alice: not during the freeze") {
		t.Fatalf("alice denies: exit %d: %s", code, out)
	}
	pout, perr := psql.wait(15 * time.Second)
	t.Logf("psql after the denial: %s", pout)
	if perr == nil || !strings.Contains(pout, "42501") || !strings.Contains(pout, "approval denied by alice: not during the freeze") {
		t.Errorf("psql after the denial: %v\n%s; want 42501 with the approver and the reason", perr, pout)
	}
	if b := f.balance(); b != "100" {
		t.Errorf("balance after a denial = %s; want 100", b)
	}

	// pgx, extended protocol, inside a transaction.
	cmd := testenv.Helper("pgxapprovaltx", fmt.Sprintf("postgres://legacy_script@%s/%s?sslmode=disable", f.target, f.pg.Database))
	testenv.InCgroup(t, cmd, f.cg)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	req2 := f.waitPending(req.ID)
	if req2.SQL != "UPDATE accounts SET balance = $1 WHERE id = $2" {
		t.Errorf("held pgx statement = %q", req2.SQL)
	}
	if out, code := f.remote(f.alice(), "approvals", "deny", req2.ID, "--reason", "use the change process"); code != 0 {
		t.Fatalf("alice denies the pgx statement: exit %d: %s", code, out)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pgx helper: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pgx helper still running after the denial: %s", stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout.String()), &got); err != nil {
		t.Fatalf("pgx helper output %q: %v", stdout.String(), err)
	}
	t.Logf("pgx helper: %v", got)
	if got["code"] != "42501" || !strings.Contains(fmt.Sprint(got["message"]), "approval denied by alice: use the change process") {
		t.Errorf("pgx held UPDATE: %v; want 42501 with the approver and the reason", got)
	}
	if got["in_failed_tx_code"] != "25P02" || got["tx_status_after_error"] != "E" {
		t.Errorf("pgx: the transaction after the denial: %v; want it aborted (25P02, status E)", got)
	}
	if got["tx_status_after_rollback"] != "I" || got["after"] != float64(7) || got["error"] != nil {
		t.Errorf("pgx after ROLLBACK: %v; want an idle, usable session", got)
	}
	if b := f.balance(); b != "100" {
		t.Errorf("balance after both denials = %s; want 100", b)
	}
	f.journalWith("both denials", func(recs []audit.Record) bool {
		for _, id := range []string{req.ID, req2.ID} {
			if !slices.Equal(types(approvalRecords(t, recs, id, "")), []string{approval.TypeRequested, approval.TypeDenied}) {
				return false
			}
		}
		return true
	})
}

// pgxApprovalTx runs in the governed cgroup: BEGIN, a held UPDATE with
// parameters (extended protocol), then what the transaction and session
// look like after the UPDATE's error.
func pgxApprovalTx(args []string) any {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, args[0])
	if err != nil {
		return map[string]any{"error": "connect: " + err.Error()}
	}
	defer conn.Close(ctx)
	out := map[string]any{}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return map[string]any{"error": "begin: " + err.Error()}
	}
	_, err = conn.Exec(ctx, "UPDATE accounts SET balance = $1 WHERE id = $2", 0, 1)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return map[string]any{"error": fmt.Sprintf("held UPDATE: %v; want a PgError", err)}
	}
	out["code"], out["message"] = pe.Code, pe.Message
	out["tx_status_after_error"] = string(conn.PgConn().TxStatus())
	var one int
	err = conn.QueryRow(ctx, "SELECT $1::int", 1).Scan(&one)
	if errors.As(err, &pe) {
		out["in_failed_tx_code"] = pe.Code
	} else {
		out["in_failed_tx_code"] = fmt.Sprint(err)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		return map[string]any{"error": "rollback: " + err.Error(), "before": out}
	}
	out["tx_status_after_rollback"] = string(conn.PgConn().TxStatus())
	var seven int
	if err := conn.QueryRow(ctx, "SELECT $1::int", 7).Scan(&seven); err != nil {
		out["error"] = "after rollback: " + err.Error()
	}
	out["after"] = seven
	return out
}

// Nobody decides: the policy's 1s timeout refuses the statement.
func TestApprovalTimesOut(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "1s"), false)
	start := time.Now()
	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	out, err := psql.wait(20 * time.Second)
	took := time.Since(start)
	t.Logf("psql after %v: %s", took, out)
	if err == nil || !strings.Contains(out, "42501") || !strings.Contains(out, "approval timed out after 1s") {
		t.Errorf("psql: %v\n%s; want 42501 approval timed out after 1s", err, out)
	}
	if took < time.Second {
		t.Errorf("refused after %v; want the 1s timeout first", took)
	}
	if b := f.balance(); b != "100" {
		t.Errorf("balance = %s; want 100", b)
	}
	l := f.approvals()
	if len(l) != 1 || l[0].State != approval.StateExpired || l[0].DecisionReason != "approval timed out after 1s" {
		t.Fatalf("approvals = %+v; want one expired request", l)
	}
	f.journalWith("approval_requested, approval_expired", func(recs []audit.Record) bool {
		return slices.Equal(types(approvalRecords(t, recs, l[0].ID, "")), []string{approval.TypeRequested, approval.TypeExpired})
	})
	if out, code := f.remote(f.alice(), "approvals", "approve", l[0].ID); code != 1 || !strings.Contains(out, "no longer pending") {
		t.Errorf("approving an expired request: exit %d: %s", code, out)
	}
}

// Scope session: the approval also covers the later statements of the same
// session, and no other session.
func TestApprovalSessionScope(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("session", "30s"), false)
	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL, "SELECT 'between'", updateSQL)...)
	req := f.waitPending()
	if req.Scope != "session" {
		t.Errorf("scope asked = %q; want session", req.Scope)
	}
	if out, code := f.remote(f.alice(), "approvals", "approve", req.ID, "--reason", "batch fix"); code != 0 {
		t.Fatalf("approve: exit %d: %s", code, out)
	}
	// A second request would hold psql until the 30s timeout.
	out, err := psql.wait(20 * time.Second)
	if err != nil || strings.Count(out, "UPDATE 1") != 2 {
		t.Errorf("psql: %v\n%s; want both UPDATEs through", err, out)
	}
	if b := f.balance(); b != "102" {
		t.Errorf("balance = %s; want 102", b)
	}
	l := f.approvals()
	if len(l) != 1 || l[0].Grant != "session" {
		t.Errorf("approvals = %+v; want the one request, granted for the session", l)
	}
	recs := f.journalWith("the standing grant", func(recs []audit.Record) bool {
		return len(approvalRecords(t, recs, "", req.Session)) > 0
	})
	standing := approvalRecords(t, recs, "", req.Session)
	if len(standing) != 1 || standing[0].Type != approval.TypeGranted {
		t.Fatalf("standing grants in session %s: %v; want one approval_granted", req.Session, types(standing))
	}
	if d := recordData(t, standing[0]); d["grant_of"] != req.ID || d["grant"] != "session" || d["by"] != "alice" {
		t.Errorf("standing grant = %v", d)
	}

	// Another session of the same identity needs its own approval.
	psql2 := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req2 := f.waitPending(req.ID)
	if req2.Session == req.Session {
		t.Errorf("second psql has the same session id %s", req.Session)
	}
	if out, code := f.remote(f.alice(), "approvals", "deny", req2.ID, "--reason", "one batch only"); code != 0 {
		t.Fatalf("deny: exit %d: %s", code, out)
	}
	if out, err := psql2.wait(15 * time.Second); err == nil || !strings.Contains(out, "one batch only") {
		t.Errorf("second session: %v\n%s; want the denial", err, out)
	}
	if b := f.balance(); b != "102" {
		t.Errorf("balance = %s; want 102", b)
	}
}

// approve --for: a window grant covers new sessions of the same identity on
// the same target, and not other identities.
func TestApprovalWindowCoversNewSessions(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "30s"), false)
	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req := f.waitPending()
	if out, code := f.remote(f.alice(), "approvals", "approve", req.ID, "--for", "1m", "--reason", "maintenance window"); code != 0 || !strings.Contains(out, "until") {
		t.Fatalf("approve --for 1m: exit %d: %s", code, out)
	}
	decided := time.Now()
	if out, err := psql.wait(15 * time.Second); err != nil {
		t.Fatalf("first session: %v\n%s", err, out)
	}

	// A new session of the same identity goes through at once.
	psql2 := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	out, err := psql2.wait(20 * time.Second)
	if err != nil || !strings.Contains(out, "UPDATE 1") {
		t.Errorf("new session in the window: %v\n%s", err, out)
	}
	if b := f.balance(); b != "102" {
		t.Errorf("balance = %s; want 102", b)
	}
	l := f.approvals()
	if len(l) != 1 || l[0].Grant != "window" {
		t.Fatalf("approvals = %+v; want the one request with a window grant", l)
	}
	if until := l[0].GrantUntil.Sub(decided); until < 50*time.Second || until > 70*time.Second {
		t.Errorf("window ends %v after the approval; want about 1m", until)
	}
	var standing []audit.Record
	f.journalWith("the standing grant", func(recs []audit.Record) bool {
		standing = nil
		for _, r := range recs {
			if d := recordData(t, r); r.Type == approval.TypeGranted && d["standing"] == true {
				standing = append(standing, r)
			}
		}
		return len(standing) > 0
	})
	if len(standing) != 1 {
		t.Fatalf("standing grants = %d; want 1 (the new session's UPDATE)", len(standing))
	}
	if d := recordData(t, standing[0]); d["grant_of"] != req.ID || d["grant"] != "window" || d["session"] == req.Session || d["identity"] != "reporting" {
		t.Errorf("standing grant = %v", d)
	}

	// Another identity (a workload no identity matches) is not covered.
	stranger := testenv.NewCgroup(t, f.cg)
	psql3 := startInCgroup(t, stranger, "psql", f.psqlArgs(updateSQL)...)
	req3 := f.waitPending(req.ID)
	if req3.Identity == "reporting" {
		t.Errorf("the stranger's request has identity %q", req3.Identity)
	}
	if out, code := f.remote(f.alice(), "approvals", "deny", req3.ID, "--reason", "not you"); code != 0 {
		t.Fatalf("deny: exit %d: %s", code, out)
	}
	if out, err := psql3.wait(15 * time.Second); err == nil || !strings.Contains(out, "not you") {
		t.Errorf("stranger: %v\n%s; want the denial", err, out)
	}
	if b := f.balance(); b != "102" {
		t.Errorf("balance = %s; want 102", b)
	}
}

// SIGTERM with a statement held: the client gets an error, the journal says
// abandoned, nothing ran, and the restarted agent holds and approved
// nothing.
func TestApprovalPendingAbandonedOnRestart(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "1m"), false)
	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req := f.waitPending()

	took := f.stop(syscall.SIGTERM)
	t.Logf("agent stopped in %v with a statement held", took)
	out, err := psql.wait(15 * time.Second)
	t.Logf("psql across the stop: %v: %s", err, out)
	if err == nil {
		t.Errorf("psql succeeded across the agent's stop:\n%s", out)
	}
	if !strings.Contains(out, "42501") || !strings.Contains(out, "approval abandoned") || !strings.Contains(out, "agent shutting down") {
		t.Errorf("psql output %q; want 42501 approval abandoned: agent shutting down", out)
	}
	if b := f.balance(); b != "100" {
		t.Errorf("balance = %s; want 100", b)
	}

	recs := f.journal()
	ap := approvalRecords(t, recs, req.ID, "")
	if got := types(ap); !slices.Equal(got, []string{approval.TypeRequested, approval.TypeAbandoned}) {
		t.Fatalf("approval records of %s = %v; want requested, abandoned", req.ID, got)
	}
	if d := recordData(t, ap[1]); d["decision_reason"] != approval.ReasonShuttingDown || d["by"] != nil {
		t.Errorf("approval_abandoned = %v", d)
	}
	for _, r := range recs {
		if d := recordData(t, r); r.Type == "statement" && d["sql"] == updateSQL && d["allow"] == true {
			t.Errorf("the journal has the held UPDATE allowed: seq %d %v", r.Seq, d)
		}
	}

	f.start()
	if l := f.approvals(); len(l) != 0 {
		t.Errorf("approvals after the restart = %+v; want none", l)
	}
	if out, code := f.remote(f.alice(), "approvals", "approve", req.ID); code != 4 {
		t.Errorf("approving the abandoned request on the new agent: exit %d: %s; want 4 (not found)", code, out)
	}
	if b, n := f.balance(), f.updatesOnServer(); b != "100" || n != "0" {
		t.Errorf("after the restart: balance %s, server backends with the UPDATE %s; want 100 and 0", b, n)
	}
	f.stop(syscall.SIGTERM) // the whole journal on disk
	for _, r := range f.journal() {
		if r.Type == approval.TypeGranted {
			t.Errorf("an approval was granted: %s", r.Data)
		}
	}
}

// A held statement whose client cancels it (Ctrl-C) ends at once: the
// client hears 57014, the request is abandoned, a late approval finds
// nothing to approve and nothing runs.
func TestApprovalHeldClientCancels(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "1m"), false)
	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req := f.waitPending()
	psql.cmd.Process.Signal(syscall.SIGINT)
	out, err := psql.wait(15 * time.Second)
	if err == nil || !strings.Contains(out, "57014") || !strings.Contains(out, "canceling statement due to user request") {
		t.Errorf("psql after Ctrl-C: %v: %s; want 57014", err, out)
	}
	f.checkHoldEndedWithoutClient(req)
}

// A held statement whose client is gone (killed: the kernel closes its
// socket) should end abandoned within moments, not at its timeout, and a
// late approval must not run it for nobody.
func TestApprovalHeldClientGone(t *testing.T) {
	f := newApprovalPG(t, approvalPolicy("statement", "1m"), false)
	psql := startInCgroup(t, f.cg, "psql", f.psqlArgs(updateSQL)...)
	req := f.waitPending()
	psql.cmd.Process.Kill()
	psql.wait(15 * time.Second)
	f.checkHoldEndedWithoutClient(req)
}

// checkHoldEndedWithoutClient checks that req, whose client canceled it or
// went away, ends abandoned within 5s, that a late approval is refused and
// that the UPDATE never reached the server.
func (af *approvalFixture) checkHoldEndedWithoutClient(req approval.Request) {
	t := af.t
	t.Helper()
	var got approval.Request
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, r := range af.approvals() {
			if r.ID == req.ID {
				got = r
			}
		}
		if got.State != approval.StatePending {
			break
		}
	}
	if got.State != approval.StateAbandoned {
		t.Errorf("request 5s after its client left: state %q; want abandoned (the session has no client any more)", got.State)
	}
	if out, code := af.remote(af.alice(), "approvals", "approve", req.ID); code != 1 || !strings.Contains(out, "no longer pending") {
		t.Errorf("a late approval: exit %d: %s; want exit 1, no longer pending", code, out)
	}
	if b, n := af.balance(), af.updatesOnServer(); b != "100" || n != "0" {
		t.Errorf("balance %s, server backends with the UPDATE %s; want 100 and 0: the held UPDATE ran", b, n)
	}
}
