package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Event types. Callers append any type made of [a-z0-9_] (at most 64 bytes)
// except the reserved ones, which only the journal writes.
const (
	TypeAgentStart        = "agent_start"
	TypeAgentStop         = "agent_stop"
	TypePolicyLoaded      = "policy_loaded"
	TypeSessionStart      = "session_start"
	TypeSessionEnd        = "session_end"
	TypeStatement         = "statement"
	TypeMasking           = "masking"
	TypeApprovalRequested = "approval_requested"
	TypeApprovalGranted   = "approval_granted"
	TypeApprovalDenied    = "approval_denied"
	TypeApprovalExpired   = "approval_expired"
	TypeApprovalAbandoned = "approval_abandoned"
	TypeControlAction     = "control_action"

	// TypeCheckpoint (reserved) signs the seq and hash of the record
	// before it: data is a Checkpoint.
	TypeCheckpoint = "checkpoint"
	// TypeRetention (reserved) vouches for segments that Prune removed:
	// data is a Retention.
	TypeRetention = "retention"
	// TypeRecovery (reserved) notes what the journal did to recover: a
	// torn tail dropped at open, or an outage during which appends were
	// refused: data is a Recovery.
	TypeRecovery = "recovery"
)

// ZeroHash is the Prev of the first record of a journal.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// maxTypeLen bounds a record type's length.
const maxTypeLen = 64

// Record is one journal entry. On disk it is one line of canonical JSON
// (see the package documentation), and its hash is the SHA-256 of that line
// without the newline.
type Record struct {
	// Seq numbers records from 1 with no gaps.
	Seq uint64 `json:"seq"`
	// Time is when the record was appended (UTC).
	Time time.Time `json:"time"`
	// Type says what happened: one of the Type constants.
	Type string `json:"type"`
	// Prev is the lower-case hex SHA-256 of the previous record's line
	// (ZeroHash for the first record).
	Prev string `json:"prev"`
	// Data is the event's canonical JSON value.
	Data json.RawMessage `json:"data"`
}

// MarshalJSON returns the record's canonical line (without the newline).
func (r Record) MarshalJSON() ([]byte, error) {
	return r.appendLine(nil)
}

// Hash returns the lower-case hex SHA-256 of the record's canonical line:
// the Prev of the record after it.
func (r Record) Hash() (string, error) {
	line, err := r.appendLine(nil)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:]), nil
}

func (r Record) appendLine(dst []byte) ([]byte, error) {
	data := []byte(r.Data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	data, err := appendCanonical(nil, data)
	if err != nil {
		return nil, fmt.Errorf("record data: %w", err)
	}
	prev, err := hex.DecodeString(r.Prev)
	if err != nil || len(prev) != sha256.Size {
		return nil, fmt.Errorf("record prev %q: not a hex SHA-256", r.Prev)
	}
	return appendLine(dst, r.Seq, r.Time, r.Type, (*[sha256.Size]byte)(prev), data, nil), nil
}

// appendLine appends a record's canonical line, without the newline. data
// must be canonical and typ valid. tc, if not nil, caches the formatting
// of the time's second.
func appendLine(dst []byte, seq uint64, t time.Time, typ string, prev *[sha256.Size]byte, data []byte, tc *timeCache) []byte {
	dst = append(dst, `{"data":`...)
	dst = append(dst, data...)
	dst = append(dst, `,"prev":"`...)
	dst = hex.AppendEncode(dst, prev[:])
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"time":"`...)
	dst = tc.appendTime(dst, t)
	dst = append(dst, `","type":`...)
	dst = appendString(dst, typ)
	return append(dst, '}')
}

// timeCache formats record times as t.UTC().AppendFormat(dst,
// time.RFC3339Nano) does, reusing the date and time of day while the
// second stays the same: records come many to a second.
type timeCache struct {
	sec    int64 // Unix second that prefix formats
	n      int   // length of prefix; 0: nothing cached
	prefix [24]byte
}

// appendTime appends t in UTC as RFC 3339 with the fraction of a second
// that time.RFC3339Nano writes (trailing zeros dropped, no dot if none).
// A nil cache formats with AppendFormat.
func (c *timeCache) appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	if c == nil {
		return t.AppendFormat(dst, time.RFC3339Nano)
	}
	if sec := t.Unix(); c.n == 0 || sec != c.sec {
		if y := t.Year(); y < 0 || y > 9999 {
			return t.AppendFormat(dst, time.RFC3339Nano)
		}
		c.sec, c.n = sec, len(t.AppendFormat(c.prefix[:0], "2006-01-02T15:04:05"))
	}
	dst = append(dst, c.prefix[:c.n]...)
	if ns := uint32(t.Nanosecond()); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := len(frac)
		for frac[n-1] == '0' {
			n--
		}
		dst = append(dst, frac[:n]...)
	}
	return append(dst, 'Z')
}

