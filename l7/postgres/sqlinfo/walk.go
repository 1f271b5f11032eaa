package sqlinfo

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The walker visits every node of a statement's parse tree through protobuf
// reflection, so node types it has no special case for are still searched
// for relations and function calls. Special cases exist only where a node
// decides how its children are used: which relation is the target of a DML
// statement, which sub-tree is a definition that runs later, where common
// table expressions are in scope.

var (
	// nodeOneof is the oneof of pg_query.Node that holds the actual node.
	nodeOneof = (&pg_query.Node{}).ProtoReflect().Descriptor().Oneofs().ByName("node")
	// messageFields holds, per message type of the parse tree, its fields
	// that can hold nodes, in declaration order.
	messageFields = func() map[protoreflect.FullName][]protoreflect.FieldDescriptor {
		m := map[protoreflect.FullName][]protoreflect.FieldDescriptor{}
		msgs := pg_query.File_pg_query_proto.Messages()
		for i := 0; i < msgs.Len(); i++ {
			md := msgs.Get(i)
			fields := md.Fields()
			var fs []protoreflect.FieldDescriptor
			for j := 0; j < fields.Len(); j++ {
				if fd := fields.Get(j); fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
					fs = append(fs, fd)
				}
			}
			m[md.FullName()] = fs
		}
		return m
	}()
)

// frame is how the sub-tree being walked uses the relations it names.
type frame struct {
	access string
	// def: inside a definition that runs later (a view's query, a rule's
	// actions, a function's SQL body, a policy's expressions). Its relations
	// are references; its statements run nothing now.
	def bool
}

func (f frame) with(access string) frame { return frame{access: access, def: f.def} }
func (f frame) definition() frame        { return frame{access: AccessReference, def: true} }

// fromRef is a relation read in some FROM clause, kept to apply FOR UPDATE.
type fromRef struct {
	schema, name, alias string
}

type walker struct {
	commands  []string
	tables    []Table
	functions []string
	tableSet  map[Table]struct{}  // built once tables outgrow a linear scan
	funcSet   map[string]struct{} // likewise for functions
	ctes      []string            // common table expression names in scope, innermost last
	inScope   map[string]int      // how many times each name is in ctes
	refs      []fromRef

	writes bool // a data-modifying statement runs (DML, also in WITH; SELECT INTO)
	locks  bool // rows are locked (FOR UPDATE/SHARE)
	impure bool // a function outside pureFunctions is called

	collect bool      // record the constants visited in consts
	consts  []constAt // for the literal cache; no fact depends on them
}

// constAt is an A_Const the walk visited: its offset in the text and the
// class of its value (see holeClass).
type constAt struct {
	location int32
	class    byte
}

// describe derives a Statement's facts (all but SQL and Fingerprint) from
// its parse tree.
func describe(stmt *pg_query.Node) Statement {
	st, _ := describeConsts(stmt, false)
	return st
}

// describeConsts is describe that, if collect is set, also returns the
// A_Const nodes with a value it visited (not necessarily all of the tree's:
// it does not descend into every sub-tree).
func describeConsts(stmt *pg_query.Node, collect bool) (Statement, []constAt) {
	w := walker{collect: collect}
	w.command(commandTag(stmt))
	w.visit(stmt.ProtoReflect(), frame{access: topAccess(stmt)})
	st := Statement{
		Commands:  w.commands,
		Tables:    w.tables,
		Functions: w.functions,
		ReadOnly:  w.readOnly(stmt),
	}
	// Empty lists, not null, in the policy input; capacity trimmed so that an
	// append by a caller never writes into a cached statement.
	if st.Tables == nil {
		st.Tables = []Table{}
	}
	if st.Functions == nil {
		st.Functions = []string{}
	}
	st.Commands = st.Commands[:len(st.Commands):len(st.Commands)]
	st.Tables = st.Tables[:len(st.Tables):len(st.Tables)]
	st.Functions = st.Functions[:len(st.Functions):len(st.Functions)]
	return st, w.consts
}

// topAccess is how a statement uses the relations it names when no node
// inside it says otherwise.
func topAccess(stmt *pg_query.Node) string {
	switch stmt.GetNode().(type) {
	case *pg_query.Node_TruncateStmt:
		return AccessTruncate
	case *pg_query.Node_LockStmt:
		return AccessLock
	case *pg_query.Node_VacuumStmt, *pg_query.Node_ClusterStmt, *pg_query.Node_ReindexStmt,
		*pg_query.Node_RefreshMatViewStmt:
		return AccessMaintenance
	case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt,
		*pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt, *pg_query.Node_ExplainStmt,
		*pg_query.Node_DeclareCursorStmt, *pg_query.Node_PrepareStmt, *pg_query.Node_ExecuteStmt,
		*pg_query.Node_CallStmt, *pg_query.Node_CopyStmt:
		return AccessSelect
	}
	return AccessDDL
}

