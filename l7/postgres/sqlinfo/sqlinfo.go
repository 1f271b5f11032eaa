package sqlinfo

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/tollgate-dev/tollgate/policy"
)

// Statement is what the policy sees of one SQL statement (the policy input's
// "request" object, less its "kind").
type Statement struct {
	// SQL is the statement's own text: a substring of the analyzed input,
	// without the separating semicolon and surrounding white space.
	SQL string `json:"sql"`
	// Fingerprint is libpg_query's fingerprint of SQL (16 hex digits): equal
	// for statements that differ only in constants, white space or comments.
	Fingerprint string `json:"fingerprint"`
	// Commands holds the statement's command tag, then those of the
	// statements it carries (see the package documentation).
	Commands []string `json:"commands"`
	// Tables holds every relation the statement names, once per access kind.
	Tables []Table `json:"tables"`
	// Functions holds every function the statement calls, once each.
	Functions []string `json:"functions"`
	// ReadOnly reports whether the statement cannot change data (see the
	// package documentation for what that covers and what it cannot see).
	ReadOnly bool `json:"read_only"`
}

// Table is one relation a statement names, with how it uses it: the
// policy input's table, so that a statement's tables go into the input as
// they are. Schema is the schema the statement qualifies the name with, or
// "" when it does not (the session's search_path decides); Name the
// relation's name, exactly as PostgreSQL reads it (folded to lower case
// unless quoted); Access one of the Access* constants.
type Table = policy.Table

// Access kinds of Table.Access; the package documentation defines each.
const (
	AccessSelect      = "select"
	AccessInsert      = "insert"
	AccessUpdate      = "update"
	AccessDelete      = "delete"
	AccessTruncate    = "truncate"
	AccessLock        = "lock"
	AccessCopyFrom    = "copy_from"
	AccessCopyTo      = "copy_to"
	AccessDDL         = "ddl"
	AccessMaintenance = "maintenance"
	AccessReference   = "reference"
)

// Defaults of Limits.
const (
	DefaultMaxBytes = 1 << 20
	DefaultMaxDepth = 1000
)

