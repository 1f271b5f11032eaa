package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

var testKey = bytes.Repeat([]byte{0x42}, KeySize)

const (
	textFmt   = pgtype.TextFormatCode
	binaryFmt = pgtype.BinaryFormatCode
)

func mustMethod(t testing.TB, name string, params map[string]any) *Method {
	t.Helper()
	m, err := NewMethod(name, params)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// numericMod returns the typmod of numeric(p, s).
func numericTypmod(p, s int) int32 { return int32(p<<16|s&0x7ff) + 4 }

// scanTarget returns a pointer pgtype decodes a value of oid into.
func scanTarget(oid uint32) any {
	switch oid {
	case pgtype.Int2OID:
		return new(int16)
	case pgtype.Int4OID:
		return new(int32)
	case pgtype.Int8OID:
		return new(int64)
	case pgtype.NumericOID:
		return new(pgtype.Numeric)
	case pgtype.Float4OID:
		return new(float32)
	case pgtype.Float8OID:
		return new(float64)
	case pgtype.UUIDOID:
		return new(pgtype.UUID)
	case pgtype.InetOID, pgtype.CIDROID:
		return new(netip.Prefix)
	case pgtype.ByteaOID:
		return new([]byte)
	case pgtype.JSONOID, pgtype.JSONBOID:
		return new(json.RawMessage)
	case pgtype.DateOID:
		return new(pgtype.Date)
	case pgtype.TimestamptzOID:
		return new(pgtype.Timestamptz)
	case pgtype.BoolOID:
		return new(bool)
	case pgtype.IntervalOID:
		return new(pgtype.Interval)
	}
	return new(string)
}

// canonical prints a decoded value so that equal values print alike.
func canonical(v any) string {
	switch x := v.(type) {
	case *pgtype.Numeric:
		if x.NaN {
			return "NaN"
		}
		if x.InfinityModifier != pgtype.Finite {
			return fmt.Sprint(x.InfinityModifier)
		}
		r := new(big.Rat).SetInt(x.Int)
		e := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(max(x.Exp, -x.Exp))), nil)
		if x.Exp >= 0 {
			r.Mul(r, new(big.Rat).SetInt(e))
		} else {
			r.Quo(r, new(big.Rat).SetInt(e))
		}
		return r.RatString()
	case *json.RawMessage:
		var a any
		if err := json.Unmarshal(*x, &a); err != nil {
			return "invalid json " + err.Error()
		}
		return fmt.Sprintf("%#v", a)
	case *pgtype.UUID:
		return fmt.Sprintf("%x", x.Bytes)
	}
	return fmt.Sprintf("%v", reflectDeref(v))
}

func reflectDeref(v any) any {
	switch x := v.(type) {
	case *int16:
		return *x
	case *int32:
		return *x
	case *int64:
		return *x
	case *float32:
		return *x
	case *float64:
		return *x
	case *netip.Prefix:
		return *x
	case *[]byte:
		return *x
	case *string:
		return *x
	}
	return v
}

