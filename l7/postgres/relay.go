package postgres

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/l7"
)

// relay runs an established session: the client loop reads the client's
// messages, decides on statements and writes them upstream; the server loop
// reads the upstream's messages, keeps what the extended protocol needs
// remembered, and writes them to the client. Each writer belongs to one
// loop; the loops share only the queue of requests awaiting responses.
type relay struct {
	e     *engine
	s     *l7.Session
	state *sessionState
	ctx   context.Context // ends when the relay does: Decide returns

	decision *decisionContext // decisions run under it
	watcher  clientWatch      // watches the client while a decision runs

	client net.Conn
	up     net.Conn
	cr     *msgReader // reads the client: the client loop's
	uw     *msgWriter // writes upstream: the client loop's
	ur     *msgReader // reads the upstream: the server loop's
	cw     *msgWriter // writes the client: the server loop's

	mu    sync.Mutex
	queue []*request // sent upstream, awaiting responses, in order: queue[qhead:]
	qhead int        // the oldest's index; the array is reused once all are answered

	drained time.Time // when the queue was last emptied (with idle timeout); under mu

	txStatus atomic.Uint32         // of the last ReadyForQuery: 'I', 'T' or 'E'
	ended    atomic.Pointer[error] // why the client loop sent Terminate upstream
	clientIn *flushReader          // reads the client, and keeps when it last did
	upIn     *flushReader          // reads the upstream
	lp       *loopSession          // the event loop's part, while it serves the session
	startup  *bufio.Reader         // the client's startup reader: what it holds comes first
	cancel   *cancelTarget         // the session's cancel key's target; nil in tests without one

	// The client loop's: decoders of the client messages it reads, and
	// the identity as the policy sees it.
	cm       clientMsgs
	identity preparedIdentity
	// Prepared statements a human approved for one execution, and the
	// portals bound to them: each further execution is judged again.
	onceApproved map[string]*approvedStmt // by statement name
	boundOnce    map[string]*boundPortal  // by portal name

	// The server loop's.
	copyOut   *Result                // a COPY TO STDOUT whose rows the row hook sees
	stmts     map[string]*stmtInfo   // prepared statements by name
	portals   map[string]*portalInfo // portals by name
	lastFatal bool                   // the last message to the client was a FATAL error
	lastTag   string                 // the last command tag (tag)
	sm        serverMsgs             // decoders of the server messages it reads
}

// clientMsgs are the client messages the relay decodes, reused.
type clientMsgs struct {
	query    pgproto3.Query
	parse    pgproto3.Parse
	bind     pgproto3.Bind
	describe pgproto3.Describe
	execute  pgproto3.Execute
	close    pgproto3.Close
	fn       pgproto3.FunctionCall
	copyFail pgproto3.CopyFail
}

// serverMsgs are the server messages the relay decodes, reused. Messages it
// only checks are decoded too, so that a malformed one ends the session as
// pgproto3 would have, never reaching the client.
type serverMsgs struct {
	dataRow     pgproto3.DataRow
	rowDesc     pgproto3.RowDescription
	complete    pgproto3.CommandComplete
	ready       pgproto3.ReadyForQuery
	paramStatus pgproto3.ParameterStatus
	keyData     pgproto3.BackendKeyData
	paramDesc   pgproto3.ParameterDescription
	notice      pgproto3.NoticeResponse
	notify      pgproto3.NotificationResponse
	copyIn      pgproto3.CopyInResponse
	copyOut     pgproto3.CopyOutResponse
	copyData    pgproto3.CopyData
	copyBoth    pgproto3.CopyBothResponse
	fnResponse  pgproto3.FunctionCallResponse
}

// approvedStmt is a prepared statement approved for one execution.
type approvedStmt struct {
	sql  string
	uses int // executions the approval still covers
}

// boundPortal is a portal of an approvedStmt.
type boundPortal struct {
	stmt     string
	approved bool // an Execute of it was let through: later ones continue it
}

// request is a client message sent upstream that the server answers. The
// client loop fills in what it knows and queues it; from then on it is the
// server loop's.
type request struct {
	kind    byte   // message type: 'Q' Query, 'P' Parse, 'B' Bind, 'D' Describe, 'E' Execute, 'C' Close, 'S' Sync, 'F' FunctionCall
	obj     byte   // Describe, Close: 'S' statement or 'P' portal
	name    string // statement (Parse, Describe/Close 'S') or portal (Bind, Execute, Describe/Close 'P')
	stmt    string // Bind: the statement bound
	formats []int16
	sql     string // Query, Parse
	fn      uint32 // FunctionCall
	dec     Decision
	decided bool // dec was decided for this request (an Execute judged again)
	denied  bool
	start   time.Time

	// Filled in by the server loop.
	result    *Result // of the result being relayed
	wants     int8    // whether the RowHook wants result: 0 not asked yet, 1 yes, -1 no
	index     int     // Query: statements of it that completed so far
	commands  []string
	command1  [1]string // holds commands when there is one
	rows      int64
	code, msg string
	suspended bool
}

type stmtInfo struct {
	sql    string
	dec    Decision
	fields []pgproto3.FieldDescription // from Describe; nil: not described or no rows
}

