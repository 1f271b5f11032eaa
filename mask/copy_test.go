package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func fieldsString(fields [][]byte) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(' ')
		}
		if f == nil {
			b.WriteString("NULL")
		} else {
			fmt.Fprintf(&b, "%q", f)
		}
	}
	b.WriteByte(']')
	return b.String()
}

func equalFields(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) || !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func fieldsOf(vs ...any) [][]byte {
	out := make([][]byte, len(vs))
	for i, v := range vs {
		if v != nil {
			out[i] = []byte(v.(string))
		}
	}
	return out
}

func TestCopyRow(t *testing.T) {
	text, csv := CopyFormat{}, CopyFormat{CSV: true}
	for _, c := range []struct {
		f      CopyFormat
		row    string
		fields [][]byte
	}{
		{text, "1\talice@example.com\t\\N\n", fieldsOf("1", "alice@example.com", nil)},
		{text, "a\\tb\\nc\\\\d\\re\t\n", fieldsOf("a\tb\nc\\d\re", "")},
		{text, "\\\\N\t\\N\n", fieldsOf(`\N`, nil)},
		{text, "\x01\\b\\f\\v\n", fieldsOf("\x01\b\f\v")},
		{text, "\n", fieldsOf("")},
		{text, "\\.\n", fieldsOf(`.`)},
		{CopyFormat{Delimiter: '|', Null: "NULL"}, "a\\|b|NULL|\n", fieldsOf("a|b", nil, "")},
		{CopyFormat{NullEmpty: true}, "a\t\t\\\\N\n", fieldsOf("a", nil, `\N`)},
		{csv, "1,alice@example.com,\n", fieldsOf("1", "alice@example.com", nil)},
		{csv, "\"a,b\",\"\",\"say \"\"hi\"\"\",\"line\nbreak\"\n", fieldsOf("a,b", "", `say "hi"`, "line\nbreak")},
		{csv, "\"\\.\"\n", fieldsOf(`\.`)},
		{csv, "\"\"\n", fieldsOf("")},
		{csv, "\n", fieldsOf(nil)},
		{CopyFormat{CSV: true, Delimiter: ';', Null: "NULL", Quote: '\'', Escape: '\\'}, "'a;b';NULL;'NULL';'it\\'s';c\\d\n", fieldsOf("a;b", nil, "NULL", "it's", `c\d`)},
	} {
		got, err := SplitCopyRow(c.f, []byte(c.row), nil)
		if err != nil || !equalFields(got, c.fields) {
			t.Errorf("SplitCopyRow(%+v, %q) = %s, %v; want %s", c.f, c.row, fieldsString(got), err, fieldsString(c.fields))
		}
		if len(c.fields) == 1 && c.fields[0] != nil && len(c.fields[0]) == 0 && !c.f.CSV {
			continue // zero columns and one empty column write alike
		}
		if out := AppendCopyRow(nil, c.f, c.fields); string(out) != c.row && c.row != "\\.\n" {
			t.Errorf("AppendCopyRow(%+v, %s) = %q; want %q", c.f, fieldsString(c.fields), out, c.row)
		}
	}
}

func TestSplitCopyRowMalformed(t *testing.T) {
	for _, c := range []struct {
		f   CopyFormat
		row string
	}{
		{CopyFormat{}, ""},
		{CopyFormat{}, "a\\\n"},
		{CopyFormat{}, "a\nb\n"},
		{CopyFormat{}, "a\rb\n"},
		{CopyFormat{CSV: true}, "\"abc\n"},
		{CopyFormat{CSV: true}, "a\nb\n"},
		{CopyFormat{CSV: true}, "\"a\"\"\n"},
	} {
		if got, err := SplitCopyRow(c.f, []byte(c.row), nil); !errors.Is(err, ErrCopyRow) {
			t.Errorf("SplitCopyRow(%+v, %q) = %s, %v; want ErrCopyRow", c.f, c.row, fieldsString(got), err)
		}
	}
}

func TestSplitCopyRowAliasing(t *testing.T) {
	row := []byte("plain\ta\\tb\n")
	orig := bytes.Clone(row)
	fields, buf, err := SplitCopyRowBuf(CopyFormat{}, row, nil, make([]byte, 0, 64))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(row, orig) {
		t.Error("SplitCopyRowBuf changed the row")
	}
	if &fields[0][0] != &row[0] {
		t.Error("a field without escapes does not alias the row")
	}
	if &fields[1][0] != &buf[0] {
		t.Error("a decoded field is not in buf")
	}
	// Appending to a field must not overwrite the next one.
	_ = append(fields[0], 'X')
	if !bytes.Equal(row, orig) {
		t.Error("appending to a field overwrote the row")
	}
	n := testing.AllocsPerRun(100, func() {
		fields, buf, _ = SplitCopyRowBuf(CopyFormat{}, row, fields, buf)
	})
	if n != 0 {
		t.Errorf("SplitCopyRowBuf allocates %v times with buffers; want 0", n)
	}
}

