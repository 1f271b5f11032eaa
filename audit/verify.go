package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Kind classifies what Verify found wrong.
type Kind string

const (
	// KindChanged: a record's bytes differ from what was written (or it
	// does not read as a record at all).
	KindChanged Kind = "changed"
	// KindInserted: a record that was never written in that place.
	KindInserted Kind = "inserted"
	// KindMissing: records (or whole segments) were removed, and no
	// retention record vouches for it.
	KindMissing Kind = "missing"
	// KindReordered: records out of order.
	KindReordered Kind = "reordered"
	// KindTruncated: a file ends in the middle of a record.
	KindTruncated Kind = "truncated"
	// KindSignature: a checkpoint or retention record whose signature the
	// public key does not verify (forged, or signed by another key).
	KindSignature Kind = "bad_signature"
	// KindRewritten: a validly signed checkpoint whose (seq, hash) the
	// records before it no longer match: the chain since the previous
	// checkpoint was rebuilt.
	KindRewritten Kind = "rewritten"
)

// Problem is the first bad record Verify found. Every record before Seq
// verified; Segment and Line locate the record where the problem shows.
type Problem struct {
	Kind    Kind
	Segment string
	Line    int // 1-based
	Seq     uint64
	Reason  string
}

func (p *Problem) Error() string {
	return fmt.Sprintf("%s:%d: seq %d: %s: %s", p.Segment, p.Line, p.Seq, p.Kind, p.Reason)
}

// Report is what Verify found.
type Report struct {
	// Segments is the number of segment files read.
	Segments int
	// Records counts the records verified (all of them when OK).
	Records uint64
	// FirstSeq and LastSeq are the first and last verified records;
	// LastHash is the hash of the last one. Note LastSeq and LastHash:
	// a later Verify that ends before them means records were removed
	// from the end, which the journal alone cannot show.
	FirstSeq, LastSeq uint64
	LastHash          string
	// PrunedThrough is the last seq removed by retention, as vouched for
	// by a signed retention record (0: the journal starts at seq 1).
	PrunedThrough uint64
	// Checkpoints counts the valid checkpoints; Checkpointed is the seq
	// the last one signs (0: none).
	Checkpoints  int
	Checkpointed uint64
	// Unanchored counts the records after the last checkpoint: they are
	// chained but not yet signed. Not an error (the journal writes a
	// checkpoint every second and at Close), but only a checkpoint
	// proves they were not changed or removed.
	Unanchored uint64
	// KeyID names the public key used.
	KeyID string
	// Problem is the first bad record, nil when everything verified.
	Problem *Problem
}

// OK reports whether the journal verified.
func (r Report) OK() bool { return r.Problem == nil }

// Verify checks the journal in dir offline with only the public key: each
// record canonical, numbered without gaps across segments, chained to the
// one before it; every checkpoint and retention record signed by pub, and
// every checkpoint matching the record it signs. A journal whose start was
// pruned verifies only when a signed retention record vouches for the
// records removed. The error is for I/O failures; what is wrong with the
// journal is in Report.Problem.
func Verify(dir string, pub ed25519.PublicKey) (Report, error) {
	return VerifyFS(os.DirFS(dir), pub)
}