// decisionContext is what decisions run under: ended by a cancel
// request or the client's going away (then the next decision gets a new
// one), or with the relay. Immutable: a cancel request may hold it.
type decisionContext struct {
	ctx  context.Context
	stop context.CancelCauseFunc
}

type portalInfo struct {
	name    string // of the statement
	stmt    *stmtInfo
	formats []int16
	fields  []pgproto3.FieldDescription // from a Describe of the portal (formats applied by the server)
}

func newRelay(e *engine, s *l7.Session, state *sessionState, st *clientStartup, up *upstreamConn) *relay {
	r := &relay{
		e: e, s: s, state: state,
		client: st.conn, up: up.conn,
		stmts:   map[string]*stmtInfo{},
		portals: map[string]*portalInfo{},
	}
	r.watcher.r = r
	r.txStatus.Store(uint32(up.txStatus))
	r.cancel = cancelTargetOf(up.key)
	r.uw = &msgWriter{n: &s.BytesIn}
	r.cw = &msgWriter{n: &s.BytesOut}
	r.clientIn = &flushReader{w: r.uw, stamp: e.idleTimeout > 0}
	r.cr = newMsgReader(r.clientIn, e.maxMessage)
	r.cr.known = isFrontendType
	r.upIn = &flushReader{w: r.cw}
	r.ur = newMsgReader(r.upIn, 0)
	r.startup = st.r
	r.blockingIO(st.r)
	return r
}

// blockingIO makes the loops' readers and writers those of r.client and
// r.up, which wait (in the netpoller) for their sockets: from the start,
// or when a session leaves the event loop. Plain TCP (no TLS) is read and
// written with raw system calls. What the client's startup reader b holds
// is read first.
func (r *relay) blockingIO(b *bufio.Reader) {
	var clientR, upR io.Reader = r.client, r.up
	var clientW, upW io.Writer = r.client, r.up
	if b != nil {
		clientR = b
	}
	if raw, ok := newRawSocket(r.client); ok {
		clientR, clientW = raw, raw
		if b != nil {
			clientR = &bufferedRaw{b: b, raw: raw}
		}
	}
	if raw, ok := newRawSocket(r.up); ok {
		upR, upW = raw, raw
	}
	r.uw.w, r.cw.w = upW, clientW
	r.clientIn.r, r.upIn.r = clientR, upR
	r.cr.r, r.ur.r = r.clientIn, r.upIn
}

// errTerminated ends a session the client ended with Terminate;
// errClientClosed one whose client closed its connection without it.
// Neither is an error of the session.
var (
	errTerminated   = errors.New("client terminated the session")
	errClientClosed = errors.New("client closed the connection")
)

// fatalError ends a session with a FATAL ErrorResponse to the client.
type fatalError struct {
	code, msg string
	err       error
}

func (e *fatalError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// run runs both loops until one ends or ctx is done, stops the other, tells
// the client why when it is still there, and closes both connections. A
// session the event loop can serve starts there; it moves to a goroutine
// per loop when it must wait (eventloop.go).
func (r *relay) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.ctx = ctx

	if l := r.eventLoop(); l != nil {
		if ended, why := r.runInLoop(ctx, l); ended {
			return r.close(why)
		}
	}

	results := make(chan error, 2)
	go func() { results <- r.clientLoop() }()
	go func() { results <- r.serverLoop() }()

	var first error
	pending := 2
	select {
	case first = <-results:
		pending--
		if first == nil { // never: the loops return why they ended
			first = errors.New("relay ended")
		}
	case <-ctx.Done():
		first = shutdownError(ctx)
	}

	// Stop the other loop: closing the upstream ends the server loop's
	// reads and the client loop's writes; a past read deadline ends the
	// client loop's reads (the client connection stays open for a last
	// error); a write deadline bounds the server loop's writes to a client
	// that does not read.
	cancel()
	r.up.Close()
	r.client.SetReadDeadline(time.Unix(1, 0))
	r.client.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
	for ; pending > 0; pending-- {
		<-results
	}
	return r.close(first)
}

// shutdownError is why a session whose context ended ends.
func shutdownError(ctx context.Context) error {
	var ke *l7.KillError
	if errors.As(context.Cause(ctx), &ke) {
		return &fatalError{code: codeAdminShutdown, msg: "terminating connection: " + ke.Reason, err: ke}
	}
	return &fatalError{code: codeAdminShutdown, msg: "terminating connection: tollgate is shutting down", err: context.Cause(ctx)}
}

// close ends a session whose loops have returned, first being why: the
// client is told a FATAL error when it did not see one yet, and both
// connections are closed.
func (r *relay) close(first error) error {
	r.up.Close()
	if why := r.ended.Load(); why != nil {
		first = *why
	}
	var fe *fatalError
	if errors.As(first, &fe) && !r.lastFatal {
		r.client.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
		r.cw.send(errorResponse("FATAL", fe.code, fe.msg))
		r.cw.flush()
	}
	r.client.Close()
	if errors.Is(first, errTerminated) || errors.Is(first, errClientClosed) {
		return nil
	}
	return first
}

// ErrIdleTimeout is why a session ended by WithIdleTimeout ended.
var ErrIdleTimeout = errors.New("idle timeout")

