package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
	"github.com/tollgate-dev/tollgate/mask"
	"github.com/tollgate-dev/tollgate/policy"
)

// Masking rewrites result values the policy's decision says to mask
// (DESIGN.md, decision "mask"), in three places:
//
//   - Before a statement is forwarded (maskingDecider), it is described
//     through the catalog's side connection, without running it. A result
//     column computed from a masked column (lower(email), email || '', a
//     view's expression, a whole row) can only be masked by a classifier
//     rule; with none, the statement is denied, with a reason naming the
//     column, unless the column's rule says "expressions": "allow". A COPY
//     TO STDOUT of masked data in binary format is denied; a rule with
//     "copy": "deny" denies any COPY of its table.
//   - Each result's RowDescription is resolved through the catalog: a
//     column whose table OID and attribute number name a masked table
//     column is masked with its rule's method, whatever the column is
//     called in the result. Every other column's values are checked by
//     the decision's classifier rules and masked when one matches.
//   - DataRows and COPY rows are rewritten accordingly; the statement's
//     audit record is followed by a "masking" record (mask.Summary): which
//     columns and classifiers, how many values, a keyed digest of the
//     originals and a digest of what was sent. Original values are never
//     written anywhere.

// Mask rule parameters masking reads itself (the others go to the method).
const (
	paramExpressions = "expressions" // "deny" (default) | "allow"
	paramCopy        = "copy"        // "mask" (default) | "deny"
)

// maskSet is a decision's mask rules, compiled.
type maskSet struct {
	columns     []columnRule
	classifiers []mask.ClassifierRule
	names       map[string]bool // column names of the column rules
}

type columnRule struct {
	schema, table, column string // table "" matches any table; schema "" any schema
	method                *mask.Method
	allowExpressions      bool
	denyCopy              bool
	// classifier recognises the column's values in computed columns
	// (lower(email)); "": none, such columns are denied.
	classifier string
}

// maxCompiled bounds the cache of compiled rule sets.
const maxCompiled = 256

// compiled is compileMask, cached by the rules' contents; it also returns
// that key.
func (m *masking) compiled(rules []policy.MaskRule) (*maskSet, string, error) {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.Table)
		b.WriteByte(0)
		b.WriteString(r.Column)
		b.WriteByte(0)
		b.WriteString(r.Classifier)
		b.WriteByte(0)
		b.WriteString(r.Method)
		if len(r.Params) > 0 {
			fmt.Fprint(&b, r.Params) // fmt prints maps with sorted keys
		}
		b.WriteByte(1)
	}
	key := b.String()
	m.setMu.Lock()
	set, ok := m.sets[key]
	m.setMu.Unlock()
	if ok {
		return set, key, nil
	}
	set, err := compileMask(rules)
	if err != nil {
		return nil, "", err
	}
	m.setMu.Lock()
	if m.sets == nil || len(m.sets) >= maxCompiled {
		m.sets = map[string]*maskSet{}
	}
	m.sets[key] = set
	m.setMu.Unlock()
	return set, key, nil
}

func compileMask(rules []policy.MaskRule) (*maskSet, error) {
	set := &maskSet{names: map[string]bool{}}
	for i, r := range rules {
		params := map[string]any{}
		var allowExpr, denyCopy bool
		for k, v := range r.Params {
			switch k {
			case paramExpressions:
				s, _ := v.(string)
				switch s {
				case "allow":
					allowExpr = true
				case "deny":
				default:
					return nil, fmt.Errorf("mask[%d].%s: %v, want \"allow\" or \"deny\"", i, k, v)
				}
			case paramCopy:
				s, _ := v.(string)
				switch s {
				case "deny":
					denyCopy = true
				case "mask":
				default:
					return nil, fmt.Errorf("mask[%d].%s: %v, want \"mask\" or \"deny\"", i, k, v)
				}
			default:
				params[k] = v
			}
		}
		m, err := mask.NewMethod(r.Method, params)
		if err != nil {
			return nil, fmt.Errorf("mask[%d]: %w", i, err)
		}
		if r.Classifier != "" && !mask.KnownClassifier(r.Classifier) {
			return nil, fmt.Errorf("mask[%d]: unknown classifier %q (known: %s)", i, r.Classifier, strings.Join(mask.Classifiers(), ", "))
		}
		if r.Column != "" {
			cr := columnRule{column: r.Column, method: m, allowExpressions: allowExpr, denyCopy: denyCopy, classifier: r.Classifier}
			if r.Classifier != "" {
				set.classifiers = append(set.classifiers, mask.ClassifierRule{Name: r.Classifier, Method: m})
			}
			if r.Table != "" {
				cr.table = r.Table
				if i := strings.IndexByte(r.Table, '.'); i >= 0 {
					cr.schema, cr.table = r.Table[:i], r.Table[i+1:]
				}
			}
			set.columns = append(set.columns, cr)
			set.names[r.Column] = true
			continue
		}
		set.classifiers = append(set.classifiers, mask.ClassifierRule{Name: r.Classifier, Method: m})
	}
	return set, nil
}

