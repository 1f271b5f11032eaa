package postgres_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// passthroughTarget is the target of srv with the clients' own credentials.
func passthroughTarget(srv *pgtest.Server) *config.Target {
	return &config.Target{
		Name: "db", Protocol: postgres.Protocol, Upstream: srv.Addr(),
		Credentials: config.Credentials{Passthrough: true},
	}
}

// dsnWith is the proxy's URL with a password for the App role, and extra
// query parameters.
func (p *proxy) dsnWith(password string, params ...string) string {
	u := url.URL{Scheme: "postgres", Host: p.addr, Path: "/" + p.srv.Database, User: url.UserPassword(p.srv.App.Name, password)}
	q := url.Values{"sslmode": {"disable"}}
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// psql runs psql against the proxy with PGPASSWORD set (none when
// password is "") and returns its output and error.
func (p *proxy) psql(t *testing.T, password, conninfo, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool(t, "psql"), "-X", "-A", "-t", "-w", "-d", p.libpq()+" "+conninfo, "-c", sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGPASSWORD="+password)
	if password == "" {
		cmd.Env = append(cmd.Env[:len(cmd.Env)-1], "PGPASSFILE=/nonexistent")
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestAuthMethods runs the two login paths against a server of each
// authentication method. Injected credentials: the upstream must ask for
// the password by scram-sha-256 or md5; a server that asks for it in clear
// text, or asks nothing (trust), is refused before the password leaves.
// Passthrough: the client's own authentication passes, whatever it is, and
// the server's own refusal reaches the client.
func TestAuthMethods(t *testing.T) {
	checkLeaks(t)
	for _, method := range []string{pgtest.AuthSCRAM, pgtest.AuthMD5, pgtest.AuthPassword, pgtest.AuthTrust} {
		t.Run(method, func(t *testing.T) {
			var srv *pgtest.Server
			if method == pgtest.AuthSCRAM {
				srv = pgtest.Shared(t)
			} else {
				srv = pgtest.Start(t, pgtest.WithAuth(method))
			}
			ctx := t.Context()

			t.Run("injected", func(t *testing.T) {
				p := startProxy(t, srv, nil)
				c, err := pgx.Connect(ctx, p.dsn())
				downgrade := method == pgtest.AuthPassword || method == pgtest.AuthTrust
				if !downgrade {
					if err != nil {
						t.Fatalf("connect: %v", err)
					}
					c.Close(ctx)
					p.result(t)
					return
				}
				var pe *pgconn.PgError
				if !errorsAs(err, &pe) || pe.Code != "28000" || pe.Severity != "FATAL" ||
					!strings.Contains(pe.Message, "did not authenticate with scram-sha-256 or md5") {
					t.Fatalf("connect to a %s server with the target's password: got %v; want FATAL 28000 refusing the downgrade", method, err)
				}
				t.Logf("refused: %s (%s)", pe.Message, pe.Detail)
				if r := p.result(t); !errors.Is(r.err, postgres.ErrAuthDowngrade) {
					t.Errorf("Serve: %v; want ErrAuthDowngrade", r.err)
				}
				if method == pgtest.AuthTrust {
					// Without a password to protect, trust is the
					// operator's choice.
					tgt := target(srv)
					tgt.Credentials.Password = ""
					p := startProxy(t, srv, tgt)
					c := p.connect(t)
					if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
						t.Errorf("trust without a password: %v", err)
					}
				}
			})

			t.Run("passthrough", func(t *testing.T) {
				p := startProxy(t, srv, passthroughTarget(srv), denyForbidden)
				c, err := pgx.Connect(ctx, p.dsnWith(srv.App.Password))
				if err != nil {
					t.Fatalf("pgx: %v", err)
				}
				var user string
				if err := c.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != srv.App.Name {
					t.Errorf("current_user: %q, %v", user, err)
				}
				_, err = c.Exec(ctx, "SELECT 'forbidden'")
				wantDenied(t, err)
				c.Close(ctx)
				if r := p.result(t); r.err != nil {
					t.Errorf("Serve: %v", r.err)
				}

				out, err := p.psql(t, srv.App.Password, "", "SELECT 'psql ' || current_user")
				if err != nil || out != "psql "+srv.App.Name {
					t.Errorf("psql: %q, %v", out, err)
				}
				p.result(t)

				if method == pgtest.AuthTrust {
					return
				}
				// A wrong password: the server's own FATAL 28P01.
				_, err = pgx.Connect(ctx, p.dsnWith("wrong-password"))
				var pe *pgconn.PgError
				if !errorsAs(err, &pe) || pe.Code != "28P01" || pe.Severity != "FATAL" ||
					pe.Message != `password authentication failed for user "`+srv.App.Name+`"` {
					t.Errorf("pgx, wrong password: got %v; want the server's FATAL 28P01", err)
				}
				if r := p.result(t); r.err == nil {
					t.Error("Serve: nil error after a failed login")
				}
				out, err = p.psql(t, "wrong-password", "", "SELECT 1")
				if err == nil || !strings.Contains(out, "password authentication failed") {
					t.Errorf("psql, wrong password: %q, %v", out, err)
				}
				p.result(t)
				// No password: psql gives up when asked for one; no error
				// of the session.
				out, err = p.psql(t, "", "", "SELECT 1")
				if err == nil || !strings.Contains(out, "no password supplied") {
					t.Errorf("psql, no password: %q, %v", out, err)
				}
				if r := p.result(t); r.err != nil {
					t.Errorf("Serve, client without a password: %v; want nil", r.err)
				}
			})
		})
	}
}

// TestPassthroughSession: a passthrough session behaves as an injected one
// once logged in: the client's startup parameters reach the server, cancel
// requests use the proxy's key, facts name the client's user.
func TestPassthroughSession(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	rec := &recorder{endedC: make(chan struct{}, 10)}
	p := startProxy(t, srv, passthroughTarget(srv), postgres.WithRecorder(rec))
	ctx := t.Context()
	cfg, err := pgx.ParseConfig(p.dsnWith(srv.App.Password))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "passthrough-test"
	cfg.RuntimeParams["search_path"] = "pg_catalog"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var app, path string
	if err := c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('search_path')").Scan(&app, &path); err != nil ||
		app != "passthrough-test" || path != "pg_catalog" {
		t.Errorf("startup parameters upstream: %q %q %v", app, path, err)
	}
	if got := c.PgConn().ParameterStatus("application_name"); got != "passthrough-test" {
		t.Errorf("ParameterStatus application_name: %q", got)
	}
	var upPID uint32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&upPID); err != nil {
		t.Fatal(err)
	}
	if c.PgConn().PID() == upPID {
		t.Error("the client was given the upstream's BackendKeyData")
	}

	done := make(chan error, 1)
	go func() { _, err := c.Exec(context.Background(), "SELECT pg_sleep(30)"); done <- err }()
	waitActive(t, srv, "SELECT pg_sleep(30)")
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var pe *pgconn.PgError
		if !errorsAs(err, &pe) || pe.Code != "57014" {
			t.Errorf("cancelled query: %v; want 57014", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("query not cancelled")
	}
	p.result(t) // the cancel request's connection
	c.Close(ctx)
	<-rec.endedC
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if f := rec.facts[0]; f.User != srv.App.Name || f.UpstreamUser != srv.App.Name || f.UpstreamPID != upPID || f.ApplicationName != "passthrough-test" {
		t.Errorf("facts: %+v", f)
	}

	// An unknown database: the server's error, after authentication.
	_, err = pgx.Connect(ctx, strings.Replace(p.dsnWith(srv.App.Password), "/"+srv.Database+"?", "/no_such_db?", 1))
	var pe *pgconn.PgError
	if !errorsAs(err, &pe) || pe.Code != "3D000" {
		t.Errorf("unknown database: %v; want 3D000", err)
	}
	p.result(t)
}

// TestPassthroughTLS: TLS on both legs. SCRAM channel binding cannot span
// the proxy, which ends the client's TLS: SCRAM-SHA-256-PLUS is not
// offered, a client in plain text to the proxy logs in with SCRAM-SHA-256,
// and a TLS client that would bind its channel is told to turn channel
// binding off (the server would take its 'y' flag for a downgrade attack).
func TestPassthroughTLS(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Start(t, pgtest.WithTLS())
	cert, err := tls.LoadX509KeyPair(testCert(t))
	if err != nil {
		t.Fatal(err)
	}
	tgt := passthroughTarget(srv)
	tgt.TLS = config.TLS{Mode: config.TLSVerifyFull, CAFile: srv.CAFile}
	p := startProxy(t, srv, tgt, postgres.WithClientTLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	ctx := t.Context()

	for _, tc := range []struct {
		name     string
		conninfo string // libpq and pgx alike
		ok       bool
	}{
		{"plain client", "sslmode=disable", true},
		{"tls client, channel_binding=disable", "sslmode=require channel_binding=disable", true},
		{"tls client, channel_binding=prefer", "sslmode=require", false},
		{"tls client, channel_binding=require", "sslmode=require channel_binding=require", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := p.psql(t, srv.App.Password, tc.conninfo, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
			if tc.ok && (err != nil || out != "t") {
				t.Errorf("psql: %q, %v; want upstream ssl t", out, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("psql logged in: %q", out)
			}
			t.Logf("psql: %s", out)
			p.result(t)

			host, port, _ := net.SplitHostPort(p.addr)
			cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " dbname=" + srv.Database +
				" user=" + srv.App.Name + " password=" + srv.App.Password + " " + tc.conninfo)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Fallbacks = nil
			c, err := pgx.ConnectConfig(ctx, cfg)
			if !tc.ok {
				if err == nil {
					c.Close(ctx)
					t.Fatal("pgx logged in")
				}
				t.Logf("pgx: %v", err)
				p.result(t)
				return
			}
			if err != nil {
				t.Fatalf("pgx: %v", err)
			}
			defer c.Close(ctx)
			var ssl bool
			if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Errorf("upstream ssl: %v, %v", ssl, err)
			}
		})
	}

	// The proxy's own refusal says what to do.
	out, _ := p.psql(t, srv.App.Password, "sslmode=require", "SELECT 1")
	if !strings.Contains(out, "channel binding cannot pass through tollgate") || !strings.Contains(out, "channel_binding=disable") {
		t.Errorf("psql over TLS with channel binding: %q; want the reason and the way out", out)
	}
	p.result(t)
}
