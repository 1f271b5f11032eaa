package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/mask"
)

// RecordMasking is the audit record written after a statement whose decision
// had mask rules: its data is a MaskingRecord.
const RecordMasking = "masking"

// MaskingRecord is the data of a RecordMasking record.
type MaskingRecord struct {
	Session   string `json:"session"`
	Statement uint64 `json:"statement_seq"`
	mask.Summary
}

var _ RowHook = (*masking)(nil)
var _ Recorder = (*masking)(nil)

// Wants reports results whose decision has mask rules.
func (m *masking) Wants(r *Result) bool { return m.wantsDecision(&r.Decision) }

func (m *masking) wantsDecision(d *Decision) bool { return d.mask != nil }

// decisionWanter is a RowHook whose Wants reads only the result's
// decision: the relay asks it before it makes a Result of a Query's.
type decisionWanter interface {
	wantsDecision(d *Decision) bool
}

var _ decisionWanter = (*masking)(nil)

// OnRowDescription works out what to do to each column of the result; the
// description itself goes unchanged (masked values keep their types).
func (m *masking) OnRowDescription(s *l7.Session, r *Result, d *pgproto3.RowDescription) (*pgproto3.RowDescription, error) {
	st := m.session(s)
	if err := m.prepare(st, r); err != nil {
		return nil, err
	}
	return d, nil
}

// OnDataRow masks one row.
func (m *masking) OnDataRow(s *l7.Session, r *Result, row *pgproto3.DataRow) (*pgproto3.DataRow, error) {
	st := m.session(s)
	if st.res != r {
		if err := m.prepare(st, r); err != nil {
			return nil, err
		}
	}
	if !st.any {
		return row, nil
	}
	if len(row.Values) != len(st.actions) {
		return nil, fmt.Errorf("a row of %d values in a result of %d columns", len(row.Values), len(st.actions))
	}
	st.row.Values = append(st.row.Values[:0], row.Values...)
	for i := range st.actions {
		a := &st.actions[i]
		if a.Method == nil && len(a.Classifiers) == 0 {
			continue
		}
		out, null, err := m.masker.Apply(st.bufs[i][:0], a, st.cols[i], row.Values[i], st.ev)
		if err != nil {
			return nil, fmt.Errorf("mask column %d: %w", i+1, err)
		}
		if null {
			st.row.Values[i] = nil
			continue
		}
		if len(out) > 0 && len(row.Values[i]) > 0 && &out[0] != &row.Values[i][0] {
			st.bufs[i] = out
		}
		if out == nil {
			out = []byte{}
		}
		st.row.Values[i] = out
	}
	return &st.row, nil
}

// OnCopyOut prepares for the rows of a COPY TO STDOUT.
func (m *masking) OnCopyOut(s *l7.Session, r *Result) error {
	st := m.session(s)
	st.reported = true
	sm := r.Decision.mask.stmt(r.Index)
	if sm.copy == nil {
		return fmt.Errorf("COPY rows without a plan to mask them")
	}
	st.res = nil
	st.copyHeader = sm.copy.format.Header
	fields := sm.copy.fields
	if fields == nil {
		st.actions = st.actions[:0]
		st.cols = st.cols[:0]
		return nil
	}
	text := make([]pgproto3.FieldDescription, len(fields))
	copy(text, fields)
	for i := range text {
		text[i].Format = 0 // COPY text and CSV hold values in text format
	}
	return m.actionsFor(st, r, text)
}

// OnCopyData masks one row of a COPY TO STDOUT (one CopyData per row, as
// PostgreSQL sends them).
func (m *masking) OnCopyData(s *l7.Session, r *Result, data []byte) ([]byte, error) {
	st := m.session(s)
	sm := r.Decision.mask.stmt(r.Index)
	if sm.copy == nil {
		return nil, fmt.Errorf("COPY rows without a plan to mask them")
	}
	if st.copyHeader {
		st.copyHeader = false
		return data, nil
	}
	fields, err := mask.SplitCopyRow(sm.copy.format, data, st.copyFields[:0])
	if err != nil {
		return nil, fmt.Errorf("COPY row: %w", err)
	}
	st.copyFields = fields
	if sm.copy.fields == nil { // classifiers only: every field as text
		if len(st.actions) != len(fields) {
			st.actions = make([]mask.Action, len(fields))
			st.cols = make([]mask.Column, len(fields))
			st.bufs = make([][]byte, len(fields))
			for i := range st.actions {
				st.actions[i].Classifiers = r.Decision.mask.set.classifiers
				st.cols[i] = mask.Column{TypeOID: pgtype.TextOID}
			}
		}
	}
	if len(fields) != len(st.actions) {
		return nil, fmt.Errorf("a COPY row of %d fields for %d columns", len(fields), len(st.actions))
	}
	for i := range st.actions {
		a := &st.actions[i]
		if a.Method == nil && len(a.Classifiers) == 0 {
			continue
		}
		out, null, err := m.masker.Apply(st.bufs[i][:0], a, st.cols[i], fields[i], st.ev)
		if err != nil {
			return nil, fmt.Errorf("mask column %d: %w", i+1, err)
		}
		switch {
		case null:
			fields[i] = nil
		case out == nil:
			fields[i] = []byte{}
		default:
			if len(fields[i]) == 0 || &out[0] != &fields[i][0] {
				st.bufs[i] = out
			}
			fields[i] = out
		}
	}
	st.copyBuf = mask.AppendCopyRow(st.copyBuf[:0], sm.copy.format, fields)
	return st.copyBuf, nil
}