// rule returns the column rule for a table column, or nil.
func (s *maskSet) rule(schema, table, column string) *columnRule {
	for i := range s.columns {
		r := &s.columns[i]
		if r.column == column && (r.table == "" || r.table == table) && (r.schema == "" || r.schema == schema) {
			return r
		}
	}
	return nil
}

// namesTable reports whether a statement's table could be one a column rule
// masks, by name.
func (s *maskSet) namesTable(t sqlinfo.Table) bool {
	for _, r := range s.columns {
		if r.names(t) {
			return true
		}
	}
	return false
}

// namesAny reports whether a column rule could name one of tables.
func (s *maskSet) namesAny(tables []sqlinfo.Table) bool {
	for _, t := range tables {
		if s.namesTable(t) {
			return true
		}
	}
	return false
}

// names reports whether a statement's table could be the rule's, by name.
func (r *columnRule) names(t sqlinfo.Table) bool {
	return (r.table == "" || r.table == t.Name) && (r.schema == "" || t.Schema == "" || r.schema == t.Schema)
}

// refers reports whether out refers to a masked column name (or to whole
// rows) where its values can reach a computed column; extra are more
// masked names (view columns). It says what, and false when every rule
// for it allows expressions.
func (s *maskSet) refers(out sqlinfo.Output, extra map[string]bool) (string, bool) {
	what, _, risky := s.referred(out, extra)
	return what, risky
}

// referred is refers, also saying whether classifiers catch every masked
// value the output may carry.
func (s *maskSet) referred(out sqlinfo.Output, extra map[string]bool) (what string, caught, risky bool) {
	caught = true
	if out.WholeRow && !s.allowsExpressions("") {
		what, caught, risky = "a whole row", s.caught(""), true
	}
	for _, c := range out.Columns {
		switch {
		case extra[c] && !s.allowsExpressions(""):
			if what == "" {
				what = "view column " + c
			}
			caught, risky = caught && s.caught(""), true
		case s.names[c] && !s.allowsExpressions(c):
			if what == "" || (caught && !s.caught(c)) {
				what = "column " + c
			}
			caught, risky = caught && s.caught(c), true
		}
	}
	return what, caught, risky
}

// caught reports whether the values of column (of every masked column,
// for "") are recognised by a classifier in computed columns: each rule for
// it names one (or lets expressions through).
func (s *maskSet) caught(column string) bool {
	for _, r := range s.columns {
		if (column == "" || r.column == column) && r.classifier == "" && !r.allowExpressions {
			return false
		}
	}
	return true
}

// allowsExpressions reports whether every rule for column (every rule,
// for "") lets expressions over it through.
func (s *maskSet) allowsExpressions(column string) bool {
	for _, r := range s.columns {
		if (column == "" || r.column == column) && !r.allowExpressions {
			return false
		}
	}
	return true
}

// maskPlan is what the decision-time check learned, for the RowHook.
type maskPlan struct {
	set   *maskSet
	stmts []stmtMask // by statement index within the request
}

type stmtMask struct {
	// risky: a computed result column may carry a masked value. Set when
	// the statement could not be described.
	risky bool
	copy  *copyPlan
}

func (p *maskPlan) stmt(i int) stmtMask {
	if i < len(p.stmts) {
		return p.stmts[i]
	}
	return stmtMask{risky: true}
}

type copyPlan struct {
	format mask.CopyFormat
	fields []pgproto3.FieldDescription // nil: not described (classifiers only)
}

// masking is an engine's masking: its Decider wrapper, RowHook and
// Recorder.
type masking struct {
	e        *engine
	masker   *mask.Masker
	journal  l7.Journal
	analyzer *sqlinfo.Analyzer
	cats     catalogs

	sessions sync.Map // *l7.Session → *maskSession

	outMu   sync.Mutex
	outputs map[string]sqlinfo.Output // AnalyzeOutput by statement text

	setMu sync.Mutex
	sets  map[string]*maskSet // compiled rule sets by their contents
}

