package mask

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

type kind uint8

const (
	kindUnknown kind = iota // no valid masked value: NULL
	kindText
	kindBytea
	kindJSON
	kindJSONB
	kindInt2
	kindInt4
	kindInt8
	kindNumeric
	kindFloat4
	kindFloat8
	kindUUID
	kindInet
	kindCIDR
)

func kindOf(col Column) kind {
	switch col.TypeOID {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UnknownOID:
		return kindText
	case pgtype.ByteaOID:
		return kindBytea
	case pgtype.JSONOID:
		return kindJSON
	case pgtype.JSONBOID:
		return kindJSONB
	case pgtype.Int2OID:
		return kindInt2
	case pgtype.Int4OID:
		return kindInt4
	case pgtype.Int8OID:
		return kindInt8
	case pgtype.NumericOID:
		return kindNumeric
	case pgtype.Float4OID:
		return kindFloat4
	case pgtype.Float8OID:
		return kindFloat8
	case pgtype.UUIDOID:
		return kindUUID
	case pgtype.InetOID:
		return kindInet
	case pgtype.CIDROID:
		return kindCIDR
	}
	if col.TextLike {
		return kindText
	}
	return kindUnknown
}

var typeNames = map[uint32]string{
	pgtype.TextOID: "text", pgtype.VarcharOID: "varchar", pgtype.BPCharOID: "bpchar",
	pgtype.NameOID: "name", pgtype.UnknownOID: "unknown", pgtype.ByteaOID: "bytea",
	pgtype.JSONOID: "json", pgtype.JSONBOID: "jsonb", pgtype.Int2OID: "int2",
	pgtype.Int4OID: "int4", pgtype.Int8OID: "int8", pgtype.NumericOID: "numeric",
	pgtype.Float4OID: "float4", pgtype.Float8OID: "float8", pgtype.UUIDOID: "uuid",
	pgtype.InetOID: "inet", pgtype.CIDROID: "cidr",
}

func typeName(oid uint32) string {
	if n, ok := typeNames[oid]; ok {
		return n
	}
	return "oid " + strconv.FormatUint(uint64(oid), 10)
}

// maxNameLen is the longest name in bytes (NAMEDATALEN - 1).
const maxNameLen = 63

// maskText masks a text-like value. Binary and text formats are the same
// bytes. A bpchar value is masked without its padding and padded again.
func maskText(h *hasher, dst []byte, meth *Method, col Column, v []byte) []byte {
	if col.TypeOID == pgtype.BPCharOID {
		v = bytes.TrimRight(v, " ")
	}
	out := appendMasked(h, dst, meth, v)
	switch col.TypeOID {
	case pgtype.VarcharOID:
		if col.TypeMod >= 4 {
			out = truncRunes(out, int(col.TypeMod-4))
		}
	case pgtype.BPCharOID:
		if col.TypeMod >= 4 {
			n := int(col.TypeMod - 4)
			out = truncRunes(out, n)
			for c := utf8.RuneCount(out); c < n; c++ {
				out = append(out, ' ')
			}
		}
	case pgtype.NameOID:
		if len(out) > maxNameLen {
			i := maxNameLen
			for i > 0 && !utf8.RuneStart(out[i]) {
				i--
			}
			out = out[:i]
		}
	}
	return out
}