func (w *walker) visit(m protoreflect.Message, f frame) {
	if !m.IsValid() {
		return
	}
	switch n := m.Interface().(type) {
	case *pg_query.Node:
		if fd := m.WhichOneof(nodeOneof); fd != nil {
			w.visit(m.Get(fd).Message(), f)
		}
		return
	case *pg_query.RangeVar:
		w.read(n, f)
		return
	case *pg_query.A_Const:
		// A constant decides no fact; it is only noted for the literal
		// cache. (Its value nodes, Integer, String and the like, hold nothing
		// the walk looks for.)
		if class := constClass(n); w.collect && class != classComment {
			w.consts = append(w.consts, constAt{location: n.GetLocation(), class: class})
		}
		return
	case *pg_query.FuncCall:
		w.call(n)
	case *pg_query.SelectStmt:
		w.selectStmt(m, n, f)
		return
	case *pg_query.InsertStmt:
		w.dml("INSERT", f)
		base := w.with(n.GetWithClause(), f.with(AccessSelect))
		w.addTable(n.GetRelation(), AccessInsert, f)
		if n.GetOnConflictClause().GetAction() == pg_query.OnConflictAction_ONCONFLICT_UPDATE {
			w.addTable(n.GetRelation(), AccessUpdate, f)
		}
		w.children(m, f.with(AccessSelect), "relation", "with_clause")
		w.endScope(base)
		return
	case *pg_query.UpdateStmt:
		w.dml("UPDATE", f)
		base := w.with(n.GetWithClause(), f.with(AccessSelect))
		w.addTable(n.GetRelation(), AccessUpdate, f)
		w.children(m, f.with(AccessSelect), "relation", "with_clause")
		w.endScope(base)
		return
	case *pg_query.DeleteStmt:
		w.dml("DELETE", f)
		base := w.with(n.GetWithClause(), f.with(AccessSelect))
		w.addTable(n.GetRelation(), AccessDelete, f)
		w.children(m, f.with(AccessSelect), "relation", "with_clause")
		w.endScope(base)
		return
	case *pg_query.MergeStmt:
		w.dml("MERGE", f)
		base := w.with(n.GetWithClause(), f.with(AccessSelect))
		w.mergeTarget(n, f)
		w.children(m, f.with(AccessSelect), "relation", "with_clause")
		w.endScope(base)
		return
	case *pg_query.CopyStmt:
		access := AccessCopyTo
		if n.GetIsFrom() {
			access = AccessCopyFrom
			w.write(f)
		}
		w.addTable(n.GetRelation(), access, f)
		w.carried(n.GetQuery(), f.with(AccessSelect))
		w.children(m, f.with(AccessSelect), "relation", "query")
		return
	case *pg_query.ExplainStmt:
		w.carried(n.GetQuery(), f.with(AccessSelect))
		return
	case *pg_query.DeclareCursorStmt:
		w.carried(n.GetQuery(), f.with(AccessSelect))
		return
	case *pg_query.PrepareStmt:
		w.carried(n.GetQuery(), f.with(AccessSelect))
		return
	case *pg_query.CreateTableAsStmt:
		w.write(f)
		w.addTable(n.GetInto().GetRel(), AccessDDL, f)
		q := f.with(AccessSelect)
		if n.GetInto().GetSkipData() {
			q = f.definition() // WITH NO DATA: the query is only a definition
		}
		w.carried(n.GetQuery(), q)
		return
	case *pg_query.ViewStmt:
		w.addTable(n.GetView(), AccessDDL, f)
		w.children(m, f.definition(), "view")
		return
	case *pg_query.RuleStmt:
		w.addTable(n.GetRelation(), AccessDDL, f)
		w.children(m, f.definition(), "relation")
		return
	case *pg_query.CreateFunctionStmt:
		w.children(m, f.definition())
		return
	case *pg_query.CreatePolicyStmt:
		w.addTable(n.GetTable(), AccessDDL, f)
		w.children(m, f.definition(), "table")
		return
	case *pg_query.AlterPolicyStmt:
		w.addTable(n.GetTable(), AccessDDL, f)
		w.children(m, f.definition(), "table")
		return
	case *pg_query.CreateTrigStmt:
		w.addTable(n.GetRelation(), AccessDDL, f)
		w.addTable(n.GetConstrrel(), AccessReference, f)
		w.children(m, f.definition(), "relation", "constrrel")
		return
	case *pg_query.Constraint:
		w.addTable(n.GetPktable(), AccessReference, f)
		w.children(m, f, "pktable")
		return
	case *pg_query.TableLikeClause:
		w.addTable(n.GetRelation(), AccessReference, f)
		return
	case *pg_query.DropStmt:
		for _, obj := range n.GetObjects() {
			w.namedObject(n.GetRemoveType(), obj, f)
		}
		return
	case *pg_query.CommentStmt:
		w.namedObject(n.GetObjtype(), n.GetObject(), f)
		return
	case *pg_query.SecLabelStmt:
		w.namedObject(n.GetObjtype(), n.GetObject(), f)
		return
	}
	w.children(m, f)
}

