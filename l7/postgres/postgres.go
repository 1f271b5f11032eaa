package postgres

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
	"github.com/tollgate-dev/tollgate/mask"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/logfields"
	"github.com/tollgate-dev/tollgate/pkg/tokens"
)

// Protocol is the name the engine is registered under.
const Protocol = "postgres"

// Defaults of the engine's options.
const (
	// DefaultStartupTimeout bounds the client's startup phase: from accept
	// to the end of the startup packets (TLS handshake included).
	DefaultStartupTimeout = 10 * time.Second
	// DefaultConnectTimeout bounds the upstream login.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMaxMessageSize is the largest client message body accepted
	// after startup. PostgreSQL itself accepts up to 1 GiB.
	DefaultMaxMessageSize = 64 << 20
)

func init() {
	l7.Register(Protocol, func(t *config.Target, d l7.Deps) (l7.Engine, error) {
		opts := []Option{WithIdleTimeout(t.IdleTimeout)}
		key, err := maskKey(d.StateDir)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", t.Name, err)
		}
		// The masking check may deny: it runs before any approval is
		// asked, and before the journal records the decision.
		m := newMasking(key, d.Journal, sharedAnalyzer())
		var dec Decider = maskingDecider{next: AllowAll, m: m}
		if d.Policy != nil {
			dec = PolicyDecider{Policy: d.Policy, Analyzer: sharedAnalyzer(), Approvals: d.Approvals, check: m.check}
		}
		var rec Recorder = nopRecorder{}
		if d.Journal != nil {
			dec = journalingDecider{next: dec, journal: d.Journal}
			rec = auditRecorder{journal: d.Journal}
		}
		return New(t, d, append(opts, WithDecider(dec), WithRecorder(rec), withMasking(m, false))...)
	})
}

// Option changes an engine made by New.
type Option func(*engine)

// WithDecider sets the Decider consulted before the session starts and before
// each statement is forwarded. Default: AllowAll.
func WithDecider(d Decider) Option { return func(e *engine) { e.decider = d } }

// WithRowHook sets the hook that sees and may rewrite result rows. Default:
// none (rows pass unchanged).
func WithRowHook(h RowHook) Option { return func(e *engine) { e.rows = h } }

// WithRecorder sets the Recorder of session facts and statements. Default:
// none.
func WithRecorder(r Recorder) Option { return func(e *engine) { e.recorder = r } }

// WithMasking masks result values as the decisions' mask rules say, with
// key for the hash method and the evidence digests, writing the evidence
// to j when it is not nil (see masking.go). The masking check runs after
// the engine's Decider. The daemon's engines mask always, with the host
// key in state_dir.
func WithMasking(key []byte, j l7.Journal) Option {
	return withMasking(newMasking(key, j, sharedAnalyzer()), true)
}

func withMasking(m *masking, wrap bool) Option {
	return func(e *engine) { e.masking, e.wrapMasking = m, wrap }
}

// WithClock sets the clock statements are timed with. Default: time.Now.
func WithClock(now func() time.Time) Option { return func(e *engine) { e.now = now } }

// WithStartupTimeout sets the bound on the client's startup phase. Default:
// DefaultStartupTimeout.
func WithStartupTimeout(d time.Duration) Option { return func(e *engine) { e.startupTimeout = d } }

// WithMaxMessageSize sets the largest client message body accepted, in
// bytes. Default: DefaultMaxMessageSize.
func WithMaxMessageSize(n int) Option { return func(e *engine) { e.maxMessage = n } }

// WithIdleTimeout ends a session whose client has sent nothing for d while
// nothing it asked for is still running: the client is told FATAL 57P05
// "terminating connection due to idle-session timeout" (25P03, "...
// idle-in-transaction timeout", inside a transaction block), the upstream
// is sent Terminate, and Serve returns an error that wraps ErrIdleTimeout.
// A session waiting for a result, a COPY or a decision is not idle.
// Default: 0, sessions may idle forever.
func WithIdleTimeout(d time.Duration) Option { return func(e *engine) { e.idleTimeout = d } }

