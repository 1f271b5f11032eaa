package postgres

import (
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

	client net.Conn
	up     net.Conn
	cr     *pgproto3.Backend  // reads the client
	uw     *msgWriter         // writes upstream: the client loop's
	ur     *pgproto3.Frontend // reads the upstream
	cw     *msgWriter         // writes the client: the server loop's

	mu    sync.Mutex
	queue []*request // sent upstream, awaiting responses, in order

	drained time.Time // when the queue was last emptied (with idle timeout); under mu

	txStatus atomic.Uint32         // of the last ReadyForQuery: 'I', 'T' or 'E'
	ended    atomic.Pointer[error] // why the client loop sent Terminate upstream
	clientIn *flushReader          // reads the client, and keeps when it last did
	cancel   *cancelTarget         // the session's cancel key's target; nil in tests without one

	// The server loop's.
	copyOut   *Result                // a COPY TO STDOUT whose rows the row hook sees
	stmts     map[string]*stmtInfo   // prepared statements by name
	portals   map[string]*portalInfo // portals by name
	lastFatal bool                   // the last message to the client was a FATAL error
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
	denied  bool
	start   time.Time

	// Filled in by the server loop.
	result    *Result
	done      int // statements of a Query that ended (CommandComplete, EmptyQueryResponse)
	commands  []string
	rows      int64
	code, msg string
	suspended bool
}

type stmtInfo struct {
	sql    string
	dec    Decision
	fields []pgproto3.FieldDescription // from Describe; nil: not described or no rows
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
	r.txStatus.Store(uint32(up.txStatus))
	r.cancel = cancelTargetOf(up.key)
	r.uw = &msgWriter{w: up.conn, n: &s.BytesIn}
	r.cw = &msgWriter{w: st.conn, n: &s.BytesOut}
	r.clientIn = &flushReader{r: st.r, w: r.uw, stamp: e.idleTimeout > 0}
	r.cr = pgproto3.NewBackend(r.clientIn, io.Discard)
	r.cr.SetMaxBodyLen(e.maxMessage)
	r.ur = pgproto3.NewFrontend(&flushReader{r: up.conn, w: r.cw}, io.Discard)
	return r
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
// the client why when it is still there, and closes both connections.
func (r *relay) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.ctx = ctx

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
		first = &fatalError{code: codeAdminShutdown, msg: "terminating connection: tollgate is shutting down", err: context.Cause(ctx)}
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
		msg, err := r.cr.Receive()
		if err != nil {
			var ne net.Error
			if idle > 0 && errors.As(err, &ne) && ne.Timeout() && r.ctx.Err() == nil {
				if since, ok := r.idleSince(); !ok || time.Since(since) < idle {
					continue // pgproto3 resumes a message cut by the deadline
				}
				return r.idleTimeout()
			}
			return r.clientReadError(err)
		}
		var out encoder = msg
		switch m := msg.(type) {
		case *pgproto3.Query:
			q := &request{kind: 'Q', sql: m.String}
			if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: m.String}); err != nil {
				return err
			}
			if q.denied {
				out = &pgproto3.Query{String: deniedSQL()}
			}
			r.push(q)
		case *pgproto3.Parse:
			q := &request{kind: 'P', name: m.Name, sql: m.Query}
			if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolExtended, SQL: m.Query, Statement: m.Name}); err != nil {
				return err
			}
			if q.denied {
				out = &pgproto3.Parse{Name: m.Name, Query: deniedSQL()}
			}
			r.push(q)
		case *pgproto3.FunctionCall:
			q := &request{kind: 'F', fn: m.Function}
			if err := r.decide(q, Request{Kind: KindStatement, Protocol: ProtocolFunction, FunctionOID: m.Function}); err != nil {
				return err
			}
			if q.denied {
				// Same answer as a failed FunctionCall: an ErrorResponse,
				// then ReadyForQuery.
				out = &pgproto3.Query{String: deniedSQL()}
			}
			r.push(q)
		case *pgproto3.Bind:
			r.push(&request{kind: 'B', name: m.DestinationPortal, stmt: m.PreparedStatement, formats: append([]int16(nil), m.ResultFormatCodes...)})
		case *pgproto3.Describe:
			r.push(&request{kind: 'D', obj: m.ObjectType, name: m.Name})
		case *pgproto3.Execute:
			r.push(&request{kind: 'E', name: m.Portal, start: r.e.now()})
		case *pgproto3.Close:
			r.push(&request{kind: 'C', obj: m.ObjectType, name: m.Name})
		case *pgproto3.Sync:
			r.push(&request{kind: 'S'})
		case *pgproto3.Flush, *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
		case *pgproto3.Terminate:
			return r.terminate(errTerminated)
		default:
			return &fatalError{code: codeProtocolViolation, msg: fmt.Sprintf("invalid frontend message type %T after startup", msg), err: errors.New("protocol violation")}
		}
		if err := r.uw.send(out); err != nil {
			return upstreamWriteError(err)
		}
	}
}

