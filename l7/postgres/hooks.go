package postgres

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/policy"
)

// Request kinds, as Request.Kind reports them.
const (
	KindConnect   = "connect"   // the session's startup, before the upstream is dialled
	KindStatement = "statement" // a Query, Parse or FunctionCall, before it is forwarded
)

// Protocol paths a statement arrives by, as Request.Protocol reports them.
const (
	ProtocolSimple   = "simple"   // a Query message: one or more statements
	ProtocolExtended = "extended" // a Parse message: one statement, executed later by Bind/Execute
	ProtocolFunction = "function" // a FunctionCall message: a function by OID, no SQL
)

// Request is what a Decider judges.
type Request struct {
	// Kind is KindConnect or KindStatement.
	Kind string
	// Protocol is ProtocolSimple, ProtocolExtended or ProtocolFunction
	// (statements only).
	Protocol string
	// SQL is the text of a Query (possibly several statements) or a Parse.
	SQL string
	// Statement is the prepared statement name of a Parse ("" is the
	// unnamed statement).
	Statement string
	// FunctionOID is the function a FunctionCall calls.
	FunctionOID uint32
	// Facts describe the session.
	Facts SessionFacts

	// prepared holds the session's identity prepared for the policy
	// (statements only; set by the relay).
	prepared *preparedIdentity
	// nonBlocking: the decision is taken on the event loop and must not
	// wait. One that would (an approval, the catalog, masking) returns a
	// Decision with later set at once, having recorded nothing.
	nonBlocking bool
}

// Decision is a Decider's answer.
type Decision struct {
	// Allow lets the request through; false denies it.
	Allow bool
	// Reason is shown to the client when the request is denied.
	Reason string
	// Mask lists what the RowHook must mask in the results; Record how much
	// of the statement the audit keeps; PolicyVersion the policy that
	// decided. All come from the policy.
	Mask          []policy.MaskRule
	Record        string
	PolicyVersion string
	// AuditSeq is the sequence number of the decision's audit record (0
	// when no journal is kept).
	AuditSeq uint64
	// auditResultAt is where the record's result field goes (0: unknown),
	// should the statement end while the journal still queues the record.
	auditResultAt int

	// mask is what masking found before the statement ran (nil: nothing
	// to mask).
	mask *maskPlan
	// sqlstate replaces 42501 as the code of the refusal (57014 for a
	// decision the client canceled).
	sqlstate string
	// onceApproved: a human approved this statement for one execution; a
	// prepared statement must be approved again for each further one.
	onceApproved bool
	// later: a nonBlocking request needs a decision that may wait.
	later bool
}

// Decider decides whether a request may go to the upstream. Decide is called
// on the session's client-reading goroutine before the request is
// forwarded; while it runs, the session reads nothing more from the client.
// It may block (an approval), and should return when ctx is done.
type Decider interface {
	Decide(ctx context.Context, s *l7.Session, r Request) Decision
}

// DeciderFunc adapts a function to Decider.
type DeciderFunc func(ctx context.Context, s *l7.Session, r Request) Decision

// Decide calls f.
func (f DeciderFunc) Decide(ctx context.Context, s *l7.Session, r Request) Decision {
	return f(ctx, s, r)
}

// AllowAll is the default Decider: it allows every request.
var AllowAll Decider = allowAll{}

type allowAll struct{}

func (allowAll) Decide(context.Context, *l7.Session, Request) Decision { return Decision{Allow: true} }

// Result describes the result set rows belong to, for a RowHook.
type Result struct {
	// SQL is the text that produced the rows: the Query's, or the Parse's
	// of the prepared statement the portal was bound to.
	SQL string
	// Decision is the decision that let SQL through.
	Decision Decision
	// Fields describe the columns as the server sent them, with the result
	// format codes the client asked for applied (0 text, 1 binary). Nil
	// when the server sent no RowDescription for this result and none was
	// kept from an earlier Describe of the statement. When Wants is asked
	// about a simple Query's result, Fields is nil: its RowDescription is
	// decoded only for a hook that wants the result.
	Fields []pgproto3.FieldDescription
	// Index is the 0-based position, within a simple Query of several
	// statements, of the statement that produced the result (the number of
	// CommandComplete and EmptyQueryResponse messages of that Query before
	// it); 0 for the extended protocol.
	Index int
}

// RowHook sees, and may rewrite, the result rows the upstream sends the
// client (masking). Its methods run on the session's upstream-reading
// goroutine; what they are handed is valid only during the call, and what
// they return must not be retained by the hook. An error ends the session
// with a FATAL error to the client: a result the hook cannot handle is
// never passed on unchanged.
type RowHook interface {
	// Wants reports whether the hook must see the result r. It is asked
	// once per result of a Query or Execute, before the result's
	// RowDescription (a Query's) or its first DataRow, and about each
	// RowDescription that answers a Describe. When it reports false, those
	// messages are relayed as they came, undecoded, and the other methods
	// are not called for them.
	Wants(r *Result) bool
	// OnRowDescription returns the description to send the client in place
	// of desc (desc itself, for no change). r.Fields is desc's fields with
	// the result formats applied.
	OnRowDescription(s *l7.Session, r *Result, desc *pgproto3.RowDescription) (*pgproto3.RowDescription, error)
	// OnDataRow returns the row to send the client in place of row.
	OnDataRow(s *l7.Session, r *Result, row *pgproto3.DataRow) (*pgproto3.DataRow, error)
}

