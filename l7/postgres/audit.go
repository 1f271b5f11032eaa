package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/policy"
)

// Audit record types the engine writes, beside the session records the
// daemon writes.
const (
	// RecordStatement is written when a request is judged, before it is
	// forwarded: its text (as the policy's record field allows), the
	// decision, the reason and the policy version.
	RecordStatement = "statement"
	// RecordStatementResult is written when an execution of a judged
	// statement ends: duration, rows, command tags, SQLSTATE.
	RecordStatementResult = "statement_result"
)

// StatementRecord is the data of a RecordStatement record.
type StatementRecord struct {
	Session       string            `json:"session"`
	Identity      string            `json:"identity"`
	Target        string            `json:"target"`
	Kind          string            `json:"kind"`
	Protocol      string            `json:"protocol,omitempty"`
	SQL           string            `json:"sql,omitempty"`
	Statement     string            `json:"statement,omitempty"`
	FunctionOID   uint32            `json:"function_oid,omitempty"`
	Allow         bool              `json:"allow"`
	Reason        string            `json:"reason,omitempty"`
	Record        string            `json:"record"`
	PolicyVersion string            `json:"policy_version"`
	Mask          []policy.MaskRule `json:"mask,omitempty"`
	// Result is the outcome of a Query's statement or a FunctionCall that
	// ended before the journal flushed the record (in batch durability,
	// most do): the record is then amended to hold it, and no
	// RecordStatementResult follows. Its session, statement_seq and
	// protocol are the record's own, and not repeated.
	Result *StatementResult `json:"result,omitempty"`
}

// StatementResult is the data of a RecordStatementResult record, and the
// result of a StatementRecord.
type StatementResult struct {
	Session    string   `json:"session,omitempty"`
	Statement  uint64   `json:"statement_seq,omitempty"`
	Protocol   string   `json:"protocol,omitempty"`
	Portal     string   `json:"portal,omitempty"`
	DurationUS int64    `json:"duration_us"`
	Commands   []string `json:"commands,omitempty"`
	Rows       int64    `json:"rows"`
	SQLState   string   `json:"sqlstate,omitempty"`
	Error      string   `json:"error,omitempty"`
	Suspended  bool     `json:"suspended,omitempty"`
}

// journalingDecider writes each decision to the audit journal before the
// request may go on. With a strict journal Append returns once the record
// is on disk, so nothing is forwarded that the journal does not hold. When
// the journal cannot be written, requests are refused.
type journalingDecider struct {
	next    Decider
	journal l7.Journal
}

func (j journalingDecider) Decide(ctx context.Context, s *l7.Session, r Request) Decision {
	d := j.next.Decide(ctx, s, r)
	if d.later || !journalStatements {
		return d
	}
	rec := statementRecord(s, r, d)
	bp := getRecordBuf()
	defer putRecordBuf(bp)
	data, slot, err := rec.encode((*bp)[:0], nil)
	*bp = data
	seq := uint64(0)
	if err != nil {
		err = fmt.Errorf("audit: %s data: %w", RecordStatement, err)
	} else {
		seq, err = appendRecord(ctx, j.journal, RecordStatement, data)
	}
	if err != nil {
		return Decision{Reason: fmt.Sprintf("the audit journal cannot be written, so nothing is let through: %v", errors.Unwrap(err))}
	}
	d.AuditSeq, d.auditResultAt = seq, slot
	return d
}

// statementRecord is the record of decision d on request r.
func statementRecord(s *l7.Session, r Request, d Decision) StatementRecord {
	rec := StatementRecord{
		Session:       s.ID,
		Identity:      s.Workload.Name,
		Target:        s.Target.Name,
		Kind:          r.Kind,
		Protocol:      r.Protocol,
		Statement:     r.Statement,
		FunctionOID:   r.FunctionOID,
		Allow:         d.Allow,
		Reason:        d.Reason,
		Record:        d.Record,
		PolicyVersion: d.PolicyVersion,
		Mask:          d.Mask,
	}
	if rec.Record == "" {
		rec.Record = policy.RecordFull
	}
	if rec.Record == policy.RecordFull {
		rec.SQL = r.SQL
	}
	return rec
}

// canonicalJournal is a journal that takes canonical JSON as it is
// (*audit.Journal).
type canonicalJournal interface {
	AppendCanonical(ctx context.Context, typ string, data []byte) (uint64, error)
}

// appendRecord appends a record whose data is canonical JSON, without
// boxing it in an interface when the journal allows.
func appendRecord(ctx context.Context, j l7.Journal, typ string, data []byte) (uint64, error) {
	if cj, ok := j.(canonicalJournal); ok {
		return cj.AppendCanonical(ctx, typ, data)
	}
	return j.Append(ctx, typ, audit.Canonical(data))
}

// amendingJournal is a journal that can add to a record it has not yet
// chained (*audit.Journal).
type amendingJournal interface {
	InsertCanonical(seq uint64, typ string, at int, fragment []byte) (bool, error)
}

var (
	_ canonicalJournal = (*audit.Journal)(nil)
	_ amendingJournal  = (*audit.Journal)(nil)
)

// recordBufs hold the encodings of records while they are appended.
var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getRecordBuf() *[]byte { return recordBufs.Get().(*[]byte) }

// putRecordBuf returns a buffer to recordBufs, unless a large record made
// it large.
func putRecordBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		recordBufs.Put(b)
	}
}

