package sqlinfo

import "strings"

// Token kinds of the lexical pre-scan. The scan only needs to know where
// strings, quoted identifiers and comments are (so that brackets in them do
// not count) and to see brackets, operators, separators and a few keywords.
type tokKind uint8

const (
	tokEOF      tokKind = iota
	tokIdent            // identifier or keyword, unquoted
	tokQuoted           // "quoted identifier"
	tokString           // '...', E'...', $tag$...$tag$
	tokNumber           // numeric literal
	tokParam            // $1
	tokOp               // run of operator characters
	tokTypecast         // ::
	tokPunct            // any other single byte: ( ) [ ] , ; . : and so on
)

// lexer splits SQL text the way PostgreSQL's scanner does, closely enough to
// find the same strings, quoted identifiers, dollar quotes and comments. It
// never fails: unterminated strings and comments run to the end of the text
// (the parser refuses such text anyway).
type lexer struct {
	s string
	i int
}

func (lx *lexer) next() (tokKind, string) {
	s := lx.s
	for lx.i < len(s) {
		c := s[lx.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			lx.i++
		case c == '-' && lx.peek(1) == '-':
			lx.skipLineComment()
		case c == '/' && lx.peek(1) == '*':
			lx.skipBlockComment()
		default:
			return lx.token()
		}
	}
	return tokEOF, ""
}

// starNext reports whether the token after a "*" shows that the "*" stands
// for all columns: a "*" followed by FROM, a comma, a closing bracket, a
// semicolon or the end of the text has no right operand, so it multiplies
// nothing (and if it were meant to, the parser refuses the text).
func (lx *lexer) starNext() bool {
	save := lx.i
	kind, text := lx.next()
	lx.i = save
	switch kind {
	case tokEOF:
		return true
	case tokPunct:
		return text == "," || text == ")" || text == "]" || text == ";"
	case tokIdent:
		return strings.EqualFold(text, "from")
	}
	return false
}

func (lx *lexer) peek(k int) byte {
	if lx.i+k < len(lx.s) {
		return lx.s[lx.i+k]
	}
	return 0
}

func (lx *lexer) skipLineComment() {
	// A -- comment ends at a newline or carriage return.
	j := strings.IndexAny(lx.s[lx.i:], "\n\r")
	if j < 0 {
		lx.i = len(lx.s)
		return
	}
	lx.i += j + 1
}

func (lx *lexer) skipBlockComment() {
	// /* comments nest in PostgreSQL.
	depth := 0
	for lx.i < len(lx.s) {
		switch {
		case lx.s[lx.i] == '/' && lx.peek(1) == '*':
			depth++
			lx.i += 2
		case lx.s[lx.i] == '*' && lx.peek(1) == '/':
			depth--
			lx.i += 2
			if depth == 0 {
				return
			}
		default:
			lx.i++
		}
	}
}

