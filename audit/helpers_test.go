package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests; reaching it is a failure.
const waitLimit = 10 * time.Second

func newKey(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return priv
}

func mustOpen(tb testing.TB, dir string, opts Options) *Journal {
	tb.Helper()
	j, err := Open(dir, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return j
}

func mustAppend(tb testing.TB, j *Journal, typ string, data any) uint64 {
	tb.Helper()
	seq, err := j.Append(context.Background(), typ, data)
	if err != nil {
		tb.Fatalf("Append(%s): %v", typ, err)
	}
	return seq
}

func mustClose(tb testing.TB, j *Journal) {
	tb.Helper()
	if err := j.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
}

func mustVerify(tb testing.TB, dir string, pub ed25519.PublicKey) Report {
	tb.Helper()
	rep, err := Verify(dir, pub)
	if err != nil {
		tb.Fatalf("Verify: %v", err)
	}
	if !rep.OK() {
		tb.Fatalf("Verify: %v", rep.Problem)
	}
	return rep
}

// readAll returns every record of the journal in dir.
func readAll(tb testing.TB, dir string, f Filter) []Record {
	tb.Helper()
	r, err := NewReader(dir, f)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	var recs []Record
	for rec, err := range r.All() {
		if err != nil {
			tb.Fatalf("read: %v", err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// stmt is the data of the tests' statement records.
type stmt struct {
	N   int    `json:"n"`
	SQL string `json:"sql"`
}

// clock is a test clock that moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// files is a journal directory's segments as lines, for tampering.
type files struct {
	dir   string
	names []string
	lines [][][]byte // per segment; a final line without newline is not kept apart
}

func loadFiles(tb testing.TB, dir string) *files {
	tb.Helper()
	segs, err := listSegments(os.DirFS(dir))
	if err != nil {
		tb.Fatal(err)
	}
	fs := &files{dir: dir}
	for _, s := range segs {
		data, err := os.ReadFile(filepath.Join(dir, s.name))
		if err != nil {
			tb.Fatal(err)
		}
		var lines [][]byte
		for _, l := range bytes.SplitAfter(data, []byte("\n")) {
			if len(l) > 0 {
				lines = append(lines, bytes.TrimSuffix(l, []byte("\n")))
			}
		}
		fs.names = append(fs.names, s.name)
		fs.lines = append(fs.lines, lines)
	}
	return fs
}

// locate returns the segment and line index of the record with seq.
func (fs *files) locate(tb testing.TB, seq uint64) (int, int) {
	tb.Helper()
	for s, lines := range fs.lines {
		for i, l := range lines {
			r, err := ReadRecord(l)
			if err == nil && r.Seq == seq {
				return s, i
			}
		}
	}
	tb.Fatalf("no record %d", seq)
	return 0, 0
}

func (fs *files) record(tb testing.TB, seq uint64) Record {
	tb.Helper()
	s, i := fs.locate(tb, seq)
	r, err := ReadRecord(fs.lines[s][i])
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// write replaces the directory's segments with fs's.
func (fs *files) write(tb testing.TB) {
	tb.Helper()
	segs, err := listSegments(os.DirFS(fs.dir))
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range segs {
		if err := os.Remove(filepath.Join(fs.dir, s.name)); err != nil {
			tb.Fatal(err)
		}
	}
	for s, name := range fs.names {
		var buf bytes.Buffer
		for _, l := range fs.lines[s] {
			buf.Write(l)
			buf.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(fs.dir, name), buf.Bytes(), 0o640); err != nil {
			tb.Fatal(err)
		}
	}
}

// line encodes r as a record line, failing the test on error.
func line(tb testing.TB, r Record) []byte {
	tb.Helper()
	b, err := r.MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func hashOf(tb testing.TB, r Record) string {
	tb.Helper()
	h, err := r.Hash()
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// recordsOfType returns the records of the given type.
func recordsOfType(recs []Record, typ string) []Record {
	var out []Record
	for _, r := range recs {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func decode[T any](tb testing.TB, data json.RawMessage) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		tb.Fatalf("decode %s: %v", data, err)
	}
	return v
}

// privileged fails (CI=true) or skips a test that needs root.
func privileged(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s needs root", what)
	}
	t.Skipf("%s needs root", what)
}
