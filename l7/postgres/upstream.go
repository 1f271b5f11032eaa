package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

// upstreamConn is a logged-in upstream connection, ready for the relay.
type upstreamConn struct {
	conn     net.Conn
	pid      uint32    // the upstream backend's process id
	key      cancelKey // the proxy's BackendKeyData, given to the client in place of the upstream's
	txStatus byte      // of the upstream's ReadyForQuery
}

// injectedLogin logs in to the upstream with the target's credentials and
// greets the client as the server would have. A failed login has been
// reported to the client when it returns.
func (e *engine) injectedLogin(ctx context.Context, st *clientStartup) (*upstreamConn, error) {
	hj, err := e.connectUpstream(ctx, st)
	if err != nil {
		st.conn.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
		writeMessages(st.conn, upstreamErrorResponse(e.target.Name, err))
		return nil, err
	}
	key := registerCancel(&cancelTarget{
		dial: e.dial, addr: hj.Conn.RemoteAddr().String(), pid: hj.PID,
		secret: append([]byte(nil), hj.SecretKey...), tls: hj.TLSConfig,
	})
	if err := e.greet(st, hj, key); err != nil {
		forgetCancel(key)
		hj.Conn.Close()
		return nil, fmt.Errorf("greet client: %w", err)
	}
	return &upstreamConn{conn: hj.Conn, pid: hj.PID, key: key, txStatus: hj.TxStatus}, nil
}

// upstreamConfig is the pgconn configuration that logs in to the upstream
// as user, to database, with the target's credentials and TLS, through the
// engine's dialer.
func (e *engine) upstreamConfig(database, user string) (*pgconn.Config, error) {
	// ParseConfig reads PG* environment variables; every setting that
	// matters is overwritten below.
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("upstream config: %w", err)
	}
	port, _ := strconv.ParseUint(e.port, 10, 16) // checked by New
	cfg.Host, cfg.Port = e.host, uint16(port)
	cfg.Database = database
	cfg.User = user
	cfg.Password = e.target.Credentials.Password
	cfg.TLSConfig, cfg.Fallbacks = e.upTLS, nil
	cfg.SSLNegotiation = ""
	cfg.DialFunc = e.dial
	cfg.ConnectTimeout = DefaultConnectTimeout
	cfg.MinProtocolVersion, cfg.MaxProtocolVersion = "3.0", "3.0" // what the client is told
	cfg.ValidateConnect, cfg.AfterConnect = nil, nil
	cfg.OnNotice, cfg.OnNotification = nil, nil
	cfg.KerberosSrvName, cfg.KerberosSpn = "", ""
	// With a password to give, the upstream must ask for it by a method
	// that does not show it (SCRAM-SHA-256 or md5): a server that asks for
	// it in clear text, or lets the login in without asking, is refused
	// before the password leaves (libpq's require_auth). Without a
	// password, the operator trusts the upstream's own pg_hba.
	cfg.RequireAuth = ""
	if cfg.Password != "" {
		cfg.RequireAuth = requiredAuth
	}
	cfg.RuntimeParams = map[string]string{}
	return cfg, nil
}

// connectUpstream logs in to the upstream with the target's credentials, as
// the database the client asked for, passing on the client's other startup
// parameters (application_name, options, ...), and hijacks the connection.
func (e *engine) connectUpstream(ctx context.Context, st *clientStartup) (*pgconn.HijackedConn, error) {
	cfg, err := e.upstreamConfig(st.facts.Database, st.facts.UpstreamUser)
	if err != nil {
		return nil, err
	}
	// pgconn reads through lc: see loginConn.
	var lc *loginConn
	cfg.AfterNetConnect = func(_ context.Context, _ *pgconn.Config, c net.Conn) (net.Conn, error) {
		lc = &loginConn{Conn: c}
		lc.cond.L = &lc.mu
		return lc, nil
	}
	cfg.RuntimeParams = map[string]string{}
	for k, v := range st.facts.Parameters {
		switch {
		case k == "replication", strings.HasPrefix(k, "_pq_."):
		default:
			cfg.RuntimeParams[k] = v
		}
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		// pgconn reports a require_auth refusal only in its message.
		if cfg.RequireAuth != "" && strings.Contains(err.Error(), "require_auth check failed") {
			return nil, fmt.Errorf("%w: %w", ErrAuthDowngrade, err)
		}
		return nil, err
	}
	hj, err := conn.Hijack()
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	raw, kept := lc.detach()
	hj.Conn = raw
	if n := hj.Frontend.ReadBufferLen() + kept; n != 0 {
		raw.Close()
		return nil, fmt.Errorf("upstream sent %d unexpected bytes after ReadyForQuery", n)
	}
	return hj, nil
}

