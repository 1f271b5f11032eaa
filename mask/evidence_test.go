package mask

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"testing"
)

func TestEvidence(t *testing.T) {
	m := NewMasker(testKey)
	ev := m.NewEvidence()
	originals := []string{"alice@example.com", "4111111111111111", "bob@example.org"}
	masked := [][]byte{[]byte("****@example.com"), []byte("************1111"), nil}
	ev.Add("public.customers.email", []byte(originals[0]), masked[0])
	ev.Add("classifier:credit_card", []byte(originals[1]), masked[1])
	ev.Add("public.customers.email", []byte(originals[2]), masked[2])
	s := ev.Summary()
	if s.Values != 3 || ev.Values() != 3 {
		t.Errorf("Values = %d; want 3", s.Values)
	}
	if !slices.Equal(s.Columns, []string{"public.customers.email"}) {
		t.Errorf("Columns = %q", s.Columns)
	}
	if !slices.Equal(s.Classifiers, []string{"credit_card"}) {
		t.Errorf("Classifiers = %q", s.Classifiers)
	}
	if s.PerLabel["public.customers.email"] != 2 || s.PerLabel["classifier:credit_card"] != 1 {
		t.Errorf("PerLabel = %v", s.PerLabel)
	}
	// MaskedSHA256 is reproducible by anyone who saw the outputs.
	h := sha256.New()
	for _, v := range masked {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		if v == nil {
			binary.BigEndian.PutUint64(n[:], ^uint64(0))
		}
		h.Write(n[:])
		h.Write(v)
	}
	if want := hex.EncodeToString(h.Sum(nil)); s.MaskedSHA256 != want {
		t.Errorf("MaskedSHA256 = %s; want %s", s.MaskedSHA256, want)
	}
	// The summary holds no original, nor the hash method's token of one.
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	hash := mustMethod(t, MethodHash, map[string]any{"length": 64})
	for _, o := range originals {
		token, _, _ := m.Mask(nil, hash, Column{TypeOID: 25}, []byte(o))
		for _, secret := range [][]byte{[]byte(o), []byte(hex.EncodeToString([]byte(o))), token} {
			if bytes.Contains(js, secret) {
				t.Errorf("summary %s contains %q", js, secret)
			}
		}
	}
	// Same inputs, same digests; another key, another originals digest.
	ev2 := NewMasker(testKey).NewEvidence()
	other := NewMasker(bytes.Repeat([]byte{7}, KeySize)).NewEvidence()
	for i := range originals {
		ev2.Add("x", []byte(originals[i]), masked[i])
		other.Add("x", []byte(originals[i]), masked[i])
	}
	if ev2.Summary().OriginalsHMAC != s.OriginalsHMAC || other.Summary().OriginalsHMAC == s.OriginalsHMAC {
		t.Error("OriginalsHMAC does not depend on the key and the originals alone")
	}
	// Length prefixes keep value boundaries: "ab"+"c" differs from "a"+"bc".
	a, b := m.NewEvidence(), m.NewEvidence()
	a.Add("x", []byte("ab"), nil)
	a.Add("x", []byte("c"), nil)
	b.Add("x", []byte("a"), nil)
	b.Add("x", []byte("bc"), nil)
	if a.Summary().OriginalsHMAC == b.Summary().OriginalsHMAC {
		t.Error("value boundaries do not change the digest")
	}

	ev.Reset()
	empty := m.NewEvidence().Summary()
	if got := ev.Summary(); got.Values != 0 || got.PerLabel != nil || got.OriginalsHMAC != empty.OriginalsHMAC || got.MaskedSHA256 != empty.MaskedSHA256 {
		t.Errorf("after Reset: %+v; want %+v", got, empty)
	}
}

func TestEvidenceAllocs(t *testing.T) {
	ev := NewMasker(testKey).NewEvidence()
	orig, masked := []byte("alice@example.com"), []byte("****@example.com")
	ev.Add("public.customers.email", orig, masked)
	if n := testing.AllocsPerRun(100, func() { ev.Add("public.customers.email", orig, masked) }); n != 0 {
		t.Errorf("Add allocates %v times; want 0", n)
	}
}