// validType reports whether typ is a well-formed record type.
func validType(typ string) bool {
	if len(typ) == 0 || len(typ) > maxTypeLen {
		return false
	}
	for i := 0; i < len(typ); i++ {
		b := typ[i]
		if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// reservedType reports whether only the journal may write typ.
func reservedType(typ string) bool {
	return typ == TypeCheckpoint || typ == TypeRetention || typ == TypeRecovery
}

// ErrMalformed is wrapped by ReadRecord's errors.
var ErrMalformed = errors.New("malformed record")

// recordKeys are a record line's keys in canonical order.
var recordKeys = [...]string{"data", "prev", "seq", "time", "type"}

// ReadRecord parses one record line (without its newline). It accepts only
// the canonical encoding: any byte that differs from what the journal
// writes is an error wrapping ErrMalformed. The returned record does not
// alias line.
func ReadRecord(line []byte) (Record, error) {
	r, _, err := readRecord(line)
	return r, err
}

// readRecord is ReadRecord that also returns the line's hash.
func readRecord(line []byte) (Record, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	fail := func(format string, args ...any) (Record, [sha256.Size]byte, error) {
		return Record{}, sum, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(line) == 0 {
		return fail("empty line")
	}
	if len(line) > maxLineBytes {
		return fail("line longer than %d bytes", maxLineBytes)
	}
	var members []member
	c := canonicalizer{src: line, top: &members}
	canon, err := c.document(make([]byte, 0, len(line)))
	if err != nil {
		return fail("%v", err)
	}
	if !bytes.Equal(canon, line) {
		off := 0
		for off < len(canon) && off < len(line) && canon[off] == line[off] {
			off++
		}
		return fail("%v (first difference at offset %d)", errNotCanonical, off)
	}
	if canon[0] != '{' {
		return fail("not a JSON object")
	}
	if len(members) != len(recordKeys) {
		return fail("want keys %q, got %d keys", recordKeys, len(members))
	}
	for i, m := range members {
		if string(m.key) != recordKeys[i] {
			return fail("want keys %q, got %q", recordKeys, m.key)
		}
	}
	value := func(i int) []byte { return canon[members[i].val:members[i].end] }
	str := func(i int) ([]byte, bool) {
		v := value(i)
		if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v[1:len(v)-1], '\\') >= 0 {
			return nil, false
		}
		return v[1 : len(v)-1], true
	}

	var r Record
	seq := value(2)
	if seq[0] < '1' || seq[0] > '9' {
		return fail("seq %s: want a positive integer", seq)
	}
	if r.Seq, err = strconv.ParseUint(string(seq), 10, 64); err != nil {
		return fail("seq %s: %v", seq, err)
	}
	prev, ok := str(1)
	if !ok || len(prev) != hex.EncodedLen(sha256.Size) || !lowerHex(prev) {
		return fail("prev: want 64 lower-case hex digits")
	}
	r.Prev = string(prev)
	ts, ok := str(3)
	if !ok {
		return fail("time: want a string")
	}
	if r.Time, err = time.Parse(time.RFC3339Nano, string(ts)); err != nil {
		return fail("time: %v", err)
	}
	if got := r.Time.UTC().Format(time.RFC3339Nano); got != string(ts) {
		return fail("time %s: want it in UTC as %s", ts, got)
	}
	r.Time = r.Time.UTC()
	typ, ok := str(4)
	if !ok || !validType(string(typ)) {
		return fail("type: want 1 to %d of [a-z0-9_]", maxTypeLen)
	}
	r.Type = string(typ)
	r.Data = bytes.Clone(value(0))
	sum = sha256.Sum256(line)
	return r, sum, nil
}

func lowerHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Checkpoint is the data of a checkpoint record. Signature is the ed25519
// signature (standard base64) over CheckpointMessage(Seq, Hash, the
// checkpoint record's Time).
type Checkpoint struct {
	Seq       uint64 `json:"seq"`
	Hash      string `json:"hash"`
	Signature string `json:"signature"`
	KeyID     string `json:"key_id"`
}

// RemovedSegment describes one segment file that Prune removed.
type RemovedSegment struct {
	Name     string `json:"name"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	LastHash string `json:"last_hash"`
	Bytes    int64  `json:"bytes"`
}

// Retention is the data of a retention record: Prune removed the records
// FirstSeq..LastSeq, in Segments, and the last of them hashed to LastHash,
// which is the Prev of record LastSeq+1. Signature is the ed25519 signature
// (standard base64) over RetentionMessage(FirstSeq, LastSeq, LastHash).
type Retention struct {
	FirstSeq  uint64           `json:"first_seq"`
	LastSeq   uint64           `json:"last_seq"`
	LastHash  string           `json:"last_hash"`
	Segments  []RemovedSegment `json:"segments"`
	Reason    string           `json:"reason"`
	Signature string           `json:"signature"`
	KeyID     string           `json:"key_id"`
}

// Recovery is the data of a recovery record.
type Recovery struct {
	// Event is "torn_tail" (Open dropped an incomplete last line) or
	// "outage" (writes failed for a while and appends were refused).
	Event string `json:"event"`
	// torn_tail
	Segment      string `json:"segment,omitempty"`
	Offset       int64  `json:"offset,omitempty"`
	DroppedBytes int    `json:"dropped_bytes,omitempty"`
	// DroppedSHA256 is the hex SHA-256 of the dropped bytes, and Dropped
	// the bytes themselves (standard base64) when at most 4 KiB.
	DroppedSHA256 string `json:"dropped_sha256,omitempty"`
	Dropped       string `json:"dropped,omitempty"`
	// outage
	Error   string     `json:"error,omitempty"`
	Since   *time.Time `json:"since,omitempty"`
	Until   *time.Time `json:"until,omitempty"`
	Refused uint64     `json:"refused,omitempty"`
}