// clientLoop relays the client's messages upstream until the client ends
// the session or a read or write fails.
func (r *relay) clientLoop() error {
	idle := r.e.idleTimeout
	if idle > 0 {
		r.clientIn.last = time.Now()
	}
	for {
		if idle > 0 {
			// The deadline ends a read that waits too long; run sets a past
			// one to stop the loop, after it ends ctx: a deadline set here
			// after that must not stand.
			deadline := time.Now().Add(idle)
			if since, ok := r.idleSince(); ok {
				deadline = since.Add(idle)
			}
			r.client.SetReadDeadline(deadline)
			if err := r.ctx.Err(); err != nil {
				return err
			}
		}
		typ, frame, body, err := r.cr.next()
		if err != nil {
			var ne net.Error
			if idle > 0 && errors.As(err, &ne) && ne.Timeout() && r.ctx.Err() == nil {
				if since, ok := r.idleSince(); !ok || time.Since(since) < idle {
					continue // the reader resumes a message cut by the deadline
				}
				return r.idleTimeout()
			}
			return r.clientReadError(err)
		}
		if err := r.fromClient(typ, frame, body); err != nil {
			return err
		}
	}
}

// isFrontendType reports whether typ is a message type a client may send
// after the startup (or 'p', refused once read).
func isFrontendType(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'D', 'E', 'C', 'S', 'H', 'd', 'c', 'f', 'F', 'X', 'p':
		return true
	}
	return false
}

// fromClient judges, notes and relays one client message. A message is
// forwarded as the bytes it came in when its decoding reads all of it (it
// is then what the re-encoded message would be); else as pgproto3
// re-encodes it, as the server reads it.
func (r *relay) fromClient(typ byte, frame, body []byte) error {
	m := &r.cm
	var out encoder // nil: frame
	switch typ {
	case 'Q':
		if err := m.query.Decode(body); err != nil {
			return r.clientReadError(err)
		}
		q := &request{kind: 'Q', sql: m.query.String}
		if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: q.sql}); err != nil {
			return err
		}
		// A Query drops the unnamed statement and portal.
		delete(r.onceApproved, "")
		delete(r.boundOnce, "")
		if q.denied {
			out = &pgproto3.Query{String: deniedSQL()}
		}
		r.push(q)
	case 'P':
		if err := m.parse.Decode(body); err != nil {
			return r.clientReadError(err)
		}
		if len(body) != len(m.parse.Name)+len(m.parse.Query)+4+4*len(m.parse.ParameterOIDs) {
			out = &m.parse
		}
		q := &request{kind: 'P', name: m.parse.Name, sql: m.parse.Query}
		if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolExtended, SQL: q.sql, Statement: q.name}); err != nil {
			return err
		}
		if q.denied {
			out = &pgproto3.Parse{Name: q.name, Query: deniedSQL()}
		}
		delete(r.onceApproved, q.name)
		if q.dec.onceApproved && !q.denied {
			if r.onceApproved == nil {
				r.onceApproved = map[string]*approvedStmt{}
			}
			r.onceApproved[q.name] = &approvedStmt{sql: q.sql, uses: 1}
		}
		r.push(q)
	case 'F':
		if err := m.fn.Decode(body); err != nil {
			return r.clientReadError(err)
		}
		if len(body) != functionCallLen(&m.fn) {
			out = &m.fn
		}
		q := &request{kind: 'F', fn: m.fn.Function}
		if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolFunction, FunctionOID: q.fn}); err != nil {
			return err
		}
		if q.denied {
			// Same answer as a failed FunctionCall: an ErrorResponse,
			// then ReadyForQuery.
			out = &pgproto3.Query{String: deniedSQL()}
		}
		r.push(q)
	case 'B':
		portal, stmt, formats, ok := parseBind(body)
		if !ok {
			if err := m.bind.Decode(body); err != nil {
				return r.clientReadError(err)
			}
			portal, stmt, formats = m.bind.DestinationPortal, m.bind.PreparedStatement, append([]int16(nil), m.bind.ResultFormatCodes...)
			out = &m.bind
		}
		delete(r.boundOnce, portal)
		if _, ok := r.onceApproved[stmt]; ok {
			if r.boundOnce == nil {
				r.boundOnce = map[string]*boundPortal{}
			}
			r.boundOnce[portal] = &boundPortal{stmt: stmt}
		}
		r.push(&request{kind: 'B', name: portal, stmt: stmt, formats: formats})
	case 'D':
		if err := m.describe.Decode(body); err != nil {
			return r.clientReadError(err)
		}
		r.push(&request{kind: 'D', obj: m.describe.ObjectType, name: m.describe.Name})
	case 'E':
		portal, ok := parseExecute(body)
		if !ok {
			if err := m.execute.Decode(body); err != nil {
				return r.clientReadError(err)
			}
			portal, out = m.execute.Portal, &m.execute
		}
		q := &request{kind: 'E', name: portal, start: r.e.now()}
		if bp := r.boundOnce[portal]; bp != nil && !bp.approved {
			if err := r.approveAgain(q, bp); err != nil {
				return err
			}
			if q.denied {
				// A portal that does not exist: the server fails the
				// Execute and skips to Sync; the server loop swaps its
				// error for the refusal.
				out = &pgproto3.Execute{Portal: deniedSQL()}
			}
		}
		r.push(q)
	case 'C':
		if err := m.close.Decode(body); err != nil {
			return r.clientReadError(err)
		}
		if m.close.ObjectType == 'S' {
			delete(r.onceApproved, m.close.Name)
		} else {
			delete(r.boundOnce, m.close.Name)
		}
		r.push(&request{kind: 'C', obj: m.close.ObjectType, name: m.close.Name})
	case 'S':
		if err := (&pgproto3.Sync{}).Decode(body); err != nil {
			return r.clientReadError(err)
		}
		r.push(&request{kind: 'S'})
	case 'H':
		if err := (&pgproto3.Flush{}).Decode(body); err != nil {
			return r.clientReadError(err)
		}
	case 'c':
		if err := (&pgproto3.CopyDone{}).Decode(body); err != nil {
			return r.clientReadError(err)
		}
	case 'f':
		if err := m.copyFail.Decode(body); err != nil {
			return r.clientReadError(err)
		}
	case 'd':
	case 'X':
		if err := (&pgproto3.Terminate{}).Decode(body); err != nil {
			return r.clientReadError(err)
		}
		return r.terminate(errTerminated)
	default:
		return &fatalError{code: codeProtocolViolation, msg: fmt.Sprintf("invalid frontend message type %q after startup", typ), err: errors.New("protocol violation")}
	}
	var err error
	if out != nil {
		err = r.uw.send(out)
	} else {
		err = r.uw.sendFrame(frame)
	}
	if err != nil {
		return upstreamWriteError(err)
	}
	return nil
}