// loginConn is the upstream connection (TLS included) as pgconn sees it
// during the login. A write of pgconn's that takes over 15ms (a loaded
// machine) starts its background reader, which pgconn stops only "after
// the in-progress Read returns": at Hijack it may still be blocked in a
// Read of the connection, and would take the server's answer to the
// client's first statement, which the relay then waits for forever.
// detach ends such a read and hands the connection over.
type loginConn struct {
	net.Conn
	mu       sync.Mutex
	cond     sync.Cond // on mu: a read returned
	reading  int       // reads in progress
	detached bool
	kept     int // bytes read after detach: lost to the relay
}

func (c *loginConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.detached {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.reading++
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading--
	c.cond.Broadcast()
	if c.detached {
		c.kept += n
		return 0, net.ErrClosed
	}
	return n, err
}

// detach ends pgconn's reads in progress and returns the connection under
// lc and how many bytes such a read took after the login (none, unless
// the server sent something before it was asked).
func (c *loginConn) detach() (net.Conn, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detached = true
	if c.reading > 0 {
		c.Conn.SetReadDeadline(time.Unix(1, 0))
		for c.reading > 0 {
			c.cond.Wait()
		}
		c.Conn.SetReadDeadline(time.Time{})
	}
	return c.Conn, c.kept
}

// requiredAuth is the require_auth of a login with the target's password.
const requiredAuth = "scram-sha-256,md5"

// ErrAuthDowngrade reports an upstream that, offered the target's password,
// asked for it in clear text or did not ask at all (trust): the methods the
// engine accepts are SCRAM-SHA-256 and md5. A server that downgrades the
// login this way may not be the real one; the password is not sent.
var ErrAuthDowngrade = errors.New("upstream did not authenticate with scram-sha-256 or md5")

// upstreamTLS builds the TLS config of the upstream connection:
//   - disable: none;
//   - require: TLS; the certificate chain is verified against CAFile when
//     one is set (libpq's require with a root certificate), else not at all;
//   - verify-full: chain (CAFile, or the system roots) and host name.
func upstreamTLS(t config.TLS, host string) (*tls.Config, error) {
	mode := t.Mode
	if mode == "" {
		mode = config.DefaultTLSMode
	}
	if mode == config.TLSDisable {
		return nil, nil
	}
	var roots *x509.CertPool
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
		}
	}
	switch mode {
	case config.TLSRequire:
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
		if roots != nil {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("upstream sent no certificate")
				}
				opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
				for _, c := range cs.PeerCertificates[1:] {
					opts.Intermediates.AddCert(c)
				}
				_, err := cs.PeerCertificates[0].Verify(opts)
				return err
			}
		}
		return cfg, nil
	case config.TLSVerifyFull:
		return &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}, nil
	}
	return nil, fmt.Errorf("unknown mode %q", mode)
}

// upstreamErrorResponse tells the client why the upstream login failed,
// without the injected secret: the server's own error (its SQLSTATE and
// message) when it sent one, else 08001.
func upstreamErrorResponse(target string, err error) *pgproto3.ErrorResponse {
	if errors.Is(err, ErrAuthDowngrade) {
		why := err.Error()
		if i := strings.LastIndex(why, "failed: "); i >= 0 {
			why = why[i+len("failed: "):]
		}
		r := errorResponse("FATAL", codeInvalidAuthorization, fmt.Sprintf(
			"tollgate: refused the upstream of target %q: it did not authenticate with scram-sha-256 or md5 (%s)", target, why))
		r.Detail = "The target's password is only given to a server that asks for it by scram-sha-256 or md5; a server that asks for it in clear text, or lets the login in without it, may not be the real one."
		return r
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		msg := pe.Message
		if strings.HasPrefix(pe.Code, "28") { // invalid authorization
			msg = fmt.Sprintf("tollgate: the upstream of target %q refused the login with the target's credentials: %s", target, pe.Message)
		}
		r := errorResponse("FATAL", pe.Code, msg)
		r.Detail, r.Hint = pe.Detail, pe.Hint
		return r
	}
	r := errorResponse("FATAL", codeUnableToConnect, fmt.Sprintf("tollgate: cannot connect to the upstream of target %q", target))
	r.Detail = err.Error()
	return r
}
