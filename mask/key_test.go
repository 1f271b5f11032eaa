package mask

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "sub", "mask.key")
	key, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != KeySize || bytes.Equal(key, make([]byte, KeySize)) {
		t.Fatalf("new key %x: want %d random bytes", key, KeySize)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v; want 0600", st.Mode().Perm())
	}
	for _, d := range []string{filepath.Join(dir, "keys"), filepath.Dir(path)} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("directory %s: %v, %v; want mode 0700", d, st.Mode().Perm(), err)
		}
	}
	b, _ := os.ReadFile(path)
	if want := []byte(strings.TrimSpace(string(b))); len(want) != 2*KeySize {
		t.Errorf("key file holds %q; want %d hex digits", b, 2*KeySize)
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("reuse: got %x, %v; want %x", again, err, key)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".mask-key-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mask.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatalf("concurrent creators got different keys: %x vs %x", k, keys[0])
		}
	}
}

func TestLoadOrCreateKeyBad(t *testing.T) {
	dir := t.TempDir()
	good := strings.Repeat("ab", KeySize) + "\n"
	for _, c := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"group-readable", good, 0o640, "readable or writable by group or others (mode 0640)"},
		{"world-readable", good, 0o604, "readable or writable by group or others"},
		{"short", strings.Repeat("ab", 16), 0o600, "holds 16 bytes, want 32 (64 hex digits)"},
		{"long", strings.Repeat("ab", 33), 0o600, "holds 33 bytes, want 32"},
		{"empty", "", 0o600, "holds 0 bytes, want 32"},
		{"raw", string(bytes.Repeat([]byte{0xfe}, KeySize)), 0o600, "is not hex"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name)
			if err := os.WriteFile(path, []byte(c.content), c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			key, err := LoadOrCreateKey(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || key != nil {
				t.Errorf("got %x, %v; want an error with %q", key, err, c.want)
			}
			if b, _ := os.ReadFile(path); string(b) != c.content {
				t.Error("a bad key file was rewritten")
			}
		})
	}
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v; want not a regular file", err)
	}
}

func TestNewMaskerKeySize(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewMasker with a 16-byte key did not panic")
		}
	}()
	NewMasker(make([]byte, 16))
}