// idleSince returns since when the session is idle: the later of the
// client's last bytes and the upstream's last response. It reports false
// while the upstream owes the client a response: a session is not idle
// while a statement runs. Called by the client loop only.
func (r *relay) idleSince() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > r.qhead {
		return time.Time{}, false
	}
	if r.clientIn.last.After(r.drained) {
		return r.clientIn.last, true
	}
	return r.drained, true
}

// idleTimeout ends an idle session as PostgreSQL's idle_session_timeout
// and idle_in_transaction_session_timeout do.
func (r *relay) idleTimeout() error {
	fe := &fatalError{code: codeIdleSessionTimeout, msg: "terminating connection due to idle-session timeout", err: ErrIdleTimeout}
	if tx := byte(r.txStatus.Load()); tx == 'T' || tx == 'E' {
		fe.code, fe.msg = codeIdleInTransactionTimeout, "terminating connection due to idle-in-transaction timeout"
	}
	return r.terminate(fe)
}

// terminate sends the upstream Terminate, which ends its backend cleanly,
// and returns why: the session ends for that reason, whatever the server
// loop reads (the upstream closing) before run hears of it.
func (r *relay) terminate(why error) error {
	r.ended.Store(&why)
	if err := r.uw.send(&pgproto3.Terminate{}); err != nil {
		return err
	}
	if err := r.uw.flush(); err != nil {
		return upstreamWriteError(err)
	}
	return why
}

// decide asks the Decider about q. What the client sent before q goes out
// first: the decision may take long (an approval).
func (r *relay) decide(q *request, req Request) error {
	req.Facts = r.state.snapshot()
	req.prepared = &r.identity
	if r.lp != nil {
		// On the event loop: a decision that would wait is taken again
		// once the session has left it.
		req.nonBlocking = true
		d := r.e.decider.Decide(r.ctx, r.s, req)
		if d.later {
			return errDecideLater
		}
		q.dec, q.denied, q.decided = d, !d.Allow, true
		q.start = r.e.now()
		return r.ctx.Err()
	}
	if err := r.uw.flush(); err != nil {
		return upstreamWriteError(err)
	}
	// A cancel request from the client ends a long decision (an
	// approval): the statement is refused as PostgreSQL cancels one. The
	// decisions' context is kept until one is canceled.
	if r.decision == nil || r.decision.ctx.Err() != nil {
		ctx, stop := context.WithCancelCause(r.ctx)
		r.decision = &decisionContext{ctx: ctx, stop: stop}
	}
	ctx, stop := r.decision.ctx, r.decision.stop
	if r.cancel != nil {
		r.cancel.deciding.Store(&r.decision.stop)
		defer r.cancel.deciding.Store(nil)
	}
	r.watcher.begin(stop, time.Now())
	q.dec = r.e.decider.Decide(ctx, r.s, req)
	r.watcher.end()
	if errors.Is(context.Cause(ctx), errClientGone) && r.ctx.Err() == nil {
		q.dec = Decision{Reason: "the client went away while the statement waited", Record: q.dec.Record,
			PolicyVersion: q.dec.PolicyVersion, AuditSeq: q.dec.AuditSeq}
	}
	if errors.Is(context.Cause(ctx), errCanceledByClient) && r.ctx.Err() == nil {
		q.dec = Decision{Reason: "canceling statement due to user request", sqlstate: codeQueryCanceled,
			Record: q.dec.Record, PolicyVersion: q.dec.PolicyVersion, AuditSeq: q.dec.AuditSeq}
	}
	q.denied, q.decided = !q.dec.Allow, true
	q.start = r.e.now()
	if err := r.ctx.Err(); err != nil {
		return err
	}
	return nil
}

