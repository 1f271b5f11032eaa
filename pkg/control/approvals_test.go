package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/approval/approvaltest"
	"github.com/tollgate-dev/tollgate/test/oidctest"
)

const waitLimit = 10 * time.Second

// brokerBackend is the fake backend with a real approval broker behind
// the approvals routes.
type brokerBackend struct {
	fakeBackend
	b *approval.Broker
}

func (f brokerBackend) Approvals() []approval.Request { return f.b.List() }
func (f brokerBackend) Approval(id string) (approval.Request, bool) {
	return f.b.Get(id)
}

func (f brokerBackend) ApproveRequest(_ context.Context, id string, who approval.Approver, reason, scope string, window time.Duration) error {
	return f.b.Approve(id, who, reason, scope, window)
}

func (f brokerBackend) DenyRequest(_ context.Context, id string, who approval.Approver, reason string) error {
	return f.b.Deny(id, who, reason)
}

func (f brokerBackend) WatchApprovals(ctx context.Context) <-chan approval.Request {
	return f.b.Watch(ctx)
}

var _ ApprovalBackend = brokerBackend{}

// approvals is a broker, a watch on it and a way to hold statements.
type approvals struct {
	t      *testing.T
	b      *approval.Broker
	events <-chan approval.Request
}

func newApprovals(t *testing.T) *approvals {
	b := approval.New(approval.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		b.Close()
	})
	return &approvals{t: t, b: b, events: b.Watch(ctx)}
}

func (a *approvals) backend() brokerBackend { return brokerBackend{b: a.b} }

// hold holds a statement sent by uid and returns its request once pending.
func (a *approvals) hold(uid uint32, user string, approvers ...string) (approval.Request, <-chan approval.Outcome) {
	a.t.Helper()
	return approvaltest.Hold(a.t, a.b, a.events, approval.Ask{SessionID: "s_1", Identity: "billing", UID: uid, User: user,
		PID: 42, Target: "orders-db", SQL: "DELETE FROM invoices", Approvers: approvers})
}

var outcome = approvaltest.Outcome

func TestApprovalsOnSocket(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the peer's uid 0 is the approver")
	}
	a := newApprovals(t)
	_, path := serve(t, a.backend())
	c := NewClient(path)
	ctx := context.Background()

	// root approves a statement of uid 65534 (nobody).
	r, out := a.hold(65534, "", "user:root")
	l, err := c.Approvals(ctx)
	if err != nil || len(l) != 1 || l[0].ID != r.ID || l[0].State != approval.StatePending || l[0].SQL != "DELETE FROM invoices" || l[0].UID != 65534 {
		t.Fatalf("Approvals = %+v, %v", l, err)
	}
	if got, err := c.Approval(ctx, r.ID); err != nil || got.ID != r.ID {
		t.Errorf("Approval = %+v, %v", got, err)
	}
	got, err := c.Approve(ctx, r.ID, "looks fine", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != approval.StateApproved || got.DecidedBy != "root" || got.DecidedVia != "unix" || got.DecisionReason != "looks fine" {
		t.Errorf("approved request %+v", got)
	}
	if o := outcome(t, out); !o.Approved || o.By != "root" {
		t.Errorf("outcome %+v", o)
	}
	_, err = c.Approve(ctx, r.ID, "", "", 0)
	var ae *APIError
	if !errors.Is(err, approval.ErrNotPending) || !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "approved by root") {
		t.Errorf("approving twice: %v; want 409 not pending, naming who decided", err)
	}

	// root may not decide on root's own statement.
	r, out = a.hold(0, "")
	_, err = c.Approve(ctx, r.ID, "", "", 0)
	if !errors.Is(err, approval.ErrSelfApproval) || !errors.Is(err, ErrForbidden) || !errors.As(err, &ae) || ae.Status != 403 {
		t.Errorf("self-approval: %v; want 403 self_approval", err)
	}
	if !strings.Contains(err.Error(), "uid 0") {
		t.Errorf("self-approval message %q does not say why", err)
	}
	if _, err := c.Deny(ctx, r.ID, "mine"); !errors.Is(err, approval.ErrSelfApproval) {
		t.Errorf("self-denial: %v", err)
	}
	a.b.Deny(r.ID, approval.Approver{Name: "alice"}, "cleanup")
	outcome(t, out)

	// root is not a dba.
	r, out = a.hold(65534, "", "group:dba")
	if _, err := c.Approve(ctx, r.ID, "", "", 0); !errors.Is(err, approval.ErrNotAllowed) || !errors.As(err, &ae) || ae.Status != 403 ||
		!strings.Contains(err.Error(), "group:dba") {
		t.Errorf("not an approver: %v; want 403 not_allowed naming the approvers", err)
	}
	// Deny needs a reason; then denies.
	a.b.Close()
	outcome(t, out)
}

