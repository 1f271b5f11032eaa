package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzAppendString holds AppendString to what Append makes of a string
// encoding/json wrote: the canonical encoding of the same text.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "select 1", `a"b\c`, "tab\there\nnl\r", "\x00\x1f\x7f", "<&>", "\u2028\u2029", "é😀", "\xff\xfe", "bad \xc3 utf8", "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		want, err := AppendJSON(nil, raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("AppendString(%q) = %s; want %s", s, got, want)
		}
	})
}

func TestAppendCanonical(t *testing.T) {
	priv := newKey(t)
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{PrivateKey: priv})
	data := Canonical(`{"a":1,"b":"x"}`)
	mustAppend(t, j, "canon", data)
	mustAppend(t, j, "canon", json.RawMessage(`{ "b": "x", "a": 1 }`))
	if _, err := j.AppendCanonical(context.Background(), "canon", []byte(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := j.AppendCanonical(context.Background(), TypeCheckpoint, []byte(data)); !errors.Is(err, ErrInvalidType) {
		t.Fatalf("AppendCanonical(checkpoint): %v; want ErrInvalidType", err)
	}
	mustClose(t, j)
	mustVerify(t, dir, priv.Public().(ed25519.PublicKey))
	var got [][]byte
	for _, r := range recordsOfType(readAll(t, dir, Filter{}), "canon") {
		got = append(got, r.Data)
	}
	if len(got) != 3 || !bytes.Equal(got[0], got[1]) || !bytes.Equal(got[0], got[2]) || string(got[0]) != string(data) {
		t.Fatalf("records: %q; want all three %s", got, data)
	}
}