func truncRunes(s []byte, n int) []byte {
	for i := range string(s) {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// maskBytea masks the bytes of a bytea: hash gives HMAC bytes (length/2,
// rounded up), the other methods the masked text's bytes.
func maskBytea(h *hasher, dst []byte, meth *Method, col Column, v []byte) ([]byte, bool, error) {
	raw := v
	if col.Format == 0 {
		var err error
		raw, err = decodeByteaText(h.tmp[:0], v)
		if err != nil {
			return nil, true, err
		}
		h.tmp = raw
	}
	var res []byte
	if meth.name == MethodHash {
		res = h.hmac(raw)[:(meth.hashLen+1)/2]
	} else {
		start := len(h.tmp)
		h.tmp = appendMasked(h, h.tmp, meth, raw)
		res = h.tmp[start:]
	}
	if col.Format == 1 {
		return append(dst, res...), false, nil
	}
	dst = append(dst, `\x`...)
	return appendHex(dst, res, 2*len(res)), false, nil
}

// decodeByteaText decodes bytea text output in hex (\x...) or escape format.
func decodeByteaText(dst, v []byte) ([]byte, error) {
	if bytes.HasPrefix(v, []byte(`\x`)) {
		hex := v[2:]
		if len(hex)%2 != 0 {
			return nil, fmt.Errorf("%w: bytea hex of odd length", ErrMalformed)
		}
		for i := 0; i < len(hex); i += 2 {
			a, ok1 := unhex(hex[i])
			b, ok2 := unhex(hex[i+1])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("%w: bytea hex digit", ErrMalformed)
			}
			dst = append(dst, a<<4|b)
		}
		return dst, nil
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		switch {
		case i+1 < len(v) && v[i+1] == '\\':
			dst = append(dst, '\\')
			i++
		case i+3 < len(v) && isOctal(v[i+1]) && isOctal(v[i+2]) && isOctal(v[i+3]) && v[i+1] <= '3':
			dst = append(dst, (v[i+1]-'0')<<6|(v[i+2]-'0')<<3|(v[i+3]-'0'))
			i += 3
		default:
			return nil, fmt.Errorf("%w: bytea escape", ErrMalformed)
		}
	}
	return dst, nil
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// maskJSON masks a json or jsonb value into a JSON string. A value that is a
// JSON string is masked by its content; any other value by its JSON text.
func maskJSON(h *hasher, dst []byte, meth *Method, col Column, v []byte, jsonb bool) ([]byte, bool, error) {
	if jsonb && col.Format == 1 {
		if len(v) == 0 || v[0] != 1 {
			return nil, true, fmt.Errorf("%w: jsonb binary version is not 1", ErrMalformed)
		}
		v = v[1:]
	}
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '"' {
		content, err := jsonStringContent(h.tmp[:0], v)
		if err != nil {
			return nil, true, err
		}
		h.tmp = content
		v = content
	}
	start := len(h.tmp)
	h.tmp = appendMasked(h, h.tmp, meth, v)
	if jsonb && col.Format == 1 {
		dst = append(dst, 1)
	}
	return appendJSONString(dst, h.tmp[start:]), false, nil
}

// jsonStringContent appends the content of the JSON string v to dst.
func jsonStringContent(dst, v []byte) ([]byte, error) {
	if len(v) >= 2 && v[len(v)-1] == '"' && bytes.IndexByte(v[1:len(v)-1], '\\') < 0 &&
		bytes.IndexByte(v[1:len(v)-1], '"') < 0 && utf8.Valid(v) {
		return append(dst, v[1:len(v)-1]...), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return append(dst, s...), nil
}

// appendJSONString appends s as a JSON string, escaped as PostgreSQL's json
// output escapes; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\ufffd"...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, `\b`...)
		case '\f':
			dst = append(dst, `\f`...)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		default:
			if c < 0x20 {
				dst = append(dst, `\u00`...)
				dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
			} else {
				dst = append(dst, c)
			}
		}
		i++
	}
	return append(dst, '"')
}

