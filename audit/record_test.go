package audit

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{" { \"a\" : [ 1 , 2 ] ,\n\t\"c\":{\"z\":null,\"y\":true} } ", `{"a":[1,2],"c":{"y":true,"z":null}}`},
		{`{}`, `{}`},
		{`[]`, `[]`},
		{`"\u0041\/\b\f\n\r\t\u001f\u007f"`, "\"A/\\u0008\\u000c\\n\\r\\t\\u001f\x7f\""},
		{`"<&>"`, `"<&>"`},
		{`"\u003c\u2028\u2029é\ud83d\ude00"`, "\"<\\u2028\\u2029é😀\""},
		{`"é😀"`, `"é😀"`},
		{`1.0`, `1`},
		{`1E5`, `100000`},
		{`-0`, `0`},
		{`-0.0`, `0`},
		{`1e-7`, `1e-7`},
		{`0.000001`, `0.000001`},
		{`1e21`, `1e+21`},
		{`123456789012345678901234567890`, `123456789012345678901234567890`},
		{`3.14159`, `3.14159`},
		{`{"\u0062":1,"a":2}`, `{"a":2,"b":1}`},
		{`{"é":1,"z":2,"Z":3}`, `{"Z":3,"z":2,"é":1}`},
	} {
		got, err := appendCanonical(nil, []byte(tc.in))
		if err != nil {
			t.Errorf("canonical(%s): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("canonical(%s): got %s, want %s", tc.in, got, tc.want)
		}
		again, err := appendCanonical(nil, got)
		if err != nil || string(again) != string(got) {
			t.Errorf("canonical(canonical(%s)): got %s, %v; want it unchanged", tc.in, again, err)
		}
	}
}

func TestCanonicalRejects(t *testing.T) {
	for _, in := range []string{
		``, ` `, `{`, `{"a"}`, `{"a":1,}`, `[1,]`, `{"a":1,"a":2}`, `{"b":1,"a":1,"b":2}`, `01`, `1.`, `.5`, `1e`, `+1`,
		`"abc`, "\"a\x01\"", "\"\xff\"", `"\ud800"`, `"\udc00"`, `"\ud800\u0041"`, `"\x"`, `"\u12"`, `tru`, `nul`,
		`1 2`, `{} x`, `1e400`, strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	} {
		if got, err := appendCanonical(nil, []byte(in)); err == nil {
			t.Errorf("canonical(%q): got %s, want an error", in, got)
		}
	}
}