// VerifyFS is Verify on the segment files at the root of fsys.
func VerifyFS(fsys fs.FS, pub ed25519.PublicKey) (Report, error) {
	rep := Report{KeyID: KeyID(pub)}
	if len(pub) != ed25519.PublicKeySize {
		return rep, fmt.Errorf("audit verify: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	segs, err := listSegments(fsys)
	if err != nil {
		return rep, fmt.Errorf("audit verify: %w", err)
	}
	rep.Segments = len(segs)
	v := verifier{pub: pub, rep: rep, it: &entries{fsys: fsys, segs: segs}}
	defer v.it.close()
	for {
		e := v.it.next()
		if e == nil {
			break
		}
		if p := v.check(e); p != nil {
			v.rep.Problem = p
			break
		}
	}
	if v.rep.Problem != nil {
		// Signed retention records further on still say where the
		// journal may start.
		for e := v.it.next(); e != nil; e = v.it.next() {
			if e.err == nil && e.rec.Type == TypeRetention {
				v.retention(e, false)
			}
		}
	}
	if v.it.err != nil {
		return v.rep, fmt.Errorf("audit verify: %w", v.it.err)
	}
	v.finish()
	return v.rep, nil
}

type verifier struct {
	pub  ed25519.PublicKey
	rep  Report
	it   *entries
	last *entry // last verified record
	// start is the first record; when its seq is not 1 a retention
	// record must vouch for what came before.
	start         *entry
	vouched       bool
	vouchedBelow  uint64 // highest retention last_seq below start
	startMismatch *entry // a retention record for start whose hash differs
	lastCP        uint64 // seq of the last valid checkpoint record
	lastCPHash    [sha256.Size]byte
}

func (v *verifier) problem(k Kind, e *entry, seq uint64, format string, args ...any) *Problem {
	return &Problem{Kind: k, Segment: e.seg, Line: e.line, Seq: seq, Reason: fmt.Sprintf(format, args...)}
}

// want is the seq the next record should have.
func (v *verifier) want(e *entry) uint64 {
	if v.last != nil {
		return v.last.rec.Seq + 1
	}
	return e.segFirst
}

func (v *verifier) check(e *entry) *Problem {
	want := v.want(e)
	if e.empty {
		if v.last != nil && e.segFirst != want {
			return v.problem(KindMissing, e, want, "empty segment declares seq %d, but the last record was seq %d", e.segFirst, v.last.rec.Seq)
		}
		return nil
	}
	if e.err != nil {
		if e.torn {
			return v.problem(KindTruncated, e, want, "file ends inside a record: %v", e.err)
		}
		return v.problem(KindChanged, e, want, "%v", e.err)
	}
	if v.last == nil {
		switch {
		case e.first && e.rec.Seq > e.segFirst:
			return v.problem(KindMissing, e, e.segFirst, "segment declares seq %d but starts at seq %d: records %d..%d removed", e.segFirst, e.rec.Seq, e.segFirst, e.rec.Seq-1)
		case e.first && e.rec.Seq < e.segFirst:
			return v.problem(KindChanged, e, e.rec.Seq, "segment declares seq %d but starts at seq %d", e.segFirst, e.rec.Seq)
		case e.rec.Seq == 1 && e.rec.Prev != ZeroHash:
			return v.problem(KindChanged, e, 1, "the first record's prev is not %s", ZeroHash)
		}
	} else {
		if e.first && e.segFirst != e.rec.Seq {
			return v.problem(KindReordered, e, want, "%s starts with seq %d: file renamed, or its first record changed", e.seg, e.rec.Seq)
		}
		if e.rec.Seq != want {
			return v.seqProblem(e, want)
		}
		if e.rec.Prev != hexHash(v.last.hash) {
			return v.linkProblem(e)
		}
	}
	switch e.rec.Type {
	case TypeCheckpoint:
		if p := v.checkpoint(e); p != nil {
			return p
		}
	case TypeRetention:
		if p := v.retention(e, true); p != nil {
			return p
		}
	}
	if v.start == nil {
		v.start = e
		v.rep.FirstSeq = e.rec.Seq
	}
	v.last = e
	v.rep.Records++
	v.rep.LastSeq = e.rec.Seq
	v.rep.LastHash = hexHash(e.hash)
	return nil
}

// ok reports whether e is a readable record (for looking ahead).
func ok(e *entry) bool { return e != nil && !e.empty && e.err == nil }

// seqProblem explains a record whose seq is not the one after the last.
func (v *verifier) seqProblem(e *entry, want uint64) *Problem {
	n := v.it.peek()
	last := v.last
	switch seq := e.rec.Seq; {
	case seq > want && ok(n) && n.rec.Seq == want:
		return v.problem(KindReordered, e, want, "seq %d comes before seq %d", seq, want)
	case seq > want && ok(n) && n.rec.Seq == want+1:
		return v.problem(KindChanged, e, want, "seq %d stands where seq %d belongs (its seq changed, or it was moved here)", seq, want)
	case seq > want && e.first:
		return v.problem(KindMissing, e, want, "records %d..%d missing: %s ends at seq %d and %s starts at seq %d (segment removed or truncated)",
			want, seq-1, last.seg, last.rec.Seq, e.seg, seq)
	case seq > want:
		return v.problem(KindMissing, e, want, "records %d..%d missing", want, seq-1)
	case seq == last.rec.Seq && bytes.Equal(e.raw, last.raw):
		return v.problem(KindInserted, e, want, "seq %d appears twice (the record was copied)", seq)
	case seq == last.rec.Seq && ok(n) && n.rec.Seq == want && n.rec.Prev == hexHash(e.hash) && e.rec.Prev == last.rec.Prev:
		return v.problem(KindInserted, last, seq, "seq %d appears twice; the record after the second chains to the second, so the first was inserted", seq)
	case seq == last.rec.Seq:
		return v.problem(KindInserted, e, want, "seq %d appears twice (record inserted)", seq)
	default:
		return v.problem(KindInserted, e, want, "seq goes back from %d to %d (record inserted or moved)", last.rec.Seq, seq)
	}
}

// linkProblem decides, for a record whose prev does not match the hash of
// the record before it, which of the two was changed, from what the
// records around them say.
func (v *verifier) linkProblem(e *entry) *Problem {
	last, n := v.last, v.it.peek()
	blameLast := func() *Problem {
		return v.problem(KindChanged, last, last.rec.Seq, "record changed: its hash no longer matches the prev stored in seq %d", e.rec.Seq)
	}
	blameE := func() *Problem {
		return v.problem(KindChanged, e, e.rec.Seq, "record changed: its prev does not match the hash of seq %d", last.rec.Seq)
	}
	// The next record chains to e: e is intact, so last was changed.
	if ok(n) && n.rec.Seq == e.rec.Seq+1 && n.rec.Prev == hexHash(e.hash) {
		return blameLast()
	}
	// e is a checkpoint that really signs last's seq: its hash says
	// which one changed.
	if e.rec.Type == TypeCheckpoint {
		if cp, hash, sig, err := parseCheckpoint(e.rec.Data); err == nil && cp.Seq == last.rec.Seq &&
			ed25519.Verify(v.pub, CheckpointMessage(cp.Seq, hash, e.rec.Time), sig) {
			if cp.Hash != hexHash(last.hash) {
				return blameLast()
			}
			return blameE()
		}
	}
	// The next record has e's seq and chains to last: e was inserted.
	if ok(n) && n.rec.Seq == e.rec.Seq && n.rec.Prev == hexHash(last.hash) {
		return v.problem(KindInserted, e, e.rec.Seq, "record inserted: seq %d follows it and chains to seq %d", n.rec.Seq, last.rec.Seq)
	}
	// The next record follows e but does not chain to it either: e
	// changed.
	if ok(n) && n.rec.Seq == e.rec.Seq+1 {
		return blameE()
	}
	// Nothing after e to tell: changing a record's content is the likelier
	// edit than changing e's prev.
	return blameLast()
}

func parseCheckpoint(data []byte) (Checkpoint, [sha256.Size]byte, []byte, error) {
	var cp Checkpoint
	var hash [sha256.Size]byte
	if err := decodeExact(data, &cp); err != nil {
		return cp, hash, nil, err
	}
	if err := decodeHash(cp.Hash, &hash); err != nil {
		return cp, hash, nil, err
	}
	sig, err := decodeSignature(cp.Signature)
	return cp, hash, sig, err
}

// decodeExact decodes data into v and requires data to be exactly v's
// canonical encoding: no unknown, missing or duplicate fields.
func decodeExact(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return err
	}
	if canon, err := canonicalData(v); err != nil || !bytes.Equal(canon, data) {
		return fmt.Errorf("fields differ from a %T", v)
	}
	return nil
}

func decodeHash(s string, dst *[sha256.Size]byte) error {
	if len(s) != hex.EncodedLen(sha256.Size) || !lowerHex([]byte(s)) {
		return fmt.Errorf("hash %q: want 64 lower-case hex digits", s)
	}
	_, err := hex.Decode(dst[:], []byte(s))
	return err
}

func decodeSignature(s string) ([]byte, error) {
	sig, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("signature: want %d bytes in standard base64", ed25519.SignatureSize)
	}
	return sig, nil
}