func TestDenyAndErrorsOnSocket(t *testing.T) {
	a := newApprovals(t)
	_, path := serve(t, a.backend())
	c := NewClient(path)
	ctx := context.Background()
	uid := uint32(65534)
	if os.Getuid() == 65534 {
		uid = 65533
	}
	r, out := a.hold(uid, "")
	if _, err := c.Deny(ctx, r.ID, ""); !errors.Is(err, approval.ErrReasonRequired) || !errors.Is(err, ErrBadRequest) {
		t.Errorf("deny without a reason: %v; want 400 reason_required", err)
	}
	if _, err := c.Approve(ctx, r.ID, "", "session", time.Hour); !errors.Is(err, approval.ErrBadScope) || !errors.Is(err, ErrBadRequest) {
		t.Errorf("session scope with a window: %v; want 400 bad_scope", err)
	}
	if err := c.do(ctx, "POST", "/v1/approvals/"+r.ID+"/approve", []byte(`{"for": "soon"}`), &struct{}{}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("for: soon: %v; want 400", err)
	}
	if err := c.do(ctx, "POST", "/v1/approvals/"+r.ID+"/approve", []byte(`{"scpoe": "session"}`), &struct{}{}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("unknown body key: %v; want 400", err)
	}
	got, err := c.Deny(ctx, r.ID, "not now")
	if err != nil || got.State != approval.StateDenied || got.DecisionReason != "not now" {
		t.Errorf("Deny = %+v, %v", got, err)
	}
	if o := outcome(t, out); o.Approved || o.Reason != "not now" {
		t.Errorf("outcome %+v", o)
	}
	for _, call := range []func() error{
		func() error { _, err := c.Approval(ctx, "ap-00000000"); return err },
		func() error { _, err := c.Approve(ctx, "ap-00000000", "", "", 0); return err },
		func() error { _, err := c.Deny(ctx, "ap-00000000", "x"); return err },
	} {
		if err := call(); !errors.Is(err, ErrNotFound) || !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("unknown id: %v; want 404", err)
		}
	}
}

func TestWatchOnSocket(t *testing.T) {
	a := newApprovals(t)
	_, path := serve(t, a.backend())
	c := NewClient(path)
	first, out1 := a.hold(65534, "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan approval.Request, 10)
	done := make(chan error, 1)
	go func() {
		done <- c.WatchApprovals(ctx, func(r approval.Request) error { got <- r; return nil })
	}()
	next := func() approval.Request {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(waitLimit):
			t.Fatal("no watch event")
		}
		return approval.Request{}
	}
	if r := next(); r.ID != first.ID || r.State != approval.StatePending {
		t.Errorf("first event %+v; want the pending request", r)
	}
	second, out2 := a.hold(65534, "")
	if r := next(); r.ID != second.ID || r.State != approval.StatePending {
		t.Errorf("event %+v; want the new request", r)
	}
	a.b.Deny(first.ID, approval.Approver{Name: "alice"}, "no")
	if r := next(); r.ID != first.ID || r.State != approval.StateDenied {
		t.Errorf("event %+v; want the denial", r)
	}
	outcome(t, out1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("watch ended with %v; want context.Canceled", err)
	}
	a.b.Close()
	outcome(t, out2)
}

