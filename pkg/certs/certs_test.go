package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSelfSignedIsKeptAndRenewed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	c1, err := SelfSigned(dir, []string{"127.77.0.5", "db.internal"}, now)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "agent.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	leaf := c1.Leaf
	if err := leaf.VerifyHostname("127.77.0.5"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("db.internal"); err != nil {
		t.Error(err)
	}
	c2, err := SelfSigned(dir, nil, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Leaf.Equal(leaf) {
		t.Error("a fresh certificate was regenerated instead of reused")
	}
	c3, err := SelfSigned(dir, nil, now.Add(Validity-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c3.Leaf.Equal(leaf) {
		t.Error("a certificate near expiry was not renewed")
	}
}

func TestSelfSignedServesTLS(t *testing.T) {
	c, err := SelfSigned(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err == nil {
			conn.Write([]byte("x"))
			conn.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := make([]byte, 1)
	if _, err := conn.Read(b); err != nil {
		t.Fatal(err)
	}
}