// children visits the node-holding fields of m, but those named in skip.
func (w *walker) children(m protoreflect.Message, f frame, skip ...protoreflect.Name) {
	eachChild(m, skip, func(c protoreflect.Message) { w.visit(c, f) })
}

// eachChild calls fn with each node held by a field of m, but by the
// fields named in skip.
func eachChild(m protoreflect.Message, skip []protoreflect.Name, fn func(protoreflect.Message)) {
next:
	for _, fd := range messageFields[m.Descriptor().FullName()] {
		for _, s := range skip {
			if fd.Name() == s {
				continue next
			}
		}
		if !m.Has(fd) {
			continue
		}
		if fd.IsList() {
			l := m.Get(fd).List()
			for i := 0; i < l.Len(); i++ {
				fn(l.Get(i).Message())
			}
			continue
		}
		fn(m.Get(fd).Message())
	}
}

func (w *walker) visitNode(n *pg_query.Node, f frame) {
	if n != nil {
		w.visit(n.ProtoReflect(), f)
	}
}

// with walks a WITH clause and brings its names into scope; the caller
// ends the scope with w.endScope(base) after walking the body.
func (w *walker) with(wc *pg_query.WithClause, f frame) (base int) {
	base = len(w.ctes)
	if wc == nil {
		return base
	}
	if wc.GetRecursive() {
		// Every name is visible in every query of a WITH RECURSIVE.
		for _, c := range wc.GetCtes() {
			if cte := c.GetCommonTableExpr(); cte != nil {
				w.scope(cte.GetCtename())
			}
		}
	}
	for _, c := range wc.GetCtes() {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		w.visitNode(cte.GetCtequery(), f)
		if !wc.GetRecursive() {
			// Visible to the later queries and the body only.
			w.scope(cte.GetCtename())
		}
	}
	return base
}

func (w *walker) scope(name string) {
	if w.inScope == nil {
		w.inScope = map[string]int{}
	}
	w.ctes = append(w.ctes, name)
	w.inScope[name]++
}

func (w *walker) endScope(base int) {
	for _, name := range w.ctes[base:] {
		w.inScope[name]--
	}
	w.ctes = w.ctes[:base]
}

func (w *walker) isCTE(name string) bool { return w.inScope[name] > 0 }

func (w *walker) selectStmt(m protoreflect.Message, n *pg_query.SelectStmt, f frame) {
	f = f.with(AccessSelect)
	base := w.with(n.GetWithClause(), f)
	defer w.endScope(base)
	if into := n.GetIntoClause(); into != nil {
		w.write(f)
		w.addTable(into.GetRel(), AccessDDL, f)
	}
	// Locking clauses name FROM items (tables or aliases): they are not
	// relations of their own.
	if len(n.GetLockingClause()) == 0 || f.def {
		w.children(m, f, "with_clause", "into_clause", "locking_clause")
		return
	}
	w.locks = true
	start := len(w.refs)
	for _, item := range n.GetFromClause() {
		w.visitNode(item, f)
	}
	w.lockFrom(start, n.GetLockingClause())
	w.children(m, f, "with_clause", "into_clause", "locking_clause", "from_clause")
}

