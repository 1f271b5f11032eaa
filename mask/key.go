package mask

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreateKey reads the host key at path, creating it when absent.
//
// The file holds the KeySize-byte key as hex (64 digits, then a newline;
// white space around the digits is ignored). A new key comes from
// crypto/rand and is written atomically as a 0600 file, creating the parent
// directories 0700; two processes creating it at once end up with the same
// key. An existing file must be a regular file that neither group nor others
// may read or write, and hold exactly KeySize bytes: otherwise the error says
// what is wrong and the key is not used.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create mask key directory: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate mask key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".mask-key-*")
	if err != nil {
		return nil, fmt.Errorf("create mask key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = fmt.Fprintf(tmp, "%x\n", key)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write mask key %s: %w", path, err)
	}
	// A hard link publishes the complete file, or fails when another process
	// published its key first; then that key is the key.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKey(path)
		}
		return nil, fmt.Errorf("create mask key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mask key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read mask key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("mask key %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("mask key %s is readable or writable by group or others (mode %#o): chmod 600 it", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("read mask key %s: %w", path, err)
	}
	b = bytes.TrimSpace(b)
	key := make([]byte, hex.DecodedLen(len(b)))
	if _, err := hex.Decode(key, b); err != nil {
		return nil, fmt.Errorf("mask key %s is not hex: %w", path, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("mask key %s holds %d bytes, want %d (%d hex digits)", path, len(key), KeySize, 2*KeySize)
	}
	return key, nil
}
