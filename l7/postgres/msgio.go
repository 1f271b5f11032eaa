package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// readBufSize is a msgReader's buffer: one read takes in this much at most.
const readBufSize = 32 << 10

// msgReader reads the framed messages of one direction of a session (after
// the startup) without decoding them: the relay forwards most messages as
// the bytes they came in, and decodes only those whose content it needs.
//
// It keeps pgproto3's semantics: a declared length under 4 is an error, a
// body over max is an *pgproto3.ExceededMaxBodyLenErr, the end of the
// input (between or within messages) is io.ErrUnexpectedEOF, and a read
// that fails (a deadline) may be retried: the message resumes where it was
// cut.
type msgReader struct {
	r     io.Reader
	max   int             // largest body accepted; 0: no limit
	known func(byte) bool // the message types accepted (checked before the body is read); nil: all

	buf    []byte
	rp, wp int // unread bytes: buf[rp:wp]

	// The message whose header is read, while its body is not.
	partial bool
	typ     byte
	n       int // body length
}

func newMsgReader(r io.Reader, max int) *msgReader {
	return &msgReader{r: r, max: max, buf: make([]byte, readBufSize)}
}

// next returns the next message's type, its whole frame (type, length and
// body) and its body. Both are valid only until the next call.
func (m *msgReader) next() (typ byte, frame, body []byte, err error) {
	if !m.partial {
		if err := m.fill(5); err != nil {
			return 0, nil, nil, err
		}
		h := m.buf[m.rp : m.rp+5]
		length := int(int32(binary.BigEndian.Uint32(h[1:])))
		if length < 4 {
			return 0, nil, nil, fmt.Errorf("invalid message length: %d", length)
		}
		n := length - 4
		if m.max > 0 && n > m.max {
			return 0, nil, nil, &pgproto3.ExceededMaxBodyLenErr{MaxExpectedBodyLen: m.max, ActualBodyLen: n}
		}
		if m.known != nil && !m.known(h[0]) {
			return 0, nil, nil, fmt.Errorf("unknown message type: %c", h[0])
		}
		m.partial, m.typ, m.n = true, h[0], n
	}
	if err := m.fill(5 + m.n); err != nil {
		return 0, nil, nil, err
	}
	m.partial = false
	frame = m.buf[m.rp : m.rp+5+m.n : m.rp+5+m.n]
	m.rp += 5 + m.n
	return m.typ, frame, frame[5:], nil
}

// buffered reports whether a whole message is already buffered: the next
// call of next returns without reading.
func (m *msgReader) buffered() bool {
	if m.wp-m.rp < 5 {
		return false
	}
	n := int(int32(binary.BigEndian.Uint32(m.buf[m.rp+1:])))
	return n >= 4 && m.wp-m.rp >= 1+n
}

// ready reports whether next returns without reading: a whole message is
// buffered, or a header that next refuses.
func (m *msgReader) ready() bool {
	if m.partial {
		return m.wp-m.rp >= 5+m.n
	}
	if m.wp-m.rp < 5 {
		return false
	}
	n, ok := m.header()
	return !ok || m.wp-m.rp >= 1+n
}

// header reads the length of the message at rp (whose header is buffered)
// and reports whether next would accept its header.
func (m *msgReader) header() (length int, ok bool) {
	h := m.buf[m.rp : m.rp+5]
	length = int(int32(binary.BigEndian.Uint32(h[1:])))
	ok = length >= 4 && (m.max <= 0 || length-4 <= m.max) && (m.known == nil || m.known(h[0]))
	return length, ok
}

// readOnce reads once, into room for at least the message begun in the
// buffer: the event loop's read, one per readiness of the socket.
func (m *msgReader) readOnce() error {
	need := 5
	if m.wp-m.rp >= 5 {
		if n, ok := m.header(); ok {
			need = 1 + n
		}
	}
	m.makeRoom(max(need, m.wp-m.rp+1))
	k, err := m.r.Read(m.buf[m.wp:])
	m.wp += k
	return err
}

// unread puts back what next returned since rp was mark: the message is
// returned again.
func (m *msgReader) unread(mark int) { m.rp = mark }

// prime adds b to what is buffered, as if read.
func (m *msgReader) prime(b []byte) {
	m.makeRoom(m.wp - m.rp + len(b))
	m.wp += copy(m.buf[m.wp:], b)
}

// fill makes n unread bytes available at buf[rp:], reading as much as the
// buffer takes.
func (m *msgReader) fill(n int) error {
	if m.wp-m.rp >= n {
		return nil
	}
	m.makeRoom(n)
	for m.wp-m.rp < n {
		k, err := m.r.Read(m.buf[m.wp:])
		m.wp += k
		if m.wp-m.rp >= n {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// makeRoom makes the buffer hold n unread bytes from rp, moving or growing
// it as needed.
func (m *msgReader) makeRoom(n int) {
	if m.rp == m.wp {
		m.rp, m.wp = 0, 0
		if len(m.buf) > readBufSize && n <= readBufSize {
			m.buf = make([]byte, readBufSize) // a large message's buffer goes
		}
	}
	if len(m.buf) < n {
		big := make([]byte, n)
		m.wp = copy(big, m.buf[m.rp:m.wp])
		m.rp, m.buf = 0, big
	} else if len(m.buf)-m.rp < n {
		m.wp = copy(m.buf, m.buf[m.rp:m.wp])
		m.rp = 0
	}
}

// parseBind reads the destination portal, the statement and the result
// format codes of a Bind body, and reports whether the body is a whole,
// well-formed Bind (else the caller decodes it with pgproto3, which says
// what is wrong, or ignores trailing bytes).
func parseBind(b []byte) (portal, stmt string, formats []int16, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return
	}
	portal, b = string(b[:i]), b[i+1:]
	if i = bytes.IndexByte(b, 0); i < 0 {
		return
	}
	stmt, b = string(b[:i]), b[i+1:]
	// Parameter format codes.
	if len(b) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(b))
	if b = b[2:]; len(b) < 2*n {
		return
	}
	b = b[2*n:]
	// Parameters.
	if len(b) < 2 {
		return
	}
	n = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for range n {
		if len(b) < 4 {
			return
		}
		size := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if size == -1 {
			continue
		}
		if size < 0 || len(b) < size {
			return
		}
		b = b[size:]
	}
	// Result format codes.
	if len(b) < 2 {
		return
	}
	n = int(binary.BigEndian.Uint16(b))
	if b = b[2:]; len(b) != 2*n {
		return
	}
	switch {
	case n == 0:
	case n == 1 && b[0] == 0 && b[1] == 0:
		formats = textFormat
	case n == 1 && b[0] == 0 && b[1] == 1:
		formats = binaryFormat
	default:
		formats = make([]int16, n)
		for i := range formats {
			formats[i] = int16(binary.BigEndian.Uint16(b[2*i:]))
		}
	}
	return portal, stmt, formats, true
}

// One result format for all columns, shared: never written to.
var (
	textFormat   = []int16{0}
	binaryFormat = []int16{1}
)

// parseExecute reads the portal of an Execute body and reports whether the
// body is a whole, well-formed Execute.
func parseExecute(b []byte) (portal string, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 || len(b) != i+1+4 {
		return "", false
	}
	return string(b[:i]), true
}

// functionCallLen is the length of the body that encodes f.
func functionCallLen(f *pgproto3.FunctionCall) int {
	n := 4 + 2 + 2*len(f.ArgFormatCodes) + 2 + 2
	for _, a := range f.Arguments {
		n += 4 + len(a)
	}
	return n
}
