package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// tamperJournal writes 120 statements with a checkpoint every 10 records
// (seq 11, 22, ...) into small segments, and returns its dir and key.
func tamperJournal(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	dir, key := t.TempDir(), newKey(t)
	j := mustOpen(t, dir, Options{PrivateKey: key, SegmentBytes: 2048, CheckpointRecords: 10, CheckpointEvery: time.Hour})
	for i := range 120 {
		mustAppend(t, j, TypeStatement, stmt{N: i, SQL: fmt.Sprintf("select %d", i)})
	}
	mustClose(t, j)
	return dir, key
}

// midStatement returns a statement seq k >= from such that k-1..k+2 are
// statements on the same segment.
func midStatement(t *testing.T, fs *files, from uint64) uint64 {
	t.Helper()
	for k := from; ; k++ {
		s, i := fs.locate(t, k)
		if i < 1 || i+2 >= len(fs.lines[s]) {
			continue
		}
		all := true
		for d := -1; d <= 2; d++ {
			r, err := ReadRecord(fs.lines[s][i+d])
			all = all && err == nil && r.Type == TypeStatement
		}
		if all {
			return k
		}
	}
}

// checkpointSeqs returns the seqs of the checkpoint records.
func checkpointSeqs(t *testing.T, dir string) []uint64 {
	var seqs []uint64
	for _, r := range readAll(t, dir, Filter{Types: []string{TypeCheckpoint}}) {
		seqs = append(seqs, r.Seq)
	}
	return seqs
}

// resign replaces checkpoint c's signature with one by key.
func resign(t *testing.T, fs *files, c uint64, key ed25519.PrivateKey, keyID string) {
	s, i := fs.locate(t, c)
	r := fs.record(t, c)
	cp, hash, _, err := parseCheckpoint(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	cp.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, CheckpointMessage(cp.Seq, hash, r.Time)))
	cp.KeyID = keyID
	r.Data = mustCanonical(cp)
	fs.lines[s][i] = line(t, r)
}

