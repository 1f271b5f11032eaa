package mask

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// CopyFormat describes the rows of a COPY ... TO STDOUT in text or CSV
// format, with the statement's options. Zero fields take PostgreSQL's
// defaults. COPY in binary format is not a CopyFormat: its values cannot be
// masked row by row here.
type CopyFormat struct {
	// CSV selects the CSV format; false is the text format.
	CSV bool
	// Delimiter separates fields: default '\t' (text) or ',' (CSV).
	Delimiter byte
	// Null is the text of a NULL: default `\N` (text) or "" (CSV). In text
	// format "" means the default; set NullEmpty for NULL ''.
	Null string
	// NullEmpty makes the text format's NULL the empty string.
	NullEmpty bool
	// Quote is the CSV quote character: default '"'.
	Quote byte
	// Escape is the CSV character that escapes Quote (and itself) inside
	// quotes: default Quote.
	Escape byte
	// Header says the first row names the columns. SplitCopyRow and
	// AppendCopyRow treat every row alike: the header row splits into the
	// column names, which the caller passes through unmasked.
	Header bool
}

func (f CopyFormat) delimiter() byte {
	switch {
	case f.Delimiter != 0:
		return f.Delimiter
	case f.CSV:
		return ','
	}
	return '\t'
}

func (f CopyFormat) null() string {
	if f.Null == "" && !f.CSV && !f.NullEmpty {
		return `\N`
	}
	return f.Null
}

func (f CopyFormat) quote() byte {
	if f.Quote == 0 {
		return '"'
	}
	return f.Quote
}

func (f CopyFormat) escape() byte {
	if f.Escape == 0 {
		return f.quote()
	}
	return f.Escape
}

// Validate reports options that PostgreSQL rejects, so rows in them cannot
// occur: a delimiter that is a line break, not ASCII, a backslash or (text)
// a letter, digit or dot, or (CSV) the quote; a NULL string with the
// delimiter, a line break or (CSV) the quote.
func (f CopyFormat) Validate() error {
	d, null := f.delimiter(), f.null()
	switch {
	case d == '\n' || d == '\r':
		return errors.New("COPY delimiter cannot be newline or carriage return")
	case d >= 0x80:
		return errors.New("COPY delimiter must be a single one-byte character")
	case d == '\\' || !f.CSV && strings.IndexByte(".abcdefghijklmnopqrstuvwxyz0123456789", d) >= 0:
		return fmt.Errorf("COPY delimiter cannot be %q", d)
	case strings.ContainsAny(null, "\r\n"):
		return errors.New("COPY null representation cannot use newline or carriage return")
	case strings.IndexByte(null, d) >= 0:
		return errors.New("COPY delimiter must not appear in the NULL specification")
	}
	if f.CSV {
		q, e := f.quote(), f.escape()
		switch {
		case q >= 0x80 || e >= 0x80:
			return errors.New("COPY quote and escape must be single one-byte characters")
		case q == d:
			return errors.New("COPY delimiter and quote must be different")
		case strings.IndexByte(null, q) >= 0:
			return errors.New("CSV quote character must not appear in the NULL specification")
		}
	}
	return nil
}

// ErrCopyRow is wrapped by SplitCopyRow's errors: the row is not one that
// PostgreSQL writes in the format.
var ErrCopyRow = errors.New("malformed COPY row")

// SplitCopyRow splits one COPY row, with its trailing newline (which may be
// missing), into fields appended to fields[:0]: nil for NULL, else the
// decoded value (text-format backslash escapes or CSV quoting undone).
// Fields that need no decoding alias row; the others are allocated. row is
// never modified. A malformed row is an error wrapping ErrCopyRow.
//
// A row of zero columns ("\n") splits into one empty field.
func SplitCopyRow(f CopyFormat, row []byte, fields [][]byte) ([][]byte, error) {
	fields, _, err := SplitCopyRowBuf(f, row, fields, nil)
	return fields, err
}

// SplitCopyRowBuf is SplitCopyRow that decodes into buf[:0], grown as
// needed, and returns it for reuse with the next row: decoded fields alias
// buf and stay valid until buf is passed again.
func SplitCopyRowBuf(f CopyFormat, row []byte, fields [][]byte, buf []byte) ([][]byte, []byte, error) {
	if len(row) == 0 {
		return fields[:0], buf, fmt.Errorf("%w: empty", ErrCopyRow)
	}
	if row[len(row)-1] == '\n' {
		row = row[:len(row)-1]
		if len(row) > 0 && row[len(row)-1] == '\r' {
			row = row[:len(row)-1]
		}
	}
	// Decoded fields are never longer than the row: reserve it all at once
	// so that earlier fields are not left in a buffer that append replaced.
	buf = buf[:0]
	if f.CSV {
		return splitCSV(f, row, fields[:0], buf)
	}
	return splitText(f, row, fields[:0], buf)
}

func splitText(f CopyFormat, row []byte, fields [][]byte, buf []byte) ([][]byte, []byte, error) {
	delim, null := f.delimiter(), f.null()
	start := 0
	for {
		i, escaped := start, false
		for i < len(row) && row[i] != delim {
			switch row[i] {
			case '\\':
				if i+1 == len(row) {
					return fields, buf, fmt.Errorf("%w: ends in a backslash", ErrCopyRow)
				}
				escaped = true
				i += 2
				continue
			case '\n', '\r':
				return fields, buf, fmt.Errorf("%w: unescaped line break in text format", ErrCopyRow)
			}
			i++
		}
		raw := row[start:i:i]
		switch {
		case string(raw) == null:
			fields = append(fields, nil)
		case !escaped:
			fields = append(fields, raw)
		default:
			if cap(buf) < len(row) {
				buf = make([]byte, 0, max(len(row), 2*cap(buf)))
			}
			n := len(buf)
			buf = appendUnescapeText(buf, raw)
			fields = append(fields, buf[n:len(buf):len(buf)])
		}
		if i == len(row) {
			return fields, buf, nil
		}
		start = i + 1
	}
}

