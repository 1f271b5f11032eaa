// Package pgtest starts throwaway PostgreSQL clusters for tests: initdb in a
// temporary directory owned by the postgres user, a free port on 127.0.0.1,
// a superuser and an application role with passwords, and a database.
//
// Everything is removed in t.Cleanup, also when the test fails. A missing
// PostgreSQL installation skips the test, or fails it when CI=true.
//
//	srv := pgtest.Start(t)                     // scram-sha-256 over TCP
//	conn, err := pgx.Connect(ctx, srv.DSN(srv.App.Name))
//
// Shared(t) hands out a per-test database on one cluster that the whole test
// binary shares; it needs TestMain to call Main.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Auth methods for host connections (pg_hba.conf), see WithAuth.
const (
	AuthSCRAM    = "scram-sha-256"
	AuthMD5      = "md5"
	AuthPassword = "password" // cleartext password (stored as scram-sha-256)
	AuthTrust    = "trust"
)

// Role is a login role the cluster was created with.
type Role struct {
	Name     string
	Password string
}

// Server is a running throwaway cluster and the database a test uses on it.
// Its methods are safe for concurrent use.
type Server struct {
	// Super is a superuser; App an ordinary login role that owns Database.
	Super, App Role
	// Database is the test's database.
	Database string
	// Auth is the pg_hba method of host connections: AuthSCRAM (default),
	// AuthMD5, AuthPassword or AuthTrust.
	Auth string
	// CAFile is the PEM file of the server's self-signed certificate (a CA
	// for itself) when the server was started WithTLS; "" otherwise.
	CAFile string
	// BinDir is the directory of the PostgreSQL server binaries used.
	BinDir string

	c *cluster
}

// cluster is the state one cluster's Server values share.
type cluster struct {
	base    string // temp dir: data/ (with postgres.log), sock/
	data    string
	sock    string
	logFile string
	port    int
	bin     string              // directory of initdb, pg_ctl, postgres
	runAs   *syscall.Credential // nil: run as ourselves

	mu      sync.Mutex
	running bool
}

// Option changes how Start makes a cluster.
type Option func(*options)

type options struct {
	auth string
	tls  bool
	conf []string
}

// WithAuth sets the pg_hba.conf method of TCP connections from 127.0.0.1:
// AuthSCRAM (the default), AuthMD5 (passwords then stored as md5),
// AuthPassword (the password asked in clear text) or AuthTrust.
func WithAuth(method string) Option { return func(o *options) { o.auth = method } }

// WithTLS turns on ssl with a self-signed certificate for 127.0.0.1 and
// localhost, and refuses TCP connections without TLS (hostssl only). The
// certificate's PEM file is Server.CAFile.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithConf appends lines to postgresql.conf ("log_statement = 'all'").
func WithConf(lines ...string) Option {
	return func(o *options) { o.conf = append(o.conf, lines...) }
}

// Start makes a new cluster and starts it. It is stopped and its files
// removed at the end of the test.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin := requireBinaries(t)
	var o options
	for _, f := range opts {
		f(&o)
	}
	srv, err := start(bin, o)
	if srv != nil {
		t.Cleanup(srv.c.destroy)
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return srv
}

// Addr is the server's TCP address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.c.port)) }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.c.port }

// SocketDir is the directory of the server's unix socket (local connections
// are trusted).
func (s *Server) SocketDir() string { return s.c.sock }

// DSN returns a postgres:// URL for user on Database over TCP, with the
// password when user is Super or App. sslmode is disable, or require for a
// server started WithTLS.
func (s *Server) DSN(user string) string { return s.DSNTo(s.Addr(), user) }

// DSNTo is DSN with another address, such as a proxy in front of the server.
func (s *Server) DSNTo(addr, user string) string {
	u := url.URL{Scheme: "postgres", Host: addr, Path: "/" + s.Database}
	switch user {
	case s.Super.Name:
		u.User = url.UserPassword(user, s.Super.Password)
	case s.App.Name:
		u.User = url.UserPassword(user, s.App.Password)
	default:
		u.User = url.User(user)
	}
	mode := "disable"
	if s.CAFile != "" {
		mode = "require"
	}
	u.RawQuery = "sslmode=" + mode
	return u.String()
}