// prepare works out the actions for result r.
// A result with something to mask (a masked column, or values the
// classifiers read) gets a masking record after its statement; one with
// nothing has the statement record's mask rules as its evidence.
func (m *masking) prepare(st *maskSession, r *Result) error {
	st.res = r
	if r.Fields == nil {
		// No description of the result was seen: nothing tells which
		// values are masked.
		return fmt.Errorf("rows of a result with masked columns arrived without a description of their columns")
	}
	if err := m.actionsFor(st, r, r.Fields); err != nil {
		return err
	}
	st.reported = st.reported || st.any
	return nil
}

func (m *masking) actionsFor(st *maskSession, r *Result, fields []pgproto3.FieldDescription) error {
	plan := r.Decision.mask
	set := plan.set
	sm := plan.stmt(r.Index)
	n := len(fields)
	if cap(st.actions) < n {
		st.actions = make([]mask.Action, n)
		st.cols = make([]mask.Column, n)
		st.bufs = make([][]byte, n)
	}
	st.actions, st.cols, st.bufs = st.actions[:n], st.cols[:n], st.bufs[:n]
	st.any = false
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	for i, f := range fields {
		st.cols[i] = mask.Column{TypeOID: f.DataTypeOID, TypeMod: f.TypeModifier, Format: f.Format}
		a := mask.Action{Classifiers: set.classifiers}
		risky := f.TableOID == 0 && sm.risky
		unreadable := !textLike(f.DataTypeOID)
		if f.TableOID != 0 && len(set.columns) > 0 {
			if st.cat == nil {
				return fmt.Errorf("no catalog for the session")
			}
			c, err := m.resolve(ctx, st.cat, set, f.TableOID, int16(f.TableAttributeNumber), 0)
			if err != nil {
				return fmt.Errorf("resolve result column %q: %w", f.Name, err)
			}
			if c.rule != nil {
				a = mask.Action{Method: c.rule.method, Label: c.label}
			}
			risky = c.risky && !set.allowsExpressions("")
			unreadable = unreadable || c.wholeRow
		}
		if a.Method == nil && risky && (!set.caught("") || unreadable) {
			// The check before the statement ran could not tell (the
			// statement could not be described): a computed column that
			// may carry masked values is withheld.
			a = mask.Action{Method: nullMethod, Label: "computed:" + string(f.Name)}
		}
		st.actions[i] = a
		st.any = st.any || a.Method != nil || len(a.Classifiers) > 0
	}
	return nil
}

// nullMethod masks a value to NULL.
var nullMethod = func() *mask.Method {
	m, err := mask.NewMethod(mask.MethodNull, nil)
	if err != nil {
		panic(err)
	}
	return m
}()

// SessionStart binds the session to its database's catalog.
func (m *masking) SessionStart(s *l7.Session, f SessionFacts) {
	st := m.session(s)
	st.cat = m.cats.get(m.e, f.Database, f.UpstreamUser)
}

// StatementDone writes the masking record of a statement whose results
// were masked; DDL makes the catalogs read again.
func (m *masking) StatementDone(s *l7.Session, stmt Statement) {
	for _, c := range stmt.Commands {
		if isDDL(c) {
			m.cats.invalidate()
			break
		}
	}
	v, ok := m.sessions.Load(s)
	if !ok {
		return
	}
	st := v.(*maskSession)
	if !st.reported {
		return
	}
	st.reported, st.res = false, nil
	if m.journal == nil {
		st.ev.Reset()
		return
	}
	rec := MaskingRecord{Session: s.ID, Statement: stmt.Decision.AuditSeq, Summary: st.ev.Summary()}
	st.ev.Reset()
	// The statement's own record is in the journal already; one that
	// cannot be written now fails the next statement's.
	m.journal.Append(context.Background(), RecordMasking, rec)
}

// SessionEnd forgets the session.
func (m *masking) SessionEnd(s *l7.Session, _ SessionFacts, _ error) {
	m.sessions.Delete(s)
}

// isDDL reports command tags that change the catalog.
func isDDL(tag string) bool {
	for _, p := range []string{"CREATE ", "ALTER ", "DROP ", "COMMENT", "GRANT", "REVOKE", "SECURITY LABEL"} {
		if strings.HasPrefix(tag, p) {
			return true
		}
	}
	return false
}
