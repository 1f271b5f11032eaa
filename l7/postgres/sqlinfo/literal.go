package sqlinfo

import (
	"cmp"
	"slices"
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// The literal cache answers texts that differ from one analyzed before only
// in their constants and comments, such as "SELECT abalance FROM
// pgbench_accounts WHERE aid = 81234" with another number each time, without
// parsing them.
//
// # The key
//
// normalize cuts the text into holes, which are the constant literals and
// comments, and the verbatim text between them. The key is the verbatim text
// with each hole replaced by a NUL byte and a byte naming its kind. Valid
// input holds no NUL (check refuses it first), so two texts share a key
// exactly when they are equal outside their holes and have holes of the same
// kinds in the same places. White space is kept as it is.
//
// normalize gives up (and the text is parsed as usual) at anything it is not
// sure PostgreSQL's scanner reads the same way: an unterminated string,
// quoted identifier or comment; control characters and backslashes outside
// strings; psql variables (:'x', :"x"); UESCAPE; numbers PostgreSQL 16 and
// later read differently from older versions (0x1F, 1_000) or that it reads
// as a number and an identifier or as trailing junk (1e, 1.e, 1..2, 1abc); a
// number after a "-" (it may fold into the constant) or after a "." (..5); a
// literal followed by an identifier character or, after white space and
// comments, by a quote (PostgreSQL joins 'a' <newline> 'b' into one string);
// operators of 63 characters or more (refused as too long); escapes in E'...'
// that the scanner checks (octal, \x, \u, \U, a backslash before a non-ASCII
// byte); U&'...' with a backslash; B'...' with anything but 0 and 1 and
// X'...' with anything but hex digits.
//
// Kinds are as fine as PostgreSQL's scanner tokens, and finer: an integer
// that fits in 32 bits (ICONST), any other number (FCONST, including integers
// too large for int4), '...', E'...', $$...$$, B'...', X'...', U&'...',
// line comments (--) and block comments (/* */). So texts with one key give
// the parser the same sequence of tokens, differing only in the values of
// constants
// (TestNormalizeMatchesScanner and FuzzLiteralCache check the holes against
// PostgreSQL's own scanner). Comments are white space to the parser; their
// kind is kept all the same, as a -- comment ends in a line break and a /* */
// comment need not. The parser's choices (and its lookahead in base_yylex)
// depend on token kinds only, and on values only in the semantic actions that
// read them, which the template check below covers.
//
// # The template
//
// A text that misses both caches is parsed. If its key had holes, it holds
// exactly one statement, and every literal in it became an A_Const node at
// the literal's own offset with a value of the literal's kind (among the
// A_Const nodes the walk that derives the facts visits: a literal in a
// sub-tree it skips counts as no constant), its facts are stored under the
// key as a template. Such a literal is only the value of a constant
// expression: the grammar productions that inspect a literal's value, or keep
// it anywhere but in an A_Const (float(53), FETCH 5, the option values of
// EXPLAIN, COPY, VACUUM and CREATE ... WITH, COPY file names, function
// bodies, enum labels, NOTIFY payloads, a "-" folded into the constant as in
// "- 5"), produce other nodes (or an A_Const elsewhere), and then no template
// is stored; a negative entry records that the key never yields one, so that
// its texts skip the check. And nothing that builds a Statement reads an
// A_Const's value: Commands, Tables, Functions and ReadOnly come from node
// types, names and options (TestFactsIgnoreConstants changes every constant
// of every test statement and compares), and libpg_query's fingerprint skips
// A_Const nodes and locations altogether. Comments are not in the tree.
//
// Another text with that key yields the same tree but for constant values and
// locations, hence the same facts. Its Statement is the template's with SQL
// cut from its own text: the statement's start and end offsets in the
// template are recorded relative to the holes before them, so they move with
// the lengths of the other text's holes, and the cut is trimmed as stmtText
// does.

// Hole kinds: the byte after the NUL in a key.
const (
	holeInt     = 'i' // integer that fits in int32: ICONST
	holeNumeric = 'f' // other number: FCONST
	holeString  = 's' // '...'
	holeEscape  = 'e' // E'...'
	holeDollar  = 'd' // $tag$...$tag$
	holeBits    = 'b' // B'...'
	holeHex     = 'x' // X'...'
	holeUnicode = 'u' // U&'...'
	holeLine    = '-' // -- comment, without its newline
	holeBlock   = '/' // /* comment */
)

// classComment is the holeClass of a comment: no constant.
const classComment = 0

// holeClass is the value type of the A_Const a literal of kind k becomes:
// 'i' Integer, 'f' Float, 's' String, 'b' BitString; 0 for comments.
func holeClass(k byte) byte {
	switch k {
	case holeInt, holeNumeric:
		return k
	case holeString, holeEscape, holeDollar, holeUnicode:
		return 's'
	case holeBits, holeHex:
		return 'b'
	}
	return classComment
}

type hole struct {
	start, end int
	kind       byte
}

// normalized is the result of normalize. Its buffers are reused.
type normalized struct {
	key      []byte
	holes    []hole
	literals int // holes that are literals, not comments
}

var normalizedPool = sync.Pool{New: func() any {
	return &normalized{key: make([]byte, 0, 256), holes: make([]hole, 0, 16)}
}}

// maxOperator is the shortest run of operator characters PostgreSQL's
// scanner refuses (NAMEDATALEN-1 = 63 is the longest name).
const maxOperator = 63

// maxPooledKey bounds the buffers returned to normalizedPool.
const maxPooledKey = 64 << 10

func getNormalized() *normalized { return normalizedPool.Get().(*normalized) }

func putNormalized(n *normalized) {
	if cap(n.key) <= maxPooledKey && cap(n.holes) <= maxPooledKey/16 {
		normalizedPool.Put(n)
	}
}

// normalize fills n with the key and holes of s. It reports false when s is
// not normalizable (see above); n is then unspecified.
func normalize(s string, n *normalized) bool {
	n.key = n.key[:0]
	n.holes = n.holes[:0]
	n.literals = 0
	if strings.IndexByte(s, 0) >= 0 {
		return false // a key's hole marker, and refused by check anyway
	}
	verbatim := 0 // start of the verbatim text not yet copied to the key
	addHole := func(start, end int, kind byte) {
		n.key = append(n.key, s[verbatim:start]...)
		n.key = append(n.key, 0, kind)
		n.holes = append(n.holes, hole{start: start, end: end, kind: kind})
		if holeClass(kind) != classComment {
			n.literals++
		}
		verbatim = end
	}
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			end := strings.IndexAny(s[i:], "\n\r")
			if end < 0 {
				end = len(s)
			} else {
				end += i
			}
			addHole(i, end, holeLine)
			i = end
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			end, ok := blockCommentEnd(s, i)
			if !ok {
				return false
			}
			addHole(i, end, holeBlock)
			i = end
		case c == '\'':
			end, ok := quotedEnd(s, i+1, '\'')
			if !ok || !literalEnds(s, end) {
				return false
			}
			addHole(i, end, holeString)
			i = end
		case c == '"':
			end, ok := quotedEnd(s, i+1, '"')
			if !ok || end == i+2 { // unterminated, or "" (refused by the scanner)
				return false
			}
			i = end
		case c == '$':
			if end, ok := dollarTag(s, i); ok {
				tag := s[i:end]
				k := strings.Index(s[end:], tag)
				if k < 0 {
					return false
				}
				end += k + len(tag)
				if !literalEnds(s, end) {
					return false
				}
				addHole(i, end, holeDollar)
				i = end
				continue
			}
			j := i + 1
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			if j == i+1 || (j < len(s) && isIdentCont(s[j])) {
				return false // a lone $, or a parameter with trailing junk
			}
			i = j // a parameter: $1
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentCont(s[j]) {
				j++
			}
			if j == i+1 {
				if end, kind, ok, isLit := prefixedLiteral(s, i); isLit {
					if !ok || !literalEnds(s, end) {
						return false
					}
					addHole(i, end, kind)
					i = end
					continue
				}
			}
			if j-i == len("uescape") && strings.EqualFold(s[i:j], "uescape") {
				return false
			}
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			if i > 0 && (s[i-1] == '-' || s[i-1] == '.') {
				return false
			}
			end, kind, ok := number(s, i)
			if !ok || !literalEnds(s, end) {
				return false
			}
			addHole(i, end, kind)
			i = end
		case c == ':' && i+1 < len(s) && (s[i+1] == '\'' || s[i+1] == '"'):
			return false // a psql variable
		case c < ' ' || c == 0x7f || c == '\\':
			return false
		case isOpChar(c):
			// An operator ends where a comment starts.
			j := i + 1
			for j < len(s) && isOpChar(s[j]) && !((s[j] == '-' && j+1 < len(s) && s[j+1] == '-') ||
				(s[j] == '/' && j+1 < len(s) && s[j+1] == '*')) {
				j++
			}
			if j-i >= maxOperator {
				return false // "operator too long"
			}
			i = j
		default:
			i++ // punctuation
		}
	}
	n.key = append(n.key, s[verbatim:]...)
	return true
}