// approveAgain lets an Execute of a statement approved for one execution
// through: the first on the approval, each further one on a new decision
// (a new approval, unless a session or window grant covers it).
func (r *relay) approveAgain(q *request, bp *boundPortal) error {
	as := r.onceApproved[bp.stmt]
	if as == nil {
		return nil
	}
	if as.uses > 0 {
		as.uses--
		bp.approved = true
		return nil
	}
	if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolExtended, SQL: as.sql, Statement: bp.stmt}); err != nil {
		return err
	}
	bp.approved = !q.denied
	return nil
}

// deniedSQL is what goes upstream in place of a denied statement: a syntax
// error. The server answers it as it would the statement's own error:
// inside a transaction block the transaction fails, so nothing written
// before the denial can commit; in the extended protocol the server skips
// the client's messages up to its Sync. The server loop swaps the error for
// the denial. The random word names it in the server's log.
func deniedSQL() string {
	var b [6]byte
	rand.Read(b[:])
	return "tollgate_denied_" + hex.EncodeToString(b[:])
}

func (r *relay) clientReadError(err error) error {
	var big *pgproto3.ExceededMaxBodyLenErr
	var we *writeError
	var ne net.Error
	switch {
	case errors.As(err, &we):
		return upstreamWriteError(we.err)
	case errors.As(err, &big):
		return &fatalError{code: codeProgramLimitExceeded, msg: fmt.Sprintf("tollgate: message of %d bytes exceeds the limit of %d", big.ActualBodyLen, big.MaxExpectedBodyLen), err: err}
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && r.clientIn.eof:
		// pgproto3 reports an end between messages as unexpected too. (A
		// message body cut short, such as a Parse without its NUL, is an
		// EOF of the decoder's: a protocol violation, below.)
		return errClientClosed
	case errors.As(err, &ne), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("read client: %w", err)
	}
	// Anything else is a message pgproto3 could not decode.
	return &fatalError{code: codeProtocolViolation, msg: "tollgate: invalid frontend message", err: err}
}

func upstreamWriteError(err error) error {
	var we *writeError
	if errors.As(err, &we) {
		err = we.err
	}
	return &fatalError{code: codeConnectionFailure, msg: "tollgate: lost the connection to the upstream server", err: fmt.Errorf("write upstream: %w", err)}
}

func (r *relay) push(q *request) {
	r.mu.Lock()
	if r.qhead > 0 && len(r.queue) == cap(r.queue) {
		// Full, with answered ones in front (a client that pipelines
		// without pause): move the rest down rather than grow.
		n := copy(r.queue, r.queue[r.qhead:])
		clear(r.queue[n:])
		r.queue, r.qhead = r.queue[:n], 0
	}
	r.queue = append(r.queue, q)
	r.mu.Unlock()
}

// head returns the oldest request awaiting a response, or nil.
func (r *relay) head() *request {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.qhead == len(r.queue) {
		return nil
	}
	return r.queue[r.qhead]
}

// pop removes the head.
func (r *relay) pop() {
	r.mu.Lock()
	r.queue[r.qhead] = nil
	r.qhead++
	if r.qhead == len(r.queue) {
		r.queue, r.qhead = r.queue[:0], 0
		if r.e.idleTimeout > 0 {
			r.drained = time.Now()
		}
	}
	r.mu.Unlock()
}

// skipToSync removes the requests before the next Sync: after an error in
// the extended protocol the server ignores them. It returns them.
func (r *relay) skipToSync() []*request {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.qhead
	for i < len(r.queue) && r.queue[i].kind != 'S' {
		i++
	}
	skipped := append([]*request(nil), r.queue[r.qhead:i]...)
	clear(r.queue[r.qhead:i])
	r.qhead = i
	if r.qhead == len(r.queue) {
		r.queue, r.qhead = r.queue[:0], 0
	}
	return skipped
}

// serverLoop relays the upstream's messages to the client until the
// upstream ends the session or a read or write fails.
func (r *relay) serverLoop() error {
	for {
		typ, frame, body, err := r.ur.next()
		if err != nil {
			return r.serverReadError(err)
		}
		if err := r.toClient(typ, frame, body); err != nil {
			return err
		}
	}
}

// toClient relays one message from the server to the client, as fromServer
// says.
func (r *relay) toClient(typ byte, frame, body []byte) error {
	out, err := r.fromServer(typ, body)
	switch {
	case err != nil:
		return err
	case out == nil:
		err = r.cw.sendFrame(frame)
	case out == drop:
		return nil
	default:
		err = r.cw.send(out)
	}
	if err != nil {
		return clientWriteError(err)
	}
	return nil
}

// drop is what fromServer returns for a message the client must not see.
var drop encoder = &pgproto3.BackendKeyData{}