// maskInt masks an int2, int4 or int8: hash gives a non-negative integer of
// the type from the HMAC of the decimal text, last4 the absolute value mod
// 10000, redact the redact text when it is an integer of the type.
func maskInt(h *hasher, dst []byte, meth *Method, col Column, v []byte, k kind) ([]byte, bool, error) {
	size := 8
	switch k {
	case kindInt2:
		size = 2
	case kindInt4:
		size = 4
	}
	bits := 8 * size
	var x int64
	if col.Format == 1 {
		if len(v) != size {
			return nil, true, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(v), size)
		}
		switch size {
		case 2:
			x = int64(int16(binary.BigEndian.Uint16(v)))
		case 4:
			x = int64(int32(binary.BigEndian.Uint32(v)))
		default:
			x = int64(binary.BigEndian.Uint64(v))
		}
	} else {
		var ok bool
		if x, ok = parseInt(v, bits); !ok {
			return nil, true, fmt.Errorf("%w: not an integer", ErrMalformed)
		}
	}
	switch meth.name {
	case MethodHash:
		sum := h.hmac(strconv.AppendInt(h.buf[:0], x, 10))
		x = int64(binary.BigEndian.Uint64(sum[:8]) % (1 << (bits - 1)))
	case MethodLast4:
		x = int64(absInt(x) % 10000)
	case MethodRedact:
		var ok bool
		if x, ok = parseInt([]byte(meth.text), bits); !ok {
			return nil, true, nil
		}
	default:
		return nil, true, nil
	}
	if col.Format == 0 {
		return strconv.AppendInt(dst, x, 10), false, nil
	}
	switch size {
	case 2:
		return binary.BigEndian.AppendUint16(dst, uint16(x)), false, nil
	case 4:
		return binary.BigEndian.AppendUint32(dst, uint32(x)), false, nil
	}
	return binary.BigEndian.AppendUint64(dst, uint64(x)), false, nil
}

func absInt(x int64) uint64 {
	if x < 0 {
		return uint64(-(x + 1)) + 1
	}
	return uint64(x)
}