// rechain renumbers every record from index from on (in file order) and
// recomputes the chain and segment names, as an attacker without the key
// would after removing a record.
func rechain(t *testing.T, fs *files) {
	var prev string
	var seq uint64
	for s := range fs.lines {
		for i, l := range fs.lines[s] {
			r, err := ReadRecord(l)
			if err != nil {
				t.Fatal(err)
			}
			seq++
			if seq == 1 {
				prev = r.Prev
			}
			r.Seq, r.Prev = seq, prev
			fs.lines[s][i] = line(t, r)
			prev = hashOf(t, r)
			if i == 0 {
				fs.names[s] = segmentName(seq)
			}
		}
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	type tamper func(t *testing.T, fs *files, key ed25519.PrivateKey) (Kind, uint64)
	cases := []struct {
		name   string
		tamper tamper
		pub    func(key ed25519.PrivateKey) ed25519.PublicKey // default: key's
	}{
		{name: "changed byte in data", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 30)
			s, i := fs.locate(t, k)
			fs.lines[s][i] = bytes.Replace(fs.lines[s][i], []byte(`"sql":"select`), []byte(`"sql":"selecT`), 1)
			return KindChanged, k
		}},
		{name: "changed byte, JSON still valid but not canonical", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 40)
			s, i := fs.locate(t, k)
			fs.lines[s][i] = bytes.Replace(fs.lines[s][i], []byte(`{"n":`), []byte(`{"n": `), 1)
			return KindChanged, k
		}},
		{name: "changed prev", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 50)
			s, i := fs.locate(t, k)
			l := fs.lines[s][i]
			p := bytes.Index(l, []byte(`"prev":"`)) + len(`"prev":"`)
			if l[p] == '0' {
				l[p] = '1'
			} else {
				l[p] = '0'
			}
			return KindChanged, k
		}},
		{name: "changed seq", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 60)
			s, i := fs.locate(t, k)
			fs.lines[s][i] = bytes.Replace(fs.lines[s][i], fmt.Appendf(nil, `"seq":%d,`, k), []byte(`"seq":9999,`), 1)
			return KindChanged, k
		}},
		{name: "changed record before a checkpoint", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			const k = 43 // checkpoint 44 signs it
			s, i := fs.locate(t, k)
			fs.lines[s][i] = bytes.Replace(fs.lines[s][i], []byte(`"sql":"select`), []byte(`"sql":"delete`), 1)
			return KindChanged, k
		}},
		{name: "changed last record before the final checkpoint", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := finalSeq(t, fs) - 1
			s, i := fs.locate(t, k)
			fs.lines[s][i] = bytes.Replace(fs.lines[s][i], []byte(`"sql":"select`), []byte(`"sql":"Select`), 1)
			return KindChanged, k
		}},
		{name: "changed prev of the final checkpoint", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			s := len(fs.lines) - 1
			i := len(fs.lines[s]) - 1
			r, _ := ReadRecord(fs.lines[s][i])
			r.Prev = ZeroHash
			fs.lines[s][i] = line(t, r)
			return KindChanged, r.Seq
		}},
		{name: "changed checkpoint signature", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			s, i := fs.locate(t, 55)
			r := fs.record(t, 55)
			cp := decode[Checkpoint](t, r.Data)
			sig, _ := base64.StdEncoding.DecodeString(cp.Signature)
			sig[10] ^= 1
			cp.Signature = base64.StdEncoding.EncodeToString(sig)
			r.Data = mustCanonical(cp)
			fs.lines[s][i] = line(t, r)
			return KindSignature, 55
		}},
		{name: "inserted copy of an older record", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 30)
			s, i := fs.locate(t, k)
			old := bytes.Clone(fs.lines[0][2])
			fs.lines[s] = slices.Insert(fs.lines[s], i+1, old)
			return KindInserted, k + 1
		}},
		{name: "inserted duplicate line", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 70)
			s, i := fs.locate(t, k)
			fs.lines[s] = slices.Insert(fs.lines[s], i+1, bytes.Clone(fs.lines[s][i]))
			return KindInserted, k + 1
		}},
		{name: "inserted forged record that chains", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 80)
			s, i := fs.locate(t, k)
			prev := fs.record(t, k)
			forged := Record{Seq: k + 1, Time: prev.Time, Type: TypeStatement, Prev: hashOf(t, prev), Data: []byte(`{"n":-1,"sql":"select innocent"}`)}
			fs.lines[s] = slices.Insert(fs.lines[s], i+1, line(t, forged))
			return KindInserted, k + 1
		}},
		{name: "inserted blank line", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 30)
			s, i := fs.locate(t, k)
			fs.lines[s] = slices.Insert(fs.lines[s], i+1, []byte{})
			return KindChanged, k + 1
		}},
		{name: "removed record", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 90)
			s, i := fs.locate(t, k)
			fs.lines[s] = slices.Delete(fs.lines[s], i, i+1)
			return KindMissing, k
		}},
		{name: "reordered records", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			k := midStatement(t, fs, 35)
			s, i := fs.locate(t, k)
			fs.lines[s][i], fs.lines[s][i+1] = fs.lines[s][i+1], fs.lines[s][i]
			return KindReordered, k
		}},
		{name: "removed middle segment", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			first, _ := parseSegmentName(fs.names[3])
			fs.names = slices.Delete(fs.names, 3, 4)
			fs.lines = slices.Delete(fs.lines, 3, 4)
			return KindMissing, first
		}},
		{name: "removed first segment", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			fs.names, fs.lines = fs.names[1:], fs.lines[1:]
			return KindMissing, 1
		}},
		{name: "segments renamed into another order", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			first, _ := parseSegmentName(fs.names[2])
			fs.names[2], fs.names[3] = fs.names[3], fs.names[2]
			return KindReordered, first
		}},
		{name: "forged checkpoint (attacker's key)", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			other := newKey(t)
			resign(t, fs, 66, other, KeyID(other.Public().(ed25519.PublicKey)))
			return KindSignature, 66
		}},
		{name: "forged checkpoint (our key id)", tamper: func(t *testing.T, fs *files, key ed25519.PrivateKey) (Kind, uint64) {
			resign(t, fs, 77, newKey(t), KeyID(key.Public().(ed25519.PublicKey)))
			return KindSignature, 77
		}},
		{name: "whole journal checked with another key", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			return KindSignature, 11
		}, pub: func(ed25519.PrivateKey) ed25519.PublicKey { return newKey(t).Public().(ed25519.PublicKey) }},
		{name: "truncated last segment", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			s := len(fs.lines) - 1
			r, _ := ReadRecord(fs.lines[s][1])
			fs.lines[s] = fs.lines[s][:2]
			fs.lines[s][1] = fs.lines[s][1][:50]
			return KindTruncated, r.Seq
		}},
		{name: "truncated middle segment inside a line", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			r, _ := ReadRecord(fs.lines[4][2])
			fs.lines[4] = fs.lines[4][:3]
			fs.lines[4][2] = fs.lines[4][2][:len(fs.lines[4][2])-1]
			return KindTruncated, r.Seq
		}},
		{name: "truncated middle segment at a line end", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			r, _ := ReadRecord(fs.lines[5][2])
			fs.lines[5] = fs.lines[5][:2]
			return KindMissing, r.Seq
		}},
		{name: "record removed and chain rebuilt without the key", tamper: func(t *testing.T, fs *files, _ ed25519.PrivateKey) (Kind, uint64) {
			const k = 36 // checkpoint 33 covers up to 32; 44 will not match
			s, i := fs.locate(t, k)
			fs.lines[s] = slices.Delete(fs.lines[s], i, i+1)
			rechain(t, fs)
			return KindRewritten, 34
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, key := tamperJournal(t)
			pub := key.Public().(ed25519.PublicKey)
			if tc.pub != nil {
				pub = tc.pub(key)
			}
			fs := loadFiles(t, dir)
			wantKind, wantSeq := tc.tamper(t, fs, key)
			fs.write(t)
			if tc.name == "truncated last segment" || tc.name == "truncated middle segment inside a line" {
				cutLastNewline(t, fs)
			}
			rep, err := Verify(dir, pub)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatalf("Verify: OK, want %s at seq %d", wantKind, wantSeq)
			}
			if p := rep.Problem; p.Kind != wantKind || p.Seq != wantSeq {
				t.Fatalf("Verify: got %s at seq %d (%v), want %s at seq %d", p.Kind, p.Seq, p, wantKind, wantSeq)
			}
			if rep.Records != wantSeq-1 && rep.Problem.Kind != KindRewritten && wantSeq != 1 {
				t.Errorf("verified records: got %d, want %d", rep.Records, wantSeq-1)
			}
			t.Logf("%v", rep.Problem)
		})
	}
}