// maxOutputs bounds the cache of analyzed outputs.
const maxOutputs = 4096

// touchesMasked reports whether tables include one a column rule names, or
// a view (which may show a masked column under another name).
func (m *masking) touchesMasked(ctx context.Context, cat *catalog, set *maskSet, tables []sqlinfo.Table) (bool, error) {
	if set.namesAny(tables) {
		return true, nil
	}
	for _, t := range tables {
		oid, err := cat.oidByName(ctx, t.Schema, t.Name)
		if err != nil {
			return false, err
		}
		if oid == 0 {
			continue // not (yet) there: nothing to read from it
		}
		rel, err := cat.relation(ctx, oid)
		if err != nil {
			return false, err
		}
		if rel != nil && !rel.tableLike() {
			return true, nil
		}
	}
	return false, nil
}

// output is sqlinfo.AnalyzeOutput of sql, cached under key.
func (m *masking) output(key, sql string) (sqlinfo.Output, error) {
	m.outMu.Lock()
	out, ok := m.outputs[key]
	m.outMu.Unlock()
	if ok {
		return out, nil
	}
	out, err := sqlinfo.AnalyzeOutput(sql)
	if err != nil {
		return out, err
	}
	m.outMu.Lock()
	if m.outputs == nil || len(m.outputs) >= maxOutputs {
		m.outputs = map[string]sqlinfo.Output{}
	}
	m.outputs[key] = out
	m.outMu.Unlock()
	return out, nil
}

func newMasking(key []byte, journal l7.Journal, analyzer *sqlinfo.Analyzer) *masking {
	return &masking{masker: mask.NewMasker(key), journal: journal, analyzer: analyzer}
}

// maskSession is a session's masking state, used by its server loop.
type maskSession struct {
	cat *catalog

	res     *Result // the result actions are for
	actions []mask.Action
	cols    []mask.Column
	any     bool // some action applies

	ev       *mask.Evidence
	reported bool // the current statement had a masked decision
	row      pgproto3.DataRow
	bufs     [][]byte

	copyFields [][]byte
	copyHeader bool // the next CopyData is the header line
	copyBuf    []byte
}

func (m *masking) session(s *l7.Session) *maskSession {
	if v, ok := m.sessions.Load(s); ok {
		return v.(*maskSession)
	}
	st := &maskSession{ev: m.masker.NewEvidence()}
	m.sessions.Store(s, st)
	return st
}

// maskingDecider checks, before a statement with mask rules is forwarded,
// that what it returns can be masked (see the package comment above).
type maskingDecider struct {
	next Decider
	m    *masking
}

func (d maskingDecider) Decide(ctx context.Context, s *l7.Session, r Request) Decision {
	return d.m.check(ctx, r, d.next.Decide(ctx, s, r))
}

// check is the masking check of an allowed decision: PolicyDecider runs it
// before it asks for approvals; maskingDecider after any other Decider.
func (m *masking) check(ctx context.Context, r Request, dec Decision) Decision {
	if !dec.Allow || len(dec.Mask) == 0 || r.Kind != KindStatement {
		return dec
	}
	if r.nonBlocking {
		// Masking reads the catalog, before the statement runs and as
		// its results arrive: not on the event loop.
		return Decision{later: true}
	}
	plan, reason := m.plan(ctx, r, dec.Mask)
	if reason != "" {
		dec.Allow, dec.Reason = false, "masking: "+reason
		return dec
	}
	dec.mask = plan
	return dec
}

// plan checks r against its decision's mask rules.
func (m *masking) plan(ctx context.Context, r Request, rules []policy.MaskRule) (*maskPlan, string) {
	set, setKey, err := m.compiled(rules)
	if err != nil {
		return nil, "the policy's mask rules are invalid: " + err.Error()
	}
	if r.Protocol == ProtocolFunction {
		return nil, "the result of a FunctionCall cannot be masked"
	}
	stmts, err := m.analyzer.Analyze(r.SQL)
	if err != nil {
		return nil, "statement could not be judged: " + err.Error()
	}
	cat := m.cats.get(m.e, r.Facts.Database, r.Facts.UpstreamUser)
	// A request of statements without COPY is checked once per rule set
	// and fingerprints, until the catalog is read again.
	key := setKey
	for _, st := range stmts {
		if st.Fingerprint == "" || (len(st.Commands) > 0 && st.Commands[0] == "COPY") {
			key = ""
			break
		}
		key += "\x00" + st.Fingerprint
	}
	if key != "" {
		if p, reason, ok := cat.plan(key); ok {
			return p, reason
		}
	}
	plan, reason, failed := m.planStatements(ctx, cat, set, stmts)
	if key != "" && !failed {
		cat.keepPlan(key, plan, reason)
	}
	return plan, reason
}