func TestCopyFormatValidate(t *testing.T) {
	for _, c := range []struct {
		f  CopyFormat
		ok bool
	}{
		{CopyFormat{}, true},
		{CopyFormat{CSV: true}, true},
		{CopyFormat{Delimiter: '|'}, true},
		{CopyFormat{Delimiter: '\n'}, false},
		{CopyFormat{Delimiter: '\\'}, false},
		{CopyFormat{Delimiter: 'a'}, false},
		{CopyFormat{CSV: true, Delimiter: 'a'}, true},
		{CopyFormat{CSV: true, Delimiter: '"'}, false},
		{CopyFormat{Null: "a\tb"}, false},
		{CopyFormat{CSV: true, Null: `"`}, false},
	} {
		if err := c.f.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v.Validate() = %v; want ok %v", c.f, err, c.ok)
		}
	}
}

// copyCapture is a COPY TO STDOUT as PostgreSQL sent it: the statement, the
// format, the rows (one CopyData message each) and the values the rows hold,
// as a SELECT of the same data returns them in text format.
type copyCapture struct {
	SQL    string      `json:"sql"`
	Format CopyFormat  `json:"format"`
	Rows   []string    `json:"rows"`
	Fields [][]*string `json:"fields"`
	Header bool        `json:"header,omitempty"`
	_      struct{}    `json:"-"`
}

func loadCaptures(t testing.TB) []copyCapture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "copy_captures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cs []copyCapture
	if err := json.Unmarshal(b, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func stringsToFields(vs []*string) [][]byte {
	out := make([][]byte, len(vs))
	for i, v := range vs {
		if v != nil {
			out[i] = []byte(*v)
		}
	}
	return out
}

// TestCopyCaptures splits rows captured from PostgreSQL into the values it
// holds, and writes the values back into the very bytes PostgreSQL sent.
func TestCopyCaptures(t *testing.T) {
	for _, c := range loadCaptures(t) {
		checkCapture(t, c)
	}
}

func checkCapture(t *testing.T, c copyCapture) {
	t.Helper()
	rows := c.Rows
	if c.Format.Header {
		names, err := SplitCopyRow(c.Format, []byte(rows[0]), nil)
		if out := AppendCopyRow(nil, c.Format, names); err != nil || string(out) != rows[0] {
			t.Errorf("%s: header %q splits to %s, %v and appends to %q", c.SQL, rows[0], fieldsString(names), err, out)
		}
		rows = rows[1:]
	}
	if len(rows) != len(c.Fields) {
		t.Fatalf("%s: %d rows, %d selected", c.SQL, len(rows), len(c.Fields))
	}
	for i, row := range rows {
		want := stringsToFields(c.Fields[i])
		// As PostgreSQL's COPY FROM would, a text-format value equal to
		// the NULL string reads back as NULL.
		read := slices.Clone(want)
		for j, v := range read {
			if !c.Format.CSV && v != nil && string(appendTextField(nil, v, c.Format.delimiter())) == c.Format.null() {
				read[j] = nil
			}
		}
		got, err := SplitCopyRow(c.Format, []byte(row), nil)
		if err != nil || !equalFields(got, read) {
			t.Errorf("%s: split %q = %s, %v; want %s", c.SQL, row, fieldsString(got), err, fieldsString(read))
		}
		if out := AppendCopyRow(nil, c.Format, want); string(out) != row {
			t.Errorf("%s: append %s = %q; PostgreSQL sent %q", c.SQL, fieldsString(want), out, row)
		}
	}
}

func FuzzCopyRow(f *testing.F) {
	for _, c := range loadCaptures(f) {
		for _, row := range c.Rows {
			f.Add(c.Format.CSV, c.Format.Delimiter, []byte(row))
		}
	}
	f.Add(false, byte(0), []byte("a\x00\\N\x00\x00\xff"))
	f.Add(true, byte(';'), []byte("a\"b\x00\n\r\x00\x00\xff\x00\\."))
	f.Fuzz(func(t *testing.T, csv bool, delim byte, blob []byte) {
		format := CopyFormat{CSV: csv, Delimiter: delim}
		if format.Validate() != nil {
			return
		}
		// Property 1: rows PostgreSQL could send survive Split then Append.
		if fields, err := SplitCopyRow(format, blob, nil); err == nil {
			row := AppendCopyRow(nil, format, fields)
			again, err := SplitCopyRow(format, row, nil)
			if err != nil || !equalFields(again, fields) {
				t.Fatalf("split %q = %s; appended %q splits to %s, %v", blob, fieldsString(fields), row, fieldsString(again), err)
			}
		}
		// Property 2: fields survive Append then Split. blob holds the
		// fields separated by 0x00; a field of one 0xff byte is NULL.
		var fields [][]byte
		for _, p := range bytes.Split(blob, []byte{0}) {
			if len(p) == 1 && p[0] == 0xff {
				fields = append(fields, nil)
			} else {
				fields = append(fields, p)
			}
		}
		if len(fields) == 1 && fields[0] != nil && len(fields[0]) == 0 && !csv {
			return // zero columns and one empty column write alike
		}
		row := AppendCopyRow(nil, format, fields)
		if !csv && bytes.IndexByte(row, '\n') != len(row)-1 {
			t.Fatalf("text row %q has a line break before its end", row)
		}
		got, err := SplitCopyRow(format, row, nil)
		if err != nil || !equalFields(got, fields) {
			t.Fatalf("append %s = %q; split %s, %v", fieldsString(fields), row, fieldsString(got), err)
		}
	})
}