// binaryOf encodes a text-format value in binary format, as PostgreSQL would
// send it.
func binaryOf(t testing.TB, oid uint32, text string) []byte {
	t.Helper()
	switch oid {
	case pgtype.JSONBOID:
		return append([]byte{1}, text...)
	case pgtype.JSONOID, pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UnknownOID:
		return []byte(text)
	}
	if oid >= 90000 { // test-only unknown types
		return []byte(text)
	}
	tm := pgtype.NewMap()
	target := scanTarget(oid)
	if err := tm.Scan(oid, textFmt, []byte(text), target); err != nil {
		t.Fatalf("scan %q as %d: %v", text, oid, err)
	}
	b, err := tm.Encode(oid, binaryFmt, target, nil)
	if err != nil {
		t.Fatalf("encode %q as %d: %v", text, oid, err)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

// checkValid decodes out as a value of col's type with pgtype and checks the
// limits pgtype does not (character lengths, JSON, UTF-8). It returns the
// decoded value in canonical form.
func checkValid(t testing.TB, col Column, out []byte) string {
	t.Helper()
	target := scanTarget(col.TypeOID)
	if err := pgtype.NewMap().Scan(col.TypeOID, col.Format, out, target); err != nil {
		t.Errorf("result %q is not a valid %s (format %d): %v", out, typeName(col.TypeOID), col.Format, err)
		return ""
	}
	switch col.TypeOID {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
		s := *target.(*string)
		if !utf8.ValidString(s) {
			t.Errorf("result %q is not UTF-8", s)
		}
		if strings.IndexByte(s, 0) >= 0 {
			t.Errorf("result %q holds NUL", s)
		}
		n := utf8.RuneCountInString(s)
		switch {
		case col.TypeOID == pgtype.VarcharOID && col.TypeMod >= 4 && n > int(col.TypeMod-4):
			t.Errorf("result %q longer than varchar(%d)", s, col.TypeMod-4)
		case col.TypeOID == pgtype.BPCharOID && col.TypeMod >= 4 && n != int(col.TypeMod-4):
			t.Errorf("result %q is not char(%d)", s, col.TypeMod-4)
		case col.TypeOID == pgtype.NameOID && len(s) > 63:
			t.Errorf("result %q longer than a name", s)
		}
	case pgtype.JSONOID, pgtype.JSONBOID:
		var s string
		if err := json.Unmarshal(*target.(*json.RawMessage), &s); err != nil {
			t.Errorf("result %q is not a JSON string: %v", out, err)
		}
	case pgtype.CIDROID:
		p := *target.(*netip.Prefix)
		if p.Masked() != p {
			t.Errorf("result %v is not a cidr: host bits set", p)
		}
	}
	return canonical(target)
}

const null = "<NULL>"

type maskCase struct {
	oid    uint32
	typmod int32
	in     string // text format, as PostgreSQL prints it
	method string
	params map[string]any
	want   string // text-format result; "~" starts a regexp; null for NULL
}

func maskCases() []maskCase {
	const (
		text, varchar, bpchar, name = pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID
		bytea, js, jsb              = pgtype.ByteaOID, pgtype.JSONOID, pgtype.JSONBOID
		i2, i4, i8, num             = pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID
		f4, f8, uuid                = pgtype.Float4OID, pgtype.Float8OID, pgtype.UUIDOID
		inet, cidr                  = pgtype.InetOID, pgtype.CIDROID
	)
	p := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	long := strings.Repeat("é", 40)
	return []maskCase{
		// text
		{text, -1, "alice@example.com", MethodRedact, nil, "****"},
		{text, -1, "alice@example.com", MethodRedact, p("text", "[redacted]"), "[redacted]"},
		{text, -1, "alice@example.com", MethodPartial, nil, "a***************m"},
		{text, -1, "4111111111111111", MethodPartial, p("keep_first", 2, "keep_last", 4), "41**********1111"},
		{text, -1, "4111111111111111", MethodPartial, p("keep_first", 0.0, "keep_last", 4.0, "mask_char", "#"), "############1111"},
		{text, -1, "secret", MethodPartial, p("keep_first", 3, "keep_last", 3), "se***t"},
		{text, -1, "ab", MethodPartial, nil, "a*"},
		{text, -1, "a", MethodPartial, nil, "*"},
		{text, -1, "", MethodPartial, nil, ""},
		{text, -1, "héllo wörld", MethodPartial, p("keep_first", 2, "keep_last", 2, "mask_char", "•"), "hé•••••••ld"},
		{text, -1, "héllo", MethodPartial, p("keep_first", 2, "keep_last", 1), "h***o"},
		{text, -1, "alice@example.com", MethodEmail, nil, "****@example.com"},
		{text, -1, "a@b@example.com", MethodEmail, nil, "****@example.com"},
		{text, -1, "nobody", MethodEmail, nil, "****"},
		{text, -1, "4111-1111-1111-1111", MethodLast4, nil, "****-****-****-1111"},
		{text, -1, "4111 1111 1111 1111", MethodLast4, nil, "**** **** **** 1111"},
		{text, -1, "123-45-6789", MethodLast4, nil, "***-**-6789"},
		{text, -1, "GB29 NWBK 6016 1331 9268 19", MethodLast4, nil, "**** **** **** **** **68 19"},
		{text, -1, "1234", MethodLast4, nil, "**34"},
		{text, -1, "ab-c", MethodLast4, nil, "**-c"},
		{text, -1, "---", MethodLast4, nil, "---"},
		{text, -1, "alice@example.com", MethodHash, nil, "~^[0-9a-f]{16}$"},
		{text, -1, "alice@example.com", MethodHash, p("length", 7), "~^[0-9a-f]{7}$"},
		{text, -1, "alice@example.com", MethodHash, p("length", 64), "~^[0-9a-f]{64}$"},
		{text, -1, "alice@example.com", MethodNull, nil, null},
		{varchar, 5 + 4, "alice", MethodRedact, p("text", "redacted"), "redac"},
		{varchar, 3 + 4, "alice", MethodEmail, nil, "***"},
		{varchar, -1, "alice", MethodRedact, p("text", "redacted"), "redacted"},
		{varchar, 2 + 4, "héllo", MethodPartial, nil, "h*"},
		{bpchar, 6 + 4, "ab    ", MethodRedact, nil, "****  "},
		{bpchar, 3 + 4, "abc", MethodRedact, nil, "***"},
		{bpchar, 8 + 4, "abcd    ", MethodPartial, nil, "a**d    "},
		{bpchar, 4 + 4, "ab  ", MethodHash, nil, "~^[0-9a-f]{4}$"},
		{bpchar, -1, "ab", MethodRedact, nil, "****"},
		{name, -1, "alice", MethodRedact, p("text", long), long[:62]},
		{name, -1, "alice", MethodHash, p("length", 64), "~^[0-9a-f]{63}$"},
		{pgtype.UnknownOID, -1, "alice", MethodPartial, nil, "a***e"},

		// bytea
		{bytea, -1, `\x0102030405`, MethodHash, nil, `~^\\x[0-9a-f]{16}$`},
		{bytea, -1, `\x0102030405`, MethodHash, p("length", 5), `~^\\x[0-9a-f]{6}$`},
		{bytea, -1, `\x0102030405`, MethodRedact, nil, `\x2a2a2a2a`},
		{bytea, -1, `\x616c69636540782e6f7267`, MethodEmail, nil, `\x2a2a2a2a40782e6f7267`},
		{bytea, -1, `\x`, MethodPartial, nil, `\x`},
		{bytea, -1, `\x01`, MethodNull, nil, null},

		// json and jsonb
		{js, -1, `"alice@example.com"`, MethodEmail, nil, `"****@example.com"`},
		{js, -1, `{"email": "alice@example.com"}`, MethodRedact, nil, `"****"`},
		{js, -1, `"a\"b\\c\u00e9\n"`, MethodPartial, p("keep_first", 2), `"a\"****\n"`},
		{js, -1, `123`, MethodHash, nil, `~^"[0-9a-f]{16}"$`},
		{jsb, -1, `"alice@example.com"`, MethodEmail, nil, `"****@example.com"`},
		{jsb, -1, `{"card": "4111111111111111"}`, MethodHash, p("length", 8), `~^"[0-9a-f]{8}"$`},
		{jsb, -1, `[1, 2]`, MethodPartial, nil, `"[****]"`},
		{jsb, -1, `"tab\there"`, MethodRedact, p("text", "x\"y\x01"), `"x\"y\u0001"`},
		{jsb, -1, `null`, MethodLast4, nil, `"**ll"`},

		// integers
		{i4, -1, "123456", MethodLast4, nil, "3456"},
		{i4, -1, "-42", MethodLast4, nil, "42"},
		{i4, -1, "123456", MethodHash, nil, "~^[0-9]{1,10}$"},
		{i4, -1, "123456", MethodPartial, nil, null},
		{i4, -1, "123456", MethodEmail, nil, null},
		{i4, -1, "123456", MethodRedact, nil, null},
		{i4, -1, "123456", MethodRedact, p("text", "-1"), "-1"},
		{i4, -1, "123456", MethodRedact, p("text", "9999999999"), null},
		{i4, -1, "123456", MethodNull, nil, null},
		{i2, -1, "-32768", MethodLast4, nil, "2768"},
		{i2, -1, "7", MethodHash, nil, "~^[0-9]{1,5}$"},
		{i8, -1, "-9223372036854775808", MethodLast4, nil, "5808"},
		{i8, -1, "4111111111111111", MethodLast4, nil, "1111"},
		{i8, -1, "4111111111111111", MethodHash, nil, "~^[0-9]{1,19}$"},

		// numeric
		{num, -1, "12345.678", MethodLast4, nil, "2345"},
		{num, -1, "-0.5", MethodLast4, nil, "0"},
		{num, numericTypmod(10, 2), "12345.67", MethodLast4, nil, "2345.00"},
		{num, numericTypmod(5, 2), "123.45", MethodLast4, nil, "123.00"},
		{num, numericTypmod(10, 2), "12345.67", MethodHash, nil, `~^[0-9]{1,8}\.00$`},
		{num, numericTypmod(3, 0), "123", MethodHash, nil, `~^[0-9]{1,3}$`},
		{num, numericTypmod(2, 2), "0.12", MethodHash, nil, `0.00`},
		{num, numericTypmod(5, -2), "12300", MethodHash, nil, null},
		{num, -1, "4111111111111111", MethodHash, nil, `~^[0-9]{1,18}$`},
		{num, -1, "NaN", MethodLast4, nil, null},
		{num, -1, "NaN", MethodHash, nil, `~^[0-9]{1,18}$`},
		{num, -1, "Infinity", MethodLast4, nil, null},
		{num, -1, "1.5", MethodRedact, nil, null},
		{num, numericTypmod(6, 2), "1.5", MethodRedact, p("text", "-7"), "-7.00"},
		{num, -1, "1.5", MethodPartial, nil, null},
		{num, -1, "100000000", MethodLast4, nil, "0"},

		// floats
		{f8, -1, "1234567.891", MethodLast4, nil, "4567"},
		{f8, -1, "-98765.5", MethodLast4, nil, "8765"},
		{f8, -1, "1234567.891", MethodHash, nil, `~^([0-9]{1,15}|[0-9]\.[0-9]+e\+15)$`},
		{f8, -1, "NaN", MethodLast4, nil, null},
		{f8, -1, "-Infinity", MethodLast4, nil, null},
		{f8, -1, "1.5", MethodPartial, nil, null},
		{f8, -1, "1.5", MethodRedact, nil, null},
		{f8, -1, "1.5", MethodRedact, p("text", "0"), "0"},
		{f4, -1, "12345.5", MethodLast4, nil, "2345"},
		{f4, -1, "12345.5", MethodHash, nil, `~^([0-9]{1,6}|[0-9]\.[0-9]+e\+0[67])$`},

		// uuid
		{uuid, -1, "123e4567-e89b-12d3-a456-426614174000", MethodHash, nil, `~^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`},
		{uuid, -1, "123e4567-e89b-12d3-a456-426614174000", MethodRedact, nil, null},
		{uuid, -1, "123e4567-e89b-12d3-a456-426614174000", MethodRedact, p("text", "00000000-0000-0000-0000-000000000000"), "00000000-0000-0000-0000-000000000000"},
		{uuid, -1, "123e4567-e89b-12d3-a456-426614174000", MethodPartial, nil, null},
		{uuid, -1, "123e4567-e89b-12d3-a456-426614174000", MethodLast4, nil, null},

		// inet and cidr
		{inet, -1, "192.168.1.5", MethodRedact, nil, "0.0.0.0"},
		{inet, -1, "192.168.1.5/24", MethodRedact, nil, "0.0.0.0/24"},
		{inet, -1, "192.168.1.5", MethodRedact, p("text", "192.0.2.1"), "192.0.2.1"},
		{inet, -1, "192.168.1.5", MethodHash, nil, `~^10\.[0-9]+\.[0-9]+\.[0-9]+$`},
		{inet, -1, "192.168.1.5/24", MethodHash, nil, `~^10\.[0-9]+\.[0-9]+\.[0-9]+/24$`},
		{inet, -1, "2001:db8::1", MethodRedact, nil, "::"},
		{inet, -1, "2001:db8::1", MethodHash, nil, `~^fd[0-9a-f]{2}:[0-9a-f:]+$`},
		{inet, -1, "192.168.1.5", MethodPartial, nil, null},
		{inet, -1, "192.168.1.5", MethodLast4, nil, null},
		{cidr, -1, "192.168.0.0/16", MethodRedact, nil, "0.0.0.0/16"},
		{cidr, -1, "192.168.0.0/16", MethodRedact, p("text", "10.1.2.3/8"), "0.0.0.0/16"},
		{cidr, -1, "192.168.0.0/16", MethodHash, nil, `~^10\.[0-9]+\.0\.0/16$`},
		{cidr, -1, "192.168.1.5/32", MethodHash, nil, `~^10\.[0-9]+\.[0-9]+\.[0-9]+/32$`},
		{cidr, -1, "2001:db8::/32", MethodHash, nil, `~^fd[0-9a-f]{2}:[0-9a-f]+::/32$`},

		// types without a valid masked value
		{pgtype.DateOID, -1, "2026-12-04", MethodRedact, nil, null},
		{pgtype.DateOID, -1, "2026-12-04", MethodHash, nil, null},
		{pgtype.TimestamptzOID, -1, "2026-12-04 12:30:45+00", MethodPartial, nil, null},
		{pgtype.BoolOID, -1, "t", MethodHash, nil, null},
		{pgtype.IntervalOID, -1, "1 day", MethodRedact, nil, null},
		{99999, -1, "unknown type", MethodRedact, nil, null},
	}
}

func TestMask(t *testing.T) {
	m := NewMasker(testKey)
	for _, c := range maskCases() {
		meth := mustMethod(t, c.method, c.params)
		name := fmt.Sprintf("%s(%d)/%q/%s", typeName(c.oid), c.typmod, c.in, meth)
		t.Run(name, func(t *testing.T) {
			var decoded [2]string
			var nulls [2]bool
			for _, format := range []int16{textFmt, binaryFmt} {
				col := Column{TypeOID: c.oid, TypeMod: c.typmod, Format: format}
				in := []byte(c.in)
				if format == binaryFmt {
					in = binaryOf(t, c.oid, c.in)
				}
				orig := bytes.Clone(in)
				out, isNull, err := m.Mask(make([]byte, 0, 8), meth, col, in)
				if err != nil {
					t.Fatalf("format %d: %v", format, err)
				}
				if !bytes.Equal(in, orig) {
					t.Fatalf("format %d: Mask changed its input", format)
				}
				nulls[format] = isNull
				if isNull {
					if out != nil {
						t.Errorf("format %d: NULL with out %q", format, out)
					}
					decoded[format] = null
					continue
				}
				decoded[format] = checkValid(t, col, out)
				if format != textFmt {
					continue
				}
				switch {
				case c.want == null:
					t.Errorf("got %q; want NULL", out)
				case strings.HasPrefix(c.want, "~"):
					if !regexp.MustCompile(c.want[1:]).Match(out) {
						t.Errorf("got %q; want a match of %s", out, c.want[1:])
					}
				case string(out) != c.want:
					t.Errorf("got %q; want %q", out, c.want)
				}
			}
			if c.want == null && !nulls[textFmt] {
				t.Errorf("text format: got a value; want NULL")
			}
			if decoded[textFmt] != decoded[binaryFmt] {
				t.Errorf("text and binary formats differ: %s vs %s", decoded[textFmt], decoded[binaryFmt])
			}
		})
	}
}

func TestMaskTextLike(t *testing.T) {
	m := NewMasker(testKey)
	meth := mustMethod(t, MethodPartial, nil)
	citext := Column{TypeOID: 16500, Format: textFmt}
	if out, isNull, err := m.Mask(nil, meth, citext, []byte("secret")); err != nil || !isNull || out != nil {
		t.Errorf("unknown type: got %q, %v, %v; want NULL", out, isNull, err)
	}
	citext.TextLike = true
	for _, f := range []int16{textFmt, binaryFmt} {
		citext.Format = f
		if out, isNull, err := m.Mask(nil, meth, citext, []byte("secret")); err != nil || isNull || string(out) != "s****t" {
			t.Errorf("TextLike format %d: got %q, %v, %v; want s****t", f, out, isNull, err)
		}
	}
}

func TestMaskNullAndErrors(t *testing.T) {
	m := NewMasker(testKey)
	meth := mustMethod(t, MethodRedact, nil)
	for _, oid := range []uint32{pgtype.TextOID, pgtype.Int4OID, pgtype.UUIDOID, 99999} {
		out, isNull, err := m.Mask(nil, meth, Column{TypeOID: oid}, nil)
		if out != nil || !isNull || err != nil {
			t.Errorf("NULL %s: got %q, %v, %v; want NULL", typeName(oid), out, isNull, err)
		}
	}
	hash := mustMethod(t, MethodHash, nil)
	for _, c := range []struct {
		col Column
		in  string
	}{
		{Column{TypeOID: pgtype.Int4OID, Format: binaryFmt}, "\x00\x01\x02"},
		{Column{TypeOID: pgtype.Int4OID}, "12a"},
		{Column{TypeOID: pgtype.Int2OID}, "40000"},
		{Column{TypeOID: pgtype.Int8OID}, "9223372036854775808"},
		{Column{TypeOID: pgtype.NumericOID}, "1e5"},
		{Column{TypeOID: pgtype.NumericOID, Format: binaryFmt}, "\x00\x01\x00\x00"},
		{Column{TypeOID: pgtype.Float8OID}, "one"},
		{Column{TypeOID: pgtype.UUIDOID}, "123e4567-e89b-12d3-a456"},
		{Column{TypeOID: pgtype.InetOID}, "300.1.1.1"},
		{Column{TypeOID: pgtype.InetOID, Format: binaryFmt}, "\x02\x40\x00\x04\x01\x02\x03\x04"},
		{Column{TypeOID: pgtype.ByteaOID}, `\x0`},
		{Column{TypeOID: pgtype.ByteaOID}, `\q`},
		{Column{TypeOID: pgtype.JSONBOID, Format: binaryFmt}, `"x"`},
		{Column{TypeOID: pgtype.JSONOID}, `"unterminated`},
	} {
		out, isNull, err := m.Mask(nil, hash, c.col, []byte(c.in))
		if !errors.Is(err, ErrMalformed) || out != nil || !isNull {
			t.Errorf("%s format %d %q: got %q, %v, %v; want NULL and ErrMalformed", typeName(c.col.TypeOID), c.col.Format, c.in, out, isNull, err)
		}
	}
	if _, isNull, err := m.Mask(nil, nil, Column{TypeOID: pgtype.TextOID}, []byte("x")); err == nil || !isNull {
		t.Error("nil method: want an error and NULL")
	}
	if _, isNull, err := m.Mask(nil, meth, Column{TypeOID: pgtype.TextOID, Format: 2}, []byte("x")); err == nil || !isNull {
		t.Error("format 2: want an error and NULL")
	}
}

func TestMaskByteaEscapeFormat(t *testing.T) {
	m := NewMasker(testKey)
	hash := mustMethod(t, MethodHash, nil)
	col := Column{TypeOID: pgtype.ByteaOID}
	hexOut, _, err := m.Mask(nil, hash, col, []byte(`\x5c0141`))
	if err != nil {
		t.Fatal(err)
	}
	escOut, _, err := m.Mask(nil, hash, col, []byte(`\\\001A`))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hexOut, escOut) {
		t.Errorf("hex and escape formats of one bytea hash apart: %q vs %q", hexOut, escOut)
	}
}

func TestHashStable(t *testing.T) {
	hash := mustMethod(t, MethodHash, map[string]any{"length": 64})
	col := Column{TypeOID: pgtype.TextOID}
	a, b := NewMasker(testKey), NewMasker(bytes.Clone(testKey))
	other := NewMasker(bytes.Repeat([]byte{0x43}, KeySize))
	v := []byte("alice@example.com")
	ha, _, _ := a.Mask(nil, hash, col, v)
	hb, _, _ := b.Mask(nil, hash, col, v)
	ho, _, _ := other.Mask(nil, hash, col, v)
	if !bytes.Equal(ha, hb) {
		t.Errorf("same key, different tokens: %s vs %s", ha, hb)
	}
	if bytes.Equal(ha, ho) {
		t.Errorf("different keys, same token %s", ha)
	}
	// Pinned: the token must not change across releases, or joins on
	// tokens across time break. HMAC-SHA256(0x42 * 32, "alice@example.com").
	const want = "a77887109f0c9668a541cb734c57dbf848b709adeb8141f9009fa1f138e7650d"
	if string(ha) != want {
		t.Errorf("token %s; want %s", ha, want)
	}
	// The same value in text and binary format, and as text and int8,
	// derives from one HMAC.
	i8 := Column{TypeOID: pgtype.Int8OID}
	ti, _, _ := a.Mask(nil, hash, i8, []byte("4111111111111111"))
	i8.Format = binaryFmt
	bi, _, _ := a.Mask(nil, hash, i8, binaryOf(t, pgtype.Int8OID, "4111111111111111"))
	if !bytes.Equal(ti, []byte(fmt.Sprint(pgtypeInt8(t, bi)))) {
		t.Errorf("int8 text token %s, binary token %d", ti, pgtypeInt8(t, bi))
	}
}

func pgtypeInt8(t testing.TB, b []byte) int64 {
	var x int64
	if err := pgtype.NewMap().Scan(pgtype.Int8OID, binaryFmt, b, &x); err != nil {
		t.Fatal(err)
	}
	return x
}

func TestNewMethod(t *testing.T) {
	for _, c := range []struct {
		name   string
		params map[string]any
		want   string // error substring; "" for success
	}{
		{MethodRedact, nil, ""},
		{MethodRedact, map[string]any{"text": "x"}, ""},
		{MethodRedact, map[string]any{"text": 1}, `param "text"`},
		{MethodPartial, map[string]any{"keep_first": 2.0, "keep_last": json.Number("3"), "mask_char": "#"}, ""},
		{MethodPartial, map[string]any{"keep_first": 1.5}, `param "keep_first"`},
		{MethodPartial, map[string]any{"keep_last": -1}, `param "keep_last"`},
		{MethodPartial, map[string]any{"mask_char": "ab"}, `param "mask_char"`},
		{MethodPartial, map[string]any{"keep": 4}, `unknown param "keep"`},
		{MethodHash, map[string]any{"length": 65}, `param "length"`},
		{MethodHash, map[string]any{"length": 0}, `param "length"`},
		{MethodHash, map[string]any{"salt_ref": "k1"}, `unknown param "salt_ref"`},
		{MethodEmail, map[string]any{"text": "x"}, `unknown param "text" (it takes none)`},
		{MethodLast4, nil, ""},
		{MethodNull, nil, ""},
		{"shuffle", nil, `unknown mask method "shuffle" (known: email, hash, last4, null, partial, redact)`},
	} {
		_, err := NewMethod(c.name, c.params)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("NewMethod(%q, %v): %v", c.name, c.params, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("NewMethod(%q, %v) = %v; want an error with %q", c.name, c.params, err, c.want)
		}
	}
	for _, n := range Methods() {
		if !KnownMethod(n) {
			t.Errorf("KnownMethod(%q) = false", n)
		}
	}
	if KnownMethod("shuffle") {
		t.Error("KnownMethod(shuffle) = true")
	}
}

// FuzzMask feeds arbitrary wire values to Mask: it must return NULL with
// ErrMalformed, or a value that decodes as the column's type.
func FuzzMask(f *testing.F) {
	oids := []uint32{
		pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.ByteaOID,
		pgtype.JSONOID, pgtype.JSONBOID, pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID,
		pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID, pgtype.UUIDOID, pgtype.InetOID,
		pgtype.CIDROID, pgtype.DateOID, 99999,
	}
	methods := []*Method{
		mustMethod(f, MethodRedact, nil), mustMethod(f, MethodRedact, map[string]any{"text": "0"}),
		mustMethod(f, MethodPartial, nil), mustMethod(f, MethodPartial, map[string]any{"keep_first": 0, "keep_last": 4, "mask_char": "•"}),
		mustMethod(f, MethodEmail, nil), mustMethod(f, MethodLast4, nil), mustMethod(f, MethodHash, nil),
		mustMethod(f, MethodHash, map[string]any{"length": 5}), mustMethod(f, MethodNull, nil),
	}
	for _, c := range maskCases() {
		i := slices.Index(oids, c.oid)
		if i < 0 {
			continue
		}
		f.Add(uint8(i), false, uint8(0), c.typmod, []byte(c.in))
		f.Add(uint8(i), true, uint8(6), c.typmod, binaryOf(f, c.oid, c.in))
	}
	m := NewMasker(testKey)
	f.Fuzz(func(t *testing.T, oid uint8, binary bool, method uint8, typmod int32, value []byte) {
		col := Column{TypeOID: oids[int(oid)%len(oids)], TypeMod: typmod%100 - 4}
		if col.TypeOID == pgtype.NumericOID {
			col.TypeMod = typmod // precision and scale
		}
		if binary {
			col.Format = 1
		}
		meth := methods[int(method)%len(methods)]
		orig := bytes.Clone(value)
		out, isNull, err := m.Mask(nil, meth, col, value)
		if !bytes.Equal(value, orig) {
			t.Fatal("Mask changed its input")
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) || !isNull || out != nil {
				t.Fatalf("error %v with %q, %v", err, out, isNull)
			}
			return
		}
		if isNull {
			return
		}
		if kindOf(col) == kindText && (!utf8.Valid(value) || bytes.IndexByte(value, 0) >= 0) {
			return // text is UTF-8 without NUL: garbage in, garbage kept
		}
		checkValid(t, col, out)
	})
}

func TestMaskerConcurrent(t *testing.T) {
	m := NewMasker(testKey)
	hash := mustMethod(t, MethodHash, nil)
	col := Column{TypeOID: pgtype.TextOID}
	want, _, _ := m.Mask(nil, hash, col, []byte("alice@example.com"))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var buf []byte
			for range 500 {
				out, _, err := m.Mask(buf[:0], hash, col, []byte("alice@example.com"))
				if err != nil || !bytes.Equal(out, want) {
					t.Errorf("got %q, %v; want %q", out, err, want)
					return
				}
				buf = out
			}
		})
	}
	wg.Wait()
}
