package postgres

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// errClientGaveUp reports a client that closed its connection during a
// passthrough login: psql, asked for a password it was not given, closes
// the connection, prompts, and dials again. Not an error of the session.
var errClientGaveUp = errors.New("client closed the connection during the login")

// errChannelBinding is the reason a passthrough login that needs SCRAM
// channel binding is refused.
var errChannelBinding = errors.New("SCRAM channel binding cannot pass through tollgate")

// maxAuthMessage bounds a client's authentication message during a
// passthrough login (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH).
const maxAuthMessage = 65535

// SASL mechanisms.
const (
	scramSHA256     = "SCRAM-SHA-256"
	scramSHA256Plus = "SCRAM-SHA-256-PLUS"
)

// passthroughLogin logs the client in to the upstream with its own
// credentials: the client's StartupMessage goes upstream as sent (protocol
// 3.0, _pq_ options answered by the proxy), then the authentication
// exchange is relayed both ways until AuthenticationOk or an error; the
// upstream's ParameterStatus pass on, its BackendKeyData is swapped for the
// proxy's own. Every message passes unchanged but one: SCRAM-SHA-256-PLUS
// is struck from the mechanisms offered, since the client's TLS channel
// ends at the proxy and cannot be bound to the server's. A failed login has
// been reported to the client when it returns.
func (e *engine) passthroughLogin(ctx context.Context, st *clientStartup, state *sessionState) (*upstreamConn, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	defer cancel()
	raw, err := e.dial(ctx, "tcp", net.JoinHostPort(e.host, e.port))
	if err != nil {
		tellClient(st.conn, upstreamErrorResponse(e.target.Name, err))
		return nil, fmt.Errorf("dial: %w", err)
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	st.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() {
		raw.SetDeadline(time.Unix(1, 0))
		st.conn.SetDeadline(time.Unix(1, 0))
	})
	l := &login{e: e, st: st, state: state, up: raw}
	up, err := l.run(ctx)
	if !stop() && err == nil {
		err = fmt.Errorf("login: %w", context.Cause(ctx))
	}
	if err != nil {
		if l.key != (cancelKey{}) {
			forgetCancel(l.key)
		}
		l.up.Close()
		if ctx.Err() != nil && !errors.Is(err, errClientGaveUp) {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		return nil, err
	}
	l.up.SetDeadline(time.Time{})
	return up, nil
}

// login is the state of one passthrough login.
type login struct {
	e     *engine
	st    *clientStartup
	state *sessionState
	up    net.Conn // TLS once negotiated
	key   cancelKey

	serverPlus bool     // the server offered SCRAM-SHA-256-PLUS
	offered    []string // the SASL mechanisms the client was offered
	initial    bool     // the client's next answer is a SASLInitialResponse
}

func (l *login) run(ctx context.Context) (*upstreamConn, error) {
	target := l.e.target.Name
	if l.e.upTLS != nil {
		tc, err := startTLS(ctx, l.up, l.e.upTLS)
		if err != nil {
			tellClient(l.st.conn, upstreamErrorResponse(target, err))
			return nil, fmt.Errorf("upstream TLS: %w", err)
		}
		l.up = tc
	}

	params := maps.Clone(l.st.params)
	maps.DeleteFunc(params, func(k, _ string) bool { return strings.HasPrefix(k, "_pq_.") })
	startup := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}
	if err := writeMessages(l.up, startup); err != nil {
		tellClient(l.st.conn, upstreamErrorResponse(target, err))
		return nil, fmt.Errorf("write upstream: %w", err)
	}
	if npv := negotiateVersion(l.st); npv != nil {
		if err := writeMessages(l.st.conn, npv); err != nil {
			return nil, clientGone(err)
		}
	}

	fe := pgproto3.NewFrontend(l.up, io.Discard)
	// Authentication, until AuthenticationOk.
	for authenticated := false; !authenticated; {
		msg, err := fe.Receive()
		if err != nil {
			return nil, l.upstreamFailed(err)
		}
		var reply bool // the server waits for the client's answer
		var out encoder = msg
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk:
			authenticated = true
		case *pgproto3.AuthenticationCleartextPassword, *pgproto3.AuthenticationMD5Password,
			*pgproto3.AuthenticationGSS, *pgproto3.AuthenticationGSSContinue, *pgproto3.AuthenticationSASLContinue:
			reply = true
		case *pgproto3.AuthenticationSASL:
			a, err := l.mechanisms(m)
			if err != nil {
				return nil, err
			}
			out, reply = a, true
		case *pgproto3.AuthenticationSASLFinal, *pgproto3.NoticeResponse:
		case *pgproto3.NegotiateProtocolVersion:
			continue // the proxy asked for 3.0 and no options: nothing to tell
		case *pgproto3.ErrorResponse:
			// A wrong password, an unknown user or database, too many
			// connections: the server's own words.
			tellClient(l.st.conn, m)
			return nil, fmt.Errorf("upstream refused the login: %w", pgconn.ErrorResponseToPgError(m))
		default:
			return nil, l.violation(fmt.Errorf("%T during authentication", msg))
		}
		if err := writeMessages(l.st.conn, out); err != nil {
			return nil, clientGone(err)
		}
		if reply {
			if err := l.relayAnswer(); err != nil {
				return nil, err
			}
		}
	}

	// After AuthenticationOk (already passed on): ParameterStatus,
	// BackendKeyData, ReadyForQuery. The client gets them together.
	var greeting []byte
	flush := func() error {
		_, err := l.st.conn.Write(greeting)
		greeting = greeting[:0]
		return err
	}
	up := &upstreamConn{conn: l.up}
	for {
		msg, err := fe.Receive()
		if err != nil {
			flush()
			return nil, l.upstreamFailed(err)
		}
		var out encoder = msg
		switch m := msg.(type) {
		case *pgproto3.ParameterStatus:
			if m.Name == "application_name" {
				l.state.setApplicationName(m.Value)
			}
		case *pgproto3.BackendKeyData:
			if l.key != (cancelKey{}) {
				flush()
				return nil, l.violation(errors.New("a second BackendKeyData"))
			}
			up.pid = m.ProcessID
			l.key = registerCancel(&cancelTarget{
				dial: l.e.dial, addr: l.up.RemoteAddr().String(), pid: m.ProcessID,
				secret: bytes.Clone(m.SecretKey), tls: l.e.upTLS,
			})
			secret := make([]byte, 4)
			binary.BigEndian.PutUint32(secret, l.key.secret)
			out = &pgproto3.BackendKeyData{ProcessID: l.key.pid, SecretKey: secret}
		case *pgproto3.NoticeResponse:
		case *pgproto3.ErrorResponse:
			// No such database, too many connections, ...
			greeting, _ = m.Encode(greeting)
			flush()
			return nil, fmt.Errorf("upstream refused the session: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.ReadyForQuery:
			up.txStatus = m.TxStatus
		default:
			flush()
			return nil, l.violation(fmt.Errorf("%T after AuthenticationOk", msg))
		}
		if greeting, err = out.Encode(greeting); err != nil {
			return nil, err
		}
		if up.txStatus != 0 {
			break
		}
	}
	if n := fe.ReadBufferLen(); n != 0 {
		return nil, l.violation(fmt.Errorf("%d unexpected bytes after ReadyForQuery", n))
	}
	if err := flush(); err != nil {
		return nil, clientGone(err)
	}
	up.key = l.key
	return up, nil
}

