package pgtest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate-dev/tollgate/test/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(context.Background())
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestStart(t *testing.T) {
	srv := pgtest.Start(t)
	if got := query(t, srv.DSN(srv.App.Name), "SELECT current_user || '/' || current_database()"); got != srv.App.Name+"/"+srv.Database {
		t.Errorf("app: got %q; want %s/%s", got, srv.App.Name, srv.Database)
	}
	if got := query(t, srv.DSN(srv.Super.Name), "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"); got != "true" {
		t.Errorf("super: rolsuper %s", got)
	}
	if got := query(t, srv.DSN(srv.Super.Name), "SELECT setting FROM pg_settings WHERE name = 'password_encryption'"); got != "scram-sha-256" {
		t.Errorf("password_encryption: got %q", got)
	}

	// A wrong password is refused: host connections need scram-sha-256.
	bad := strings.Replace(srv.DSN(srv.App.Name), srv.App.Password, "wrong", 1)
	if c, err := pgx.Connect(t.Context(), bad); err == nil {
		c.Close(context.Background())
		t.Error("connect with a wrong password succeeded")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := query(t, srv.DSN(srv.App.Name), "SELECT 'again'"); got != "again" {
		t.Errorf("after restart: got %q", got)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := pgx.Connect(t.Context(), srv.DSN(srv.App.Name)); err == nil {
		c.Close(context.Background())
		t.Error("connect after Stop succeeded")
	}
}

func TestAuth(t *testing.T) {
	for _, method := range []string{pgtest.AuthMD5, pgtest.AuthPassword, pgtest.AuthTrust} {
		t.Run(method, func(t *testing.T) {
			srv := pgtest.Start(t, pgtest.WithAuth(method))
			if got := query(t, srv.DSN(srv.App.Name), "SELECT current_user"); got != srv.App.Name {
				t.Errorf("got %q", got)
			}
			// The server asks for this method and no other: a client that
			// accepts only it gets in.
			only := method
			if method == pgtest.AuthTrust {
				only = "none"
			}
			if got := query(t, srv.DSN(srv.App.Name)+"&require_auth="+only, "SELECT current_user"); got != srv.App.Name {
				t.Errorf("require_auth=%s: got %q", only, got)
			}
			bad := strings.Replace(srv.DSN(srv.App.Name), srv.App.Password, "wrong", 1)
			c, err := pgx.Connect(t.Context(), bad)
			if err == nil {
				c.Close(context.Background())
			}
			if got, want := err == nil, method == pgtest.AuthTrust; got != want {
				t.Errorf("wrong password accepted: %v; want %v (%v)", got, want, err)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	srv := pgtest.Start(t, pgtest.WithTLS())
	if got := query(t, srv.DSN(srv.App.Name), "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
		t.Errorf("ssl: got %q", got)
	}
	// verify-full against the CA file.
	cfg, err := pgx.ParseConfig(srv.DSN(srv.App.Name))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	cfg.Fallbacks = nil
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("verify-full: %v", err)
	}
	c.Close(context.Background())

	// Without TLS: refused.
	plain := strings.Replace(srv.DSN(srv.App.Name), "sslmode=require", "sslmode=disable", 1)
	if c, err := pgx.Connect(t.Context(), plain); err == nil {
		c.Close(context.Background())
		t.Error("plain connection accepted by a TLS server")
	}
}

func TestShared(t *testing.T) {
	a, b := pgtest.Shared(t), pgtest.Shared(t)
	if a.Addr() != b.Addr() || a.Database == b.Database {
		t.Fatalf("Shared: got %s/%s and %s/%s; want one cluster, two databases", a.Addr(), a.Database, b.Addr(), b.Database)
	}
	a.Exec(t, "CREATE TABLE only_in_a (x int)")
	if got := query(t, b.DSN(b.App.Name), "SELECT count(*)::text FROM pg_tables WHERE tablename = 'only_in_a'"); got != "0" {
		t.Errorf("table of database a seen in b: %s", got)
	}
	if got := query(t, a.DSN(a.App.Name), "SELECT current_database()"); got != a.Database {
		t.Errorf("got %q; want %q", got, a.Database)
	}
}

func TestPsql(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	srv := pgtest.Shared(t)
	out, err := exec.Command(psql, "-X", "-A", "-t", "-d", srv.DSN(srv.App.Name), "-c", "SELECT 40 + 2").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("psql: %v: %s", err, out)
	}
}
