package mask

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
	"unicode"
	"unicode/utf8"
)

// KeySize is the size in bytes of the host key that keys the hash method and
// the evidence digests.
const KeySize = 32

// ErrMalformed is wrapped by the errors of Mask and Apply when a wire value
// is not a valid encoding of its column's type.
var ErrMalformed = errors.New("malformed value")

// Column describes a result column as PostgreSQL's RowDescription does.
type Column struct {
	TypeOID uint32
	TypeMod int32
	Format  int16 // 0 text, 1 binary
	// TextLike makes a type that Mask does not know (TypeOID not in the
	// tables of the package doc) masked as text with no length limit. Set it
	// only for types whose input accepts any text: citext, a domain over
	// text without a check. An enum is not one.
	TextLike bool
}

// Masker applies masking methods, keyed by the host key: the hash method is
// an HMAC-SHA256 with it. A Masker is safe for concurrent use.
type Masker struct {
	evidenceKey []byte
	hashers     sync.Pool // *hasher
}

// hasher is a keyed HMAC with scratch space, pooled so that masking does not
// allocate.
type hasher struct {
	mac hash.Hash
	sum [sha256.Size]byte
	buf [64]byte // canonical text of small values
	tmp []byte   // decoded or intermediate values
}

func (h *hasher) hmac(v []byte) *[sha256.Size]byte {
	h.mac.Reset()
	h.mac.Write(v)
	h.mac.Sum(h.sum[:0])
	return &h.sum
}

// NewMasker returns a Masker keyed with key, which must be KeySize bytes (as
// LoadOrCreateKey returns); another size panics.
func NewMasker(key []byte) *Masker {
	if len(key) != KeySize {
		panic(fmt.Sprintf("mask.NewMasker: key of %d bytes, want %d", len(key), KeySize))
	}
	k := bytes.Clone(key)
	ev := hmac.New(sha256.New, k)
	ev.Write([]byte("tollgate/mask evidence key v1"))
	m := &Masker{evidenceKey: ev.Sum(nil)}
	m.hashers.New = func() any { return &hasher{mac: hmac.New(sha256.New, k)} }
	return m
}

func (m *Masker) hasher() *hasher { return m.hashers.Get().(*hasher) }

func (m *Masker) release(h *hasher) {
	if cap(h.tmp) > 64<<10 {
		h.tmp = nil // do not pin one huge value's buffer
	}
	m.hashers.Put(h)
}

// Mask returns value masked with meth, encoded for col's type in col's
// format, or null = true when the result is SQL NULL. value is the wire value
// (text or binary per col.Format); a nil value (SQL NULL) stays NULL.
//
// The result is always a valid value of the column's type in that format,
// or NULL when no valid masked value exists (the package doc has the table).
// Mask builds the result in dst's storage from dst[:0] (so out may alias
// dst) and never in value's.
//
// A value that is not a valid encoding of its type is an error wrapping
// ErrMalformed, returned with out = nil and null = true: a caller that
// forwards the result anyway leaks nothing.
func (m *Masker) Mask(dst []byte, meth *Method, col Column, value []byte) (out []byte, null bool, err error) {
	if value == nil {
		return nil, true, nil
	}
	if meth == nil {
		return nil, true, errors.New("mask: nil method")
	}
	if col.Format != 0 && col.Format != 1 {
		return nil, true, fmt.Errorf("mask: unknown format code %d", col.Format)
	}
	if meth.name == MethodNull {
		return nil, true, nil
	}
	k := kindOf(col)
	h := m.hasher()
	defer m.release(h)
	h.tmp = h.tmp[:0]
	dst = dst[:0]
	switch k {
	case kindText:
		out, null = maskText(h, dst, meth, col, value), false
	case kindBytea:
		out, null, err = maskBytea(h, dst, meth, col, value)
	case kindJSON, kindJSONB:
		out, null, err = maskJSON(h, dst, meth, col, value, k == kindJSONB)
	case kindInt2, kindInt4, kindInt8:
		out, null, err = maskInt(h, dst, meth, col, value, k)
	case kindNumeric:
		out, null, err = maskNumeric(h, dst, meth, col, value)
	case kindFloat4, kindFloat8:
		out, null, err = maskFloat(h, dst, meth, col, value, k == kindFloat4)
	case kindUUID:
		out, null, err = maskUUID(h, dst, meth, col, value)
	case kindInet, kindCIDR:
		out, null, err = maskInet(h, dst, meth, col, value, k == kindCIDR)
	default:
		return nil, true, nil
	}
	if err != nil {
		return nil, true, fmt.Errorf("mask %s value: %w", typeName(col.TypeOID), err)
	}
	if null {
		return nil, true, nil
	}
	if out == nil {
		out = []byte{} // empty, not NULL
	}
	return out, false, nil
}