// mechanisms returns the AuthenticationSASL to send the client in place of
// m: the same mechanisms less SCRAM-SHA-256-PLUS. Channel binding binds
// SCRAM to the TLS channel it runs over; the client's ends at the proxy,
// and whatever the client bound would not match the server's channel.
func (l *login) mechanisms(m *pgproto3.AuthenticationSASL) (*pgproto3.AuthenticationSASL, error) {
	out := &pgproto3.AuthenticationSASL{}
	for _, mech := range m.AuthMechanisms {
		if mech == scramSHA256Plus {
			l.serverPlus = true
			continue
		}
		out.AuthMechanisms = append(out.AuthMechanisms, mech)
	}
	l.offered, l.initial = out.AuthMechanisms, true
	if len(out.AuthMechanisms) == 0 {
		return nil, l.refuse(fmt.Errorf("%w: the upstream offers only %s", errChannelBinding, strings.Join(m.AuthMechanisms, ", ")))
	}
	return out, nil
}

// relayAnswer reads the client's answer to an authentication request (a
// PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse: all
// 'p') and sends it upstream unchanged.
func (l *login) relayAnswer() error {
	var hdr [5]byte
	if _, err := io.ReadFull(l.st.r, hdr[:]); err != nil {
		return clientGone(err)
	}
	if hdr[0] == 'X' { // Terminate: the client gives up
		return errClientGaveUp
	}
	if hdr[0] != 'p' {
		return l.refuseCode(codeProtocolViolation, fmt.Errorf("expected password response, got message type %q", hdr[0]))
	}
	n := int64(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 || n-4 > maxAuthMessage {
		return l.refuseCode(codeProtocolViolation, fmt.Errorf("invalid password packet size %d", n))
	}
	msg := make([]byte, 5+n-4)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(l.st.r, msg[5:]); err != nil {
		return clientGone(err)
	}
	if l.initial {
		l.initial = false
		if err := l.checkInitialResponse(msg[5:]); err != nil {
			return err
		}
	}
	if _, err := l.up.Write(msg); err != nil {
		tellClient(l.st.conn, upstreamErrorResponse(l.e.target.Name, err))
		return fmt.Errorf("write upstream: %w", err)
	}
	return nil
}

// checkInitialResponse refuses, with a reason the client can act on, a
// SASLInitialResponse the server would refuse with a puzzling one: a client
// that picked SCRAM-SHA-256-PLUS (not offered), or that sends the gs2 flag
// 'y' ("I could bind the channel, but you cannot") over its TLS to the
// proxy to a server that can bind its own: PostgreSQL takes that for a
// downgrade attack.
func (l *login) checkInitialResponse(body []byte) error {
	var m pgproto3.SASLInitialResponse
	if err := m.Decode(body); err != nil {
		return l.refuseCode(codeProtocolViolation, err)
	}
	if !slices.Contains(l.offered, m.AuthMechanism) {
		return l.refuse(fmt.Errorf("%w: the client chose %s, which was not offered", errChannelBinding, m.AuthMechanism))
	}
	if m.AuthMechanism == scramSHA256 && l.serverPlus && len(m.Data) > 0 && m.Data[0] == 'y' {
		return l.refuse(fmt.Errorf("%w: the client binds its TLS channel to tollgate, the upstream server its own", errChannelBinding))
	}
	return nil
}

// refuse tells the client the login is refused (28000) and returns err.
func (l *login) refuse(err error) error { return l.refuseCode(codeInvalidAuthorization, err) }

func (l *login) refuseCode(code string, err error) error {
	r := errorResponse("FATAL", code, "tollgate: "+err.Error())
	if errors.Is(err, errChannelBinding) {
		r.Hint = "Connect with channel_binding=disable: tollgate ends the client's TLS, and SCRAM channel binding cannot span it."
	}
	tellClient(l.st.conn, r)
	return err
}

// violation tells the client the upstream broke the protocol.
func (l *login) violation(err error) error {
	tellClient(l.st.conn, errorResponse("FATAL", codeProtocolViolation,
		fmt.Sprintf("tollgate: unexpected message from the upstream of target %q during the login", l.e.target.Name)))
	return fmt.Errorf("upstream protocol violation: %w", err)
}

// upstreamFailed tells the client the upstream connection failed.
func (l *login) upstreamFailed(err error) error {
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) {
		tellClient(l.st.conn, upstreamErrorResponse(l.e.target.Name, err))
		return fmt.Errorf("read upstream: %w", err)
	}
	return l.violation(err)
}

// clientGone is the error of a failed read from or write to the client
// during the login.
func clientGone(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w: %w", errClientGaveUp, err)
	}
	return fmt.Errorf("client: %w", err)
}

// tellClient sends a last message to a client that may not be reading.
func tellClient(c net.Conn, msgs ...encoder) {
	c.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
	writeMessages(c, msgs...)
}

// startTLS asks the upstream for TLS (SSLRequest) and runs the handshake.
func startTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, err
	}
	// One byte, no more: bytes the server sent after it would be
	// unencrypted data pretending to come through TLS (CVE-2021-23222).
	// They stay in the socket, and the handshake fails on them.
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return nil, err
	}
	if b[0] != 'S' {
		return nil, errors.New("the upstream server refused TLS")
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}
