package audit

import (
	"bytes"
	"encoding/json"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/fstest"
	"time"
)

var updateSample = flag.Bool("update-sample", false, "rewrite testdata/sample from a fresh journal")

const sampleDir = "testdata/sample"

// TestSampleJournal verifies the committed sample journal: the on-disk
// format of this package must keep verifying. Its lines seed the fuzz
// targets. -update-sample writes a new one.
func TestSampleJournal(t *testing.T) {
	if *updateSample {
		writeSample(t)
	}
	pub, err := ReadPublicKey(filepath.Join(sampleDir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, sampleDir, pub)
	if rep.PrunedThrough == 0 || rep.Checkpoints == 0 || rep.Unanchored != 0 {
		t.Errorf("sample: %+v, want pruned, checkpointed, anchored", rep)
	}
	types := map[string]bool{}
	for _, r := range readAll(t, sampleDir, Filter{}) {
		types[r.Type] = true
	}
	for _, typ := range []string{TypeStatement, TypeMasking, TypeCheckpoint, TypeRetention, TypeRecovery, TypeApprovalGranted} {
		if !types[typ] {
			t.Errorf("sample has no %s record", typ)
		}
	}
}

// writeSample writes a small journal with every kind of record the
// journal itself writes, plus typical event records.
func writeSample(t *testing.T) {
	if err := os.RemoveAll(sampleDir); err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	clk := newClock()
	opts := Options{KeyDir: keyDir, SegmentBytes: 1500, CheckpointRecords: 6, CheckpointEvery: time.Hour, Now: clk.Now}
	j := mustOpen(t, sampleDir, opts)
	events := []struct {
		typ  string
		data any
	}{
		{TypeAgentStart, map[string]any{"version": "v0.1.0", "pid": 4242}},
		{TypePolicyLoaded, map[string]any{"hash": "sha256:9f86d081884c7d65", "files": []string{"base.rego"}}},
		{TypeSessionStart, map[string]any{"session": "s_01", "identity": map[string]any{"name": "billing-export", "known": true, "uid": 1001},
			"target": "orders-db", "database": "orders", "user": "app"}},
		{TypeStatement, map[string]any{"session": "s_01", "sql": "SELECT email FROM customers WHERE id = $1 -- naïve \"quote\" \\ <tag> & \u2028",
			"decision": "allow", "rows": 1, "duration_ms": 0.731}},
		{TypeMasking, map[string]any{"session": "s_01", "columns": []string{"public.customers.email"}, "values": 1, "digest": "hmac-sha256:00ff"}},
		{TypeStatement, map[string]any{"session": "s_01", "sql": "DELETE FROM orders", "decision": "hold"}},
		{TypeApprovalRequested, map[string]any{"session": "s_01", "approvers": []string{"group:dba"}, "timeout": "10m"}},
		{TypeApprovalGranted, map[string]any{"session": "s_01", "by": "alice@example.com"}},
		{TypeStatement, map[string]any{"session": "s_01", "sql": "DELETE FROM orders", "decision": "allow", "rows": 12}},
		{TypeSessionEnd, map[string]any{"session": "s_01", "bytes_in": 130, "bytes_out": 604}},
		{TypeControlAction, map[string]any{"action": "sessions kill", "by": "root"}},
	}
	for i := range 20 {
		mustAppend(t, j, TypeStatement, map[string]any{"session": "s_00", "sql": "SELECT 1", "n": i, "f": 1e-9})
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(48 * time.Hour)
	if _, err := j.Prune(24*time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		mustAppend(t, j, e.typ, e.data)
		clk.Advance(1500 * time.Millisecond)
	}
	mustClose(t, j)
	// A torn tail, recovered at the next open.
	appendFile(t, lastSegment(t, sampleDir), []byte(`{"data":{"sess`))
	j = mustOpen(t, sampleDir, opts)
	mustAppend(t, j, TypeAgentStop, map[string]any{"reason": "SIGTERM"})
	mustClose(t, j)
	os.Remove(filepath.Join(sampleDir, ".lock"))
	pub, err := os.ReadFile(filepath.Join(keyDir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sampleDir, PublicKeyFile), pub, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sample returns the sample's segments and public key.
func sample(f *testing.F) (map[string][]byte, []byte) {
	segs, err := listSegments(os.DirFS(sampleDir))
	if err != nil || len(segs) < 2 {
		f.Fatalf("sample segments: %v %v", segs, err)
	}
	out := map[string][]byte{}
	for _, s := range segs {
		data, err := os.ReadFile(filepath.Join(sampleDir, s.name))
		if err != nil {
			f.Fatal(err)
		}
		out[s.name] = data
	}
	pub, err := os.ReadFile(filepath.Join(sampleDir, PublicKeyFile))
	if err != nil {
		f.Fatal(err)
	}
	return out, pub
}

func FuzzReadRecord(f *testing.F) {
	segs, _ := sample(f)
	for _, data := range segs {
		for _, l := range bytes.Split(data, []byte("\n")) {
			f.Add(l)
		}
	}
	f.Add([]byte(`{"data":{},"prev":"` + ZeroHash + `","seq":1,"time":"2025-01-01T00:00:00Z","type":"x"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ReadRecord(line)
		if err != nil {
			return
		}
		// What reads as a record is canonical: it encodes back to the
		// same bytes.
		back, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON of a read record: %v", err)
		}
		if !bytes.Equal(back, line) {
			t.Fatalf("read %q, encoded back %q", line, back)
		}
	})
}

func FuzzCanonical(f *testing.F) {
	segs, _ := sample(f)
	for _, data := range segs {
		for _, l := range bytes.Split(data, []byte("\n")) {
			if r, err := ReadRecord(l); err == nil {
				f.Add([]byte(r.Data))
			}
		}
	}
	for _, s := range []string{` {"b" : [1.0, -0, 1e-7, "\u00e9\ud83d\ude00"], "a":null}`, `"\u2028"`, `123456789012345678901234567890`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		canon, err := appendCanonical(nil, in)
		if err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		again, err := appendCanonical(nil, canon)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", in, canon, again, err)
		}
		a, err := decodeNumbers(in)
		if err != nil {
			t.Fatal(err)
		}
		b, err := decodeNumbers(canon)
		if err != nil {
			t.Fatalf("canonical form %q does not decode: %v", canon, err)
		}
		if !sameJSON(a, b) {
			t.Fatalf("meaning changed: %q → %q", in, canon)
		}
	})
}

func decodeNumbers(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	return v, dec.Decode(&v)
}

// sameJSON compares decoded JSON values: integers exactly, other numbers
// as float64 (which is what the canonical form keeps of them).
func sameJSON(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ai, aok := new(big.Int).SetString(a.String(), 10)
		bi, bok := new(big.Int).SetString(b.String(), 10)
		if aok && bok {
			return ai.Cmp(bi) == 0
		}
		af, aerr := a.Float64()
		bf, berr := b.Float64()
		return aerr == nil && berr == nil && af == bf
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if !sameJSON(v, b[k]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(a, b)
	}
}

func FuzzVerify(f *testing.F) {
	segs, pubPEM := sample(f)
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		f.Fatal(err)
	}
	var names []string
	for name := range segs {
		names = append(names, name)
	}
	// The fuzzer mutates the last segment; the ones before it stay.
	lastName := names[0]
	for _, n := range names {
		lastName = max(lastName, n)
	}
	f.Add(segs[lastName])
	f.Add([]byte{})
	f.Add([]byte("\n\n"))
	f.Add(bytes.Repeat(segs[lastName], 2))
	f.Fuzz(func(t *testing.T, last []byte) {
		fsys := fstest.MapFS{}
		for name, data := range segs {
			fsys[name] = &fstest.MapFile{Data: data}
		}
		fsys[lastName] = &fstest.MapFile{Data: last}
		rep, err := VerifyFS(fsys, pub)
		if err != nil {
			t.Fatalf("VerifyFS: %v", err)
		}
		if rep.Records > 0 && rep.LastSeq-rep.FirstSeq+1 != rep.Records {
			t.Fatalf("report inconsistent: %+v", rep)
		}
		// A journal that verifies with nothing unanchored ends in a
		// checkpoint that signs everything before it: the segment can
		// only have been cut at a line end, not changed.
		if rep.OK() && rep.Unanchored == 0 && !bytes.HasPrefix(segs[lastName], last) {
			t.Fatalf("changed segment verified with nothing unanchored: %+v\n%q", rep, last)
		}
	})
}
