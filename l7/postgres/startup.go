package postgres

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/tollgate-dev/tollgate/pkg/tokens"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tollgate-dev/tollgate/l7"
)

// Codes of the startup packets (PostgreSQL's pqcomm.h).
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	// maxStartupPacketLen is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacketLen = 10000
	// tlsHandshakeByte starts a TLS record carrying a handshake: a client
	// using PostgreSQL 17's sslnegotiation=direct starts with it.
	tlsHandshakeByte = 0x16
)

// finalWriteTimeout bounds a write to a client that may not be reading: an
// error sent before closing.
const finalWriteTimeout = 2 * time.Second

// errCancelServed reports that the connection carried a cancel request,
// which was handled: there is no session to run.
var errCancelServed = errors.New("cancel request served")

// clientStartup is the outcome of the client's startup phase.
type clientStartup struct {
	conn    net.Conn      // the client connection, TLS when the client asked for it
	r       *bufio.Reader // reads conn; may hold bytes sent after the startup message
	version uint32        // protocol version the client asked for
	facts   SessionFacts
	params  map[string]string // every startup parameter
}

// startupError is an error the client is told about as a FATAL
// ErrorResponse.
type startupError struct {
	code, msg string
	err       error // for the log, when it says more than msg
}

func (e *startupError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s (SQLSTATE %s): %v", e.msg, e.code, e.err)
	}
	return fmt.Sprintf("%s (SQLSTATE %s)", e.msg, e.code)
}

func (e *startupError) Unwrap() error { return e.err }

// startup runs the client's side of the startup phase up to, not including,
// authentication: SSLRequest and GSSEncRequest, a cancel request, then the
// StartupMessage and the connect decision. A refused client has been sent a
// FATAL ErrorResponse when startup returns.
func (e *engine) startup(ctx context.Context, s *l7.Session, conn net.Conn) (*clientStartup, error) {
	conn.SetDeadline(time.Now().Add(e.startupTimeout))
	st, err := e.readStartup(ctx, conn)
	if err != nil {
		var se *startupError
		if errors.As(err, &se) && st != nil {
			st.conn.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
			writeMessages(st.conn, errorResponse("FATAL", se.code, se.msg))
		}
		return nil, err
	}
	if err := e.checkStartup(st); err != nil {
		writeMessages(st.conn, errorResponse("FATAL", err.code, err.msg))
		return nil, err
	}
	if e.tokens != nil {
		claims, err := e.clientToken(ctx, st)
		if err != nil {
			var se *startupError
			if errors.As(err, &se) {
				writeMessages(st.conn, errorResponse("FATAL", se.code, se.msg))
			}
			return nil, err
		}
		s.SetClaims(claims)
	}
	d := e.decider.Decide(ctx, s, Request{Kind: KindConnect, Facts: st.facts})
	if !d.Allow {
		err := &startupError{code: codeInvalidAuthorization, msg: denialMessage(d.Reason)}
		writeMessages(st.conn, errorResponse("FATAL", err.code, err.msg))
		return nil, err
	}
	return st, nil
}