// prevHash is the hash of the record before e: the last verified one, or
// for the first record what its prev says.
func (v *verifier) prevHash(e *entry) [sha256.Size]byte {
	if v.last != nil {
		return v.last.hash
	}
	var h [sha256.Size]byte
	decodeHash(e.rec.Prev, &h)
	return h
}

func (v *verifier) checkpoint(e *entry) *Problem {
	cp, hash, sig, err := parseCheckpoint(e.rec.Data)
	if err != nil {
		return v.problem(KindChanged, e, e.rec.Seq, "checkpoint data: %v", err)
	}
	if cp.KeyID != v.rep.KeyID {
		return v.problem(KindSignature, e, e.rec.Seq, "checkpoint names key %s; verifying with key %s", cp.KeyID, v.rep.KeyID)
	}
	if !ed25519.Verify(v.pub, CheckpointMessage(cp.Seq, hash, e.rec.Time), sig) {
		return v.problem(KindSignature, e, e.rec.Seq, "checkpoint signature does not verify with key %s (forged)", v.rep.KeyID)
	}
	if prev := v.prevHash(e); cp.Seq != e.rec.Seq-1 || hash != prev {
		from := v.lastCP + 1 // the first record no valid checkpoint covers
		if v.lastCP == 0 {
			from = v.rep.FirstSeq
		}
		if v.start == nil {
			from = e.rec.Seq
		}
		return v.problem(KindRewritten, e, from,
			"checkpoint at seq %d signs seq %d hash %s, but the journal has seq %d hash %s there: records %d..%d were rewritten",
			e.rec.Seq, cp.Seq, cp.Hash, e.rec.Seq-1, hexHash(prev), from, e.rec.Seq-1)
	}
	v.rep.Checkpoints++
	v.rep.Checkpointed = cp.Seq
	v.lastCP, v.lastCPHash = e.rec.Seq, e.hash
	return nil
}