// parseInt parses a decimal integer of bits bits, as PostgreSQL prints it
// (an optional sign, digits; surrounding spaces allowed as int input does).
func parseInt(v []byte, bits int) (int64, bool) {
	v = bytes.TrimSpace(v)
	neg := false
	if len(v) > 0 && (v[0] == '-' || v[0] == '+') {
		neg = v[0] == '-'
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	limit := uint64(1) << (bits - 1) // |min|
	if neg && u > limit || !neg && u >= limit {
		return 0, false
	}
	if neg {
		return -int64(u-1) - 1, true
	}
	return int64(u), true
}

// numericMod reads a numeric typmod: the integer digits allowed and the
// scale, ok false for a negative scale.
func numericMod(typmod int32) (intDigits, scale int, ok bool) {
	if typmod < 4 {
		return 18, 0, true
	}
	tm := typmod - 4
	p := int(tm>>16) & 0xffff
	s := int(tm&0x7ff^0x400) - 0x400 // 11-bit signed scale (PostgreSQL 15+)
	if s < 0 {
		return 0, 0, false
	}
	return min(18, max(p-s, 0)), s, true
}

// maskNumeric masks a numeric to an integer that fits the column's
// precision, printed with its scale: hash from the HMAC of the value's text,
// last4 the integer part's last four digits, redact the redact text when it
// is such an integer.
func maskNumeric(h *hasher, dst []byte, meth *Method, col Column, v []byte) ([]byte, bool, error) {
	text := v
	if col.Format == 1 {
		var err error
		if text, err = appendNumericText(h.buf[:0], v); err != nil {
			return nil, true, err
		}
	} else if !validNumericText(v) {
		return nil, true, fmt.Errorf("%w: not a numeric", ErrMalformed)
	}
	digits, scale, ok := numericMod(col.TypeMod)
	if !ok {
		return nil, true, nil
	}
	pow := uint64(1)
	for range digits {
		pow *= 10
	}
	var u uint64
	neg := false
	switch meth.name {
	case MethodHash:
		u = binary.BigEndian.Uint64(h.hmac(text)[:8]) % pow
	case MethodLast4:
		if !isDigit(text[len(text)-1]) { // NaN, Infinity
			return nil, true, nil
		}
		intPart := text
		if i := bytes.IndexByte(text, '.'); i >= 0 {
			intPart = text[:i]
		}
		for _, c := range intPart[max(len(intPart)-4, 0):] {
			if isDigit(c) {
				u = u*10 + uint64(c-'0')
			}
		}
		u %= min(pow, 10000)
	case MethodRedact:
		x, ok := parseInt([]byte(meth.text), 64)
		if !ok || absInt(x) >= pow {
			return nil, true, nil
		}
		neg, u = x < 0, absInt(x)
	default:
		return nil, true, nil
	}
	if col.Format == 0 {
		if neg {
			dst = append(dst, '-')
		}
		dst = strconv.AppendUint(dst, u, 10)
		if scale > 0 {
			dst = append(dst, '.')
			for range scale {
				dst = append(dst, '0')
			}
		}
		return dst, false, nil
	}
	return appendNumericBinary(dst, neg, u, scale), false, nil
}

// validNumericText reports whether v is numeric output: [-]digits[.digits],
// NaN, Infinity or -Infinity.
func validNumericText(v []byte) bool {
	switch string(v) {
	case "NaN", "Infinity", "-Infinity":
		return true
	}
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	dot, digits := false, 0
	for _, c := range v {
		switch {
		case isDigit(c):
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

// Numeric binary sign words.
const (
	numericPos  = 0x0000
	numericNeg  = 0x4000
	numericNaN  = 0xC000
	numericPInf = 0xD000
	numericNInf = 0xF000
)

// appendNumericText appends the text output of a binary numeric.
func appendNumericText(dst, v []byte) ([]byte, error) {
	if len(v) < 8 {
		return nil, fmt.Errorf("%w: numeric of %d bytes", ErrMalformed, len(v))
	}
	ndigits := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	dscale := int(binary.BigEndian.Uint16(v[6:]))
	if ndigits < 0 || len(v) != 8+2*ndigits || dscale > 0x3fff {
		return nil, fmt.Errorf("%w: numeric header", ErrMalformed)
	}
	switch sign {
	case numericNaN:
		return append(dst, "NaN"...), nil
	case numericPInf:
		return append(dst, "Infinity"...), nil
	case numericNInf:
		return append(dst, "-Infinity"...), nil
	case numericNeg:
		dst = append(dst, '-')
	case numericPos:
	default:
		return nil, fmt.Errorf("%w: numeric sign %#x", ErrMalformed, sign)
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(v[8+2*i:]))
	}
	for i := 0; i < ndigits; i++ {
		if digit(i) > 9999 {
			return nil, fmt.Errorf("%w: numeric digit", ErrMalformed)
		}
	}
	// Integer part: groups 0..weight.
	if weight < 0 {
		dst = append(dst, '0')
	} else {
		for i := 0; i <= weight; i++ {
			d := digit(i)
			if i == 0 {
				dst = strconv.AppendInt(dst, int64(d), 10)
				continue
			}
			dst = append(dst, byte('0'+d/1000), byte('0'+d/100%10), byte('0'+d/10%10), byte('0'+d%10))
		}
	}
	if dscale > 0 {
		dst = append(dst, '.')
		for i, n := weight+1, 0; n < dscale; i++ {
			d := digit(i)
			for _, c := range [4]byte{byte('0' + d/1000), byte('0' + d/100%10), byte('0' + d/10%10), byte('0' + d%10)} {
				if n < dscale {
					dst = append(dst, c)
					n++
				}
			}
		}
	}
	return dst, nil
}

// appendNumericBinary appends the binary numeric of the integer ±u with
// display scale scale.
func appendNumericBinary(dst []byte, neg bool, u uint64, scale int) []byte {
	var groups [5]uint16
	n := 0
	for x := u; x > 0; x /= 10000 {
		groups[n] = uint16(x % 10000)
		n++
	}
	// groups holds the least significant group first.
	weight := n - 1
	lo := 0
	for lo < n && groups[lo] == 0 {
		lo++ // trailing zero groups are not sent
	}
	sign := uint16(numericPos)
	if neg && u != 0 {
		sign = numericNeg
	}
	if n == 0 {
		weight = 0
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(n-lo))
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(weight)))
	dst = binary.BigEndian.AppendUint16(dst, sign)
	dst = binary.BigEndian.AppendUint16(dst, uint16(scale))
	for i := n - 1; i >= lo; i-- {
		dst = binary.BigEndian.AppendUint16(dst, groups[i])
	}
	return dst
}

// maskFloat masks a float4 or float8: hash gives a non-negative integral
// value exact in the type (below 2^24 or 2^53), last4 the integer part's
// absolute value mod 10000, redact the redact text when it is a float.
func maskFloat(h *hasher, dst []byte, meth *Method, col Column, v []byte, f4 bool) ([]byte, bool, error) {
	bits := 64
	if f4 {
		bits = 32
	}
	var f float64
	if col.Format == 1 {
		switch {
		case f4 && len(v) == 4:
			f = float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
		case !f4 && len(v) == 8:
			f = math.Float64frombits(binary.BigEndian.Uint64(v))
		default:
			return nil, true, fmt.Errorf("%w: %d bytes", ErrMalformed, len(v))
		}
	} else {
		var err error
		if f, err = strconv.ParseFloat(string(v), bits); err != nil {
			return nil, true, fmt.Errorf("%w: not a float", ErrMalformed)
		}
	}
	switch meth.name {
	case MethodHash:
		sum := h.hmac(appendPGFloat(h.buf[:0], f, bits))
		mant := uint64(1) << 53
		if f4 {
			mant = 1 << 24
		}
		f = float64(binary.BigEndian.Uint64(sum[:8]) % mant)
	case MethodLast4:
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, true, nil
		}
		f = math.Mod(math.Abs(math.Trunc(f)), 10000)
	case MethodRedact:
		var err error
		if f, err = strconv.ParseFloat(meth.text, bits); err != nil {
			return nil, true, nil
		}
	default:
		return nil, true, nil
	}
	if col.Format == 0 {
		return appendPGFloat(dst, f, bits), false, nil
	}
	if f4 {
		return binary.BigEndian.AppendUint32(dst, math.Float32bits(float32(f))), false, nil
	}
	return binary.BigEndian.AppendUint64(dst, math.Float64bits(f)), false, nil
}