func TestCanonicalMatchesEncodingJSON(t *testing.T) {
	// Canonicalizing encoding/json output keeps its meaning.
	v := map[string]any{
		"sql": "select * from t where a < 1 && b > 'x'\n", "rows": int64(1) << 60, "f": 0.1, "neg": -3,
		"nested": []any{map[string]any{"z": 1, "a": []int{}}, nil, true, "\u2028\x00"},
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := appendCanonical(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(canon, &b); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("meaning changed:\n%s\n%s", ja, jb)
	}
}

func TestReadRecord(t *testing.T) {
	good := `{"data":{"n":1},"prev":"` + ZeroHash + `","seq":1,"time":"2025-03-04T05:06:07.00000089Z","type":"statement"}`
	r, err := ReadRecord([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 1 || r.Type != TypeStatement || string(r.Data) != `{"n":1}` || r.Time.Nanosecond() != 890 || r.Time.Location() != time.UTC {
		t.Errorf("got %+v", r)
	}
	if b, _ := r.MarshalJSON(); string(b) != good {
		t.Errorf("MarshalJSON: got %s, want the line back", b)
	}
	for _, bad := range []string{
		strings.Replace(good, `"seq":1`, `"seq":0`, 1),
		strings.Replace(good, `"seq":1`, `"seq":"1"`, 1),
		strings.Replace(good, `"seq":1`, `"seq":-1`, 1),
		strings.Replace(good, `"seq":1`, `"seq":18446744073709551616`, 1),
		strings.Replace(good, `"prev":"0`, `"prev":"A`, 1),
		strings.Replace(good, `"prev":"0`, `"prev":"`, 1),
		strings.Replace(good, `Z"`, `+00:00"`, 1),
		strings.Replace(good, `.00000089Z`, `.000000890Z`, 1),
		strings.Replace(good, `"type":"statement"`, `"type":"State ment"`, 1),
		strings.Replace(good, `"type":"statement"`, `"type":""`, 1),
		strings.Replace(good, `"type":"statement"}`, `"type":"statement","x":1}`, 1),
		strings.Replace(good, `{"data":{"n":1},`, ``, 1),
		strings.Replace(good, `{"n":1}`, `{"n": 1}`, 1),
		strings.Replace(good, `{"n":1}`, `{"n":1.0}`, 1),
		good + " ",
		good + "\n",
		`[]`, `null`, `{}`,
	} {
		if _, err := ReadRecord([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ReadRecord(%s): got %v, want ErrMalformed", bad, err)
		}
	}
}

func TestKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	priv, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("key dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	again, err := LoadOrCreateKey(dir)
	if err != nil || !again.Equal(priv) {
		t.Fatalf("reload: %v (same key: %v)", err, again.Equal(priv))
	}
	pem, err := os.ReadFile(filepath.Join(dir, PrivateKeyFile))
	if err != nil || !strings.HasPrefix(string(pem), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("private key file: %.40q, %v", pem, err)
	}

	// A lost public key file is written again.
	os.Remove(filepath.Join(dir, PublicKeyFile))
	if _, err := LoadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	pub, err := ReadPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("rewritten public key: %v", err)
	}
	if id := KeyID(pub); len(id) != 16 {
		t.Errorf("key id %q", id)
	}

	// A public key file of another key is refused.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := LoadOrCreateKey(other); err != nil {
		t.Fatal(err)
	}
	otherPub, _ := os.ReadFile(filepath.Join(other, PublicKeyFile))
	if err := os.WriteFile(filepath.Join(dir, PublicKeyFile), otherPub, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil {
		t.Error("mismatched public key: got nil error")
	}

	// A private key others can read is refused.
	if err := os.Chmod(filepath.Join(dir, PrivateKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable private key: got %v", err)
	}
	if _, err := ParsePublicKey([]byte("nope")); err == nil {
		t.Error("ParsePublicKey(garbage): got nil error")
	}
	var _ ed25519.PublicKey = pub
}

func TestOpenNeedsKey(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Error("Open without a key: got nil error")
	}
	if _, err := Open(t.TempDir(), Options{PrivateKey: newKey(t), Durability: "sometimes"}); err == nil {
		t.Error("Open with a bad durability: got nil error")
	}
}

func TestTimeCache(t *testing.T) {
	var c timeCache
	base := time.Date(2026, 12, 4, 23, 59, 59, 0, time.UTC)
	times := []time.Time{
		base,
		base.Add(1),
		base.Add(10),
		base.Add(120 * time.Millisecond),
		base.Add(999999999),
		base.Add(time.Second),
		base.Add(time.Second + 100*time.Microsecond),
		base.In(time.FixedZone("x", 5*3600+1800)),
		base.Add(-time.Nanosecond),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Unix(0, 0),
		time.Now(),
		time.Now().Round(0),
	}
	for range 1000 {
		times = append(times, base.Add(time.Duration(rand.Int64N(int64(3*time.Second)))))
	}
	for _, tm := range times {
		got := string(c.appendTime([]byte("x"), tm))
		if want := "x" + tm.UTC().Format(time.RFC3339Nano); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

func FuzzTimeCache(f *testing.F) {
	f.Add(int64(1796428799), int64(0), int64(1))
	f.Add(int64(-62135596800), int64(1), int64(999999999))
	f.Fuzz(func(t *testing.T, sec, ns1, ns2 int64) {
		var c timeCache
		for _, tm := range []time.Time{time.Unix(sec, ns1), time.Unix(sec, ns2), time.Unix(sec+1, ns1)} {
			got := string(c.appendTime(nil, tm))
			if want := tm.UTC().Format(time.RFC3339Nano); got != want {
				t.Fatalf("appendTime(%v) = %s, want %s", tm, got, want)
			}
		}
	})
}