// WithClientTLS makes the engine accept TLS from clients (SSLRequest answered
// 'S', and PostgreSQL 17 direct TLS with ALPN "postgresql") with cfg.
// Default: nil, every SSLRequest is answered 'N' and direct TLS is refused.
func WithClientTLS(cfg *tls.Config) Option { return func(e *engine) { e.clientTLS = cfg } }

type engine struct {
	target     *config.Target
	host, port string // upstream
	upTLS      *tls.Config
	dial       func(ctx context.Context, network, address string) (net.Conn, error)
	log        *zap.Logger

	decider        Decider
	rows           RowHook
	recorder       Recorder
	now            func() time.Time
	startupTimeout time.Duration
	maxMessage     int
	clientTLS      *tls.Config
	idleTimeout    time.Duration
	tokens         *tokens.Verifier // the client presents a workload token; nil: nothing asked

	masking     *masking
	wrapMasking bool // the masking check wraps decider (WithMasking)
}

var _ l7.Engine = (*engine)(nil)

// New builds the PostgreSQL engine for target t. It logs in to t.Upstream
// (or t.Address when Upstream is empty; host:port) with t.Credentials over
// TLS as t.TLS says; with passthrough credentials, the client's own
// StartupMessage and authentication are relayed to the upstream instead.
func New(t *config.Target, d l7.Deps, opts ...Option) (l7.Engine, error) {
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
	if _, perr := strconv.ParseUint(port, 10, 16); err == nil && perr != nil {
		err = fmt.Errorf("bad port %q", port)
	}
	if err != nil {
		return nil, fmt.Errorf("target %q: upstream %q: %w", t.Name, up, err)
	}
	if d.Dial == nil {
		return nil, fmt.Errorf("target %q: %w", t.Name, errNoDial)
	}
	upTLS, err := upstreamTLS(t.TLS, host)
	if err != nil {
		return nil, fmt.Errorf("target %q: tls: %w", t.Name, err)
	}
	e := &engine{
		target: t, host: host, port: port, upTLS: upTLS, dial: d.Dial, log: d.Log,
		decider: AllowAll, rows: nil, recorder: nopRecorder{}, now: time.Now, clientTLS: d.ClientTLS,
		startupTimeout: DefaultStartupTimeout, maxMessage: DefaultMaxMessageSize,
	}
	if ct := t.Credentials.ClientToken; ct != nil {
		e.tokens = tokens.NewVerifier(ct.Issuer, ct.Audience, tokens.Options{})
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	for _, o := range opts {
		o(e)
	}
	if e.decider == nil {
		e.decider = AllowAll
	}
	if e.recorder == nil {
		e.recorder = nopRecorder{}
	}
	if m := e.masking; m != nil {
		m.e = e
		if e.wrapMasking {
			e.decider = maskingDecider{next: e.decider, m: m}
		}
		e.rows = m
		e.recorder = teeRecorder{e.recorder, m}
	}
	e.recorder = teeRecorder{sessionRecorder{}, e.recorder}
	return e, nil
}

var errNoDial = errors.New("no upstream dialer")

// maskKey is the host's masking key, kept in stateDir (a key for this
// process only when there is none: tests of an engine alone).
func maskKey(stateDir string) ([]byte, error) {
	if stateDir == "" {
		key := make([]byte, 32)
		rand.Read(key)
		return key, nil
	}
	key, err := mask.LoadOrCreateKey(filepath.Join(stateDir, "mask.key"))
	if err != nil {
		return nil, fmt.Errorf("masking key: %w", err)
	}
	return key, nil
}

// Serve runs the PostgreSQL session on client: the startup (SSLRequest,
// cancel requests), the upstream login (with the target's credentials, or
// the client's own relayed for passthrough), then the relay with a decision
// before each statement. It closes client and the upstream connection
// before it returns. A cancel request is served and returns nil; so does a
// session that ends with the client's Terminate, and a passthrough login
// the client gave up (psql asking for a password, then dialling again).
func (e *engine) Serve(ctx context.Context, s *l7.Session, client net.Conn) error {
	defer client.Close()
	log := s.Log
	if log == nil {
		log = e.log.With(zap.String(logfields.Session, s.ID))
	}

	// Until the relay runs, the end of ctx ends the startup's reads and
	// writes; the relay watches ctx itself.
	stopWatch := context.AfterFunc(ctx, func() { client.SetDeadline(time.Unix(1, 0)) })
	defer stopWatch()

	st, err := e.startup(ctx, s, client)
	if errors.Is(err, errCancelServed) {
		log.Debug("cancel request served")
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("startup: %w", context.Cause(ctx))
		}
		return err
	}
	state := &sessionState{facts: st.facts}
	sessions.Store(s.ID, state)
	defer sessions.Delete(s.ID)

	var up *upstreamConn
	if e.target.Credentials.Passthrough {
		up, err = e.passthroughLogin(ctx, st, state)
	} else {
		up, err = e.injectedLogin(ctx, st)
	}
	if up != nil {
		defer up.conn.Close()
		defer forgetCancel(up.key)
	}
	if errors.Is(err, errClientGaveUp) {
		log.Debug("client left during the upstream login", fieldError(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("upstream login: %w", err)
	}
	state.setUpstreamPID(up.pid)
	log.Debug("upstream logged in", zap.Stringer(logfields.Peer, up.conn.RemoteAddr()))

	if !stopWatch() {
		return fmt.Errorf("session startup: %w", context.Cause(ctx))
	}
	st.conn.SetDeadline(time.Time{})

	facts := state.snapshot()
	e.recorder.SessionStart(s, facts)
	r := newRelay(e, s, state, st, up)
	err = r.run(ctx)
	e.recorder.SessionEnd(s, state.snapshot(), err)
	return err
}

// SendError sends err to the client as a FATAL ErrorResponse and closes the
// connection. A *pgconn.PgError keeps its SQLSTATE; any other error is
// reported as 08004 (the server rejected the connection). The client's
// SSLRequest or GSSENCRequest is answered N first, and its startup message
// read: libpq shows nothing of an error that answers its SSLRequest.
func (e *engine) SendError(client net.Conn, err error) error {
	msg := errorResponse("FATAL", "08004", "tollgate: "+err.Error())
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		msg = errorResponse("FATAL", pe.Code, pe.Message)
		msg.Detail, msg.Hint = pe.Detail, pe.Hint
	}
	client.SetDeadline(time.Now().Add(finalWriteTimeout))
	r := bufio.NewReaderSize(client, 1024)
preamble:
	for range 3 {
		m, rerr := readStartupPacket(r)
		if rerr != nil {
			break // not the protocol (direct TLS) or gone: the error goes out as it is
		}
		switch m.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, werr := client.Write([]byte{'N'}); werr != nil {
				return errors.Join(werr, client.Close())
			}
		case *pgproto3.CancelRequest:
			return client.Close()
		default:
			break preamble
		}
	}
	werr := writeMessages(client, msg)
	return errors.Join(werr, client.Close())
}