// appendPGFloat appends f as PostgreSQL (12 and later, extra_float_digits
// >= 1) prints a float8 (bits 64) or float4 (bits 32): the shortest exact
// digits, in exponent form when the exponent is below -4 or at least 15
// (float8) or 6 (float4).
func appendPGFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, bits)
	i := bytes.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(string(e[i+1:]))
	limit := 15
	if bits == 32 {
		limit = 6
	}
	if exp < -4 || exp >= limit {
		return append(dst, e...)
	}
	return strconv.AppendFloat(dst, f, 'f', -1, bits)
}

// maskUUID masks a uuid: hash gives a version 4 UUID made of the HMAC of the
// value's text, redact the redact text when it is a UUID.
func maskUUID(h *hasher, dst []byte, meth *Method, col Column, v []byte) ([]byte, bool, error) {
	var u [16]byte
	if col.Format == 1 {
		if len(v) != 16 {
			return nil, true, fmt.Errorf("%w: %d bytes", ErrMalformed, len(v))
		}
		copy(u[:], v)
	} else if !parseUUID(&u, v) {
		return nil, true, fmt.Errorf("%w: not a uuid", ErrMalformed)
	}
	switch meth.name {
	case MethodHash:
		sum := h.hmac(appendUUID(h.buf[:0], &u))
		copy(u[:], sum[:16])
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
	case MethodRedact:
		if !parseUUID(&u, []byte(meth.text)) {
			return nil, true, nil
		}
	default:
		return nil, true, nil
	}
	if col.Format == 1 {
		return append(dst, u[:]...), false, nil
	}
	return appendUUID(dst, &u), false, nil
}