// retention checks a retention record and notes what it vouches for. Out
// of the verified chain (inChain false) a bad one is ignored.
func (v *verifier) retention(e *entry, inChain bool) *Problem {
	var rt Retention
	var hash [sha256.Size]byte
	err := decodeExact(e.rec.Data, &rt)
	if err == nil {
		err = decodeHash(rt.LastHash, &hash)
	}
	var sig []byte
	if err == nil {
		sig, err = decodeSignature(rt.Signature)
	}
	if err == nil && rt.LastSeq >= e.rec.Seq {
		err = fmt.Errorf("vouches for seq %d, which is not before it", rt.LastSeq)
	}
	if err != nil {
		if !inChain {
			return nil
		}
		return v.problem(KindChanged, e, e.rec.Seq, "retention data: %v", err)
	}
	if !ed25519.Verify(v.pub, RetentionMessage(rt.FirstSeq, rt.LastSeq, hash), sig) {
		if !inChain {
			return nil
		}
		return v.problem(KindSignature, e, e.rec.Seq, "retention signature does not verify with key %s (forged)", v.rep.KeyID)
	}
	start := v.start
	if start == nil {
		start = e
	}
	switch {
	case rt.LastSeq+1 == start.rec.Seq && rt.LastHash == start.rec.Prev:
		v.vouched = true
		v.rep.PrunedThrough = rt.LastSeq
	case rt.LastSeq+1 == start.rec.Seq:
		v.startMismatch = e
	case rt.LastSeq < start.rec.Seq:
		v.vouchedBelow = max(v.vouchedBelow, rt.LastSeq)
	}
	return nil
}

// finish checks the start of the journal, limits the report to the
// records before the problem, and counts unanchored records.
func (v *verifier) finish() {
	v.checkStart()
	if p := v.rep.Problem; p != nil {
		v.rewind(p.Seq)
	}
	if v.rep.Records == 0 {
		return
	}
	if v.lastCP == 0 {
		v.rep.Unanchored = v.rep.Records
	} else if v.lastCP <= v.rep.LastSeq {
		v.rep.Unanchored = v.rep.LastSeq - v.lastCP
	}
}

// rewind takes the records from seq on out of the verified ones (a problem
// blamed a record already accepted).
func (v *verifier) rewind(seq uint64) {
	if v.rep.Records == 0 || seq > v.rep.LastSeq {
		return
	}
	if seq <= v.rep.FirstSeq {
		v.rep.Records, v.rep.FirstSeq, v.rep.LastSeq, v.rep.LastHash = 0, 0, 0, ""
		return
	}
	switch {
	case seq == v.last.rec.Seq:
		v.rep.LastHash = v.last.rec.Prev
	case seq == v.lastCP+1:
		v.rep.LastHash = hexHash(v.lastCPHash)
	default:
		v.rep.LastHash = ""
	}
	v.rep.Records -= v.rep.LastSeq - seq + 1
	v.rep.LastSeq = seq - 1
}