// idleSince returns since when the session is idle: the later of the
// client's last bytes and the upstream's last response. It reports false
// while the upstream owes the client a response: a session is not idle
// while a statement runs. Called by the client loop only.
func (r *relay) idleSince() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > 0 {
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
	if err := r.uw.flush(); err != nil {
		return upstreamWriteError(err)
	}
	req.Facts = r.state.snapshot()
	ctx, stop := context.WithCancelCause(r.ctx)
	defer stop(nil)
	if r.cancel != nil {
		r.cancel.deciding.Store(&stop)
		defer r.cancel.deciding.Store(nil)
	}
	q.dec = r.e.decider.Decide(ctx, r.s, req)
	if errors.Is(context.Cause(ctx), errCanceledByClient) && r.ctx.Err() == nil {
		q.dec = Decision{Reason: "canceling statement due to user request", sqlstate: codeQueryCanceled,
			Record: q.dec.Record, PolicyVersion: q.dec.PolicyVersion, AuditSeq: q.dec.AuditSeq}
	}
	q.denied = !q.dec.Allow
	q.start = r.e.now()
	if err := r.ctx.Err(); err != nil {
		return err
	}
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
	r.queue = append(r.queue, q)
	r.mu.Unlock()
}

// head returns the oldest request awaiting a response, or nil.
func (r *relay) head() *request {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return nil
	}
	return r.queue[0]
}

