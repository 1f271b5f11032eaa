package postgres

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelTimeout bounds the forwarding of one cancel request.
const cancelTimeout = 10 * time.Second

// cancelKey is the BackendKeyData the proxy gives a client in place of the
// upstream's.
type cancelKey struct {
	pid, secret uint32
}

// cancelTarget is where a cancel request for one session goes.
type cancelTarget struct {
	dial   func(ctx context.Context, network, address string) (net.Conn, error)
	addr   string      // the upstream connection's remote address
	pid    uint32      // the upstream's BackendKeyData
	secret []byte      //
	tls    *tls.Config // the session's upstream TLS config; nil without TLS

	// deciding cancels the decision the session waits for (an approval),
	// nil when none is under way.
	deciding atomic.Pointer[context.CancelCauseFunc]
}

// errCanceledByClient ends a decision the client canceled.
var errCanceledByClient = errors.New("canceled by the client")

// cancelDecision ends the decision the session waits for, if any.
func (t *cancelTarget) cancelDecision() bool {
	if stop := t.deciding.Load(); stop != nil {
		(*stop)(errCanceledByClient)
		return true
	}
	return false
}

// cancels maps the keys minted for live sessions to their upstreams. It is
// shared by all engines: a cancel request arrives on a new connection, maybe
// after the engine that made the session was replaced by a config reload.
var cancels = struct {
	sync.Mutex
	m map[uint32]cancelEntry // by minted pid
}{m: map[uint32]cancelEntry{}}

type cancelEntry struct {
	secret uint32
	target *cancelTarget
}

// registerCancel mints a key for t: a pid unique among live sessions (a
// positive int32, as PostgreSQL's are) and a random secret.
func registerCancel(t *cancelTarget) cancelKey {
	cancels.Lock()
	defer cancels.Unlock()
	for {
		pid := randomUint32() & 0x7fffffff
		if _, dup := cancels.m[pid]; pid == 0 || dup {
			continue
		}
		k := cancelKey{pid: pid, secret: randomUint32()}
		cancels.m[pid] = cancelEntry{secret: k.secret, target: t}
		return k
	}
}

func forgetCancel(k cancelKey) {
	cancels.Lock()
	defer cancels.Unlock()
	if e, ok := cancels.m[k.pid]; ok && e.secret == k.secret {
		delete(cancels.m, k.pid)
	}
}

// cancelTargetOf returns the target registered under k.
func cancelTargetOf(k cancelKey) *cancelTarget {
	cancels.Lock()
	defer cancels.Unlock()
	if e, ok := cancels.m[k.pid]; ok && e.secret == k.secret {
		return e.target
	}
	return nil
}

// lookupCancel returns the upstream of the session with this key.
func lookupCancel(pid uint32, secret []byte) (*cancelTarget, bool) {
	if len(secret) != 4 {
		return nil, false
	}
	cancels.Lock()
	e, ok := cancels.m[pid]
	cancels.Unlock()
	var want [4]byte
	binary.BigEndian.PutUint32(want[:], e.secret)
	if !ok || subtle.ConstantTimeCompare(want[:], secret) != 1 {
		return nil, false
	}
	return e.target, true
}

// serveCancel forwards a client's cancel request to the upstream of the
// session it names. As PostgreSQL does, it answers nothing either way.
func (e *engine) serveCancel(ctx context.Context, m *pgproto3.CancelRequest) {
	t, ok := lookupCancel(m.ProcessID, m.SecretKey)
	if !ok {
		e.log.Debug("cancel request for no live session")
		return
	}
	// A statement held for a decision has not reached the upstream: the
	// wait ends. What runs upstream is canceled too, as the client asked.
	t.cancelDecision()
	ctx, cancel := context.WithTimeout(ctx, cancelTimeout)
	defer cancel()
	if err := t.send(ctx); err != nil {
		e.log.Info("forward cancel request", fieldError(err))
	}
}

// send sends the upstream a cancel request with its own key, over TLS when
// the session's upstream connection is TLS, and waits for the server to
// close the connection.
func (t *cancelTarget) send(ctx context.Context) error {
	conn, err := t.dial(ctx, "tcp", t.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if t.tls != nil {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:], 8)
		binary.BigEndian.PutUint32(req[4:], sslRequestCode)
		if _, err := conn.Write(req[:]); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return err
		}
		if b[0] != 'S' {
			return errors.New("upstream refused TLS for the cancel request")
		}
		tc := tls.Client(conn, t.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		conn = tc
	}
	buf := make([]byte, 12+len(t.secret))
	binary.BigEndian.PutUint32(buf[0:], uint32(len(buf)))
	binary.BigEndian.PutUint32(buf[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(buf[8:], t.pid)
	copy(buf[12:], t.secret)
	if _, err := conn.Write(buf); err != nil {
		return err
	}
	io.Copy(io.Discard, conn) // the server closes once it has read the request
	return nil
}
