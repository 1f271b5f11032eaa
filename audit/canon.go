package audit

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// The canonical JSON encoding of a value (see the package documentation):
//   - no whitespace outside strings;
//   - object keys sorted by the bytes of their UTF-8 text, no duplicates;
//   - strings valid UTF-8, escaping only `"`, `\`, control characters
//     (\n, \r, \t, else \u00xx in lower-case hex), U+2028 and U+2029;
//   - an integer literal (no fraction, no exponent) kept digit for digit
//     ("-0" becomes "0"); any other number rewritten as Go's encoding/json
//     writes a float64 (1.0 → 1, 1E5 → 100000, 1e-7 → 1e-7);
//   - true, false, null as they are.
//
// Canonicalizing canonical text returns it unchanged, so a verifier can
// re-encode a record and compare bytes.

// maxDepth bounds the nesting of arrays and objects.
const maxDepth = 1000

// errNotCanonical reports a record line that is valid JSON but not in the
// canonical encoding.
var errNotCanonical = errors.New("not in canonical encoding")

// syntaxError is a JSON syntax error at a byte offset.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("offset %d: %s", e.off, e.msg) }

// member is an object member: its decoded key and where its canonical
// "key":value text sits in the output.
type member struct {
	key        []byte
	start, end int // whole member in dst
	val        int // value start in dst
}

// canonicalizer parses JSON text and appends its canonical encoding.
type canonicalizer struct {
	src []byte
	i   int
	// top receives the top-level object's members when non-nil.
	top *[]member
}

// appendCanonical appends the canonical encoding of the JSON text src to dst.
func appendCanonical(dst, src []byte) ([]byte, error) {
	c := canonicalizer{src: src}
	return c.document(dst)
}

func (c *canonicalizer) document(dst []byte) ([]byte, error) {
	c.ws()
	dst, err := c.value(dst, 0)
	if err != nil {
		return dst, err
	}
	c.ws()
	if c.i != len(c.src) {
		return dst, c.errorf("unexpected %q after the value", c.src[c.i])
	}
	return dst, nil
}

func (c *canonicalizer) errorf(format string, args ...any) error {
	return &syntaxError{off: c.i, msg: fmt.Sprintf(format, args...)}
}