// fromServer updates the relay's state with one message from the server and
// returns what to send the client in its place: nil for the message as it
// came, drop for nothing.
func (r *relay) fromServer(typ byte, body []byte) (encoder, error) {
	m := &r.sm
	switch typ {
	case 'D': // DataRow
		if r.e.rows == nil {
			return nil, nil
		}
		res := r.rowsResult(r.head())
		if res == nil {
			return nil, nil
		}
		if err := m.dataRow.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		row, err := r.e.rows.OnDataRow(r.s, res, &m.dataRow)
		if err != nil {
			return nil, hookError(err)
		}
		return row, nil

	case 'T': // RowDescription
		return r.rowDescription(body)

	case 'C': // CommandComplete
		if err := m.complete.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		h := r.head()
		if h == nil {
			return nil, nil
		}
		switch h.kind {
		case 'Q':
			h.addCommand(r.tag(m.complete.CommandTag))
			h.nextResult()
		case 'E':
			r.pop()
			h.addCommand(r.tag(m.complete.CommandTag))
			r.recordExecute(h)
		}
		return nil, nil

	case 'I', 's': // EmptyQueryResponse, PortalSuspended
		if len(body) != 0 {
			return nil, r.serverReadError(fmt.Errorf("invalid message length of %q: %d", typ, len(body)))
		}
		if h := r.head(); h != nil {
			switch {
			case h.kind == 'E':
				r.pop()
				h.suspended = typ == 's'
				r.recordExecute(h)
			case h.kind == 'Q' && typ == 'I':
				h.nextResult()
			}
		}
		return nil, nil

	case 'E': // ErrorResponse
		var e pgproto3.ErrorResponse
		if err := e.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		return r.serverError(&e), nil

	case '1', '2', '3', 'n': // ParseComplete, BindComplete, CloseComplete, NoData
		if len(body) != 0 {
			return nil, r.serverReadError(fmt.Errorf("invalid message length of %q: %d", typ, len(body)))
		}
		h := r.head()
		if h == nil {
			return nil, nil
		}
		switch {
		case typ == '1' && h.kind == 'P':
			r.pop()
			r.stmts[h.name] = &stmtInfo{sql: h.sql, dec: h.dec}
		case typ == '2' && h.kind == 'B':
			r.pop()
			r.portals[h.name] = &portalInfo{name: h.stmt, stmt: r.stmts[h.stmt], formats: h.formats}
		case typ == '3' && h.kind == 'C':
			r.pop()
			if h.obj == 'S' {
				delete(r.stmts, h.name)
			} else {
				delete(r.portals, h.name)
			}
		case typ == 'n' && h.kind == 'D':
			r.pop()
			if h.obj == 'S' {
				if si := r.stmts[h.name]; si != nil {
					si.fields = nil
				}
			} else if pi := r.portals[h.name]; pi != nil {
				pi.fields = nil
			}
		}
		return nil, nil

	case 'Z': // ReadyForQuery
		if err := m.ready.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		r.readyForQuery(m.ready.TxStatus)
		return nil, nil

	case 'S': // ParameterStatus
		if err := m.paramStatus.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		if m.paramStatus.Name == "application_name" {
			r.state.setApplicationName(m.paramStatus.Value)
		}
		return nil, nil

	case 'K': // BackendKeyData: the client has the proxy's key; never the upstream's
		if err := m.keyData.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		return drop, nil

	case 'd': // CopyData
		if r.copyOut == nil {
			return nil, nil
		}
		data, err := r.e.rows.(CopyHook).OnCopyData(r.s, r.copyOut, body)
		if err != nil {
			return nil, hookError(err)
		}
		m.copyData.Data = data
		return &m.copyData, nil

	case 'H': // CopyOutResponse
		if err := m.copyOut.Decode(body); err != nil {
			return nil, r.serverReadError(err)
		}
		return nil, r.copyOutStart()

	case 'c': // CopyDone
		if len(body) != 0 {
			return nil, r.serverReadError(fmt.Errorf("invalid message length of %q: %d", typ, len(body)))
		}
		r.copyOut = nil
		return nil, nil
	}

	// Relayed as they are, once they decode.
	var msg pgproto3.BackendMessage
	switch typ {
	case 't':
		msg = &m.paramDesc
	case 'N':
		msg = &m.notice
	case 'A':
		msg = &m.notify
	case 'G':
		msg = &m.copyIn
	case 'W':
		msg = &m.copyBoth
	case 'V':
		msg = &m.fnResponse
	default:
		return nil, &fatalError{code: codeProtocolViolation, msg: "tollgate: unexpected message from the upstream server",
			err: fmt.Errorf("unexpected message type %q after startup", typ)}
	}
	if err := msg.Decode(body); err != nil {
		return nil, r.serverReadError(err)
	}
	return nil, nil
}

// rowDescription notes a RowDescription: the columns of a described
// statement or portal (kept for the hook when there is one) or of a
// Query's next result, and hands it to the RowHook when it wants the
// result. Without a hook it is never decoded.
func (r *relay) rowDescription(body []byte) (encoder, error) {
	h := r.head()
	if r.e.rows == nil {
		if h != nil && h.kind == 'D' {
			r.pop()
		}
		return nil, nil
	}
	desc := &r.sm.rowDesc
	decoded := false
	decode := func() error {
		if decoded {
			return nil
		}
		decoded = true
		if err := desc.Decode(body); err != nil {
			return r.serverReadError(err)
		}
		return nil
	}
	var res *Result
	switch {
	case h == nil:
	case h.kind == 'D' && h.obj == 'S':
		r.pop()
		if err := decode(); err != nil {
			return nil, err
		}
		if si := r.stmts[h.name]; si != nil {
			si.fields = copyFields(desc.Fields)
			res = &Result{SQL: si.sql, Decision: si.dec, Fields: si.fields}
		}
	case h.kind == 'D' && h.obj == 'P':
		r.pop()
		if err := decode(); err != nil {
			return nil, err
		}
		if pi := r.portals[h.name]; pi != nil {
			pi.fields = copyFields(desc.Fields)
			res = r.portalResult(pi)
		}
	case h.kind == 'Q':
		res = r.rowsResult(h)
		if res == nil {
			return nil, nil
		}
		if err := decode(); err != nil {
			return nil, err
		}
		res.Fields = copyFields(desc.Fields)
	}
	if res == nil {
		if err := decode(); err != nil {
			return nil, err
		}
		res = &Result{Fields: desc.Fields}
	}
	if h == nil || h.kind != 'Q' {
		if !r.e.rows.Wants(res) {
			return nil, nil
		}
	}
	if err := decode(); err != nil {
		return nil, err
	}
	d, err := r.e.rows.OnRowDescription(r.s, res, desc)
	if err != nil {
		return nil, hookError(err)
	}
	return d, nil
}