// blockCommentEnd returns the end of the /* comment */ (they nest) that
// starts at i, and false if it is not terminated.
func blockCommentEnd(s string, i int) (int, bool) {
	depth := 0
	for i < len(s) {
		switch {
		case s[i] == '/' && i+1 < len(s) && s[i+1] == '*':
			depth++
			i += 2
		case s[i] == '*' && i+1 < len(s) && s[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i, true
			}
		default:
			i++
		}
	}
	return 0, false
}

// quotedEnd returns the offset just past the closing quote q of a quoted
// token whose body starts at i, in which a doubled quote stands for one.
func quotedEnd(s string, i int, q byte) (int, bool) {
	for i < len(s) {
		if s[i] == q {
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			return i + 1, true
		}
		i++
	}
	return 0, false
}

// prefixedLiteral reads the literal at i whose one-letter prefix is s[i]:
// E'...', B'...', X'...' or U&'...'. isLit reports whether one starts there;
// ok whether it is one normalize accepts.
func prefixedLiteral(s string, i int) (end int, kind byte, ok, isLit bool) {
	c := s[i] | 0x20 // lower case for letters
	switch {
	case i+1 < len(s) && s[i+1] == '\'' && (c == 'e' || c == 'b' || c == 'x'):
	case c == 'u' && i+2 < len(s) && s[i+1] == '&' && s[i+2] == '\'':
		end, ok = quotedEnd(s, i+3, '\'')
		if ok && strings.IndexByte(s[i+3:end], '\\') >= 0 {
			ok = false // an escape, which the parser decodes and checks
		}
		return end, holeUnicode, ok, true
	default:
		return 0, 0, false, false
	}
	body := i + 2
	switch c {
	case 'e':
		for j := body; j < len(s); j++ {
			switch s[j] {
			case '\\':
				if j+1 >= len(s) {
					return 0, 0, false, true
				}
				switch e := s[j+1]; {
				case '0' <= e && e <= '7', e == 'x', e == 'u', e == 'U', e >= 0x80:
					// Escapes the scanner decodes into bytes it then checks.
					return 0, 0, false, true
				}
				j++
			case '\'':
				if j+1 < len(s) && s[j+1] == '\'' {
					j++
					continue
				}
				return j + 1, holeEscape, true, true
			}
		}
		return 0, 0, false, true
	case 'b', 'x':
		kind := byte(holeBits)
		if c == 'x' {
			kind = holeHex
		}
		for j := body; j < len(s); j++ {
			switch d := s[j]; {
			case d == '\'':
				return j + 1, kind, true, true
			case d == '0' || d == '1':
			case c == 'x' && (isDigit(d) || 'a' <= d|0x20 && d|0x20 <= 'f'):
			default:
				return 0, 0, false, true
			}
		}
	}
	return 0, 0, false, true
}