// readStartup reads startup packets until the StartupMessage, answering
// SSLRequest and GSSEncRequest and serving a CancelRequest. On error the
// returned clientStartup, when not nil, is where to send the error.
func (e *engine) readStartup(ctx context.Context, conn net.Conn) (*clientStartup, error) {
	st := &clientStartup{conn: conn, r: bufio.NewReaderSize(conn, 1024)}
	if b, err := st.r.Peek(1); err != nil {
		return nil, fmt.Errorf("read startup: %w", err)
	} else if b[0] == tlsHandshakeByte {
		if e.clientTLS == nil {
			return nil, errors.New("refused direct TLS: the target has no client TLS")
		}
		cfg := e.clientTLS.Clone()
		cfg.NextProtos = []string{"postgresql"}
		tc := tls.Server(&bufferedConn{Conn: conn, r: st.r}, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("direct TLS handshake: %w", err)
		}
		if tc.ConnectionState().NegotiatedProtocol != "postgresql" {
			return nil, errors.New(`refused direct TLS without ALPN "postgresql"`)
		}
		st.conn, st.r = tc, bufio.NewReaderSize(tc, 1024)
		st.facts.TLS = true
	}
	sslDone, gssDone := st.facts.TLS, false
	for {
		msg, err := readStartupPacket(st.r)
		if err != nil {
			var se *startupError
			if errors.As(err, &se) {
				return st, err
			}
			return nil, fmt.Errorf("read startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			_, isSSL := m.(*pgproto3.SSLRequest)
			if isSSL && sslDone || !isSSL && gssDone || st.facts.TLS {
				return st, &startupError{code: codeProtocolViolation, msg: "duplicate encryption request"}
			}
			// Bytes sent after the request but before our answer were not
			// encrypted, whatever follows: a client bug or an injection
			// (CVE-2021-3935). PostgreSQL refuses them the same way.
			if st.r.Buffered() > 0 {
				return st, &startupError{code: codeProtocolViolation, msg: "received unencrypted data after SSL request"}
			}
			if !isSSL || e.clientTLS == nil {
				// Seam for TLS termination: without client TLS (and for
				// GSSAPI, never offered), the answer is 'N' and the client
				// goes on in plain text or gives up.
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, fmt.Errorf("answer encryption request: %w", err)
				}
				if isSSL {
					sslDone = true
				} else {
					gssDone = true
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, fmt.Errorf("answer SSLRequest: %w", err)
			}
			tc := tls.Server(conn, e.clientTLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			st.conn, st.r = tc, bufio.NewReaderSize(tc, 1024)
			st.facts.TLS, sslDone = true, true
		case *pgproto3.CancelRequest:
			e.serveCancel(ctx, m)
			return nil, errCancelServed
		case *pgproto3.StartupMessage:
			st.version = m.ProtocolVersion
			st.params = m.Parameters
			return st, nil
		}
	}
}

// checkStartup checks the StartupMessage's parameters and fills in the
// session facts.
func (e *engine) checkStartup(st *clientStartup) *startupError {
	p := st.params
	user := p["user"]
	if user == "" {
		return &startupError{code: codeInvalidAuthorization, msg: "no PostgreSQL user name specified in startup packet"}
	}
	if v, ok := p["replication"]; ok && !isFalse(v) {
		return &startupError{code: codeInsufficientPrivilege, msg: "tollgate: replication connections are not allowed"}
	}
	db := p["database"]
	if db == "" {
		db = user
	}
	up := user
	if e.target.Credentials.Username != "" {
		up = e.target.Credentials.Username
	}
	rest := make(map[string]string, len(p))
	for k, v := range p {
		if k != "user" && k != "database" {
			rest[k] = v
		}
	}
	st.facts.Database, st.facts.User, st.facts.UpstreamUser = db, user, up
	st.facts.ApplicationName = p["application_name"]
	st.facts.Parameters = rest
	return nil
}

// isFalse reports whether a boolean startup parameter is off, as
// PostgreSQL's parse_bool reads it.
func isFalse(v string) bool {
	switch strings.ToLower(v) {
	case "false", "f", "off", "no", "n", "0":
		return true
	}
	return false
}

// readStartupPacket reads one startup packet (no type byte; a length, then a
// code) and returns a *pgproto3.StartupMessage (any protocol 3.x),
// *pgproto3.SSLRequest, *pgproto3.GSSEncRequest or *pgproto3.CancelRequest.
// A malformed packet is a *startupError.
func readStartupPacket(r io.Reader) (pgproto3.FrontendMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int64(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupPacketLen {
		return nil, &startupError{code: codeProtocolViolation, msg: fmt.Sprintf("invalid length of startup packet: %d", n)}
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	code := binary.BigEndian.Uint32(body)
	body = body[4:]
	switch {
	case code == sslRequestCode && len(body) == 0:
		return &pgproto3.SSLRequest{}, nil
	case code == gssEncRequestCode && len(body) == 0:
		return &pgproto3.GSSEncRequest{}, nil
	case code == cancelRequestCode && len(body) >= 8 && len(body) <= 4+256:
		return &pgproto3.CancelRequest{ProcessID: binary.BigEndian.Uint32(body), SecretKey: body[4:]}, nil
	case code == sslRequestCode || code == gssEncRequestCode || code == cancelRequestCode:
		return nil, &startupError{code: codeProtocolViolation, msg: fmt.Sprintf("invalid length of startup packet: %d", n)}
	case code>>16 == 3:
		params, err := parseStartupParams(body)
		if err != nil {
			return nil, &startupError{code: codeProtocolViolation, msg: "invalid startup packet layout: " + err.Error()}
		}
		return &pgproto3.StartupMessage{ProtocolVersion: code, Parameters: params}, nil
	default:
		return nil, &startupError{code: codeFeatureNotSupported,
			msg: fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0", code>>16, code&0xffff)}
	}
}

// parseStartupParams reads name\0value\0 pairs ended by a \0.
func parseStartupParams(b []byte) (map[string]string, error) {
	params := map[string]string{}
	for {
		if len(b) == 0 {
			return nil, errors.New("missing terminator")
		}
		if b[0] == 0 {
			if len(b) != 1 {
				return nil, errors.New("data after the terminator")
			}
			return params, nil
		}
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return nil, errors.New("unterminated parameter name")
		}
		name := string(b[:i])
		b = b[i+1:]
		j := bytes.IndexByte(b, 0)
		if j < 0 {
			return nil, fmt.Errorf("parameter %q has no value", name)
		}
		params[name] = string(b[:j])
		b = b[j+1:]
	}
}

// greet finishes the client's startup as the server would after a
// successful login: AuthenticationOk (the client was identified by the
// kernel, not by a password), the upstream's ParameterStatus, the proxy's
// own BackendKeyData, ReadyForQuery.
func (e *engine) greet(st *clientStartup, hj *pgconn.HijackedConn, key cancelKey) error {
	var msgs []encoder
	if npv := negotiateVersion(st); npv != nil {
		msgs = append(msgs, npv)
	}
	msgs = append(msgs, &pgproto3.AuthenticationOk{})
	for _, k := range slices.Sorted(maps.Keys(hj.ParameterStatuses)) {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: hj.ParameterStatuses[k]})
	}
	secret := make([]byte, 4)
	binary.BigEndian.PutUint32(secret, key.secret)
	msgs = append(msgs,
		&pgproto3.BackendKeyData{ProcessID: key.pid, SecretKey: secret},
		&pgproto3.ReadyForQuery{TxStatus: hj.TxStatus})
	return writeMessages(st.conn, msgs...)
}

// negotiateVersion returns what the proxy answers a client that asked for
// a protocol newer than 3.0 or for protocol options (_pq_.*): it speaks
// 3.0 and knows no option. Nil when the client asked for neither.
func negotiateVersion(st *clientStartup) *pgproto3.NegotiateProtocolVersion {
	var unknown []string
	for k := range st.params {
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
		}
	}
	if st.version&0xffff == 0 && len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}
}

