package mask

import (
	"bytes"
	"encoding/binary"
	"strconv"
)

// Action says what to do to one result column's values.
type Action struct {
	// Method masks every value of the column (a column rule); nil: none.
	Method *Method
	// Label is the evidence label of Method's values, e.g.
	// "public.customers.email".
	Label string
	// Classifiers mask the values that match one of them (tried in order,
	// the first match wins) with its method; used when Method is nil, for
	// columns no column rule covers (computed columns, SELECT *).
	Classifiers []ClassifierRule
}

// ClassifierRule masks the values a classifier matches with a method.
type ClassifierRule struct {
	Name   string // a classifier name (Classifiers); an unknown one matches nothing
	Method *Method
}

// Apply masks one value of column col as a says, records what it masked in
// ev (if not nil; the label of a classifier's match is "classifier:NAME"),
// and returns the value to send: value itself, unchanged and not copied,
// when nothing applies; else Mask's result, built in dst's storage. A NULL
// value stays NULL.
//
// Classifiers look at the value's text: any text-format value, and in
// binary format the types whose text Apply can form without allocating
// (text-like, json, jsonb, integers, numeric, inet, cidr); other binary
// values pass. A json or jsonb value that is a JSON string is classified by
// its content.
//
// Apply does not allocate when dst has room for the result and each label
// has been seen by ev before, except to decode a JSON string with escapes. Like Mask, on error it returns NULL.
func (m *Masker) Apply(dst []byte, a *Action, col Column, value []byte, ev *Evidence) (out []byte, null bool, err error) {
	if value == nil {
		return nil, true, nil
	}
	if a == nil {
		return value, false, nil
	}
	label := a.Label
	meth := a.Method
	if meth == nil {
		if len(a.Classifiers) == 0 {
			return value, false, nil
		}
		var scratch [64]byte
		text, ok := classifiable(scratch[:0], col, value)
		if !ok {
			return value, false, nil
		}
		for i := range a.Classifiers {
			r := &a.Classifiers[i]
			if r.Method != nil && Classify(r.Name, text) {
				meth, label = r.Method, classifierLabels[r.Name]
				break
			}
		}
		if meth == nil {
			return value, false, nil
		}
	}
	out, null, err = m.Mask(dst, meth, col, value)
	if ev != nil {
		ev.Add(label, value, out)
	}
	return out, null, err
}

// classifiable returns the text a value is classified by, formed in scratch
// when the value is binary, or false when it has none.
func classifiable(scratch []byte, col Column, v []byte) ([]byte, bool) {
	k := kindOf(col)
	if col.Format == 1 {
		switch k {
		case kindText, kindJSON:
		case kindJSONB:
			if len(v) == 0 || v[0] != 1 {
				return nil, false
			}
			v = v[1:]
		case kindInt2:
			if len(v) != 2 {
				return nil, false
			}
			return strconv.AppendInt(scratch, int64(int16(binary.BigEndian.Uint16(v))), 10), true
		case kindInt4:
			if len(v) != 4 {
				return nil, false
			}
			return strconv.AppendInt(scratch, int64(int32(binary.BigEndian.Uint32(v))), 10), true
		case kindInt8:
			if len(v) != 8 {
				return nil, false
			}
			return strconv.AppendInt(scratch, int64(binary.BigEndian.Uint64(v)), 10), true
		case kindNumeric:
			// More than 32 digits, or a long fraction: no classifier's match.
			if len(v) < 8 || len(v) > 8+2*8 || int16(binary.BigEndian.Uint16(v[2:])) > 8 ||
				binary.BigEndian.Uint16(v[6:]) > 32 {
				return nil, false
			}
			t, err := appendNumericText(scratch, v)
			return t, err == nil
		case kindInet, kindCIDR:
			if len(v) != 8 || v[0] != pgAFInet || v[1] != 32 {
				return nil, false // only a single IPv4 address can match
			}
			t := scratch
			for i, b := range v[4:] {
				if i > 0 {
					t = append(t, '.')
				}
				t = strconv.AppendUint(t, uint64(b), 10)
			}
			return t, true
		default:
			return nil, false
		}
	}
	if k == kindJSON || k == kindJSONB {
		// A JSON string is classified by its content (decoded, which
		// allocates, when it has escapes).
		t := bytes.TrimSpace(v)
		if len(t) >= 2 && t[0] == '"' && t[len(t)-1] == '"' {
			if bytes.IndexByte(t, '\\') < 0 {
				return t[1 : len(t)-1], true
			}
			if c, err := jsonStringContent(nil, t); err == nil {
				return c, true
			}
		}
	}
	return v, true
}