// number reads the numeric literal at i: digits, an optional fraction and
// an optional exponent. Its kind is holeInt for digits alone whose value
// fits in int32 (PostgreSQL's scanner makes any other integer an FCONST).
func number(s string, i int) (end int, kind byte, ok bool) {
	j := i
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	intEnd := j
	kind = holeNumeric
	if j < len(s) && s[j] == '.' {
		j++
		for j < len(s) && isDigit(s[j]) {
			j++
		}
	}
	if j < len(s) && (s[j] == 'e' || s[j] == 'E') {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		if k < len(s) && isDigit(s[k]) {
			for k < len(s) && isDigit(s[k]) {
				k++
			}
			j = k
		}
	}
	if j == intEnd && fitsInt32(s[i:j]) {
		kind = holeInt
	}
	// A "." after the number (1..2, 1.5.3, 1e5.x) or an identifier character
	// (1e, 1.e, 1_000, 0x1F, 1abc) is read differently by PostgreSQL's
	// scanner, or refused.
	if j < len(s) && (s[j] == '.' || isIdentCont(s[j])) {
		return 0, 0, false
	}
	return j, kind, true
}

// fitsInt32 reports whether the decimal digits d denote at most 2147483647.
func fitsInt32(d string) bool {
	for len(d) > 1 && d[0] == '0' {
		d = d[1:]
	}
	return len(d) < 10 || (len(d) == 10 && d <= "2147483647")
}

