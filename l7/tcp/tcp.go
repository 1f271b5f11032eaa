// Package tcp is the generic engine: it relays bytes between the client
// and the target's upstream without reading them.
//
// A session, with C the client, P the proxy and U the upstream:
//
//	C ──connect──► P ──dial──► U
//	C ──bytes───► P ──bytes──► U     (counted in Session.BytesIn)
//	C ◄──bytes─── P ◄──bytes── U     (counted in Session.BytesOut)
//	C ──FIN─────► P ──FIN────► U     a half-close is passed on; the other
//	C ◄──bytes─── P ◄──bytes── U     direction keeps flowing until it ends
//	C ◄──FIN───── P ◄──FIN──── U     both directions ended: both closed
//
// A reset or any other error on either side, or the end of the session's
// context, closes both connections at once.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/logfields"
	"github.com/tollgate-dev/tollgate/policy"
)

// Protocol is the name the engine is registered under.
const Protocol = "tcp"

// DialTimeout bounds the upstream dial of one session.
const DialTimeout = 10 * time.Second

func init() { l7.Register(Protocol, New) }

type engine struct {
	upstream string
	dial     func(ctx context.Context, network, address string) (net.Conn, error)
	log      *zap.Logger
	policy   l7.Policy // judges each connection; nil allows all (engine tests)
}

// ErrDenied is returned by Serve when the policy refused the connection.
var ErrDenied = errors.New("connection denied by policy")

var _ l7.Engine = (*engine)(nil)

// New builds the engine for target t. It connects to t.Upstream, or to
// t.Address when Upstream is empty; either must be host:port.
func New(t *config.Target, d l7.Deps) (l7.Engine, error) {
	up := t.Upstream
	if up == "" {
		up = t.Address
	}
	host, port, err := net.SplitHostPort(up)
	if err == nil && (host == "" || port == "") {
		err = errors.New("want host:port")
	}
	if _, perr := netip.ParsePrefix(host); err == nil && perr == nil {
		err = errors.New("a CIDR is not an address to dial")
	}
	if err != nil {
		return nil, fmt.Errorf("target %q: upstream %q: %w", t.Name, up, err)
	}
	if d.Dial == nil {
		return nil, fmt.Errorf("target %q: %w", t.Name, errNoDial)
	}
	log := d.Log
	if log == nil {
		log = zap.NewNop()
	}
	return &engine{upstream: up, dial: d.Dial, log: log, policy: d.Policy}, nil
}

var errNoDial = errors.New("no upstream dialer")

// Serve dials the upstream and relays until both directions have ended,
// either side fails, or ctx is done. It closes client (and the upstream
// connection) before it returns. A session that ends because ctx did
// returns context.Cause(ctx).
func (e *engine) Serve(ctx context.Context, s *l7.Session, client net.Conn) error {
	log := s.Log
	if log == nil {
		log = e.log.With(zap.String(logfields.Session, s.ID))
	}

	if e.policy != nil {
		// Raw TCP has no statements: the policy judges the connection.
		in := s.PolicyInput()
		in.Request = policy.Request{Kind: policy.KindConnect}
		d := e.policy.Decide(ctx, in)
		if !d.Allow || d.NeedsApproval() {
			s.Denied.Add(1)
			client.Close()
			return fmt.Errorf("%w: %s", ErrDenied, d.Reason)
		}
	}

	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	up, err := e.dial(dctx, "tcp", e.upstream)
	cancel()
	if err != nil {
		client.Close()
		return fmt.Errorf("dial upstream %s: %w", e.upstream, err)
	}
	log.Debug("upstream connected", zap.Stringer(logfields.Peer, up.RemoteAddr()))

	err = Relay(ctx, client, up, &s.BytesIn, &s.BytesOut)
	log.Debug("relay ended",
		zap.Int64(logfields.BytesIn, s.BytesIn.Load()),
		zap.Int64(logfields.BytesOut, s.BytesOut.Load()),
		zap.Error(err))
	return err
}

// SendError closes client: raw TCP has no way to say why.
func (e *engine) SendError(client net.Conn, _ error) error {
	return client.Close()
}