func TestWatchEndsAtShutdown(t *testing.T) {
	a := newApprovals(t)
	path := t.TempDir() + "/w.sock"
	s, err := Listen(path, -1, a.backend())
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	_, out := a.hold(65534, "")
	done := make(chan error, 1)
	started := make(chan struct{}, 1)
	go func() {
		done <- NewClient(path).WatchApprovals(context.Background(), func(approval.Request) error {
			started <- struct{}{}
			return nil
		})
	}()
	<-started // the watch is open
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with an open watch: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamEnded) {
			t.Errorf("watch ended with %v", err)
		}
	case <-time.After(waitLimit):
		t.Error("the watch outlived the server")
	}
	a.b.Close()
	outcome(t, out)
}

func TestNoApprovalsBackend(t *testing.T) {
	_, path := serve(t, fakeBackend{})
	_, err := NewClient(path).Approvals(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 501 || !strings.Contains(err.Error(), "serves no approvals") {
		t.Errorf("Approvals without a broker: %v; want 501", err)
	}
	if _, err := ListenTCP("127.0.0.1:0", serverTLS(t).conf, NewOIDCVerifier(OIDCOptions{Issuer: "https://x", Audience: "a"}), fakeBackend{}); err == nil {
		t.Error("ListenTCP started without approvals")
	}
}

// testTLS is a self-signed server certificate for 127.0.0.1 and a client
// config that trusts it.
type testTLS struct {
	conf, client *tls.Config
}

func serverTLS(t *testing.T) testTLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "tollgate control"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return testTLS{
		conf:   &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		client: &tls.Config{RootCAs: pool},
	}
}

// serveTCP runs the TCP control API with an in-process OIDC issuer.
func serveTCP(t *testing.T, b Backend) (base string, is *oidctest.Issuer, tt testTLS) {
	t.Helper()
	is = oidctest.Start(t)
	tt = serverTLS(t)
	s, err := ListenTCP("127.0.0.1:0", tt.conf, NewOIDCVerifier(OIDCOptions{Issuer: is.URL, Audience: "tollgate-approvals"}), b)
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, s)
	return "https://" + s.Addr().String(), is, tt
}