func (c *canonicalizer) ws() {
	for c.i < len(c.src) {
		switch c.src[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

func (c *canonicalizer) value(dst []byte, depth int) ([]byte, error) {
	if c.i >= len(c.src) {
		return dst, c.errorf("unexpected end of input")
	}
	switch b := c.src[c.i]; {
	case b == '{':
		return c.object(dst, depth)
	case b == '[':
		return c.array(dst, depth)
	case b == '"':
		dst, _, err := c.string(dst, false)
		return dst, err
	case b == '-' || ('0' <= b && b <= '9'):
		return c.number(dst)
	case b == 't':
		return c.literal(dst, "true")
	case b == 'f':
		return c.literal(dst, "false")
	case b == 'n':
		return c.literal(dst, "null")
	default:
		return dst, c.errorf("unexpected %q", b)
	}
}

func (c *canonicalizer) literal(dst []byte, lit string) ([]byte, error) {
	if !bytes.HasPrefix(c.src[c.i:], []byte(lit)) {
		return dst, c.errorf("invalid literal")
	}
	c.i += len(lit)
	return append(dst, lit...), nil
}

func (c *canonicalizer) array(dst []byte, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, c.errorf("nesting deeper than %d", maxDepth)
	}
	c.i++ // [
	dst = append(dst, '[')
	c.ws()
	if c.i < len(c.src) && c.src[c.i] == ']' {
		c.i++
		return append(dst, ']'), nil
	}
	for {
		c.ws()
		var err error
		if dst, err = c.value(dst, depth+1); err != nil {
			return dst, err
		}
		c.ws()
		if c.i >= len(c.src) {
			return dst, c.errorf("unexpected end of input in array")
		}
		switch c.src[c.i] {
		case ',':
			c.i++
			dst = append(dst, ',')
		case ']':
			c.i++
			return append(dst, ']'), nil
		default:
			return dst, c.errorf("unexpected %q in array", c.src[c.i])
		}
	}
}

func (c *canonicalizer) object(dst []byte, depth int) ([]byte, error) {
	if depth >= maxDepth {
		return dst, c.errorf("nesting deeper than %d", maxDepth)
	}
	c.i++ // {
	dst = append(dst, '{')
	base := len(dst)
	var stack [8]member
	members := stack[:0]
	sorted := true
	c.ws()
	if c.i < len(c.src) && c.src[c.i] == '}' {
		c.i++
		dst = append(dst, '}')
		if depth == 0 && c.top != nil {
			*c.top = (*c.top)[:0]
		}
		return dst, nil
	}
	for {
		c.ws()
		if c.i >= len(c.src) || c.src[c.i] != '"' {
			return dst, c.errorf("object key must be a string")
		}
		start := len(dst)
		var key []byte
		var err error
		if dst, key, err = c.string(dst, true); err != nil {
			return dst, err
		}
		c.ws()
		if c.i >= len(c.src) || c.src[c.i] != ':' {
			return dst, c.errorf("missing ':' after object key")
		}
		c.i++
		dst = append(dst, ':')
		val := len(dst)
		c.ws()
		if dst, err = c.value(dst, depth+1); err != nil {
			return dst, err
		}
		if n := len(members); n > 0 && bytes.Compare(members[n-1].key, key) >= 0 {
			sorted = false
		}
		members = append(members, member{key: key, start: start, end: len(dst), val: val})
		c.ws()
		if c.i >= len(c.src) {
			return dst, c.errorf("unexpected end of input in object")
		}
		switch c.src[c.i] {
		case ',':
			c.i++
			dst = append(dst, ',')
			continue
		case '}':
			c.i++
		default:
			return dst, c.errorf("unexpected %q in object", c.src[c.i])
		}
		break
	}
	if !sorted {
		slices.SortStableFunc(members, func(a, b member) int { return bytes.Compare(a.key, b.key) })
		for k := 1; k < len(members); k++ {
			if bytes.Equal(members[k-1].key, members[k].key) {
				return dst, c.errorf("duplicate object key %q", members[k].key)
			}
		}
		old := bytes.Clone(dst[base:])
		dst = dst[:base]
		for k, m := range members {
			if k > 0 {
				dst = append(dst, ',')
			}
			start := len(dst)
			dst = append(dst, old[m.start-base:m.end-base]...)
			members[k].val += start - m.start
			members[k].start, members[k].end = start, len(dst)
		}
	}
	if depth == 0 && c.top != nil {
		*c.top = append((*c.top)[:0], members...)
	}
	return append(dst, '}'), nil
}

const hexDigits = "0123456789abcdef"

// plain marks the bytes that a canonical string holds as they are, with no
// check: printable ASCII but `"` and `\`.
var plain = func() (t [256]bool) {
	for b := 0x20; b < 0x80; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// string parses the string at c.i and appends its canonical encoding. When
// wantKey is set it also returns the decoded text (aliasing the input when
// the string has no escapes).
func (c *canonicalizer) string(dst []byte, wantKey bool) ([]byte, []byte, error) {
	c.i++ // "
	begin := c.i
	var decoded []byte // only when there are escapes and wantKey
	escaped := false
	dst = append(dst, '"')
	for {
		// Copy the run of bytes that stand for themselves.
		run := c.i
		for run < len(c.src) && plain[c.src[run]] {
			run++
		}
		dst = append(dst, c.src[c.i:run]...)
		if escaped && wantKey {
			decoded = append(decoded, c.src[c.i:run]...)
		}
		c.i = run
		if c.i >= len(c.src) {
			return dst, nil, c.errorf("unterminated string")
		}
		b := c.src[c.i]
		switch {
		case b == '"':
			c.i++
			dst = append(dst, '"')
			key := c.src[begin : c.i-1]
			if escaped {
				key = decoded
			}
			return dst, key, nil
		case b == '\\':
			if !escaped && wantKey {
				decoded = append(decoded, c.src[begin:c.i]...)
			}
			escaped = true
			r, err := c.escape()
			if err != nil {
				return dst, nil, err
			}
			dst = appendRune(dst, r)
			if wantKey {
				decoded = utf8.AppendRune(decoded, r)
			}
		case b < 0x20:
			return dst, nil, c.errorf("control character in string")
		case b < utf8.RuneSelf:
			c.i++
			dst = append(dst, b)
			if escaped && wantKey {
				decoded = append(decoded, b)
			}
		default:
			r, size := utf8.DecodeRune(c.src[c.i:])
			if r == utf8.RuneError && size == 1 {
				return dst, nil, c.errorf("invalid UTF-8 in string")
			}
			dst = appendRune(dst, r)
			if escaped && wantKey {
				decoded = append(decoded, c.src[c.i:c.i+size]...)
			}
			c.i += size
		}
	}
}

// escape decodes the escape sequence at c.i (which holds '\').
func (c *canonicalizer) escape() (rune, error) {
	if c.i+1 >= len(c.src) {
		return 0, c.errorf("unterminated escape")
	}
	e := c.src[c.i+1]
	c.i += 2
	switch e {
	case '"', '\\', '/':
		return rune(e), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := c.hex4()
		if !ok {
			return 0, c.errorf(`invalid \u escape`)
		}
		if 0xDC00 <= r && r <= 0xDFFF {
			return 0, c.errorf("lone low surrogate")
		}
		if 0xD800 <= r && r <= 0xDBFF {
			if c.i+1 >= len(c.src) || c.src[c.i] != '\\' || c.src[c.i+1] != 'u' {
				return 0, c.errorf("lone high surrogate")
			}
			c.i += 2
			lo, ok := c.hex4()
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return 0, c.errorf("invalid surrogate pair")
			}
			r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
		}
		return r, nil
	default:
		return 0, c.errorf("invalid escape '\\%c'", e)
	}
}

func (c *canonicalizer) hex4() (rune, bool) {
	if c.i+4 > len(c.src) {
		return 0, false
	}
	var r rune
	for _, b := range c.src[c.i : c.i+4] {
		r <<= 4
		switch {
		case '0' <= b && b <= '9':
			r |= rune(b - '0')
		case 'a' <= b && b <= 'f':
			r |= rune(b - 'a' + 10)
		case 'A' <= b && b <= 'F':
			r |= rune(b - 'A' + 10)
		default:
			return 0, false
		}
	}
	c.i += 4
	return r, true
}

// appendRune appends r as it appears inside a canonical string.
func appendRune(dst []byte, r rune) []byte {
	switch {
	case r == '"':
		return append(dst, '\\', '"')
	case r == '\\':
		return append(dst, '\\', '\\')
	case r == '\n':
		return append(dst, '\\', 'n')
	case r == '\r':
		return append(dst, '\\', 'r')
	case r == '\t':
		return append(dst, '\\', 't')
	case r < 0x20:
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
	case r == '\u2028' || r == '\u2029':
		return append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
	case r < utf8.RuneSelf:
		return append(dst, byte(r))
	default:
		return utf8.AppendRune(dst, r)
	}
}

// appendString appends s as a canonical JSON string. Invalid UTF-8 becomes
// U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		// Copy the run of ASCII bytes that stand for themselves.
		run := i
		for run < len(s) && plain[s[run]] {
			run++
		}
		dst = append(dst, s[i:run]...)
		if run == len(s) {
			break
		}
		r, size := utf8.DecodeRuneInString(s[run:])
		dst = appendRune(dst, r)
		i = run + size
	}
	return append(dst, '"')
}