func (lx *lexer) token() (tokKind, string) {
	s, start := lx.s, lx.i
	c := s[start]
	switch {
	case c == '\'':
		lx.i = skipQuoted(s, start+1, '\'', false)
		return tokString, s[start:lx.i]
	case c == '"':
		lx.i = skipQuoted(s, start+1, '"', false)
		return tokQuoted, s[start:lx.i]
	case c == '$':
		if end, ok := dollarTag(s, start); ok {
			tag := s[start:end]
			k := strings.Index(s[end:], tag)
			if k < 0 {
				lx.i = len(s)
			} else {
				lx.i = end + k + len(tag)
			}
			return tokString, s[start:lx.i]
		}
		j := start + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		lx.i = j
		if j > start+1 {
			return tokParam, s[start:j]
		}
		return tokPunct, s[start:j]
	case isIdentStart(c):
		j := start + 1
		for j < len(s) && isIdentCont(s[j]) {
			j++
		}
		// E'...' is one token: a string with backslash escapes. Other
		// prefixes (B, X, N, U&) precede ordinary '...' strings.
		if j == start+1 && (c == 'e' || c == 'E') && j < len(s) && s[j] == '\'' {
			lx.i = skipQuoted(s, j+1, '\'', true)
			return tokString, s[start:lx.i]
		}
		lx.i = j
		return tokIdent, s[start:j]
	case isDigit(c) || (c == '.' && isDigit(lx.peek(1))):
		j := start + 1
		for j < len(s) && (isDigit(s[j]) || s[j] == '.' || s[j] == '_' || isLetter(s[j])) {
			j++
		}
		lx.i = j
		return tokNumber, s[start:j]
	case c == ':' && lx.peek(1) == ':':
		lx.i += 2
		return tokTypecast, s[start:lx.i]
	case isOpChar(c):
		j := start + 1
		for j < len(s) && isOpChar(s[j]) {
			// A comment start ends the operator.
			if (s[j] == '-' && j+1 < len(s) && s[j+1] == '-') || (s[j] == '/' && j+1 < len(s) && s[j+1] == '*') {
				break
			}
			j++
		}
		lx.i = j
		return tokOp, s[start:j]
	}
	lx.i++
	return tokPunct, s[start:lx.i]
}