// Limits bound the input handed to the parser. The zero value means the
// defaults.
type Limits struct {
	// MaxBytes is the longest SQL text analyzed, in bytes. Default
	// DefaultMaxBytes (1 MiB); zero or less means the default.
	MaxBytes int
	// MaxDepth is the deepest estimated nesting analyzed (see the package
	// documentation for how it is estimated and why). Default DefaultMaxDepth
	// (1000); zero or less means the default.
	MaxDepth int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// Errors callers branch on with errors.Is.
var (
	// ErrTooLarge: the text is longer than Limits.MaxBytes. It was not parsed.
	ErrTooLarge = errors.New("sqlinfo: statement too large")
	// ErrTooDeep: the text nests deeper than Limits.MaxDepth. It was not
	// parsed.
	ErrTooDeep = errors.New("sqlinfo: statement nested too deeply")
	// ErrSyntax: PostgreSQL's parser refused the text. The error is a
	// *SyntaxError.
	ErrSyntax = errors.New("sqlinfo: syntax error")
	// ErrMultiple: AnalyzeOne was given more than one statement.
	ErrMultiple = errors.New("sqlinfo: more than one statement")
	// ErrEncoding: the text is not valid UTF-8. The parser reads UTF-8; the
	// engine converts text from other client encodings first (PostgreSQL
	// answers SQLSTATE 22021 for such bytes).
	ErrEncoding = errors.New("sqlinfo: text is not valid UTF-8")
	// ErrEmpty: AnalyzeOne was given no statement (only white space,
	// comments or semicolons); PostgreSQL answers such a query with
	// EmptyQueryResponse.
	ErrEmpty = errors.New("sqlinfo: empty query")
)

// SyntaxError is the parser's complaint about the text. It matches ErrSyntax.
type SyntaxError struct {
	// Message is PostgreSQL's message, e.g. `syntax error at or near "FORM"`.
	Message string
	// Position is the 1-based character (not byte) offset of the error in the
	// analyzed text, as PostgreSQL reports it in ErrorResponse field P; 0 when
	// unknown.
	Position int
}

func (e *SyntaxError) Error() string {
	if e.Position > 0 {
		return fmt.Sprintf("%s: %s (at character %d)", ErrSyntax, e.Message, e.Position)
	}
	return fmt.Sprintf("%s: %s", ErrSyntax, e.Message)
}

// Is reports whether target is ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// Analyze parses sql, which may hold several statements, with the default
// Limits and returns one Statement per statement, in order. Text with no
// statement (only white space, comments or semicolons) gives none.
func Analyze(sql string) ([]Statement, error) {
	return analyze(sql, Limits{}.withDefaults())
}

// AnalyzeOne is Analyze for text that must hold exactly one statement, such as
// the query of an extended-protocol Parse message. It returns ErrMultiple for
// more than one statement and ErrEmpty for none.
func AnalyzeOne(sql string) (Statement, error) {
	stmts, err := Analyze(sql)
	return one(stmts, err)
}

func one(stmts []Statement, err error) (Statement, error) {
	switch {
	case err != nil:
		return Statement{}, err
	case len(stmts) == 0:
		return Statement{}, ErrEmpty
	case len(stmts) > 1:
		return Statement{}, fmt.Errorf("%w: %d statements", ErrMultiple, len(stmts))
	}
	return stmts[0], nil
}

// check applies the caps that must hold before the parser sees sql.
func check(sql string, l Limits) error {
	if err := checkText(sql, l); err != nil {
		return err
	}
	return checkDepth(sql, l)
}

// checkText applies the caps on sql's size and bytes, which hold whether
// or not the parser sees it.
func checkText(sql string, l Limits) error {
	if len(sql) > l.MaxBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(sql), l.MaxBytes)
	}
	// The parser takes a C string: it would silently stop at a NUL, leaving
	// the rest unjudged. PostgreSQL's protocol cannot carry one either.
	if i := strings.IndexByte(sql, 0); i >= 0 {
		return &SyntaxError{Message: "invalid NUL byte in query text", Position: charPos(sql, i)}
	}
	if !utf8.ValidString(sql) {
		i := 0
		for i < len(sql) {
			r, n := utf8.DecodeRuneInString(sql[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return fmt.Errorf("%w: byte 0x%02x at offset %d", ErrEncoding, sql[i], i)
	}
	return nil
}

// checkDepth caps sql's nesting, which would crash the parser.
func checkDepth(sql string, l Limits) error {
	if depthExceeds(sql, l.MaxDepth) {
		return fmt.Errorf("%w: limit %d", ErrTooDeep, l.MaxDepth)
	}
	return nil
}

func analyze(sql string, l Limits) ([]Statement, error) {
	if err := check(sql, l); err != nil {
		return nil, err
	}
	stmts, _, _, err := parse(sql, false)
	return stmts, err
}

// parse is analyze after the caps. It also returns the parse tree and, if
// collect is set and the text holds one statement, the constants the walk of
// that statement visited (see describeConsts).
func parse(sql string, collect bool) ([]Statement, *pg_query.ParseResult, []constAt, error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		var pe *parser.Error
		if errors.As(err, &pe) {
			return nil, nil, nil, &SyntaxError{Message: pe.Message, Position: pe.Cursorpos}
		}
		return nil, nil, nil, fmt.Errorf("sqlinfo: parse: %w", err)
	}
	collect = collect && len(tree.Stmts) == 1
	var consts []constAt
	out := make([]Statement, 0, len(tree.Stmts))
	for i, raw := range tree.Stmts {
		text, err := stmtText(sql, raw)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("sqlinfo: statement %d: %w", i+1, err)
		}
		fp, err := pg_query.Fingerprint(text)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("sqlinfo: fingerprint statement %d: %w", i+1, err)
		}
		var st Statement
		st, consts = describeConsts(raw.Stmt, collect)
		st.SQL = text
		st.Fingerprint = fp
		out = append(out, st)
	}
	return out[:len(out):len(out)], tree, consts, nil
}

// stmtText cuts one statement's text out of sql by the parser's byte
// offsets. A length of 0 means "to the end".
func stmtText(sql string, raw *pg_query.RawStmt) (string, error) {
	start, n := int(raw.StmtLocation), int(raw.StmtLen)
	end := start + n
	if n == 0 {
		end = len(sql)
	}
	if start < 0 || n < 0 || end > len(sql) || start > end {
		return "", fmt.Errorf("location %d+%d outside text of %d bytes", start, n, len(sql))
	}
	return strings.TrimSpace(sql[start:end]), nil
}

// charPos converts a byte offset into PostgreSQL's 1-based character
// position.
func charPos(s string, off int) int {
	return len([]rune(s[:off])) + 1
}