// appendUnescapeText undoes COPY text escapes as COPY FROM does: \b \f \n
// \r \t \v, \digits (octal, 1-3), \xhex (1-2), and \c for any other c.
func appendUnescapeText(dst, raw []byte) []byte {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		c = raw[i]
		switch c {
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'v':
			c = '\v'
		case 'x':
			if i+1 < len(raw) {
				if h, ok := unhex(raw[i+1]); ok {
					i++
					c = h
					if i+1 < len(raw) {
						if l, ok := unhex(raw[i+1]); ok {
							i++
							c = c<<4 | l
						}
					}
				}
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for k := 0; k < 2 && i+1 < len(raw) && isOctal(raw[i+1]); k++ {
				i++
				v = v<<3 | int(raw[i]-'0')
			}
			c = byte(v)
		}
		dst = append(dst, c)
	}
	return dst
}

func splitCSV(f CopyFormat, row []byte, fields [][]byte, buf []byte) ([][]byte, []byte, error) {
	delim, null, quote, esc := f.delimiter(), f.null(), f.quote(), f.escape()
	start := 0
	for {
		i, quoted, inQuote := start, false, false
		for ; i < len(row); i++ {
			c := row[i]
			switch {
			case inQuote && c == esc && i+1 < len(row) && (row[i+1] == quote || row[i+1] == esc):
				i++
			case c == quote:
				quoted, inQuote = true, !inQuote
			case inQuote:
			case c == delim:
				goto end
			case c == '\n' || c == '\r':
				return fields, buf, fmt.Errorf("%w: unquoted line break in CSV", ErrCopyRow)
			}
		}
	end:
		if inQuote {
			return fields, buf, fmt.Errorf("%w: unterminated CSV quoted field", ErrCopyRow)
		}
		raw := row[start:i:i]
		switch {
		case !quoted && string(raw) == null:
			fields = append(fields, nil)
		case !quoted:
			fields = append(fields, raw)
		case len(raw) >= 2 && raw[0] == quote && raw[len(raw)-1] == quote &&
			bytes.IndexByte(raw[1:len(raw)-1], quote) < 0 && bytes.IndexByte(raw[1:len(raw)-1], esc) < 0:
			fields = append(fields, raw[1:len(raw)-1:len(raw)-1])
		default:
			if cap(buf) < len(row) {
				buf = make([]byte, 0, max(len(row), 2*cap(buf)))
			}
			n := len(buf)
			buf = appendUnquoteCSV(buf, raw, quote, esc)
			fields = append(fields, buf[n:len(buf):len(buf)])
		}
		if i == len(row) {
			return fields, buf, nil
		}
		start = i + 1
	}
}

// appendUnquoteCSV decodes one CSV field already checked by splitCSV.
func appendUnquoteCSV(dst, raw []byte, quote, esc byte) []byte {
	inQuote := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !inQuote {
			if c == quote {
				inQuote = true
			} else {
				dst = append(dst, c)
			}
			continue
		}
		switch {
		case c == esc && i+1 < len(raw) && (raw[i+1] == quote || raw[i+1] == esc):
			i++
			dst = append(dst, raw[i])
		case c == quote:
			inQuote = false
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// AppendCopyRow appends fields (nil for NULL) as one COPY row with its
// trailing newline, escaped (text) or quoted (CSV) as PostgreSQL's COPY TO
// writes them. Forced quoting (FORCE_QUOTE) is not reproduced: CSV fields
// are quoted where the data need it, which reads back the same.
//
// As in PostgreSQL, a text-format value equal to a non-default NULL string
// is written as is, and so reads back as NULL.
func AppendCopyRow(dst []byte, f CopyFormat, fields [][]byte) []byte {
	delim, null := f.delimiter(), f.null()
	for i, v := range fields {
		if i > 0 {
			dst = append(dst, delim)
		}
		switch {
		case v == nil:
			dst = append(dst, null...)
		case f.CSV:
			dst = appendCSVField(dst, v, delim, null, f.quote(), f.escape(), len(fields) == 1)
		default:
			dst = appendTextField(dst, v, delim)
		}
	}
	return append(dst, '\n')
}

func appendTextField(dst, v []byte, delim byte) []byte {
	start := 0
	for i, c := range v {
		var esc byte
		switch {
		case c < 0x20:
			switch c {
			case '\b':
				esc = 'b'
			case '\f':
				esc = 'f'
			case '\n':
				esc = 'n'
			case '\r':
				esc = 'r'
			case '\t':
				esc = 't'
			case '\v':
				esc = 'v'
			default:
				if c != delim {
					continue
				}
				esc = c
			}
		case c == '\\' || c == delim:
			esc = c
		default:
			continue
		}
		dst = append(dst, v[start:i]...)
		dst = append(dst, '\\', esc)
		start = i + 1
	}
	return append(dst, v[start:]...)
}

func appendCSVField(dst, v []byte, delim byte, null string, quote, esc byte, single bool) []byte {
	need := string(v) == null || single && string(v) == `\.`
	for _, c := range v {
		if need {
			break
		}
		need = c == delim || c == quote || c == '\n' || c == '\r'
	}
	if !need {
		return append(dst, v...)
	}
	dst = append(dst, quote)
	start := 0
	for i, c := range v {
		if c == quote || c == esc {
			dst = append(dst, v[start:i]...)
			dst = append(dst, esc)
			start = i
		}
	}
	dst = append(dst, v[start:]...)
	return append(dst, quote)
}