// planStatements checks each statement of a request; failed reports a
// catalog that could not be read (the outcome is not to be kept).
func (m *masking) planStatements(ctx context.Context, cat *catalog, set *maskSet, stmts []sqlinfo.Statement) (_ *maskPlan, _ string, failed bool) {
	plan := &maskPlan{set: set, stmts: make([]stmtMask, len(stmts))}
	for i, st := range stmts {
		isCopy := len(st.Commands) > 0 && st.Commands[0] == "COPY"
		if !isCopy && len(set.columns) == 0 {
			continue // classifiers only: every value is checked anyway
		}
		sm := &plan.stmts[i]
		if !isCopy {
			// Only a statement that reads a masked table or a view can
			// carry masked values into a computed column.
			touches, err := m.touchesMasked(ctx, cat, set, st.Tables)
			if err != nil {
				if set.namesAny(st.Tables) {
					return nil, "cannot tell which result columns hold masked values: " + err.Error(), true
				}
				sm.risky, failed = true, true
				continue
			}
			if !touches {
				continue
			}
		}
		// Constants change neither the result's columns nor where they
		// come from: all but COPY (whose options are constants) are
		// analyzed and described once per fingerprint.
		key := st.SQL
		if !isCopy && st.Fingerprint != "" {
			key = "fp:" + st.Fingerprint
		}
		out, err := m.output(key, st.SQL)
		if err != nil {
			return nil, "statement could not be judged: " + err.Error(), false
		}
		if c := out.Copy; c != nil {
			for _, t := range st.Tables {
				if !c.ToStdout && set.namesTable(t) {
					return nil, fmt.Sprintf("COPY of %s to a server file or program cannot be masked", t.Name), false
				}
				for _, r := range set.columns {
					if r.denyCopy && r.names(t) {
						return nil, fmt.Sprintf("COPY of table %s is denied by the policy's mask rule for column %s", t.Name, r.column), false
					}
				}
			}
			if !c.ToStdout {
				continue
			}
			if c.Format == "binary" {
				return nil, "COPY ... (FORMAT binary) of a result with masked values is not supported: use text or csv", false
			}
			sm.copy = &copyPlan{format: copyFormat(c)}
		}
		if len(set.columns) == 0 || out.Query == "" {
			continue
		}
		reason, err := m.checkStatement(ctx, cat, set, key, st, out, sm)
		if err != nil {
			if set.namesAny(st.Tables) {
				return nil, "cannot tell which result columns hold masked values: " + err.Error(), true
			}
			_, sm.risky = set.refers(out, nil)
			failed = true
			continue
		}
		if reason != "" {
			if len(stmts) > 1 {
				reason = fmt.Sprintf("statement %d of %d: %s (none of them ran)", i+1, len(stmts), reason)
			}
			return nil, reason, false
		}
	}
	return plan, "", failed
}