// bufferedConn reads through r, which holds bytes already read from Conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// randomUint32 returns a random number from crypto/rand.
func randomUint32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// maxTokenMessage bounds the password message that carries a workload token.
const maxTokenMessage = 64 << 10

// clientToken asks the client for its password, which must be a workload
// token (an OIDC JWT) the target's issuer signed for its audience, and
// returns the token's verified claims.
func (e *engine) clientToken(ctx context.Context, st *clientStartup) (map[string]any, error) {
	if err := writeMessages(st.conn, &pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return nil, fmt.Errorf("ask for the workload token: %w", err)
	}
	var hdr [5]byte
	if _, err := io.ReadFull(st.r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read the workload token: %w", err)
	}
	n := int64(int32(binary.BigEndian.Uint32(hdr[1:])))
	if hdr[0] != 'p' || n < 5 || n-4 > maxTokenMessage {
		return nil, &startupError{code: codeProtocolViolation, msg: "expected a password message carrying a workload token"}
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(st.r, body); err != nil {
		return nil, fmt.Errorf("read the workload token: %w", err)
	}
	token := strings.TrimSuffix(string(body), "\x00")
	claims, err := e.tokens.Verify(ctx, token)
	if err != nil {
		return nil, &startupError{code: codeInvalidAuthorization, msg: "workload token refused: " + strings.TrimPrefix(err.Error(), tokens.ErrInvalid.Error()+": "), err: err}
	}
	return claims, nil
}