// pop removes the head.
func (r *relay) pop() {
	r.mu.Lock()
	r.queue[0] = nil
	r.queue = r.queue[1:]
	if len(r.queue) == 0 {
		r.queue = nil
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
	i := 0
	for i < len(r.queue) && r.queue[i].kind != 'S' {
		i++
	}
	skipped := append([]*request(nil), r.queue[:i]...)
	clear(r.queue[:i])
	r.queue = r.queue[i:]
	return skipped
}

// serverLoop relays the upstream's messages to the client until the
// upstream ends the session or a read or write fails.
func (r *relay) serverLoop() error {
	for {
		msg, err := r.ur.Receive()
		if err != nil {
			return r.serverReadError(err)
		}
		out, err := r.fromServer(msg)
		if err != nil {
			return err
		}
		if out == nil {
			continue
		}
		if err := r.cw.send(out); err != nil {
			return clientWriteError(err)
		}
	}
}

// fromServer updates the relay's state with one message from the server and
// returns what to send the client in its place (nil: nothing).
func (r *relay) fromServer(msg pgproto3.BackendMessage) (encoder, error) {
	switch m := msg.(type) {
	case *pgproto3.DataRow:
		if r.e.rows == nil {
			return m, nil
		}
		res := r.resultOf(r.head())
		if !r.e.rows.Wants(res) {
			return m, nil
		}
		row, err := r.e.rows.OnDataRow(r.s, res, m)
		if err != nil {
			return nil, hookError(err)
		}
		return row, nil

	case *pgproto3.RowDescription:
		h := r.head()
		var res *Result
		switch {
		case h == nil:
		case h.kind == 'D' && h.obj == 'S':
			r.pop()
			if si := r.stmts[h.name]; si != nil {
				si.fields = copyFields(m.Fields)
				res = &Result{SQL: si.sql, Decision: si.dec, Fields: si.fields}
			}
		case h.kind == 'D' && h.obj == 'P':
			r.pop()
			if pi := r.portals[h.name]; pi != nil {
				pi.fields = copyFields(m.Fields)
				res = r.portalResult(pi)
			}
		case h.kind == 'Q':
			h.result = &Result{SQL: h.sql, Decision: h.dec, Fields: copyFields(m.Fields), Index: h.done}
			res = h.result
		}
		if r.e.rows == nil {
			return m, nil
		}
		if res == nil {
			res = &Result{Fields: m.Fields}
		}
		if !r.e.rows.Wants(res) {
			return m, nil
		}
		d, err := r.e.rows.OnRowDescription(r.s, res, m)
		if err != nil {
			return nil, hookError(err)
		}
		return d, nil

	case *pgproto3.CommandComplete:
		h := r.head()
		if h == nil {
			return m, nil
		}
		switch h.kind {
		case 'Q':
			h.addCommand(m.CommandTag)
			h.result = nil
			h.done++
		case 'E':
			r.pop()
			h.addCommand(m.CommandTag)
			r.recordExecute(h)
		}
		return m, nil

	case *pgproto3.EmptyQueryResponse, *pgproto3.PortalSuspended:
		if h := r.head(); h != nil && h.kind == 'Q' {
			h.done++
		}
		if h := r.head(); h != nil && h.kind == 'E' {
			r.pop()
			_, h.suspended = m.(*pgproto3.PortalSuspended)
			r.recordExecute(h)
		}
		return m, nil

	case *pgproto3.ErrorResponse:
		return r.serverError(m), nil

	case *pgproto3.ParseComplete:
		if h := r.head(); h != nil && h.kind == 'P' {
			r.pop()
			r.stmts[h.name] = &stmtInfo{sql: h.sql, dec: h.dec}
		}
		return m, nil

	case *pgproto3.BindComplete:
		if h := r.head(); h != nil && h.kind == 'B' {
			r.pop()
			r.portals[h.name] = &portalInfo{name: h.stmt, stmt: r.stmts[h.stmt], formats: h.formats}
		}
		return m, nil

	case *pgproto3.CloseComplete:
		if h := r.head(); h != nil && h.kind == 'C' {
			r.pop()
			if h.obj == 'S' {
				delete(r.stmts, h.name)
			} else {
				delete(r.portals, h.name)
			}
		}
		return m, nil

	case *pgproto3.NoData:
		if h := r.head(); h != nil && h.kind == 'D' {
			r.pop()
			if h.obj == 'S' {
				if si := r.stmts[h.name]; si != nil {
					si.fields = nil
				}
			} else if pi := r.portals[h.name]; pi != nil {
				pi.fields = nil
			}
		}
		return m, nil

	case *pgproto3.ReadyForQuery:
		r.readyForQuery(m.TxStatus)
		return m, nil

	case *pgproto3.ParameterStatus:
		if m.Name == "application_name" {
			r.state.setApplicationName(m.Value)
		}
		return m, nil

	case *pgproto3.BackendKeyData:
		return nil, nil // the client has the proxy's key; never the upstream's

	case *pgproto3.CopyOutResponse:
		return m, r.copyOutStart()

	case *pgproto3.CopyData:
		if r.copyOut == nil {
			return m, nil
		}
		data, err := r.e.rows.(CopyHook).OnCopyData(r.s, r.copyOut, m.Data)
		if err != nil {
			return nil, hookError(err)
		}
		return &pgproto3.CopyData{Data: data}, nil

	case *pgproto3.CopyDone:
		r.copyOut = nil
		return m, nil

	case *pgproto3.ParameterDescription, *pgproto3.NoticeResponse, *pgproto3.NotificationResponse,
		*pgproto3.CopyInResponse, *pgproto3.CopyBothResponse, *pgproto3.FunctionCallResponse:
		return msg, nil
	}
	return nil, &fatalError{code: codeProtocolViolation, msg: "tollgate: unexpected message from the upstream server",
		err: fmt.Errorf("unexpected %T after startup", msg)}
}

// copyOutStart lets the row hook see the rows of a COPY TO STDOUT whose
// result it wants; a hook that cannot see them ends the session.
func (r *relay) copyOutStart() error {
	if r.e.rows == nil {
		return nil
	}
	res := r.resultOf(r.head())
	if !r.e.rows.Wants(res) {
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

// serverError handles an ErrorResponse: a denied request's error becomes the
// denial; after an error in the extended protocol the server skips to the
// next Sync, and so do the requests awaiting responses.
func (r *relay) serverError(m *pgproto3.ErrorResponse) encoder {
	if m.Severity == "FATAL" || m.Severity == "PANIC" {
		r.lastFatal = true
	}
	h := r.head()
	if h == nil {
		return m
	}
	var out encoder = m
	if h.denied && h.code == "" && (h.kind == 'Q' || h.kind == 'P' || h.kind == 'F') {
		d := errorResponse("ERROR", codeInsufficientPrivilege, denialMessage(h.dec.Reason))
		if h.dec.sqlstate != "" {
			d.Code, d.Message = h.dec.sqlstate, h.dec.Reason
		}
		d.Detail = fmt.Sprintf("tollgate did not forward this statement to target %q.", r.e.target.Name)
		out = d
		h.code, h.msg = d.Code, d.Message
	} else if h.code == "" {
		h.code, h.msg = m.Code, m.Message
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
			if q.kind == 'P' {
				r.recordParse(q)
			} else {
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

func (q *request) addCommand(tag []byte) {
	t := string(tag)
	q.commands = append(q.commands, t)
	if i := strings.LastIndexByte(t, ' '); i > 0 {
		if n, err := strconv.ParseInt(t[i+1:], 10, 64); err == nil {
			q.rows += n
		}
	}
}

// resultOf returns the result set rows of h belong to.
func (r *relay) resultOf(h *request) *Result {
	switch {
	case h == nil:
	case h.kind == 'Q':
		if h.result != nil {
			return h.result
		}
		return &Result{SQL: h.sql, Decision: h.dec, Index: h.done}
	case h.kind == 'E':
		if h.result == nil {
			if pi := r.portals[h.name]; pi != nil {
				h.result = r.portalResult(pi)
			} else {
				h.result = &Result{}
			}
		}
		return h.result
	}
	return &Result{}
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