func TestApprovalsOverTCP(t *testing.T) {
	a := newApprovals(t)
	base, is, tt := serveTCP(t, a.backend())
	ctx := context.Background()
	token := func(c oidctest.Claims) string {
		if c.Audience == nil {
			c.Audience = []string{"tollgate-approvals"}
		}
		return is.Token(t, c)
	}
	alice := token(oidctest.Claims{Subject: "u-1", Extra: map[string]any{"preferred_username": "alice", "groups": []string{"dba", "staff"}}})
	bob := token(oidctest.Claims{Subject: "u-2", Extra: map[string]any{"email": "bob@example.com", "groups": []string{"dev"}}})

	// The right group approves.
	r, out := a.hold(1001, "billing", "group:dba")
	c := NewRemoteClient(base, alice, tt.client)
	if l, err := c.Approvals(ctx); err != nil || len(l) != 1 || l[0].ID != r.ID {
		t.Fatalf("Approvals over TCP = %+v, %v", l, err)
	}
	if st, err := c.Status(ctx); err != nil || st.Version != "test" {
		t.Errorf("Status over TCP = %+v, %v", st, err)
	}
	// A wrong group is refused.
	if _, err := NewRemoteClient(base, bob, tt.client).Approve(ctx, r.ID, "", "", 0); !errors.Is(err, approval.ErrNotAllowed) ||
		!strings.Contains(err.Error(), "bob@example.com") {
		t.Errorf("bob (group dev): %v; want 403 not_allowed", err)
	}
	got, err := c.Approve(ctx, r.ID, "change CHG-7", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.DecidedBy != "alice" || got.DecidedVia != "oidc" || got.State != approval.StateApproved {
		t.Errorf("approved %+v", got)
	}
	if o := outcome(t, out); !o.Approved || o.By != "alice" {
		t.Errorf("outcome %+v", o)
	}

	// An OIDC approver named like the sender's user may not approve.
	r, out = a.hold(1001, "alice", "group:dba")
	if _, err := c.Approve(ctx, r.ID, "", "", 0); !errors.Is(err, approval.ErrSelfApproval) {
		t.Errorf("alice approving alice's statement: %v; want self_approval", err)
	}
	if _, err := NewRemoteClient(base, bob, tt.client).Deny(ctx, r.ID, "no"); !errors.Is(err, approval.ErrNotAllowed) {
		t.Errorf("bob denying: %v; want not_allowed", err)
	}

	// Tokens that are refused.
	for _, tc := range []struct{ name, token, want string }{
		{"missing", "", "missing bearer token"},
		{"wrong audience", token(oidctest.Claims{Audience: []string{"orders-db"}, Extra: map[string]any{"preferred_username": "alice", "groups": []string{"dba"}}}), "audience"},
		{"expired", token(oidctest.Claims{Expiry: time.Now().Add(-time.Minute), Extra: map[string]any{"preferred_username": "alice"}}), "expired"},
		{"foreign key", is.ForeignToken(t, oidctest.Claims{Audience: []string{"tollgate-approvals"}}), "signature"},
		{"garbage", "hunter2", "malformed"},
	} {
		_, err := NewRemoteClient(base, tc.token, tt.client).Approve(ctx, r.ID, "", "", 0)
		var ae *APIError
		if !errors.Is(err, ErrUnauthorized) || !errors.As(err, &ae) || ae.Status != 401 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s token: %v; want 401 mentioning %q", tc.name, err, tc.want)
		}
		if tc.token != "" && err != nil && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s token: the error quotes the token", tc.name)
		}
	}
	if got, _ := a.b.Get(r.ID); got.State != approval.StatePending {
		t.Errorf("after refused tokens: %+v; want still pending", got)
	}

	// Only approvals and status are served.
	if _, err := c.Sessions(ctx); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "not served on the TCP control API") {
		t.Errorf("Sessions over TCP: %v; want 404 saying so", err)
	}
	// The server's certificate must be trusted; the scheme must be https.
	if _, err := NewRemoteClient(base, alice, nil).Approvals(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server certificate: %v", err)
	}
	if _, err := NewRemoteClient(strings.Replace(base, "https", "http", 1), alice, nil).Approvals(ctx); !errors.Is(err, ErrBadRequest) {
		t.Errorf("plain http: %v; want refused before sending the token", err)
	}
	a.b.Close()
	outcome(t, out)
}

func TestWatchOverTCP(t *testing.T) {
	a := newApprovals(t)
	base, is, tt := serveTCP(t, a.backend())
	tok := is.Token(t, oidctest.Claims{Audience: []string{"tollgate-approvals"}, Extra: map[string]any{"preferred_username": "alice"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan approval.Request, 1)
	go NewRemoteClient(base, tok, tt.client).WatchApprovals(ctx, func(r approval.Request) error { got <- r; return nil })
	r, out := a.hold(1001, "")
	select {
	case ev := <-got:
		if ev.ID != r.ID {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(waitLimit):
		t.Error("no event over TCP")
	}
	a.b.Close()
	outcome(t, out)
}

func TestListenTCPNeedsTLS(t *testing.T) {
	a := newApprovals(t)
	v := NewOIDCVerifier(OIDCOptions{Issuer: "https://issuer.example", Audience: "a"})
	if _, err := ListenTCP("127.0.0.1:0", nil, v, a.backend()); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("no TLS: %v", err)
	}
	if _, err := ListenTCP("127.0.0.1:0", &tls.Config{}, v, a.backend()); err == nil {
		t.Error("TLS without a certificate accepted")
	}
	if _, err := ListenTCP("127.0.0.1:0", serverTLS(t).conf, nil, a.backend()); err == nil {
		t.Error("no verifier accepted")
	}
}