// AppendString appends s as a JSON string in the canonical encoding: what
// encoding/json writes for s, canonicalized (invalid UTF-8 becomes
// U+FFFD).
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendJSON appends the canonical encoding of the JSON text src.
func AppendJSON(dst, src []byte) ([]byte, error) { return appendCanonical(dst, src) }

// Canonical is record data its maker encoded in the canonical encoding
// (with AppendString, AppendJSON and keys written in order). Append takes
// it as it is, unchecked, which spares a parse of each record: data that
// is not canonical makes a record that fails verification. Its JSON is
// itself.
type Canonical []byte

// MarshalJSON returns c ({} when empty).
func (c Canonical) MarshalJSON() ([]byte, error) {
	if len(c) == 0 {
		return []byte("{}"), nil
	}
	return c, nil
}

func (c *canonicalizer) number(dst []byte) ([]byte, error) {
	begin := c.i
	integer := true
	if c.src[c.i] == '-' {
		c.i++
	}
	switch {
	case c.i < len(c.src) && c.src[c.i] == '0':
		c.i++
	case c.i < len(c.src) && '1' <= c.src[c.i] && c.src[c.i] <= '9':
		c.digits()
	default:
		return dst, c.errorf("invalid number")
	}
	if c.i < len(c.src) && c.src[c.i] == '.' {
		integer = false
		c.i++
		if c.digits() == 0 {
			return dst, c.errorf("invalid number: no digits after '.'")
		}
	}
	if c.i < len(c.src) && (c.src[c.i] == 'e' || c.src[c.i] == 'E') {
		integer = false
		c.i++
		if c.i < len(c.src) && (c.src[c.i] == '+' || c.src[c.i] == '-') {
			c.i++
		}
		if c.digits() == 0 {
			return dst, c.errorf("invalid number: no digits in exponent")
		}
	}
	lit := c.src[begin:c.i]
	if integer {
		if string(lit) == "-0" {
			return append(dst, '0'), nil
		}
		return append(dst, lit...), nil
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return dst, &syntaxError{off: begin, msg: fmt.Sprintf("number %s out of range", lit)}
	}
	return appendFloat(dst, f), nil
}

func (c *canonicalizer) digits() int {
	n := 0
	for c.i < len(c.src) && '0' <= c.src[c.i] && c.src[c.i] <= '9' {
		c.i++
		n++
	}
	return n
}

// appendFloat appends f as encoding/json writes a float64, with -0 as 0.
func appendFloat(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0')
	}
	format := byte('f')
	if abs := math.Abs(f); abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7, as encoding/json does.
		b := dst[start:]
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			dst = dst[:len(dst)-1]
		}
	}
	return dst
}