// checkStart requires a retention record to vouch for a journal that does
// not start at seq 1.
func (v *verifier) checkStart() {
	if s := v.start; s != nil && s.rec.Seq > 1 && !v.vouched {
		switch {
		case v.startMismatch != nil:
			v.rep.Problem = v.problem(KindChanged, s, s.rec.Seq,
				"the journal starts at seq %d, but its prev does not match the hash the retention record at seq %d gives for seq %d",
				s.rec.Seq, v.startMismatch.rec.Seq, s.rec.Seq-1)
		case v.vouchedBelow > 0:
			v.rep.Problem = v.problem(KindMissing, s, v.vouchedBelow+1,
				"the journal starts at seq %d; retention records vouch for removing seqs up to %d only: records %d..%d missing",
				s.rec.Seq, v.vouchedBelow, v.vouchedBelow+1, s.rec.Seq-1)
		default:
			v.rep.Problem = v.problem(KindMissing, s, 1,
				"the journal starts at seq %d and no retention record vouches for removing records 1..%d", s.rec.Seq, s.rec.Seq-1)
		}
	}
}

// entry is one line of a segment, as read.
type entry struct {
	seg      string
	segFirst uint64 // seq the segment's name declares
	line     int
	first    bool // the segment's first line
	empty    bool // stands for an empty segment
	raw      []byte
	rec      Record
	hash     [sha256.Size]byte
	err      error // not a record
	torn     bool  // the file ends inside this line
}

// entries iterates the lines of segments in order, with one of look-ahead.
type entries struct {
	fsys   fs.FS
	segs   []segment
	next_  int // index of the next segment to open
	f      fs.File
	br     *bufio.Reader
	seg    segment
	line   int
	peeked *entry
	err    error // I/O
}

func (it *entries) peek() *entry {
	if it.peeked == nil {
		it.peeked = it.read()
	}
	return it.peeked
}

func (it *entries) next() *entry {
	if e := it.peeked; e != nil {
		it.peeked = nil
		return e
	}
	return it.read()
}

func (it *entries) close() {
	if it.f != nil {
		it.f.Close()
		it.f = nil
	}
}

func (it *entries) read() *entry {
	for it.err == nil {
		if it.f == nil {
			if it.next_ >= len(it.segs) {
				return nil
			}
			it.seg = it.segs[it.next_]
			it.next_++
			f, err := it.fsys.Open(it.seg.name)
			if err != nil {
				it.err = err
				return nil
			}
			it.f, it.line = f, 0
			if it.br == nil {
				it.br = bufio.NewReaderSize(f, 64<<10)
			} else {
				it.br.Reset(f)
			}
		}
		raw, torn, err := readLine(it.br)
		if errors.Is(err, io.EOF) {
			it.close()
			if it.line == 0 {
				return &entry{seg: it.seg.name, segFirst: it.seg.first, empty: true}
			}
			continue
		}
		it.line++
		e := &entry{seg: it.seg.name, segFirst: it.seg.first, line: it.line, first: it.line == 1, raw: raw, torn: torn}
		switch {
		case err != nil && !errors.Is(err, errLineTooLong):
			it.err = fmt.Errorf("%s: %w", it.seg.name, err)
			return nil
		case err != nil:
			e.err = err
		case torn:
			e.err = errors.New("no newline at the end")
		default:
			e.rec, e.hash, e.err = readRecord(raw)
		}
		return e
	}
	return nil
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxLineBytes)

// readLine returns the next line without its newline, a copy. torn is set
// for a last line with no newline; io.EOF means no bytes were left.
func readLine(br *bufio.Reader) (line []byte, torn bool, err error) {
	var acc []byte
	tooLong := false
	for {
		frag, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if tooLong {
				return nil, false, errLineTooLong
			}
			return append(acc, frag[:len(frag)-1]...), false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if !tooLong && len(acc)+len(frag) > maxLineBytes {
				tooLong, acc = true, nil
			}
			if !tooLong {
				acc = append(acc, frag...)
			}
		case errors.Is(err, io.EOF):
			if tooLong {
				return nil, true, errLineTooLong
			}
			if len(acc)+len(frag) == 0 {
				return nil, false, io.EOF
			}
			return append(acc, frag...), true, nil
		default:
			return nil, false, err
		}
	}
}