// copyOutStart lets the row hook see the rows of a COPY TO STDOUT whose
// result it wants; a hook that cannot see them ends the session.
func (r *relay) copyOutStart() error {
	if r.e.rows == nil {
		return nil
	}
	res := r.rowsResult(r.head())
	if res == nil {
		return nil
	}
	ch, ok := r.e.rows.(CopyHook)
	if !ok {
		return hookError(errors.New("the rows of this COPY cannot be passed to the row hook"))
	}
	if err := ch.OnCopyOut(r.s, res); err != nil {
		return hookError(err)
	}
	r.copyOut = res
	return nil
}

// masked reports whether the results of h are masked.
func (r *relay) masked(h *request) bool {
	switch h.kind {
	case 'Q', 'P', 'F':
		return h.dec.mask != nil
	case 'E', 'B', 'D':
		name := h.name
		if h.kind == 'B' {
			return r.stmts[h.stmt] != nil && r.stmts[h.stmt].dec.mask != nil
		}
		if h.kind == 'D' && h.obj == 'S' {
			return r.stmts[name] != nil && r.stmts[name].dec.mask != nil
		}
		pi := r.portals[name]
		return pi != nil && pi.stmt != nil && pi.stmt.dec.mask != nil
	}
	return false
}

// serverError handles an ErrorResponse: a denied request's error becomes the
// denial (returned); after an error in the extended protocol the server
// skips to the next Sync, and so do the requests awaiting responses.
func (r *relay) serverError(m *pgproto3.ErrorResponse) encoder {
	if m.Severity == "FATAL" || m.Severity == "PANIC" {
		r.lastFatal = true
	}
	h := r.head()
	if h == nil {
		return nil
	}
	var out encoder // nil: m as it came
	if h.denied && h.code == "" && (h.kind == 'Q' || h.kind == 'P' || h.kind == 'F' || h.kind == 'E') {
		d := errorResponse("ERROR", codeInsufficientPrivilege, denialMessage(h.dec.Reason))
		d.Detail = fmt.Sprintf("tollgate did not forward this statement to target %q.", r.e.target.Name)
		if h.dec.sqlstate != "" {
			d.Code, d.Message = h.dec.sqlstate, h.dec.Reason
		}
		out = d
		h.code, h.msg = d.Code, d.Message
	} else {
		if r.masked(h) {
			// Errors quote values: a failed cast the value it could not
			// read, a constraint's detail the row ("Failing row contains
			// (...)"), masked columns included.
			scrubError(m)
			out = m
		}
		if h.code == "" {
			h.code, h.msg = m.Code, m.Message
		}
	}
	switch h.kind {
	case 'Q', 'F', 'S':
		// Ends at ReadyForQuery.
	default:
		r.pop()
		switch {
		case h.kind == 'E':
			r.recordExecute(h)
		case h.kind == 'P':
			r.recordParse(h)
		}
		// Skipped requests did not run; a denial among them is still
		// recorded.
		for _, q := range r.skipToSync() {
			if !q.denied {
				continue
			}
			q.code, q.msg = codeInsufficientPrivilege, denialMessage(q.dec.Reason)
			switch q.kind {
			case 'P':
				r.recordParse(q)
			case 'E':
				r.recordExecute(q)
			default:
				r.record(q)
			}
		}
	}
	return out
}

// readyForQuery ends the request a ReadyForQuery answers (a Sync, Query or
// FunctionCall) and any before it that the server did not answer.
func (r *relay) readyForQuery(status byte) {
	r.txStatus.Store(uint32(status))
	for {
		h := r.head()
		if h == nil {
			break
		}
		r.pop()
		if h.kind == 'Q' || h.kind == 'F' {
			r.record(h)
			if h.kind == 'Q' { // a simple Query drops the unnamed statement and portal
				delete(r.stmts, "")
				delete(r.portals, "")
			}
		}
		if h.kind == 'S' || h.kind == 'Q' || h.kind == 'F' {
			break
		}
	}
	if status == 'I' { // portals end with their transaction
		clear(r.portals)
	}
}

// tag returns a command tag as a string: the last one again when it is
// the same (a service sends the same statements, so mostly it is).
func (r *relay) tag(b []byte) string {
	if string(b) != r.lastTag {
		r.lastTag = string(b)
	}
	return r.lastTag
}

func (q *request) addCommand(t string) {
	if q.commands == nil {
		q.commands = q.command1[:0]
	}
	q.commands = append(q.commands, t)
	if i := strings.LastIndexByte(t, ' '); i > 0 {
		if n, err := strconv.ParseInt(t[i+1:], 10, 64); err == nil {
			q.rows += n
		}
	}
}

