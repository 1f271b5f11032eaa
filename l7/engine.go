// Package l7 defines the protocol engine boundary: an Engine takes an
// accepted, redirected client connection and runs its session to the end.
package l7

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/policy"
)

// Engine runs sessions of one protocol.
type Engine interface {
	// Serve runs the session on client until either side ends it or ctx is
	// cancelled. Serve owns client and closes it before returning.
	Serve(ctx context.Context, s *Session, client net.Conn) error
	// SendError reports err to the client in the engine's own protocol
	// (for example a PostgreSQL ErrorResponse). Engines whose protocol has
	// no error message close the connection.
	SendError(client net.Conn, err error) error
}

// Deps is what the daemon hands an engine when it is built.
type Deps struct {
	// Dial opens upstream connections. The daemon's dialer marks its sockets
	// so the kernel never redirects them back to the agent.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Log is the engine's logger; sessions get a child of it.
	Log *zap.Logger
	// ClientTLS is the agent's server-side TLS config for clients that ask
	// for TLS (PostgreSQL SSLRequest, direct TLS). Nil: TLS is refused.
	ClientTLS *tls.Config
	// StateDir is the agent's state directory, for engines that keep files.
	StateDir string
	// Policy decides every connection and statement. Nil only in tests of
	// an engine alone; the daemon always sets it.
	Policy Policy
	// Journal is the audit journal. Nil only in tests of an engine alone.
	Journal Journal
	// Approvals holds requests whose decision requires a human's approval
	// until one decides. Nil: such requests are denied.
	Approvals Approvals
}

// Approvals holds a request until a human approves or denies it (the
// approval package's Broker).
type Approvals interface {
	Hold(ctx context.Context, a approval.Ask) approval.Outcome
}

// Ask builds the approval request for a statement of session s that the
// decision d says needs approval.
func Ask(s *Session, d policy.Decision, sql string) approval.Ask {
	id := s.Identity()
	origin := id.Cgroup
	if id.Pod != nil {
		origin = "pod " + id.Pod.UID
	}
	if id.Exe != "" {
		origin += " (" + id.Exe + ")"
	}
	a := approval.Ask{
		SessionID: s.ID, Identity: id.Name, UID: id.UID, User: id.User, PID: int(id.PID), Origin: origin,
		SQL: sql, Reason: d.Reason,
	}
	if s.Target != nil {
		a.Target = s.Target.Name
	}
	if d.Approval != nil {
		a.Approvers, a.Scope, a.Timeout = d.Approval.Approvers, d.Approval.Scope, d.Approval.TimeoutDuration()
	}
	return a
}

// Journal is where engines record what they let through and why.
type Journal interface {
	// Append adds a record. With strict durability it returns once the
	// record is on disk. An error means nothing may be let through.
	Append(ctx context.Context, typ string, data any) (uint64, error)
}

// Policy is what engines ask before they let a request through.
type Policy interface {
	Decide(ctx context.Context, in policy.Input) policy.Decision
}

// Factory builds an engine for one target.
type Factory func(t *config.Target, d Deps) (Engine, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes an engine available under a protocol name. It panics on a
// duplicate name, which is a programming error.
func Register(protocol string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[protocol]; dup {
		panic("l7: engine registered twice: " + protocol)
	}
	factories[protocol] = f
}

// IsRegistered reports whether an engine is registered for protocol.
func IsRegistered(protocol string) bool {
	mu.RLock()
	defer mu.RUnlock()
	_, ok := factories[protocol]
	return ok
}

// Protocols lists the registered protocol names, sorted.
func Protocols() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New builds the engine for target t.
func New(t *config.Target, d Deps) (Engine, error) {
	mu.RLock()
	f, ok := factories[t.Protocol]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("target %q: %w: %q", t.Name, ErrUnknownProtocol, t.Protocol)
	}
	return f(t, d)
}

// ErrUnknownProtocol is returned by New for a protocol with no engine.
var ErrUnknownProtocol = fmt.Errorf("no engine for protocol")