// checkStatement describes one statement and finds the computed result columns that
// may carry masked values: with no classifier to catch them, it returns why
// the statement is denied.
func (m *masking) checkStatement(ctx context.Context, cat *catalog, set *maskSet, key string, st sqlinfo.Statement, out sqlinfo.Output, sm *stmtMask) (string, error) {
	fields, err := cat.describe(ctx, key, out.Query)
	if err != nil {
		return "", err
	}
	if sm.copy != nil {
		sm.copy.fields = make([]pgproto3.FieldDescription, len(fields))
		for i, f := range fields {
			sm.copy.fields[i] = pgproto3.FieldDescription{
				Name: []byte(f.Name), TableOID: f.TableOID, TableAttributeNumber: f.TableAttributeNumber,
				DataTypeOID: f.DataTypeOID, DataTypeSize: f.DataTypeSize, TypeModifier: f.TypeModifier,
			}
		}
	}
	// Columns of views the statement reads that hold masked values count
	// as masked names.
	extra := map[string]bool{}
	for _, t := range st.Tables {
		oid, err := cat.oidByName(ctx, t.Schema, t.Name)
		if err != nil {
			return "", err
		}
		rel, err := cat.relation(ctx, oid)
		if err != nil {
			return "", err
		}
		if rel == nil || rel.tableLike() {
			continue
		}
		for attnum, name := range rel.columns {
			c, err := m.resolve(ctx, cat, set, oid, attnum, 0)
			if err != nil {
				return "", err
			}
			if c.rule != nil || c.risky {
				extra[name] = true
			}
		}
	}
	what, caught, refers := set.referred(out, extra)
	for _, f := range fields {
		risky, whole := false, false
		if f.TableOID == 0 {
			risky = refers
		} else {
			c, err := m.resolve(ctx, cat, set, f.TableOID, int16(f.TableAttributeNumber), 0)
			if err != nil {
				return "", err
			}
			risky, whole = c.risky && !set.allowsExpressions(""), c.wholeRow
			caught = caught && set.caught("")
			switch {
			case risky && whole:
				what = "the whole row of " + c.view
			case risky && what == "":
				what = "a masked column of view " + c.view
			}
		}
		if !risky {
			continue
		}
		sm.risky = true
		if whole || !textLike(f.DataTypeOID) {
			return fmt.Sprintf("result column %q carries %s, which holds masked values, in a form no classifier can read (type %d); select the columns themselves", f.Name, what, f.DataTypeOID), nil
		}
		if !caught {
			return fmt.Sprintf("result column %q is computed from %s, which is masked; tollgate masks a masked column as it is (select it without an expression), or in computed columns when its mask rule names a classifier", f.Name, what), nil
		}
	}
	return "", nil
}

// resolved is what a result column is, through views.
type resolved struct {
	label    string      // schema.table.column of a table column
	rule     *columnRule // its mask rule; nil: not masked
	risky    bool        // computed (in a view) from masked values, or a whole row holding some
	view     string      // the view that computes it
	wholeRow bool        // a whole row (attribute 0): a composite no classifier reads
}

// maxViewDepth bounds views over views followed.
const maxViewDepth = 8

// resolve finds what column attnum of relation oid is: a table's own
// column, or a view's, followed to the table column it shows or found
// computed.
func (m *masking) resolve(ctx context.Context, cat *catalog, set *maskSet, oid uint32, attnum int16, depth int) (resolved, error) {
	rel, err := cat.relation(ctx, oid)
	if err != nil {
		return resolved{}, err
	}
	if rel == nil {
		return resolved{risky: true, view: fmt.Sprintf("relation %d", oid)}, nil
	}
	name := rel.columns[attnum]
	if attnum == 0 { // the whole row: as masked as its most masked column
		for a := range rel.columns {
			c, err := m.resolve(ctx, cat, set, oid, a, depth)
			if err != nil {
				return resolved{}, err
			}
			if c.rule != nil || c.risky {
				return resolved{risky: true, wholeRow: true, view: rel.schema + "." + rel.name}, nil
			}
		}
		return resolved{wholeRow: true}, nil
	}
	if rel.tableLike() {
		return resolved{label: rel.schema + "." + rel.name + "." + name, rule: set.rule(rel.schema, rel.name, name)}, nil
	}
	view := rel.schema + "." + rel.name
	if rel.kind != 'v' || depth >= maxViewDepth {
		return resolved{risky: true, view: view}, nil
	}
	fields, out, err := cat.view(ctx, oid)
	if err != nil {
		return resolved{}, err
	}
	if i := int(attnum) - 1; i >= 0 && i < len(fields) && fields[i].TableOID != 0 {
		return m.resolve(ctx, cat, set, fields[i].TableOID, int16(fields[i].TableAttributeNumber), depth+1)
	}
	_, risky := set.refers(out, nil)
	return resolved{risky: risky, view: view}, nil
}

// textLike reports the string types a classifier reads whole values of.
func textLike(oid uint32) bool {
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UnknownOID:
		return true
	}
	return false
}

func copyFormat(c *sqlinfo.Copy) mask.CopyFormat {
	f := mask.CopyFormat{CSV: c.Format == "csv", Header: c.Header}
	if c.Delimiter != "" {
		f.Delimiter = c.Delimiter[0]
	}
	if c.Quote != "" {
		f.Quote = c.Quote[0]
	}
	if c.Escape != "" {
		f.Escape = c.Escape[0]
	}
	f.Null = c.Null
	return f
}
