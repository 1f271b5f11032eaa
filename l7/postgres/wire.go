package postgres

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/pkg/logfields"
)

// SQLSTATE codes the engine sends.
const (
	codeInsufficientPrivilege    = "42501"
	codeProtocolViolation        = "08P01"
	codeConnectionFailure        = "08006"
	codeUnableToConnect          = "08001"
	codeInvalidAuthorization     = "28000"
	codeFeatureNotSupported      = "0A000"
	codeProgramLimitExceeded     = "54000"
	codeAdminShutdown            = "57P01"
	codeIdleSessionTimeout       = "57P05"
	codeIdleInTransactionTimeout = "25P03"
	codeInternalError            = "XX000"
	codeQueryCanceled            = "57014"
)

// encoder is a pgproto3 message.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// writeMessages encodes msgs and writes them to w in one write.
func writeMessages(w io.Writer, msgs ...encoder) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	_, err := w.Write(buf)
	return err
}

// flushAt is how much a msgWriter buffers before it writes without being
// asked to.
const flushAt = 64 << 10

// msgWriter buffers encoded messages for one connection. It is owned by one
// goroutine.
type msgWriter struct {
	w   io.Writer
	buf []byte
	n   *atomic.Int64 // bytes written, for the session's counters
}

// send buffers msg, writing the buffer out when it is large.
func (m *msgWriter) send(msg encoder) error {
	b, err := msg.Encode(m.buf)
	if err != nil {
		return err
	}
	m.buf = b
	if len(m.buf) >= flushAt {
		return m.flush()
	}
	return nil
}

// sendFrame buffers a message as read (type, length and body), writing the
// buffer out when it is large. A large message is written as it is, after
// what is buffered, without a copy.
func (m *msgWriter) sendFrame(frame []byte) error {
	if len(frame) < flushAt {
		m.buf = append(m.buf, frame...)
		if len(m.buf) >= flushAt {
			return m.flush()
		}
		return nil
	}
	if err := m.flush(); err != nil {
		if errors.Is(err, errWouldBlock) {
			m.buf = append(m.buf, frame...)
		}
		return err
	}
	n, err := m.w.Write(frame)
	m.n.Add(int64(n))
	if err == errWouldBlock {
		m.buf = append(m.buf, frame[n:]...)
	}
	if err != nil {
		return &writeError{err}
	}
	return nil
}

// flush writes what is buffered. On the event loop, a write that would
// wait keeps what it did not write, and says so with errWouldBlock.
func (m *msgWriter) flush() error {
	if len(m.buf) == 0 {
		return nil
	}
	n, err := m.w.Write(m.buf)
	m.n.Add(int64(n))
	if err == errWouldBlock {
		m.buf = m.buf[:copy(m.buf, m.buf[n:])]
		return &writeError{err}
	}
	if cap(m.buf) > 4*flushAt {
		m.buf = nil
	} else {
		m.buf = m.buf[:0]
	}
	if err != nil {
		return &writeError{err}
	}
	return nil
}

// writeError is a failed write to the other side of a relay direction.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// flushReader reads r, first flushing w: whenever a direction's reader has
// nothing buffered and must wait for its input, what it has relayed so far
// goes out. Messages that arrive together leave together.
type flushReader struct {
	r io.Reader
	w *msgWriter

	stamp bool      // keep last
	last  time.Time // when a read last returned bytes
	eof   bool      // r reported its end: an EOF from the decoder is not one

	// What a client watch read while a decision was pending: returned
	// before r is read again.
	pending    []byte
	pendingErr error
}

func (f *flushReader) Read(p []byte) (int, error) {
	if err := f.w.flush(); err != nil {
		return 0, err
	}
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		f.pending = f.pending[n:]
		if len(f.pending) == 0 {
			f.pending = nil
		}
		return n, nil
	}
	if err := f.pendingErr; err != nil {
		f.pendingErr = nil
		if err == io.EOF {
			f.eof = true
		}
		return 0, err
	}
	n, err := f.r.Read(p)
	if f.stamp && n > 0 {
		f.last = time.Now()
	}
	if err == io.EOF {
		f.eof = true
	}
	return n, err
}

func errorResponse(severity, code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}
}

// denialMessage is the message of a denial's ErrorResponse.
func denialMessage(reason string) string {
	if reason == "" {
		return "denied by tollgate policy"
	}
	return "denied by tollgate policy: " + reason
}

func fieldError(err error) zap.Field { return zap.NamedError(logfields.Error, err) }
