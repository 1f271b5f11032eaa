package control

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/policy"
)

type fakeBackend struct{ sessions []l7.SessionInfo }

func (f fakeBackend) Status() Status             { return Status{Version: "test", SessionsOpen: len(f.sessions)} }
func (f fakeBackend) Sessions() []l7.SessionInfo { return f.sessions }
func (f fakeBackend) Session(id string) (l7.SessionInfo, bool) {
	for _, s := range f.sessions {
		if s.ID == id {
			return s, true
		}
	}
	return l7.SessionInfo{}, false
}

func (f fakeBackend) Identities() []identity.InventoryEntry {
	return []identity.InventoryEntry{{Name: "billing", Configured: true}}
}

func (f fakeBackend) EvalPolicy(_ context.Context, in policy.Input) policy.Decision {
	return policy.Decision{Allow: in.Request.Kind == "connect", Reason: "kind " + in.Request.Kind}
}

func (f fakeBackend) AuditPublicKey() []byte { return []byte("-----BEGIN PUBLIC KEY-----\n") }

func (f fakeBackend) KillSession(_ context.Context, id string, _ Peer, _ string) error {
	if id != "s_1" {
		return ErrNotFound
	}
	return nil
}

func (f fakeBackend) SessionRecords(_ context.Context, id string, _ bool, fn func(audit.Record) error) error {
	for i := uint64(1); i <= 3; i++ {
		if err := fn(audit.Record{Seq: i, Type: "statement", Prev: audit.ZeroHash, Data: []byte(`{"session":"` + id + `"}`)}); err != nil {
			return err
		}
	}
	return nil
}

func serve(t *testing.T, b Backend) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "tollctl.sock")
	s, err := Listen(path, -1, b)
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, s)
	return s, path
}

// serveUntilCleanup serves s until the test ends, then shuts it down.
func serveUntilCleanup(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func TestSocketIsRootOnly(t *testing.T) {
	_, path := serve(t, fakeBackend{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode = %v; want 0600", got)
	}
	if _, err := Listen(path, -1, fakeBackend{}); err == nil {
		t.Error("a second server took over a live socket")
	}
}

func TestClientRoundTrip(t *testing.T) {
	b := fakeBackend{sessions: []l7.SessionInfo{{ID: "s_1", Target: "db", State: l7.StateOpen}}}
	_, path := serve(t, b)
	c := NewClient(path)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Version != "test" || st.SessionsOpen != 1 {
		t.Errorf("Status = %+v, %v", st, err)
	}
	ss, err := c.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].ID != "s_1" {
		t.Errorf("Sessions = %+v, %v", ss, err)
	}
	if ids, err := c.Identities(ctx); err != nil || len(ids) != 1 || ids[0].Name != "billing" {
		t.Errorf("Identities = %+v, %v", ids, err)
	}
	d, err := c.EvalPolicy(ctx, []byte(`{"identity": {"name": "x"}, "request": {"kind": "connect"}}`))
	if err != nil || !d.Allow || d.Reason != "kind connect" {
		t.Errorf("EvalPolicy = %+v, %v", d, err)
	}
	if _, err := c.EvalPolicy(ctx, []byte(`{"requets": {}}`)); !errors.Is(err, ErrBadRequest) {
		t.Errorf("EvalPolicy with an unknown key: err = %v; want ErrBadRequest", err)
	}
	if pem, err := c.AuditPublicKey(ctx); err != nil || string(pem) != "-----BEGIN PUBLIC KEY-----\n" {
		t.Errorf("AuditPublicKey = %q, %v", pem, err)
	}
	if err := c.KillSession(ctx, "s_1", "test"); err != nil {
		t.Errorf("KillSession: %v", err)
	}
	if err := c.KillSession(ctx, "nope", "test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("KillSession(nope): %v; want ErrNotFound", err)
	}
	var seqs []uint64
	if err := c.SessionRecords(ctx, "s_1", true, func(r audit.Record) error { seqs = append(seqs, r.Seq); return nil }); err != nil || len(seqs) != 3 {
		t.Errorf("SessionRecords = %v, %v", seqs, err)
	}
	if _, err := c.Session(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Session(nope) err = %v; want ErrNotFound", err)
	}
}

func TestClientAgentDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "absent.sock"))
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrAgentDown) {
		t.Errorf("err = %v; want ErrAgentDown", err)
	}
}

func TestPeerCredentials(t *testing.T) {
	var got Peer
	var ok bool
	path := filepath.Join(t.TempDir(), "peer.sock")
	s, err := Listen(path, -1, fakeBackend{})
	if err != nil {
		t.Fatal(err)
	}
	s.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok = PeerFrom(r.Context())
		writeJSON(w, http.StatusOK, Status{})
	})
	go s.Serve()
	defer s.Shutdown(context.Background())
	if _, err := NewClient(path).Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !ok || got.UID != uint32(os.Getuid()) || got.PID != int32(os.Getpid()) {
		t.Errorf("peer = %+v (found %v); want uid %d pid %d", got, ok, os.Getuid(), os.Getpid())
	}
}

func TestSocketGroupMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.sock")
	s, err := Listen(path, 0, fakeBackend{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket with a group: mode %v, %v; want 0660", fi.Mode().Perm(), err)
	}
}