// CopyHook is a RowHook that also sees the rows of COPY ... TO STDOUT. A
// COPY result that a RowHook wants, when the hook is no CopyHook, ends the
// session: its rows are never passed on unchanged.
type CopyHook interface {
	// OnCopyOut is called at CopyOutResponse.
	OnCopyOut(s *l7.Session, r *Result) error
	// OnCopyData returns the data to send the client in place of one
	// CopyData's (one row, as PostgreSQL sends them).
	OnCopyData(s *l7.Session, r *Result, data []byte) ([]byte, error)
}

// identityRows is the default RowHook: it changes nothing.
type identityRows struct{}

func (identityRows) Wants(*Result) bool { return false }

func (identityRows) OnRowDescription(_ *l7.Session, _ *Result, d *pgproto3.RowDescription) (*pgproto3.RowDescription, error) {
	return d, nil
}

func (identityRows) OnDataRow(_ *l7.Session, _ *Result, row *pgproto3.DataRow) (*pgproto3.DataRow, error) {
	return row, nil
}

// SessionFacts is what the PostgreSQL engine learns about a session.
type SessionFacts struct {
	// Database and User are those the client asked for in its startup
	// message. UpstreamUser is the user the engine logged in as upstream
	// (the target's credentials' username, or User).
	Database, User, UpstreamUser string
	// ApplicationName is the client's application_name, updated when the
	// server reports a change.
	ApplicationName string
	// Parameters are the startup parameters other than user and database
	// (options, client_encoding, ...).
	Parameters map[string]string
	// UpstreamPID is the upstream backend's process id.
	UpstreamPID uint32
	// TLS reports whether the client connection is TLS.
	TLS bool
}

// Statement is the record of one request, for a Recorder.
type Statement struct {
	// Protocol is ProtocolSimple (a Query), ProtocolExtended (an Execute;
	// or a Parse that was denied or failed) or ProtocolFunction.
	Protocol string
	// SQL is the statement text ("" for a FunctionCall).
	SQL string
	// Statement is the prepared statement name, Portal the portal name
	// (extended protocol).
	Statement, Portal string
	// FunctionOID is the function of a FunctionCall.
	FunctionOID uint32
	// Decision is the decision taken on SQL.
	Decision Decision
	// Start is when the request was forwarded (or denied); Duration runs
	// until its last response.
	Start    time.Time
	Duration time.Duration
	// Commands are the command tags of CommandComplete ("SELECT 3",
	// "INSERT 0 1"); a Query of several statements has several.
	Commands []string
	// Rows is the sum of the row counts of Commands.
	Rows int64
	// SQLState is the code of the error the request ended with, "" when
	// it succeeded. A denial is 42501.
	SQLState string
	// Error is the error's message.
	Error string
	// Suspended reports an Execute that stopped at its row limit
	// (PortalSuspended): more rows may follow in another Execute.
	Suspended bool
}

// Recorder receives the facts of sessions and the records of their
// statements (the audit journal). Its methods are called from the session's
// goroutines, one call at a time per session, in order.
type Recorder interface {
	// SessionStart is called once the upstream login succeeded.
	SessionStart(s *l7.Session, f SessionFacts)
	// StatementDone is called when a request has its last response, or
	// was denied.
	StatementDone(s *l7.Session, st Statement)
	// SessionEnd is called when a session that started ends; err is why
	// (nil for a client's Terminate).
	SessionEnd(s *l7.Session, f SessionFacts, err error)
}

// nopRecorder is the default Recorder.
type nopRecorder struct{}

func (nopRecorder) SessionStart(*l7.Session, SessionFacts)      {}
func (nopRecorder) StatementDone(*l7.Session, Statement)        {}
func (nopRecorder) SessionEnd(*l7.Session, SessionFacts, error) {}

// sessionRecorder keeps what every session shows in `tollctl sessions`:
// the session facts as attributes and the statement counters.
type sessionRecorder struct{}

func (sessionRecorder) SessionStart(s *l7.Session, f SessionFacts) {
	s.SetAttr("database", f.Database)
	s.SetAttr("user", f.User)
	s.SetAttr("upstream_user", f.UpstreamUser)
	s.SetAttr("application_name", f.ApplicationName)
	s.SetAttr("tls", strconv.FormatBool(f.TLS))
}

func (sessionRecorder) StatementDone(s *l7.Session, st Statement) {
	s.Statements.Add(1)
	if !st.Decision.Allow {
		s.Denied.Add(1)
	}
}

func (sessionRecorder) SessionEnd(*l7.Session, SessionFacts, error) {}

// teeRecorder hands every event to each of its recorders in turn.
type teeRecorder []Recorder

func (t teeRecorder) SessionStart(s *l7.Session, f SessionFacts) {
	for _, r := range t {
		r.SessionStart(s, f)
	}
}

func (t teeRecorder) StatementDone(s *l7.Session, st Statement) {
	for _, r := range t {
		r.StatementDone(s, st)
	}
}

func (t teeRecorder) SessionEnd(s *l7.Session, f SessionFacts, err error) {
	for _, r := range t {
		r.SessionEnd(s, f, err)
	}
}