// parseUUID reads 32 hex digits, with hyphens after any group of four and
// optional braces, as uuid input accepts.
func parseUUID(u *[16]byte, v []byte) bool {
	if len(v) >= 2 && v[0] == '{' && v[len(v)-1] == '}' {
		v = v[1 : len(v)-1]
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] == '-' {
			if n == 0 || n%4 != 0 || i+1 == len(v) || v[i+1] == '-' {
				return false
			}
			continue
		}
		d, ok := unhex(v[i])
		if !ok || n == 32 {
			return false
		}
		if n%2 == 0 {
			u[n/2] = d << 4
		} else {
			u[n/2] |= d
		}
		n++
	}
	return n == 32
}

func appendUUID(dst []byte, u *[16]byte) []byte {
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

// PostgreSQL's inet binary address families.
const (
	pgAFInet  = 2
	pgAFInet6 = 3
)

// maskInet masks an inet or cidr keeping its family and prefix length: hash
// gives an address in 10.0.0.0/8 or fd00::/8 from the HMAC of the value's
// text, redact the redact text when it is a valid value else the family's
// zero address. For cidr the host bits are cleared.
func maskInet(h *hasher, dst []byte, meth *Method, col Column, v []byte, cidr bool) ([]byte, bool, error) {
	var p netip.Prefix
	if col.Format == 1 {
		if len(v) < 4 || (v[0] != pgAFInet || v[3] != 4 || len(v) != 8) && (v[0] != pgAFInet6 || v[3] != 16 || len(v) != 20) {
			return nil, true, fmt.Errorf("%w: inet binary header", ErrMalformed)
		}
		a, _ := netip.AddrFromSlice(v[4:])
		if int(v[1]) > a.BitLen() {
			return nil, true, fmt.Errorf("%w: inet prefix length %d", ErrMalformed, v[1])
		}
		p = netip.PrefixFrom(a, int(v[1]))
	} else {
		var ok bool
		if p, ok = parseInet(v); !ok {
			return nil, true, fmt.Errorf("%w: not an inet", ErrMalformed)
		}
	}
	switch meth.name {
	case MethodHash:
		sum := h.hmac(appendInet(h.buf[:0], p, cidr))
		var a netip.Addr
		if p.Addr().Is4() {
			a = netip.AddrFrom4([4]byte{10, sum[0], sum[1], sum[2]})
		} else {
			var b [16]byte
			b[0] = 0xfd
			copy(b[1:], sum[:15])
			a = netip.AddrFrom16(b)
		}
		p = netip.PrefixFrom(a, p.Bits())
	case MethodRedact:
		r, ok := parseInet([]byte(meth.text))
		if !ok || cidr && r.Masked() != r {
			var zero netip.Addr
			if p.Addr().Is4() {
				zero = netip.IPv4Unspecified()
			} else {
				zero = netip.IPv6Unspecified()
			}
			r = netip.PrefixFrom(zero, p.Bits())
		}
		p = r
	default:
		return nil, true, nil
	}
	if cidr {
		p = p.Masked()
	}
	if col.Format == 0 {
		return appendInet(dst, p, cidr), false, nil
	}
	fam, isCIDR := byte(pgAFInet), byte(0)
	if p.Addr().Is6() {
		fam = pgAFInet6
	}
	if cidr {
		isCIDR = 1
	}
	a := p.Addr().AsSlice()
	dst = append(dst, fam, byte(p.Bits()), isCIDR, byte(len(a)))
	return append(dst, a...), false, nil
}

// parseInet reads inet or cidr text: an address with an optional /bits.
func parseInet(v []byte) (netip.Prefix, bool) {
	s := string(v)
	if i := bytes.IndexByte(v, '/'); i >= 0 {
		p, err := netip.ParsePrefix(s)
		return p, err == nil && p.Addr().Zone() == ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// appendInet appends inet text (the address, with /bits unless the prefix
// is the whole address) or cidr text (always with /bits).
func appendInet(dst []byte, p netip.Prefix, cidr bool) []byte {
	dst = p.Addr().AppendTo(dst)
	if cidr || p.Bits() != p.Addr().BitLen() {
		dst = append(dst, '/')
		dst = strconv.AppendInt(dst, int64(p.Bits()), 10)
	}
	return dst
}
