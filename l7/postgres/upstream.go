package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

// connectUpstream logs in to the upstream with the target's credentials, as
// the database the client asked for, passing on the client's other startup
// parameters (application_name, options, ...), and hijacks the connection.
func (e *engine) connectUpstream(ctx context.Context, st *clientStartup) (*pgconn.HijackedConn, error) {
	// ParseConfig reads PG* environment variables; every setting that
	// matters is overwritten below.
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("upstream config: %w", err)
	}
	port, _ := strconv.ParseUint(e.port, 10, 16) // checked by New
	cfg.Host, cfg.Port = e.host, uint16(port)
	cfg.Database = st.facts.Database
	cfg.User = st.facts.UpstreamUser
	cfg.Password = e.target.Credentials.Password
	cfg.TLSConfig, cfg.Fallbacks = e.upTLS, nil
	cfg.SSLNegotiation = ""
	cfg.DialFunc = e.dial
	cfg.ConnectTimeout = DefaultConnectTimeout
	cfg.MinProtocolVersion, cfg.MaxProtocolVersion = "3.0", "3.0" // what the client is told
	cfg.ValidateConnect, cfg.AfterConnect, cfg.AfterNetConnect = nil, nil, nil
	cfg.OnNotice, cfg.OnNotification = nil, nil
	cfg.KerberosSrvName, cfg.KerberosSpn = "", ""
	cfg.RequireAuth = ""
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
		return nil, err
	}
	hj, err := conn.Hijack()
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if n := hj.Frontend.ReadBufferLen(); n != 0 {
		hj.Conn.Close()
		return nil, fmt.Errorf("upstream sent %d unexpected bytes after ReadyForQuery", n)
	}
	return hj, nil
}

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