// nextResult readies a Query for its next statement's result.
func (q *request) nextResult() {
	q.index++
	q.result, q.wants = nil, 0
}

// rowsResult returns the result the rows of h belong to, or nil when the
// RowHook does not want it (it is asked once per result of a Query or
// Execute).
func (r *relay) rowsResult(h *request) *Result {
	if h == nil || (h.kind != 'Q' && h.kind != 'E') {
		res := &Result{}
		if !r.e.rows.Wants(res) {
			return nil
		}
		return res
	}
	if h.result == nil && h.wants == 0 && h.kind == 'Q' {
		if w, ok := r.e.rows.(decisionWanter); ok && !w.wantsDecision(&h.dec) {
			h.wants = -1 // known from the decision: no Result to make
		}
	}
	if h.wants < 0 {
		return nil
	}
	if h.result == nil {
		switch {
		case h.kind == 'Q':
			h.result = &Result{SQL: h.sql, Decision: h.dec, Index: h.index}
		case r.portals[h.name] != nil:
			h.result = r.portalResult(r.portals[h.name])
		default:
			h.result = &Result{}
		}
	}
	if h.wants == 0 {
		h.wants = -1
		if r.e.rows.Wants(h.result) {
			h.wants = 1
		}
	}
	if h.wants < 0 {
		return nil
	}
	return h.result
}

// portalResult describes the result of a portal: as the server described the
// portal, or as it described the portal's statement, with the portal's
// result formats applied (pgx executes cached statements with no Describe).
func (r *relay) portalResult(pi *portalInfo) *Result {
	res := &Result{}
	if pi.stmt != nil {
		res.SQL, res.Decision = pi.stmt.sql, pi.stmt.dec
	}
	switch {
	case pi.fields != nil:
		res.Fields = pi.fields
	case pi.stmt != nil && pi.stmt.fields != nil:
		res.Fields = applyFormats(pi.stmt.fields, pi.formats)
	}
	return res
}

// applyFormats returns fields with Bind's result format codes: none means
// all text, one applies to all columns, else one per column.
func applyFormats(fields []pgproto3.FieldDescription, formats []int16) []pgproto3.FieldDescription {
	out := make([]pgproto3.FieldDescription, len(fields))
	copy(out, fields)
	for i := range out {
		switch {
		case len(formats) == 0:
			out[i].Format = 0
		case len(formats) == 1:
			out[i].Format = formats[0]
		case i < len(formats):
			out[i].Format = formats[i]
		}
	}
	return out
}

// copyFields copies fields out of the reader's buffer.
func copyFields(fields []pgproto3.FieldDescription) []pgproto3.FieldDescription {
	out := make([]pgproto3.FieldDescription, len(fields))
	copy(out, fields)
	for i := range out {
		out[i].Name = append([]byte(nil), out[i].Name...)
	}
	return out
}

func (r *relay) recordExecute(h *request) {
	st := Statement{Protocol: ProtocolExtended, Portal: h.name}
	if pi := r.portals[h.name]; pi != nil && pi.stmt != nil {
		st.SQL, st.Decision, st.Statement = pi.stmt.sql, pi.stmt.dec, pi.name
	}
	if h.decided {
		st.Decision = h.dec
	}
	r.finish(h, st)
}

func (r *relay) recordParse(h *request) {
	r.finish(h, Statement{Protocol: ProtocolExtended, SQL: h.sql, Statement: h.name, Decision: h.dec})
}

// record records a Query or FunctionCall.
func (r *relay) record(h *request) {
	st := Statement{Protocol: ProtocolSimple, SQL: h.sql, Decision: h.dec}
	if h.kind == 'F' {
		st.Protocol, st.FunctionOID = ProtocolFunction, h.fn
	}
	r.finish(h, st)
}

func (r *relay) finish(h *request, st Statement) {
	st.Start = h.start
	st.Duration = r.e.now().Sub(h.start)
	st.Commands, st.Rows = h.commands, h.rows
	st.SQLState, st.Error, st.Suspended = h.code, h.msg, h.suspended
	r.e.recorder.StatementDone(r.s, st)
}

func (r *relay) serverReadError(err error) error {
	var we *writeError
	if errors.As(err, &we) {
		return clientWriteError(we.err)
	}
	var big *pgproto3.ExceededMaxBodyLenErr
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &big) {
		return &fatalError{code: codeConnectionFailure, msg: "tollgate: lost the connection to the upstream server", err: fmt.Errorf("read upstream: %w", err)}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return &fatalError{code: codeConnectionFailure, msg: "tollgate: lost the connection to the upstream server", err: fmt.Errorf("read upstream: %w", err)}
	}
	return &fatalError{code: codeProtocolViolation, msg: "tollgate: invalid message from the upstream server", err: fmt.Errorf("read upstream: %w", err)}
}

func clientWriteError(err error) error {
	var we *writeError
	if errors.As(err, &we) {
		err = we.err
	}
	return fmt.Errorf("write client: %w", err)
}

func hookError(err error) error {
	return &fatalError{code: codeInternalError, msg: "tollgate: cannot pass this result on", err: fmt.Errorf("row hook: %w", err)}
}
