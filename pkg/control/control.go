// Package control is the agent's control API: JSON over HTTP on a unix
// socket that only root (and an optional group) may open, and its client,
// which tollctl uses. Every request on the socket carries the caller's peer
// credentials. For remote approvers, ListenTCP serves the approvals routes
// (and status) over TLS to callers that present an OIDC ID token.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/policy"
)

// DefaultSocket is where tollctl looks when neither --socket nor
// TOLLGATE_SOCKET says otherwise.
const DefaultSocket = "/run/tollgate/tollctl.sock"

// Status is the agent's answer to `tollctl status`.
type Status struct {
	Version      string         `json:"version"`
	PID          int            `json:"pid"`
	Started      time.Time      `json:"started"`
	Cgroup       string         `json:"cgroup"`
	PinDir       string         `json:"pin_dir"`
	OnAgentDown  string         `json:"on_agent_down"`
	Adopted      bool           `json:"adopted_pinned_links"`
	Listen       []string       `json:"listen"`
	Targets      []TargetStatus `json:"targets"`
	SessionsOpen int            `json:"sessions_open"`
	Kernel       KernelCounters `json:"kernel"`
	ConfigLoaded time.Time      `json:"config_loaded"`
	Policy       PolicyStatus   `json:"policy"`
	Audit        AuditStatus    `json:"audit"`
}

// AuditStatus says how the journal is doing.
type AuditStatus struct {
	Dir        string    `json:"dir"`
	Durability string    `json:"durability"`
	KeyID      string    `json:"key_id"`
	LastSeq    uint64    `json:"last_seq"`
	Durable    uint64    `json:"durable_seq"`
	Error      string    `json:"error,omitempty"`
	Since      time.Time `json:"failing_since,omitzero"`
	Refused    uint64    `json:"refused,omitempty"`
}

// PolicyStatus says which policy is in force and what went wrong last.
type PolicyStatus struct {
	Dir         string    `json:"dir"`
	Version     string    `json:"version"` // empty: no policy, everything denied
	Loaded      time.Time `json:"loaded,omitzero"`
	Files       []string  `json:"files"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// TargetStatus describes one configured target.
type TargetStatus struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
	Upstream string `json:"upstream"`
}

// KernelCounters are the eBPF programs' event counters.
type KernelCounters struct {
	Redirected    uint64 `json:"redirected"`
	Exempt        uint64 `json:"exempt"`
	DeniedUDP     uint64 `json:"denied_udp"`
	Established   uint64 `json:"established"`
	NotConfigured uint64 `json:"not_configured"`
	// Sends between governed clients and the agent handed socket to
	// socket (proxy.shortcut), and those that took TCP instead.
	ShortcutSends    uint64 `json:"shortcut_sends"`
	ShortcutTCPSends uint64 `json:"shortcut_tcp_sends"`
}

// Backend is what the server asks the agent. A Backend that also
// implements ApprovalBackend serves the approvals routes.
type Backend interface {
	Status() Status
	Sessions() []l7.SessionInfo
	Session(id string) (l7.SessionInfo, bool)
	Identities() []identity.InventoryEntry
	// EvalPolicy returns the decision the running policy makes on in.
	EvalPolicy(ctx context.Context, in policy.Input) policy.Decision
	// AuditPublicKey is the PEM public key that verifies the journal.
	AuditPublicKey() []byte
	// KillSession ends a live session on behalf of peer.
	KillSession(ctx context.Context, id string, peer Peer, reason string) error
	// SessionRecords hands fn the journal records of a session; with
	// follow, also those written later, until the session ends.
	SessionRecords(ctx context.Context, id string, follow bool, fn func(audit.Record) error) error
}

// Peer is the process on the other end of a control connection.
type Peer struct {
	PID int32  `json:"pid"`
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type peerKey struct{}

// PeerFrom returns the caller's credentials inside a handler.
func PeerFrom(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	return p, ok
}

// Server serves the control API.
type Server struct {
	b    Backend
	srv  *http.Server
	ln   net.Listener
	path string
}

// Listen creates the socket at path, readable and writable by root only
// (and by gid when gid >= 0), replacing a stale one.
func Listen(path string, gid int, b Backend) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control: %s is in use by another agent", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control: chown socket: %w", err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: chmod socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Status()) })
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Sessions()) })
	mux.HandleFunc("POST /v1/policy/eval", func(w http.ResponseWriter, r *http.Request) {
		var in policy.Input
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			writeError(w, http.StatusBadRequest, "policy input: "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, b.EvalPolicy(r.Context(), in))
	})
	mux.HandleFunc("POST /v1/sessions/{id}/kill", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req)
		peer, _ := PeerFrom(r.Context())
		if err := b.KillSession(r.Context(), r.PathValue("id"), peer, req.Reason); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrNotFound) {
				code = http.StatusNotFound
			}
			writeError(w, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"killed": r.PathValue("id")})
	})
	mux.HandleFunc("GET /v1/sessions/{id}/records", func(w http.ResponseWriter, r *http.Request) {
		follow := r.URL.Query().Get("follow") == "1"
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl, _ := w.(http.Flusher)
		enc := json.NewEncoder(w)
		n := 0
		err := b.SessionRecords(r.Context(), r.PathValue("id"), follow, func(rec audit.Record) error {
			n++
			if err := enc.Encode(rec); err != nil {
				return err
			}
			if fl != nil {
				fl.Flush()
			}
			return nil
		})
		if err != nil && n == 0 {
			writeError(w, http.StatusInternalServerError, err.Error())
		}
	})
	mux.HandleFunc("GET /v1/audit/pubkey", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(b.AuditPublicKey())
	})
	mux.HandleFunc("GET /v1/identities", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Identities()) })
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		si, ok := b.Session(r.PathValue("id"))
		if !ok {
			writeError(w, http.StatusNotFound, "no session "+r.PathValue("id"))
			return
		}
		writeJSON(w, http.StatusOK, si)
	})
	handleApprovals(mux, b, func(r *http.Request) (approval.Approver, error) {
		p, ok := PeerFrom(r.Context())
		if !ok {
			return approval.Approver{}, errors.New("no peer credentials on this connection")
		}
		return approval.LocalApprover(p.UID), nil
	})
	s := newServer(b, ln, mux)
	s.path = path
	s.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if p, err := peerOf(c); err == nil {
			ctx = context.WithValue(ctx, peerKey{}, p)
		}
		return ctx
	}
	return s, nil
}

// newServer returns a server of h on ln. Shutdown cancels the requests'
// contexts, which ends the streams (watches, follows) that would otherwise
// keep it waiting.
func newServer(b Backend, ln net.Listener, h http.Handler) *Server {
	base, cancel := context.WithCancel(context.Background())
	s := &Server{b: b, ln: ln}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		// The library never logs: failed TLS handshakes from the network
		// and the like are the caller's to count, not stderr's to print.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	s.srv.RegisterOnShutdown(cancel)
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control: %w", err)
	}
	return nil
}

// Shutdown stops the server and removes the socket, if it has one.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.path != "" {
		os.Remove(s.path)
	}
	return err
}

func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *syscall.Ucred
	var serr error
	raw.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if serr != nil {
		return Peer{}, serr
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// apiError is the body of every error reply. Code, when set, names the
// error for programs (see APIError).
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}