// appendMasked appends s masked by meth as text. MethodNull has no text
// and appends nothing.
func appendMasked(h *hasher, dst []byte, meth *Method, s []byte) []byte {
	switch meth.name {
	case MethodRedact:
		return append(dst, meth.text...)
	case MethodPartial:
		return appendPartial(dst, meth, s)
	case MethodEmail:
		return appendEmail(dst, s)
	case MethodLast4:
		return appendLast4(dst, s)
	case MethodHash:
		return appendHex(dst, h.hmac(s)[:], meth.hashLen)
	}
	return dst
}

// appendPartial keeps the first keep_first and last keep_last characters of
// s and replaces the others with mask_char, shrinking the kept counts (the
// larger first, keep_last on a tie) so that at most half of the characters,
// rounded down, are kept.
func appendPartial(dst []byte, meth *Method, s []byte) []byte {
	n := utf8.RuneCount(s)
	budget := n / 2
	first, last := min(meth.keepFirst, budget), min(meth.keepLast, budget)
	for first+last > budget {
		if last >= first {
			last--
		} else {
			first--
		}
	}
	i := 0
	for r := 0; r < n; r++ {
		_, size := utf8.DecodeRune(s[i:])
		if r < first || r >= n-last {
			dst = append(dst, s[i:i+size]...)
		} else {
			dst = append(dst, meth.maskChar...)
		}
		i += size
	}
	return dst
}

// appendEmail replaces what comes before the last '@' with "****"; a value
// without '@' becomes "****".
func appendEmail(dst, s []byte) []byte {
	dst = append(dst, DefaultRedactText...)
	if at := bytes.LastIndexByte(s, '@'); at >= 0 {
		dst = append(dst, s[at:]...)
	}
	return dst
}

// appendLast4 keeps separators and the last four letters or digits of s,
// fewer when s has fewer than eight (at most half are kept), and replaces
// the other letters and digits with '*'.
func appendLast4(dst, s []byte) []byte {
	if ascii(s) {
		alnum := 0
		for _, c := range s {
			if isAlnum(c) {
				alnum++
			}
		}
		hide := alnum - min(4, alnum/2)
		for _, c := range s {
			if isAlnum(c) && hide > 0 {
				hide--
				c = '*'
			}
			dst = append(dst, c)
		}
		return dst
	}
	alnum := 0
	for _, r := range string(s) {
		if isAlnumRune(r) {
			alnum++
		}
	}
	keep := min(4, alnum/2)
	seen := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if isAlnumRune(r) {
			seen++
			if seen <= alnum-keep {
				dst = append(dst, '*')
				i += size
				continue
			}
		}
		dst = append(dst, s[i:i+size]...)
		i += size
	}
	return dst
}

// ascii reports whether s is all ASCII.
func ascii(s []byte) bool {
	for _, c := range s {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isAlnumRune(r rune) bool {
	if r < utf8.RuneSelf {
		return isAlnum(byte(r))
	}
	return r != utf8.RuneError && (unicode.IsLetter(r) || unicode.IsDigit(r))
}

const hexDigits = "0123456789abcdef"

// appendHex appends the first n lowercase hex digits of b.
func appendHex(dst, b []byte, n int) []byte {
	for i := 0; i < n && i/2 < len(b); i++ {
		c := b[i/2]
		if i%2 == 0 {
			dst = append(dst, hexDigits[c>>4])
		} else {
			dst = append(dst, hexDigits[c&0x0f])
		}
	}
	return dst
}