// lockFrom adds lock access for the relations read in a FROM clause (those
// recorded in w.refs since start) that a FOR UPDATE/SHARE clause covers: all
// of them, or those its OF list names. An OF name that is no relation's
// alias names a sub-query or join: then all are locked.
func (w *walker) lockFrom(start int, clauses []*pg_query.Node) {
	refs := w.refs[start:]
	all := false
	named := map[string]bool{}
	for _, c := range clauses {
		rels := c.GetLockingClause().GetLockedRels()
		if len(rels) == 0 {
			all = true
		}
		for _, r := range rels {
			named[r.GetRangeVar().GetRelname()] = false
		}
	}
	for _, r := range refs {
		if _, ok := named[r.alias]; ok {
			named[r.alias] = true
		}
	}
	for _, found := range named {
		all = all || !found
	}
	for _, r := range refs {
		if _, ok := named[r.alias]; all || ok {
			w.add(Table{Schema: r.schema, Name: r.name, Access: AccessLock})
		}
	}
}

func (w *walker) mergeTarget(n *pg_query.MergeStmt, f frame) {
	acted := false
	for _, c := range n.GetMergeWhenClauses() {
		switch c.GetMergeWhenClause().GetCommandType() {
		case pg_query.CmdType_CMD_INSERT:
			w.addTable(n.GetRelation(), AccessInsert, f)
			acted = true
		case pg_query.CmdType_CMD_UPDATE:
			w.addTable(n.GetRelation(), AccessUpdate, f)
			acted = true
		case pg_query.CmdType_CMD_DELETE:
			w.addTable(n.GetRelation(), AccessDelete, f)
			acted = true
		}
	}
	if !acted {
		// Only DO NOTHING: the target is still read.
		w.addTable(n.GetRelation(), AccessSelect, f)
	}
}

// carried walks the statement a wrapper (EXPLAIN, COPY, PREPARE, DECLARE,
// CREATE TABLE AS) carries and adds its command tag.
func (w *walker) carried(q *pg_query.Node, f frame) {
	if q == nil {
		return
	}
	if !f.def {
		w.command(commandTag(q))
	}
	w.visitNode(q, f)
}

// dml notes a data-modifying statement, unless it is only a definition.
func (w *walker) dml(tag string, f frame) {
	if !f.def {
		w.command(tag)
		w.writes = true
	}
}

func (w *walker) write(f frame) {
	if !f.def {
		w.writes = true
	}
}

// read records a relation that a query reads (or, in DDL, names), unless
// the name is a common table expression in scope.
func (w *walker) read(rv *pg_query.RangeVar, f frame) {
	if rv.GetSchemaname() == "" && rv.GetCatalogname() == "" && w.isCTE(rv.GetRelname()) {
		return
	}
	w.addTable(rv, f.access, f)
	if f.access == AccessSelect && !f.def {
		alias := rv.GetRelname()
		if a := rv.GetAlias().GetAliasname(); a != "" {
			alias = a
		}
		w.refs = append(w.refs, fromRef{schema: rv.GetSchemaname(), name: rv.GetRelname(), alias: alias})
	}
}

func (w *walker) addTable(rv *pg_query.RangeVar, access string, f frame) {
	if rv == nil || rv.GetRelname() == "" {
		return
	}
	if f.def {
		access = AccessReference
	}
	w.add(Table{Schema: rv.GetSchemaname(), Name: rv.GetRelname(), Access: access})
}

// linearMax is how many entries a list holds before duplicates are found
// through a map instead of a scan.
const linearMax = 16

func (w *walker) add(t Table) {
	if w.tableSet == nil {
		for _, have := range w.tables {
			if have == t {
				return
			}
		}
		w.tables = append(w.tables, t)
		if len(w.tables) > linearMax {
			w.tableSet = make(map[Table]struct{}, 2*len(w.tables))
			for _, have := range w.tables {
				w.tableSet[have] = struct{}{}
			}
		}
		return
	}
	if _, dup := w.tableSet[t]; !dup {
		w.tableSet[t] = struct{}{}
		w.tables = append(w.tables, t)
	}
}

func (w *walker) command(tag string) {
	for _, c := range w.commands {
		if c == tag {
			return
		}
	}
	w.commands = append(w.commands, tag)
}