// sessionState is what the engine knows of a live session, shared with
// Facts.
type sessionState struct {
	mu    sync.Mutex
	facts SessionFacts
}

func (st *sessionState) snapshot() SessionFacts {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.facts
}

func (st *sessionState) setUpstreamPID(pid uint32) {
	st.mu.Lock()
	st.facts.UpstreamPID = pid
	st.mu.Unlock()
}

func (st *sessionState) setApplicationName(n string) {
	st.mu.Lock()
	st.facts.ApplicationName = n
	st.mu.Unlock()
}

// sessions holds the live sessions' state by session id.
var sessions sync.Map // string → *sessionState

// Facts returns what the engine knows of the live PostgreSQL session with
// this id (l7.Session.ID): database, user, application_name. It reports
// false for a session that is not (or no longer) live, or not PostgreSQL.
func Facts(sessionID string) (SessionFacts, bool) {
	v, ok := sessions.Load(sessionID)
	if !ok {
		return SessionFacts{}, false
	}
	return v.(*sessionState).snapshot(), true
}

var (
	analyzerOnce sync.Once
	analyzer     *sqlinfo.Analyzer
)

// sharedAnalyzer is the statement analyzer every engine of the process
// shares, so its cache serves all targets.
func sharedAnalyzer() *sqlinfo.Analyzer {
	analyzerOnce.Do(func() { analyzer = sqlinfo.NewAnalyzer(sqlinfo.Limits{}, 10000) })
	return analyzer
}
