package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
	"strings"
)

// Evidence accumulates what masking did to one statement's results, for the
// audit record. It keeps counts and digests, never an original value: the
// originals go into an HMAC keyed with a key derived from the host key
// (distinct from the hash method's key, so the digest cannot be used to look
// up hash tokens), the masked outputs into a SHA-256.
//
// Adding a value does not allocate, except for a label's first value. An
// Evidence is for one goroutine at a time.
type Evidence struct {
	originals hash.Hash
	masked    hash.Hash
	values    int64
	perLabel  []labelCount // few: one per masked column or classifier
	// Length-prefixed values wait here and go to the digests in blocks:
	// the digests are the same, the calls far fewer.
	origBuf, maskBuf []byte
}

type labelCount struct {
	label string
	n     int64
}

// evidenceBlock is how much is staged before it is hashed.
const evidenceBlock = 8 << 10

// Summary is what the audit record lists of an Evidence.
type Summary struct {
	// Columns are the labels masked that name columns, sorted.
	Columns []string `json:"columns,omitempty"`
	// Classifiers are the names of the classifiers that matched, sorted.
	Classifiers []string `json:"classifiers,omitempty"`
	// Values is how many values were masked.
	Values int64 `json:"values"`
	// PerLabel counts the masked values by label.
	PerLabel map[string]int64 `json:"per_column,omitempty"`
	// OriginalsHMAC is the hex HMAC-SHA256, with the evidence key, of the
	// originals in order, each prefixed by its length (8 bytes, big
	// endian; all ones for NULL).
	OriginalsHMAC string `json:"originals_hmac"`
	// MaskedSHA256 is the hex SHA-256 of the masked outputs in order,
	// length-prefixed alike.
	MaskedSHA256 string `json:"masked_sha256"`
}

// classifierLabelPrefix starts the evidence label of a classifier's match.
const classifierLabelPrefix = "classifier:"

// NewEvidence returns an empty Evidence keyed for m.
func (m *Masker) NewEvidence() *Evidence {
	return &Evidence{
		originals: hmac.New(sha256.New, m.evidenceKey),
		masked:    sha256.New(),
		origBuf:   make([]byte, 0, evidenceBlock+64),
		maskBuf:   make([]byte, 0, evidenceBlock+64),
	}
}

// Add records one masked value: its label ("public.customers.email" for a
// column rule, "classifier:credit_card" for a classifier's match), the
// original wire value and the masked one (nil when the result is NULL).
func (e *Evidence) Add(label string, original, masked []byte) {
	e.values++
	e.count(label)
	e.origBuf = e.write(e.originals, e.origBuf, original)
	e.maskBuf = e.write(e.masked, e.maskBuf, masked)
}

func (e *Evidence) count(label string) {
	for i := range e.perLabel {
		if e.perLabel[i].label == label {
			e.perLabel[i].n++
			return
		}
	}
	e.perLabel = append(e.perLabel, labelCount{label, 1})
}

// write stages v, length-prefixed, for h.
func (e *Evidence) write(h hash.Hash, buf, v []byte) []byte {
	n := uint64(len(v))
	if v == nil {
		n = ^uint64(0)
	}
	buf = binary.BigEndian.AppendUint64(buf, n)
	if len(buf)+len(v) > evidenceBlock {
		h.Write(buf)
		buf = buf[:0]
		if len(v) > evidenceBlock {
			h.Write(v)
			return buf
		}
	}
	return append(buf, v...)
}

// flush hashes what is staged.
func (e *Evidence) flush() {
	e.originals.Write(e.origBuf)
	e.masked.Write(e.maskBuf)
	e.origBuf, e.maskBuf = e.origBuf[:0], e.maskBuf[:0]
}

// Values is how many values were added since the last Reset.
func (e *Evidence) Values() int64 { return e.values }

// Summary returns the evidence so far.
func (e *Evidence) Summary() Summary {
	e.flush()
	s := Summary{
		Values:        e.values,
		OriginalsHMAC: hex.EncodeToString(e.originals.Sum(nil)),
		MaskedSHA256:  hex.EncodeToString(e.masked.Sum(nil)),
	}
	if len(e.perLabel) > 0 {
		s.PerLabel = make(map[string]int64, len(e.perLabel))
	}
	for _, lc := range e.perLabel {
		label, n := lc.label, lc.n
		s.PerLabel[label] = n
		if name, ok := strings.CutPrefix(label, classifierLabelPrefix); ok {
			s.Classifiers = append(s.Classifiers, name)
		} else {
			s.Columns = append(s.Columns, label)
		}
	}
	slices.Sort(s.Columns)
	slices.Sort(s.Classifiers)
	return s
}

// Reset empties e for the next statement.
func (e *Evidence) Reset() {
	e.values = 0
	e.perLabel = e.perLabel[:0]
	e.origBuf, e.maskBuf = e.origBuf[:0], e.maskBuf[:0]
	e.originals.Reset()
	e.masked.Reset()
}