// call records a function call.
func (w *walker) call(fc *pg_query.FuncCall) {
	var b strings.Builder
	for i, part := range fc.GetFuncname() {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(part.GetString_().GetSval())
	}
	exact := b.String()
	if fc.GetFuncformat() == pg_query.CoercionForm_COERCE_SQL_SYNTAX {
		// EXTRACT, SUBSTRING ... FROM, AT TIME ZONE and the like: the
		// grammar names pg_catalog; the statement did not.
		exact = strings.TrimPrefix(exact, "pg_catalog.")
	}
	// The allowlist is checked on the name as PostgreSQL resolves it: a
	// quoted "Lower" is not lower.
	if !isPure(exact) {
		w.impure = true
	}
	name := strings.ToLower(exact)
	if w.funcSet == nil {
		for _, have := range w.functions {
			if have == name {
				return
			}
		}
		w.functions = append(w.functions, name)
		if len(w.functions) > linearMax {
			w.funcSet = make(map[string]struct{}, 2*len(w.functions))
			for _, have := range w.functions {
				w.funcSet[have] = struct{}{}
			}
		}
		return
	}
	if _, dup := w.funcSet[name]; !dup {
		w.funcSet[name] = struct{}{}
		w.functions = append(w.functions, name)
	}
}

// namedObject records the relation a DROP, COMMENT or SECURITY LABEL names
// by a list of names rather than a RangeVar.
func (w *walker) namedObject(t pg_query.ObjectType, obj *pg_query.Node, f frame) {
	var parts []string
	switch {
	case obj.GetList() != nil:
		for _, item := range obj.GetList().GetItems() {
			parts = append(parts, item.GetString_().GetSval())
		}
	case obj.GetString_() != nil:
		parts = []string{obj.GetString_().GetSval()}
	default:
		return
	}
	switch t {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW, pg_query.ObjectType_OBJECT_MATVIEW,
		pg_query.ObjectType_OBJECT_INDEX, pg_query.ObjectType_OBJECT_SEQUENCE, pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
	case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT, pg_query.ObjectType_OBJECT_TRIGGER,
		pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_POLICY:
		// The last name is the column, constraint, trigger, rule or policy
		// of the relation the others name.
		if len(parts) < 2 {
			return
		}
		parts = parts[:len(parts)-1]
	default:
		return
	}
	rv := &pg_query.RangeVar{Relname: parts[len(parts)-1]}
	if len(parts) >= 2 {
		rv.Schemaname = parts[len(parts)-2]
	}
	w.addTable(rv, AccessDDL, f)
}

// readOnly reports whether stmt cannot change data, given what the walk
// found anywhere in it.
func (w *walker) readOnly(stmt *pg_query.Node) bool {
	switch s := stmt.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		return !w.writes && !w.locks && !w.impure
	case *pg_query.Node_VariableShowStmt, *pg_query.Node_FetchStmt, *pg_query.Node_ClosePortalStmt,
		*pg_query.Node_DeallocateStmt:
		return true
	case *pg_query.Node_TransactionStmt:
		switch s.TransactionStmt.GetKind() {
		case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE, pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED,
			pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
			return false
		}
		return true
	case *pg_query.Node_ExplainStmt:
		if explainAnalyzes(s.ExplainStmt) {
			return w.readOnly(s.ExplainStmt.GetQuery())
		}
		// Planning runs nothing, but may fold calls of functions declared
		// immutable: keep the function rule.
		return !w.impure
	case *pg_query.Node_DeclareCursorStmt:
		return w.readOnly(s.DeclareCursorStmt.GetQuery())
	case *pg_query.Node_PrepareStmt:
		return w.readOnly(s.PrepareStmt.GetQuery())
	case *pg_query.Node_CopyStmt:
		c := s.CopyStmt
		if c.GetIsFrom() || c.GetIsProgram() || c.GetFilename() != "" {
			return false // writes rows, a server file, or runs a program
		}
		if c.GetQuery() != nil {
			return w.readOnly(c.GetQuery())
		}
		return !w.impure
	}
	return false
}

// explainAnalyzes reports whether EXPLAIN runs its statement, reading the
// ANALYZE option as defGetBoolean does; the last one wins. An argument it
// cannot read counts as true.
func explainAnalyzes(e *pg_query.ExplainStmt) bool {
	analyze := false
	for _, o := range e.GetOptions() {
		d := o.GetDefElem()
		if d == nil || !strings.EqualFold(d.GetDefname(), "analyze") {
			continue
		}
		analyze = true
		switch a := d.GetArg().GetNode().(type) {
		case *pg_query.Node_Boolean:
			analyze = a.Boolean.GetBoolval()
		case *pg_query.Node_Integer:
			analyze = a.Integer.GetIval() != 0
		case *pg_query.Node_String_:
			switch strings.ToLower(a.String_.GetSval()) {
			case "false", "off", "no", "0":
				analyze = false
			}
		}
	}
	return analyze
}
