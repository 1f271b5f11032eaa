package sqlinfo

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Output is what masking needs to know about the rows one statement returns.
type Output struct {
	// Columns holds the names of the columns whose values can reach a
	// computed result column, once each, as PostgreSQL folds them: the last
	// part of each column reference inside an output expression
	// (lower(c.email) gives "email"), and of every column reference in a
	// sub-query's, common table expression's or set operation's output,
	// in a FROM function or VALUES list; "*" for a star there. A column the
	// outermost query outputs as it is (SELECT email, c.email AS e) is not
	// listed: PostgreSQL reports such a result column as the table's own,
	// and it is masked as such.
	Columns []string
	// WholeRow reports a whole-row reference (SELECT c FROM t c,
	// row_to_json(c)) or a star inside an expression or sub-query: every
	// column of some relation can reach a computed result column.
	WholeRow bool
	// Query is the statement whose result columns are the output's: the
	// statement itself, or the query a COPY, DECLARE CURSOR or PREPARE
	// carries ("SELECT cols FROM rel" for COPY rel TO); "" when the
	// statement returns no rows (DDL, SET, DML without RETURNING, ...).
	Query string
	// Copy describes a COPY ... TO; nil for other statements.
	Copy *Copy
}

// Copy is a COPY ... TO STDOUT and its options.
type Copy struct {
	// Format is "text", "csv" or "binary".
	Format string
	// Delimiter, Null, Quote and Escape are the options the statement
	// sets; "" when it leaves them to PostgreSQL's defaults.
	Delimiter, Null, Quote, Escape string
	// Header reports HEADER (CSV and, since PostgreSQL 15, text: one line
	// of column names first).
	Header bool
	// ToStdout is false for COPY TO a server file or program.
	ToStdout bool
}

// AnalyzeOutput parses one statement (the caps of the default Limits apply)
// and reports what it outputs.
func AnalyzeOutput(sql string) (Output, error) {
	if err := check(sql, Limits{}.withDefaults()); err != nil {
		return Output{}, err
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return Output{}, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	switch n := len(tree.Stmts); {
	case n == 0:
		return Output{}, ErrEmpty
	case n > 1:
		return Output{}, fmt.Errorf("%w: %d statements", ErrMultiple, n)
	}
	stmt := tree.Stmts[0].Stmt
	var out Output
	c := columnCollector{seen: map[string]bool{}, rels: map[string]bool{}}
	c.statement(stmt, &out)
	for _, name := range c.bare {
		if c.rels[name] { // a FROM item's name alone: its whole row
			out.WholeRow = true
		}
	}

	switch s := stmt.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		if s.SelectStmt.GetIntoClause() == nil {
			out.Query = sql
		}
	case *pg_query.Node_InsertStmt:
		if len(s.InsertStmt.GetReturningList()) > 0 {
			out.Query = sql
		}
	case *pg_query.Node_UpdateStmt:
		if len(s.UpdateStmt.GetReturningList()) > 0 {
			out.Query = sql
		}
	case *pg_query.Node_DeleteStmt:
		if len(s.DeleteStmt.GetReturningList()) > 0 {
			out.Query = sql
		}
	case *pg_query.Node_ExplainStmt:
		// EXPLAIN prints a plan, not rows; EXPLAIN ANALYZE runs the
		// query but prints no values from it either.
	case *pg_query.Node_DeclareCursorStmt:
		out.Query, err = deparse(tree.Version, s.DeclareCursorStmt.GetQuery())
	case *pg_query.Node_PrepareStmt:
		out.Query, err = deparse(tree.Version, s.PrepareStmt.GetQuery())
	case *pg_query.Node_CopyStmt:
		c := s.CopyStmt
		if c.GetIsFrom() {
			break
		}
		out.Copy = copyOptions(c)
		if q := c.GetQuery(); q != nil {
			out.Query, err = deparse(tree.Version, q)
			break
		}
		out.Query, err = copyQuery(tree.Version, c)
	}
	if err != nil {
		return Output{}, fmt.Errorf("sqlinfo: %w", err)
	}
	return out, nil
}

// columnCollector gathers the column references whose values can reach a
// computed result column.
type columnCollector struct {
	seen map[string]bool // names in Output.Columns
	rels map[string]bool // relation names and aliases of FROM items
	bare []string        // one-part references: a column, or a whole row
}

// statement collects from the top statement: the bare columns of its
// output list are skipped (see Output.Columns).
func (c *columnCollector) statement(stmt *pg_query.Node, out *Output) {
	var targets []*pg_query.Node
	var m protoreflect.Message
	var skip []protoreflect.Name
	switch s := stmt.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		if s.SelectStmt.GetOp() == pg_query.SetOperation_SETOP_NONE {
			targets, m, skip = s.SelectStmt.GetTargetList(), s.SelectStmt.ProtoReflect(), []protoreflect.Name{"target_list"}
		}
	case *pg_query.Node_InsertStmt:
		targets, m, skip = s.InsertStmt.GetReturningList(), s.InsertStmt.ProtoReflect(), []protoreflect.Name{"returning_list"}
	case *pg_query.Node_UpdateStmt:
		targets, m, skip = s.UpdateStmt.GetReturningList(), s.UpdateStmt.ProtoReflect(), []protoreflect.Name{"returning_list"}
	case *pg_query.Node_DeleteStmt:
		targets, m, skip = s.DeleteStmt.GetReturningList(), s.DeleteStmt.ProtoReflect(), []protoreflect.Name{"returning_list"}
	}
	if m == nil {
		c.visit(stmt.ProtoReflect(), out, false)
		return
	}
	for _, t := range targets {
		val := t.GetResTarget().GetVal()
		if ref := val.GetColumnRef(); ref != nil {
			// A star here expands to columns of their own (of a sub-query's
			// output, collected there).
			if f := ref.GetFields(); len(f) == 1 && !isStar(ref) {
				c.bare = append(c.bare, f[0].GetString_().GetSval())
			}
			continue
		}
		c.visit(val.ProtoReflect(), out, true)
	}
	c.fields(m, out, false, skip...)
}