// cutLastNewline removes the newline that files.write put after the
// truncated line: the segment that was cut is the one whose last line does
// not read as a record.
func cutLastNewline(t *testing.T, fs *files) {
	for s, lines := range fs.lines {
		if _, err := ReadRecord(lines[len(lines)-1]); err != nil {
			path := filepath.Join(fs.dir, fs.names[s])
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, bytes.TrimSuffix(data, []byte("\n")), 0o640); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("no truncated segment")
}

func TestVerifyReportsUnanchored(t *testing.T) {
	dir, key := t.TempDir(), newKey(t)
	j := mustOpen(t, dir, Options{PrivateKey: key, CheckpointEvery: time.Hour})
	for i := range 5 {
		mustAppend(t, j, TypeStatement, stmt{N: i})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, j.PublicKey()) // while open: no checkpoint yet
	if rep.Unanchored != 5 || rep.Checkpoints != 0 {
		t.Errorf("open journal: unanchored %d, checkpoints %d; want 5, 0", rep.Unanchored, rep.Checkpoints)
	}
	mustClose(t, j)
	rep = mustVerify(t, dir, j.PublicKey())
	if rep.Unanchored != 0 || rep.Checkpointed != 5 || rep.LastSeq != 6 {
		t.Errorf("closed journal: %+v", rep)
	}
}

func TestVerifyEmptyAndCopy(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	if rep := mustVerify(t, t.TempDir(), pub); rep.Records != 0 {
		t.Errorf("empty journal: %+v", rep)
	}
	if _, err := Verify(filepath.Join(t.TempDir(), "nope"), pub); err == nil {
		t.Error("missing directory: got nil error")
	}
	// Offline: a copy of the segments, nothing else, and the public key.
	dir, key := tamperJournal(t)
	dst := t.TempDir()
	segs, _ := listSegments(os.DirFS(dir))
	for _, s := range segs {
		data, err := os.ReadFile(filepath.Join(dir, s.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, s.name), data, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if rep := mustVerify(t, dst, key.Public().(ed25519.PublicKey)); rep.Records != 132 || rep.Unanchored != 0 {
		t.Errorf("copy: %+v", rep)
	}
	if rep, _ := Verify(dst, pub); rep.OK() {
		t.Error("journal verified with another key")
	}
}

// finalSeq returns the seq of the journal's last record.
func finalSeq(t *testing.T, fs *files) uint64 {
	lines := fs.lines[len(fs.lines)-1]
	r, err := ReadRecord(lines[len(lines)-1])
	if err != nil {
		t.Fatal(err)
	}
	return r.Seq
}