// Connect opens a connection as the superuser over the unix socket, to
// Database, for test setup and checks. It is closed at the end of the test.
func (s *Server) Connect(t testing.TB) *pgconn.PgConn {
	t.Helper()
	c, err := s.connectLocal(t.Context(), s.Database)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs sql (one or more statements) as the superuser on Database and
// fails the test on error.
func (s *Server) Exec(t testing.TB, sql string) []*pgconn.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := s.connectLocal(ctx, s.Database)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("pgtest: exec %q: %v", sql, err)
	}
	return res
}

// Stop stops the server (fast shutdown: sessions are terminated).
func (s *Server) Stop() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.c.stop("fast")
}

// Restart stops the server (fast shutdown) if it runs and starts it again on
// the same port.
func (s *Server) Restart() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if err := s.c.stop("fast"); err != nil {
		return err
	}
	return s.c.start()
}

// Running reports whether the server is started.
func (s *Server) Running() bool {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.c.running
}

func (s *Server) connectLocal(ctx context.Context, db string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port = s.c.sock, uint16(s.c.port)
	cfg.User, cfg.Database, cfg.Password = s.Super.Name, db, ""
	cfg.TLSConfig, cfg.Fallbacks = nil, nil
	return pgconn.ConnectConfig(ctx, cfg)
}

// requireBinaries finds initdb, pg_ctl and postgres, or skips (fails when
// CI=true) saying what is missing.
func requireBinaries(t testing.TB) string {
	t.Helper()
	bin, err := BinDir()
	if err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("pgtest: PostgreSQL server binaries are required: %v", err)
	}
	t.Skipf("pgtest: skipped, PostgreSQL server binaries missing: %v", err)
	return ""
}

// BinDir finds the PostgreSQL server binaries: $PG_BINDIR, else the newest
// /usr/lib/postgresql/<version>/bin, else the directory of initdb on $PATH.
func BinDir() (string, error) {
	var dirs []string
	if d := os.Getenv("PG_BINDIR"); d != "" {
		dirs = append(dirs, d)
	} else {
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		slices.SortFunc(found, func(a, b string) int { return versionOf(b) - versionOf(a) })
		dirs = append(dirs, found...)
		if p, err := exec.LookPath("initdb"); err == nil {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	for _, d := range dirs {
		ok := true
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, b)); err != nil || fi.Mode()&0o111 == 0 {
				ok = false
			}
		}
		if ok {
			return d, nil
		}
	}
	if len(dirs) == 0 {
		return "", errors.New("no initdb on PATH and no /usr/lib/postgresql/*/bin (install postgresql, or set PG_BINDIR)")
	}
	return "", fmt.Errorf("no directory with initdb, pg_ctl and postgres among %s (set PG_BINDIR)", strings.Join(dirs, ", "))
}

func versionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func start(bin string, o options) (srv *Server, err error) {
	if o.auth == "" {
		o.auth = AuthSCRAM
	}
	switch o.auth {
	case AuthSCRAM, AuthMD5, AuthPassword, AuthTrust:
	default:
		return nil, fmt.Errorf("unknown auth method %q", o.auth)
	}
	base, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &cluster{base: base, bin: bin, data: filepath.Join(base, "data"), sock: filepath.Join(base, "sock"), logFile: filepath.Join(base, "data", "postgres.log")}
	srv = &Server{
		Super:    Role{Name: "tg_super", Password: randomString()},
		App:      Role{Name: "tg_app", Password: randomString()},
		Database: "tg_test",
		Auth:     o.auth,
		BinDir:   bin,
		c:        c,
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, c.logTail())
		}
	}()
	if err := os.Chmod(base, 0o755); err != nil {
		return srv, err
	}
	if os.Geteuid() == 0 {
		cred, err := postgresUser()
		if err != nil {
			return srv, err
		}
		c.runAs = cred
	}
	for _, d := range []string{c.data, c.sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return srv, err
		}
	}
	if err := c.chown(c.data, c.sock); err != nil {
		return srv, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", c.data, "-U", srv.Super.Name, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if err := c.run(initdb); err != nil {
		return srv, fmt.Errorf("initdb: %w", err)
	}
	if o.tls {
		if srv.CAFile, err = writeCert(c); err != nil {
			return srv, err
		}
	}
	if err := c.writeConf(o); err != nil {
		return srv, err
	}

	// A free port can be taken between our probe and the server's bind:
	// try a few.
	for attempt := 0; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return srv, err
		}
		if err = os.WriteFile(filepath.Join(c.data, "port.conf"), fmt.Appendf(nil, "port = %d\n", c.port), 0o600); err != nil {
			return srv, err
		}
		if err = c.chown(filepath.Join(c.data, "port.conf")); err != nil {
			return srv, err
		}
		c.mu.Lock()
		err = c.start()
		c.mu.Unlock()
		if err == nil || attempt == 2 {
			break
		}
	}
	if err != nil {
		return srv, err
	}

	conn, err := srv.connectLocal(ctx, "postgres")
	if err != nil {
		return srv, fmt.Errorf("connect as %s: %w", srv.Super.Name, err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, srv.Super.Name, srv.Super.Password),
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, srv.App.Name, srv.App.Password),
		fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, srv.Database, srv.App.Name),
	} {
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			return srv, fmt.Errorf("create roles and database: %w", err)
		}
	}
	return srv, nil
}