func isStar(ref *pg_query.ColumnRef) bool {
	f := ref.GetFields()
	return len(f) > 0 && f[len(f)-1].GetAStar() != nil
}

// visit collects under m; output says whether values there reach the
// result.
func (c *columnCollector) visit(m protoreflect.Message, out *Output, output bool) {
	if !m.IsValid() {
		return
	}
	switch n := m.Interface().(type) {
	case *pg_query.Node:
		if fd := m.WhichOneof(nodeOneof); fd != nil {
			c.visit(m.Get(fd).Message(), out, output)
		}
		return
	case *pg_query.RangeVar:
		c.rels[n.GetRelname()] = true
		if a := n.GetAlias().GetAliasname(); a != "" {
			c.rels[a] = true
		}
		return
	case *pg_query.Alias:
		c.rels[n.GetAliasname()] = true
		return
	case *pg_query.SelectStmt:
		// A nested query: its output list and VALUES reach whatever
		// uses it.
		c.fields(m, out, false, "target_list", "values_lists")
		for _, t := range n.GetTargetList() {
			c.visit(t.ProtoReflect(), out, true)
		}
		for _, v := range n.GetValuesLists() {
			c.visit(v.ProtoReflect(), out, true)
		}
		return
	case *pg_query.RangeFunction:
		c.fields(m, out, true)
		return
	case *pg_query.ColumnRef:
		if !output {
			return
		}
		fields := n.GetFields()
		if len(fields) == 0 {
			return
		}
		name := "*"
		if isStar(n) {
			out.WholeRow = true
		} else {
			name = fields[len(fields)-1].GetString_().GetSval()
			if len(fields) == 1 {
				c.bare = append(c.bare, name)
			}
		}
		if !c.seen[name] {
			c.seen[name] = true
			out.Columns = append(out.Columns, name)
		}
		return
	}
	c.fields(m, out, output)
}

// fields visits the node-holding fields of m, but those named in skip.
func (c *columnCollector) fields(m protoreflect.Message, out *Output, output bool, skip ...protoreflect.Name) {
	eachChild(m, skip, func(n protoreflect.Message) { c.visit(n, out, output) })
}

func deparse(version int32, q *pg_query.Node) (string, error) {
	if q == nil {
		return "", nil
	}
	return pg_query.Deparse(&pg_query.ParseResult{Version: version, Stmts: []*pg_query.RawStmt{{Stmt: q}}})
}

// copyQuery is the query equivalent to COPY rel [(cols)] TO: its columns are
// the COPY's, in order.
func copyQuery(version int32, c *pg_query.CopyStmt) (string, error) {
	rel := c.GetRelation()
	if rel == nil {
		return "", nil
	}
	var target []*pg_query.Node
	for _, a := range c.GetAttlist() {
		name := a.GetString_().GetSval()
		target = append(target, &pg_query.Node{Node: &pg_query.Node_ResTarget{ResTarget: &pg_query.ResTarget{
			Val: &pg_query.Node{Node: &pg_query.Node_ColumnRef{ColumnRef: &pg_query.ColumnRef{
				Fields: []*pg_query.Node{{Node: &pg_query.Node_String_{String_: &pg_query.String{Sval: name}}}},
			}}},
		}}})
	}
	if len(target) == 0 {
		target = []*pg_query.Node{{Node: &pg_query.Node_ResTarget{ResTarget: &pg_query.ResTarget{
			Val: &pg_query.Node{Node: &pg_query.Node_ColumnRef{ColumnRef: &pg_query.ColumnRef{
				Fields: []*pg_query.Node{{Node: &pg_query.Node_AStar{AStar: &pg_query.A_Star{}}}},
			}}},
		}}}}
	}
	sel := &pg_query.SelectStmt{
		TargetList: target,
		FromClause: []*pg_query.Node{{Node: &pg_query.Node_RangeVar{RangeVar: &pg_query.RangeVar{
			Schemaname: rel.GetSchemaname(), Relname: rel.GetRelname(), Inh: true, Relpersistence: "p",
		}}}},
		Op: pg_query.SetOperation_SETOP_NONE,
	}
	return deparse(version, &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: sel}})
}

// copyOptions reads COPY's options as PostgreSQL's ProcessCopyOptions does;
// the last of a repeated option wins.
func copyOptions(c *pg_query.CopyStmt) *Copy {
	cp := &Copy{Format: "text", ToStdout: c.GetFilename() == "" && !c.GetIsProgram()}
	for _, o := range c.GetOptions() {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		val := defString(d.GetArg())
		switch strings.ToLower(d.GetDefname()) {
		case "format":
			cp.Format = strings.ToLower(val)
		case "delimiter":
			cp.Delimiter = val
		case "null":
			cp.Null = val
		case "quote":
			cp.Quote = val
		case "escape":
			cp.Escape = val
		case "header":
			switch strings.ToLower(val) {
			case "", "true", "on", "1", "yes", "match":
				cp.Header = true
			default:
				cp.Header = false
			}
		}
	}
	return cp
}

// defString reads an option's argument as text ("" for none).
func defString(n *pg_query.Node) string {
	switch a := n.GetNode().(type) {
	case *pg_query.Node_String_:
		return a.String_.GetSval()
	case *pg_query.Node_Boolean:
		if a.Boolean.GetBoolval() {
			return "true"
		}
		return "false"
	case *pg_query.Node_Integer:
		return fmt.Sprint(a.Integer.GetIval())
	}
	return ""
}
