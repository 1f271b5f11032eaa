package l7

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/redirect"
)

// Session is one redirected client connection and what is known about it.
type Session struct {
	ID       string
	Target   *config.Target
	Origin   redirect.Origin
	Workload identity.Workload
	Start    time.Time
	Log      *zap.Logger

	// BytesIn counts bytes from the client to the upstream; BytesOut the
	// bytes from the upstream to the client.
	BytesIn, BytesOut atomic.Int64
	// Statements counts the statements (requests) the engine judged;
	// Denied those of them that were denied.
	Statements, Denied atomic.Int64

	// AuditStart is the sequence number of the session's first audit
	// record (0 without a journal).
	AuditStart uint64

	end atomic.Pointer[time.Time]

	mu     sync.Mutex
	attrs  map[string]string
	claims map[string]any
	cancel context.CancelCauseFunc

	dstOnce sync.Once
	dst     string // Origin.Dst as a string (dstString)
}

// SetClaims records the verified claims of a token the connection carried.
func (s *Session) SetClaims(c map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims = c
}

// Identity is the session's workload with the claims of its token, if any:
// the policy input's identity.
func (s *Session) Identity() identity.Workload {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.Workload
	if s.claims != nil {
		w.Claims = s.claims
	}
	return w
}

// SetCancel gives the session the function that ends it (Kill calls it).
func (s *Session) SetCancel(cancel context.CancelCauseFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel = cancel
}

// KillError is why an operator ended a session: engines tell the client
// Reason.
type KillError struct{ Reason string }

func (e *KillError) Error() string { return e.Reason }

// Kill ends the session with cause; it reports whether the session could
// be ended (it has a cancel function).
func (s *Session) Kill(cause error) bool {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel == nil {
		return false
	}
	cancel(cause)
	return true
}

// SetAttr records a protocol fact about the session (the PostgreSQL
// database, user, application_name, ...).
func (s *Session) SetAttr(key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attrs == nil {
		s.attrs = map[string]string{}
	}
	s.attrs[key] = value
}

// Attrs returns a copy of the session's protocol facts.
func (s *Session) Attrs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.attrs) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.attrs))
	for k, v := range s.attrs {
		out[k] = v
	}
	return out
}

// End reports when the session ended, or the zero time while it is live.
func (s *Session) End() time.Time {
	if t := s.end.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// Finish records the session's end time once.
func (s *Session) Finish(t time.Time) { s.end.CompareAndSwap(nil, &t) }

// PolicyInput is the part of the policy input every engine fills the same
// way: the identity (with token claims), the target as dialled and the
// session id. Engines add the session's protocol facts and the request.
func (s *Session) PolicyInput() policy.Input {
	return s.PolicyInputAs(s.Identity())
}

// PolicyInputAs is PolicyInput with id as the identity: a form of the
// session's identity the engine prepared for the policy once
// (policy.PrepareIdentity), so that a statement's input neither copies nor
// boxes the workload again.
func (s *Session) PolicyInputAs(id any) policy.Input {
	in := policy.Input{Identity: id, Session: policy.Session{ID: s.ID}}
	if s.Target != nil {
		in.Target = policy.Target{Name: s.Target.Name, Protocol: s.Target.Protocol, Address: s.dstString()}
	}
	return in
}

// dstString returns the address the client dialled, formatted once.
func (s *Session) dstString() string {
	s.dstOnce.Do(func() { s.dst = s.Origin.Dst.String() })
	return s.dst
}