// literalEnds reports whether a literal ending at end may be a hole: it is
// not followed by an identifier character, nor, after white space and
// comments, by a quote that could continue it.
func literalEnds(s string, end int) bool {
	if end < len(s) && isIdentCont(s[end]) {
		return false
	}
	for i := end; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			j := strings.IndexAny(s[i:], "\n\r")
			if j < 0 {
				return true
			}
			i += j
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			j, ok := blockCommentEnd(s, i)
			if !ok {
				return false
			}
			i = j
		default:
			return c != '\''
		}
	}
	return true
}

// position is an offset in a text relative to its holes: off bytes after
// the end of hole number hole, or after the start of the text for -1.
type position struct {
	hole, off int
}

// locate expresses offset p of the text whose holes are given as a
// position, and reports false if p is inside a hole.
func locate(holes []hole, p int) (position, bool) {
	pos := position{hole: -1, off: p}
	for i, h := range holes {
		if h.end <= p {
			pos = position{hole: i, off: p - h.end}
			continue
		}
		if h.start < p {
			return position{}, false
		}
		break
	}
	return pos, true
}

// offset is the offset in the text of n that pos stands for.
func (n *normalized) offset(pos position) int {
	if pos.hole < 0 {
		return pos.off
	}
	return n.holes[pos.hole].end + pos.off
}

// template is what the literal cache keeps for a key: the facts of its one
// statement and where that statement's text starts and ends.
type template struct {
	stmt       Statement // SQL is empty
	start, end position
}

// newTemplate returns the template of sql, which normalized to n and parsed
// to tree and stmts, or nil if texts with its key may not share its facts.
// consts are the constants the walk of its statement visited.
func newTemplate(sql string, n *normalized, tree *pg_query.ParseResult, stmts []Statement, consts []constAt) *template {
	if len(stmts) != 1 || len(tree.GetStmts()) != 1 {
		return nil
	}
	raw := tree.GetStmts()[0]
	if !literalsAreConsts(n.holes, consts) {
		return nil
	}
	start, length := int(raw.GetStmtLocation()), int(raw.GetStmtLen())
	end := start + length
	if length == 0 {
		end = len(sql)
	}
	if start < 0 || length < 0 || end > len(sql) || start > end {
		return nil
	}
	t := &template{stmt: stmts[0]}
	t.stmt.SQL = ""
	var ok1, ok2 bool
	t.start, ok1 = locate(n.holes, start)
	t.end, ok2 = locate(n.holes, end)
	if !ok1 || !ok2 {
		return nil
	}
	return t
}

// literalsAreConsts reports whether every literal among holes is an A_Const
// of consts, at the literal's offset and with a value of its class.
func literalsAreConsts(holes []hole, consts []constAt) bool {
	slices.SortFunc(consts, func(a, b constAt) int { return cmp.Compare(a.location, b.location) })
	for _, h := range holes {
		class := holeClass(h.kind)
		if class == classComment {
			continue
		}
		for len(consts) > 0 && consts[0].location < int32(h.start) {
			consts = consts[1:]
		}
		if len(consts) == 0 || consts[0].location != int32(h.start) || consts[0].class != class {
			return false
		}
	}
	return true
}

// cut returns where the statement's text starts and ends in sql, which has
// the template's key and normalized to n. It reports false for a nil
// template (and, as a precaution that cannot fire for texts with one key,
// for offsets outside sql).
func (t *template) cut(sql string, n *normalized) (start, end int, ok bool) {
	if t == nil {
		return 0, 0, false
	}
	start, end = n.offset(t.start), n.offset(t.end)
	return start, end, 0 <= start && start <= end && end <= len(sql)
}

// instantiate returns the statements of sql, whose statement text cut found
// from start to end.
func (t *template) instantiate(sql string, start, end int) []Statement {
	st := t.stmt
	st.SQL = strings.TrimSpace(sql[start:end])
	return []Statement{st}
}

// constClass is the class (see holeClass) of an A_Const's value: 'i'
// Integer, 'f' Float, 's' String, 'b' BitString, classComment otherwise
// (Boolean, NULL).
func constClass(c *pg_query.A_Const) byte {
	switch c.GetVal().(type) {
	case *pg_query.A_Const_Ival:
		return 'i'
	case *pg_query.A_Const_Fval:
		return 'f'
	case *pg_query.A_Const_Sval:
		return 's'
	case *pg_query.A_Const_Bsval:
		return 'b'
	}
	return classComment
}