// skipQuoted returns the offset just past the closing quote q of a quoted
// token whose body starts at i. A doubled quote is part of the body; with
// backslash, so is the byte after a backslash.
func skipQuoted(s string, i int, q byte, backslash bool) int {
	for i < len(s) {
		switch s[i] {
		case '\\':
			if backslash {
				i += 2
				continue
			}
		case q:
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return len(s)
}

// dollarTag reports whether a dollar-quote delimiter ($$ or $tag$) starts at
// i, and where it ends.
func dollarTag(s string, i int) (int, bool) {
	j := i + 1
	if j < len(s) && isDollarStart(s[j]) {
		j++
		for j < len(s) && (isDollarStart(s[j]) || isDigit(s[j])) {
			j++
		}
	}
	if j < len(s) && s[j] == '$' {
		return j + 1, true
	}
	return 0, false
}

func isDigit(c byte) bool       { return '0' <= c && c <= '9' }
func isLetter(c byte) bool      { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDollarStart(c byte) bool { return isLetter(c) || c == '_' || c >= 0x80 }
func isIdentStart(c byte) bool  { return isDollarStart(c) }
func isIdentCont(c byte) bool   { return isDollarStart(c) || isDigit(c) || c == '$' }

func isOpChar(c byte) bool {
	switch c {
	case '~', '!', '@', '#', '^', '&', '|', '`', '?', '+', '-', '*', '/', '%', '<', '>', '=':
		return true
	}
	return false
}

// level is one open bracket (or CASE, or the statement itself) in the depth
// estimate.
type level struct {
	chain   int  // operators since the last separator: a left- or right-deep chain
	stacked int  // JOINs and set operations: left-deep, never reset in a statement
	between int  // BETWEENs whose AND is still to come
	isCase  bool // opened by CASE, closed by END
}

// depthExceeds reports whether the estimated parse-tree depth of sql exceeds
// max. The estimate is the number of open brackets and CASEs plus, at each
// open level, the operators chained since the last separator and the JOINs
// and set operations so far. It bounds the nesting of the text the parser
// accepts: operands separated by a comma, AND, OR, WHEN, THEN or ELSE are
// siblings in the tree (AND and OR lists are flattened), everything else that
// nests is counted.
func depthExceeds(sql string, max int) bool {
	return estimateDepth(sql, max) > max
}

// estimateDepth returns the estimated depth of sql, or, as soon as the
// estimate passes max, that first value over max.
func estimateDepth(sql string, max int) int {
	lx := lexer{s: sql}
	var stack [32]level
	e := estimator{levels: append(stack[:0], level{})}
	peak := 0
	for {
		kind, text := lx.next()
		switch kind {
		case tokEOF:
			return peak
		case tokOp:
			if text == "*" && lx.starNext() {
				continue // SELECT *, t.*, count(*), RETURNING *: not an operator
			}
			e.chain(operators(text))
		case tokTypecast:
			e.chain(1)
		case tokPunct:
			switch text[0] {
			case '(', '[':
				e.levels = e.push(false)
			case ')', ']':
				// A CASE left open inside brackets is a syntax error; close
				// it with them.
				for len(e.levels) > 1 && e.top().isCase {
					e.pop()
				}
				e.pop()
			case ',':
				e.reset()
				e.top().between = 0
			case ';':
				// Statements are siblings. (Inside brackets, only a rule's
				// action list is valid: its actions are siblings too.)
				top := e.top()
				e.cur -= top.chain + top.stacked
				*top = level{isCase: top.isCase}
			}
		case tokIdent:
			if len(text) < 2 || len(text) > 9 {
				continue
			}
			switch keyword(text) {
			case kwCase:
				e.levels = e.push(true)
			case kwEnd:
				if e.top().isCase {
					e.pop()
				}
			case kwAnd:
				if top := e.top(); top.between > 0 {
					top.between-- // the AND of BETWEEN x AND y
				} else {
					e.reset()
				}
			case kwSeparator:
				e.reset()
			case kwBetween:
				e.top().between++
				e.chain(1)
			case kwOperator:
				e.chain(1)
			case kwStacked:
				e.top().stacked++
				e.cur++
			}
		}
		if e.cur > peak {
			peak = e.cur
			if peak > max {
				return peak
			}
		}
	}
}

// estimator is the state of estimateDepth: the open levels and the sum of
// their counts.
type estimator struct {
	levels []level
	cur    int
}

func (e *estimator) top() *level { return &e.levels[len(e.levels)-1] }

func (e *estimator) chain(n int) {
	e.top().chain += n
	e.cur += n
}

func (e *estimator) reset() {
	top := e.top()
	e.cur -= top.chain
	top.chain = 0
}

// push opens a level and returns the levels, for the caller to assign:
// assigning them through e would move estimateDepth's stack array to the
// heap.
func (e *estimator) push(isCase bool) []level {
	e.cur++
	return append(e.levels, level{isCase: isCase})
}

func (e *estimator) pop() {
	if len(e.levels) > 1 {
		top := e.top()
		e.cur -= 1 + top.chain + top.stacked
		e.levels = e.levels[:len(e.levels)-1]
	}
}

// operators returns how many operators PostgreSQL may read in a run of
// operator characters: one, unless the run ends in + or - and has none of
// ~!@#%^&|`? (then the scanner splits it, as in "=-" or "+-+-"); every
// character is counted then.
func operators(run string) int {
	if len(run) == 1 || (run[len(run)-1] != '+' && run[len(run)-1] != '-') {
		return 1
	}
	if strings.ContainsAny(run, "~!@#%^&|`?") {
		return 1
	}
	return len(run)
}

type kw uint8

const (
	kwNone      kw = iota
	kwCase         // CASE
	kwEnd          // END
	kwAnd          // AND
	kwSeparator    // OR WHEN THEN ELSE
	kwBetween      // BETWEEN
	kwOperator     // NOT IS ISNULL NOTNULL IN LIKE ILIKE SIMILAR AT COLLATE OVERLAPS ESCAPE OPERATOR
	kwStacked      // JOIN UNION INTERSECT EXCEPT
)

// keyword classifies the identifiers the depth estimate cares about.
func keyword(word string) kw {
	var buf [9]byte
	for i := 0; i < len(word); i++ {
		c := word[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(word)]) {
	case "case":
		return kwCase
	case "end":
		return kwEnd
	case "and":
		return kwAnd
	case "or", "when", "then", "else":
		return kwSeparator
	case "between":
		return kwBetween
	case "not", "is", "isnull", "notnull", "in", "like", "ilike", "similar", "at", "collate", "overlaps", "escape", "operator":
		return kwOperator
	case "join", "union", "intersect", "except":
		return kwStacked
	}
	return kwNone
}
