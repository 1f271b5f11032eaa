package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Key file names inside the key directory.
const (
	PrivateKeyFile = "audit.key" // PKCS #8, PEM "PRIVATE KEY", mode 0600
	PublicKeyFile  = "audit.pub" // PKIX, PEM "PUBLIC KEY"
)

// Domain-separation prefixes of the signed messages.
const (
	checkpointDomain = "tollgate-audit-checkpoint-v1\x00"
	retentionDomain  = "tollgate-audit-retention-v1\x00"
)

// CheckpointMessage returns the bytes a checkpoint record signs:
// "tollgate-audit-checkpoint-v1\x00" || seq || the 32 bytes of hash ||
// at, where seq and hash are the record before the checkpoint and at is
// the checkpoint record's own time in Unix nanoseconds (seq and at are 8
// bytes, big-endian). Signing its own time leaves nothing of the last
// record of a closed journal that can change unnoticed.
func CheckpointMessage(seq uint64, hash [sha256.Size]byte, at time.Time) []byte {
	m := make([]byte, 0, len(checkpointDomain)+8+sha256.Size+8)
	m = append(m, checkpointDomain...)
	m = binary.BigEndian.AppendUint64(m, seq)
	m = append(m, hash[:]...)
	return binary.BigEndian.AppendUint64(m, uint64(at.UnixNano()))
}

// RetentionMessage returns the bytes a retention record signs:
// "tollgate-audit-retention-v1\x00" || firstSeq || lastSeq (8 bytes each,
// big-endian) || the 32 bytes of lastHash.
func RetentionMessage(firstSeq, lastSeq uint64, lastHash [sha256.Size]byte) []byte {
	m := make([]byte, 0, len(retentionDomain)+16+sha256.Size)
	m = append(m, retentionDomain...)
	m = binary.BigEndian.AppendUint64(m, firstSeq)
	m = binary.BigEndian.AppendUint64(m, lastSeq)
	return append(m, lastHash[:]...)
}

// KeyID names a public key: the first 8 bytes of the SHA-256 of the raw
// 32-byte key, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// LoadOrCreateKey returns the signing key in dir (PrivateKeyFile), creating
// dir (0700) and a new key pair on first use. It writes PublicKeyFile when
// it is missing and refuses a private key file that group or others can
// read, or a public key file that does not match it.
func LoadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit key dir: %w", err)
	}
	keyPath := filepath.Join(dir, PrivateKeyFile)
	priv, err := readPrivateKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		priv, err = createPrivateKey(dir, keyPath)
	}
	if err != nil {
		return nil, err
	}
	pubPath := filepath.Join(dir, PublicKeyFile)
	pub, err := ReadPublicKey(pubPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		der, err := x509.MarshalPKIXPublicKey(priv.Public())
		if err != nil {
			return nil, fmt.Errorf("audit public key: %w", err)
		}
		if err := writeFileAtomic(dir, pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("audit public key: %w", err)
		}
	case err != nil:
		return nil, err
	case !pub.Equal(priv.Public()):
		return nil, fmt.Errorf("audit key: %s does not match %s", pubPath, keyPath)
	}
	return priv, nil
}

func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key: %s has mode %04o: group and others must have no access (chmod 600)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("audit key: %s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit key: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("audit key: %s: %T is not an ed25519 key", path, k)
	}
	return priv, nil
}

func createPrivateKey(dir, path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("audit key: generate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	err = writeFileAtomic(dir, path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readPrivateKey(path) // another process made it first
	}
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return priv, nil
}

// writeFileAtomic writes data to a temporary file in dir, syncs it and links
// it to path, failing with fs.ErrExist when path exists; then syncs dir.
func writeFileAtomic(dir, path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadPublicKey reads a PEM "PUBLIC KEY" (PKIX) ed25519 key, such as
// PublicKeyFile: all an auditor needs to verify a journal.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit public key: %w", err)
	}
	return ParsePublicKey(data)
}

// ParsePublicKey parses a PEM "PUBLIC KEY" (PKIX) ed25519 key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("audit public key: no PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit public key: %T is not an ed25519 key", k)
	}
	return pub, nil
}
