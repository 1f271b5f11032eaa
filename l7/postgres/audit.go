package postgres

import (
	"context"
	"errors"
	"fmt"

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
}

// StatementResult is the data of a RecordStatementResult record.
type StatementResult struct {
	Session    string   `json:"session"`
	Statement  uint64   `json:"statement_seq"`
	Protocol   string   `json:"protocol"`
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
	if !journalStatements {
		return d
	}
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
	seq, err := j.journal.Append(ctx, RecordStatement, rec)
	if err != nil {
		return Decision{Reason: fmt.Sprintf("the audit journal cannot be written, so nothing is let through: %v", errors.Unwrap(err))}
	}
	d.AuditSeq = seq
	return d
}

// auditRecorder writes the outcome of every execution.
type auditRecorder struct{ journal l7.Journal }

func (auditRecorder) SessionStart(*l7.Session, SessionFacts) {}

func (a auditRecorder) StatementDone(s *l7.Session, st Statement) {
	if st.Decision.AuditSeq == 0 || !journalStatements {
		return // never judged (skipped after an error): nothing ran
	}
	a.journal.Append(context.Background(), RecordStatementResult, StatementResult{
		Session:    s.ID,
		Statement:  st.Decision.AuditSeq,
		Protocol:   st.Protocol,
		Portal:     st.Portal,
		DurationUS: st.Duration.Microseconds(),
		Commands:   st.Commands,
		Rows:       st.Rows,
		SQLState:   st.SQLState,
		Error:      st.Error,
		Suspended:  st.Suspended,
	})
}

func (auditRecorder) SessionEnd(*l7.Session, SessionFacts, error) {}