// encode appends rec's JSON in the audit journal's canonical encoding
// (what json.Marshal writes, canonicalized, without either step), with
// result in place of rec.Result: a result in a parameter stays on its
// caller's stack. It also returns where in the record the result is, or
// goes when it is nil: the offset of its field from the record's first
// byte.
func (rec *StatementRecord) encode(b []byte, result *StatementResult) ([]byte, int, error) {
	start := len(b)
	b = append(b, `{"allow":`...)
	b = strconv.AppendBool(b, rec.Allow)
	if rec.FunctionOID != 0 {
		b = append(b, `,"function_oid":`...)
		b = strconv.AppendUint(b, uint64(rec.FunctionOID), 10)
	}
	b = append(b, `,"identity":`...)
	b = audit.AppendString(b, rec.Identity)
	b = append(b, `,"kind":`...)
	b = audit.AppendString(b, rec.Kind)
	if len(rec.Mask) > 0 {
		b = append(b, `,"mask":[`...)
		for i := range rec.Mask {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendMaskRule(b, &rec.Mask[i]); err != nil {
				return b, 0, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"policy_version":`...)
	b = audit.AppendString(b, rec.PolicyVersion)
	b = appendOptString(b, `,"protocol":`, rec.Protocol)
	b = appendOptString(b, `,"reason":`, rec.Reason)
	b = append(b, `,"record":`...)
	b = audit.AppendString(b, rec.Record)
	slot := len(b) - start
	if result != nil {
		b = appendResultField(b, result)
	}
	b = append(b, `,"session":`...)
	b = audit.AppendString(b, rec.Session)
	b = appendOptString(b, `,"sql":`, rec.SQL)
	b = appendOptString(b, `,"statement":`, rec.Statement)
	b = append(b, `,"target":`...)
	b = audit.AppendString(b, rec.Target)
	return append(b, '}'), slot, nil
}

// appendResultField appends the result field of a StatementRecord.
func appendResultField(b []byte, result *StatementResult) []byte {
	b = append(b, `,"result":`...)
	return result.appendJSON(b)
}

// appendMaskRule appends m's canonical JSON. A rule with parameters of its
// own takes the long way (MarshalJSON).
func appendMaskRule(b []byte, m *policy.MaskRule) ([]byte, error) {
	if len(m.Params) > 0 {
		raw, err := json.Marshal(m)
		if err != nil {
			return b, err
		}
		return audit.AppendJSON(b, raw)
	}
	b = append(b, '{')
	if m.Classifier != "" {
		b = append(b, `"classifier":`...)
		b = audit.AppendString(b, m.Classifier)
		b = append(b, ',')
	}
	if m.Column != "" {
		b = append(b, `"column":`...)
		b = audit.AppendString(b, m.Column)
		b = append(b, ',')
	}
	b = append(b, `"method":`...)
	b = audit.AppendString(b, m.Method)
	b = appendOptString(b, `,"table":`, m.Table)
	return append(b, '}'), nil
}

// appendOptString appends key and s, unless s is empty (omitempty).
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return audit.AppendString(b, s)
}

// appendJSON appends res's JSON in the audit journal's canonical encoding.
func (res *StatementResult) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if len(res.Commands) > 0 {
		b = append(b, `"commands":[`...)
		for i, c := range res.Commands {
			if i > 0 {
				b = append(b, ',')
			}
			b = audit.AppendString(b, c)
		}
		b = append(b, "],"...)
	}
	b = append(b, `"duration_us":`...)
	b = strconv.AppendInt(b, res.DurationUS, 10)
	b = appendOptString(b, `,"error":`, res.Error)
	b = appendOptString(b, `,"portal":`, res.Portal)
	b = appendOptString(b, `,"protocol":`, res.Protocol)
	b = append(b, `,"rows":`...)
	b = strconv.AppendInt(b, res.Rows, 10)
	b = appendOptString(b, `,"session":`, res.Session)
	b = appendOptString(b, `,"sqlstate":`, res.SQLState)
	if res.Statement != 0 {
		b = append(b, `,"statement_seq":`...)
		b = strconv.AppendUint(b, res.Statement, 10)
	}
	if res.Suspended {
		b = append(b, `,"suspended":true`...)
	}
	return append(b, '}')
}

// auditRecorder writes the outcome of every execution.
type auditRecorder struct{ journal l7.Journal }

func (auditRecorder) SessionStart(*l7.Session, SessionFacts) {}

func (a auditRecorder) StatementDone(s *l7.Session, st Statement) {
	if st.Decision.AuditSeq == 0 || !journalStatements {
		return // never judged (skipped after an error): nothing ran
	}
	res := StatementResult{
		DurationUS: st.Duration.Microseconds(),
		Commands:   st.Commands,
		Rows:       st.Rows,
		SQLState:   st.SQLState,
		Error:      st.Error,
		Suspended:  st.Suspended,
	}
	bp := getRecordBuf()
	defer putRecordBuf(bp)
	if a.amend(st, &res, bp) {
		return
	}
	res.Session, res.Statement, res.Protocol, res.Portal = s.ID, st.Decision.AuditSeq, st.Protocol, st.Portal
	*bp = res.appendJSON((*bp)[:0])
	appendRecord(context.Background(), a.journal, RecordStatementResult, *bp)
}

// amend writes the result of a Query's statement or a FunctionCall into
// its statement record while the journal still queues that, and reports
// whether it did: one record per statement instead of two.
func (a auditRecorder) amend(st Statement, res *StatementResult, bp *[]byte) bool {
	aj, ok := a.journal.(amendingJournal)
	if !ok || st.Decision.auditResultAt == 0 || st.Protocol != ProtocolSimple && st.Protocol != ProtocolFunction {
		return false
	}
	*bp = appendResultField((*bp)[:0], res)
	done, _ := aj.InsertCanonical(st.Decision.AuditSeq, RecordStatement, st.Decision.auditResultAt, *bp)
	return done
}

func (auditRecorder) SessionEnd(*l7.Session, SessionFacts, error) {}