func (c *cluster) writeConf(o options) error {
	enc := o.auth
	if enc != AuthMD5 {
		enc = AuthSCRAM
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("unix_socket_directories = '%s'", c.sock),
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = 200",
		"shared_buffers = 32MB",
		"password_encryption = " + enc,
		"log_min_messages = warning",
		"include_if_exists = 'port.conf'",
	}
	if o.tls {
		conf = append(conf, "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'")
	}
	conf = append(conf, o.conf...)
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# pgtest\n" + strings.Join(conf, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	host := "host"
	hba := []string{"local all all trust"}
	if o.tls {
		host = "hostssl"
		hba = append(hba, "hostnossl all all 127.0.0.1/32 reject")
	}
	hba = append(hba,
		fmt.Sprintf("%s all all 127.0.0.1/32 %s", host, o.auth),
		fmt.Sprintf("%s replication all 127.0.0.1/32 %s", host, o.auth))
	return os.WriteFile(filepath.Join(c.data, "pg_hba.conf"), []byte(strings.Join(hba, "\n")+"\n"), 0o600)
}

// start runs pg_ctl start and waits for the server to accept connections.
// c.mu is held.
func (c *cluster) start() error {
	if c.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	os.Remove(c.logFile)
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "pg_ctl"),
		"-D", c.data, "-l", c.logFile, "-w", "-t", "50", "start")
	if err := c.run(cmd); err != nil {
		return fmt.Errorf("pg_ctl start on port %d: %w", c.port, err)
	}
	c.running = true
	return nil
}

// stop runs pg_ctl stop in mode (fast, immediate). c.mu is held.
func (c *cluster) stop(mode string) error {
	if !c.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "pg_ctl"),
		"-D", c.data, "-m", mode, "-w", "-t", "50", "stop")
	if err := c.run(cmd); err != nil {
		return fmt.Errorf("pg_ctl stop: %w", err)
	}
	c.running = false
	return nil
}

// destroy stops the cluster without a checkpoint and removes its files. It
// also stops a server whose start was reported as failed but which left a
// postmaster.pid behind.
func (c *cluster) destroy() {
	c.mu.Lock()
	defer c.mu.Unlock()
	pidFile := filepath.Join(c.data, "postmaster.pid")
	if _, err := os.Stat(pidFile); c.running || err == nil {
		c.running = true
		if err := c.stop("immediate"); err != nil {
			// pg_ctl failed: kill the postmaster by its pid file.
			if b, rerr := os.ReadFile(pidFile); rerr == nil {
				if pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0]); pid > 0 {
					syscall.Kill(pid, syscall.SIGQUIT)
				}
			}
		}
	}
	os.RemoveAll(c.base)
}

// run runs cmd as the postgres user (when we are root), in the cluster's
// base directory, and returns its output in the error when it fails.
func (c *cluster) run(cmd *exec.Cmd) error {
	cmd.Dir = c.base
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "HOME=" + c.base}
	if c.runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.runAs}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *cluster) chown(paths ...string) error {
	if c.runAs == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, int(c.runAs.Uid), int(c.runAs.Gid)); err != nil {
			return err
		}
	}
	return nil
}

// logTail returns the end of the server log, for error messages.
func (c *cluster) logTail() string {
	b, err := os.ReadFile(c.logFile)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nserver log:\n" + string(b)
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres OS user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomString() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
