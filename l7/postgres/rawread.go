package postgres

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A relay loop reads one connection and, on a plain TCP connection, does
// its work inside syscall.RawConn.Read's callback (pump): Go's netpoller is
// edge-triggered, and within one RawConn.Read the pollDesc keeps an edge
// that arrived while the loop was not waiting. So once a read left the
// socket empty, the loop waits for readability at once instead of reading
// again to be told EAGAIN: one system call less per round trip and
// direction. Each RawConn.Read starts by forgetting a kept edge
// (internal/poll's prepareRead, the runtime's pollReset), so the first
// read of each call is never skipped: the loop leaves the callback only to
// end, or when a wait fails (a deadline).
//
// A short read does not say the socket is empty: data and the peer's FIN
// that arrived together are one edge, the read returns the data, and only
// the next read returns the end (a client that half-closes after its last
// Query). So reads are recvmsg(2) with TCP_INQ (Linux 4.18): the kernel
// tells how much is left after each read, and a pending FIN counts as
// more. The read is skipped only when that is zero. Without TCP_INQ, over
// TLS or any other net.Conn, the connection is read the usual way.

// errWouldBlock is a rawReader's: nothing to read now; the pump waits for
// the connection to become readable and runs the step again.
var errWouldBlock = errors.New("would block")

// rawReader reads a TCP connection's descriptor while a pump runs.
type rawReader struct {
	conn *net.TCPConn
	rc   syscall.RawConn

	fd      int   // while the pump's callback runs; else -1
	drained bool  // the last read left nothing in the socket, not even a FIN
	failed  error // why the last wait ended (a deadline, a close): the next Read returns it

	// recvmsg's, reused.
	iov  unix.Iovec
	msg  unix.Msghdr
	cbuf [64]byte

	// Set when the relay stops: a loop that has more to read in the
	// callback must stop as a net.Conn's Read would (a deadline, closed).
	halted atomic.Pointer[error]

	// The client watch of a pending decision (hold.go) reads the client
	// through Read from another goroutine while the client loop is in the
	// pump (which holds the descriptor's read lock): through a duplicate
	// of the descriptor, registered with the poller on its own.
	deciding  atomic.Bool
	watchMu   sync.Mutex
	watchFile *os.File
	watchStop bool // the decision ended: the watch's reads time out
}

// newRawReader returns a rawReader of c when c is a plain TCP connection,
// else nil.
func newRawReader(c net.Conn) *rawReader {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_TCP, unix.TCP_INQ, 1)
	}); err != nil || serr != nil {
		return nil
	}
	return &rawReader{conn: tc, rc: rc, fd: -1}
}

// maxRead is the most one read asks for (internal/poll's maxRW).
const maxRead = 1 << 30

// Read reads the connection in the pump's callback. It returns
// errWouldBlock when the socket is empty (or was when last read), and
// what ended the last wait once.
func (r *rawReader) Read(p []byte) (int, error) {
	if r.deciding.Load() {
		return r.watchRead(p)
	}
	if err := r.halted.Load(); err != nil {
		return 0, r.opError(*err)
	}
	if err := r.failed; err != nil {
		r.failed = nil
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.fd < 0 || r.drained {
		r.drained = false
		return 0, errWouldBlock
	}
	if len(p) > maxRead {
		p = p[:maxRead]
	}
	for {
		n, inq, err := r.recv(p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, r.opError(os.NewSyscallError("recvmsg", err))
		case n == 0:
			return 0, io.EOF
		}
		r.drained = inq == 0
		return n, nil
	}
}

// recv reads into p with recvmsg(2) and returns what TCP_INQ says is left
// in the socket (a pending FIN counts); -1 when the kernel did not say.
func (r *rawReader) recv(p []byte) (n, inq int, err error) {
	r.iov.Base = &p[0]
	r.iov.SetLen(len(p))
	r.msg.Iov, r.msg.Iovlen = &r.iov, 1
	r.msg.Control = &r.cbuf[0]
	r.msg.SetControllen(len(r.cbuf))
	k, _, e := syscall.Syscall(unix.SYS_RECVMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.msg)), 0)
	r.iov.Base, r.msg.Iov, r.msg.Control = nil, nil, nil // keep no pointer to p
	if e != 0 {
		return 0, -1, e
	}
	return int(k), controlInq(r.cbuf[:r.msg.Controllen]), nil
}

// controlInq returns the TCP_CM_INQ value of a control message buffer, or
// -1 when it holds none.
func controlInq(b []byte) int {
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(b) {
			return -1
		}
		if h.Level == unix.SOL_TCP && h.Type == unix.TCP_CM_INQ && l >= unix.SizeofCmsghdr+4 {
			return int(*(*int32)(unsafe.Pointer(&b[unix.SizeofCmsghdr])))
		}
		// Next header, aligned.
		l = (l + 7) &^ 7
		if l >= len(b) {
			break
		}
		b = b[l:]
	}
	return -1
}

func (r *rawReader) opError(err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: err}
}

// halt makes Read return err from now on.
func (r *rawReader) halt(err error) { r.halted.Store(&err) }

// pump runs step, inside the connection's RawConn.Read, until it returns
// an error other than errWouldBlock, which it returns. On errWouldBlock it
// waits for the connection to become readable. A wait that fails (a read
// deadline, the connection closed) is what the step's next Read returns,
// as a net.Conn's Read would have.
func (r *rawReader) pump(step func() error) error {
	for {
		for r.failed != nil {
			// Outside the callback: RawConn.Read would fail again at once.
			// (A step that did not read, a whole message being buffered,
			// leaves it for the next.)
			if err := step(); err != nil && err != errWouldBlock {
				return err
			}
		}
		var stepErr error
		r.drained = false // RawConn.Read forgets a kept edge: read first
		err := r.rc.Read(func(fd uintptr) bool {
			r.fd = int(fd)
			for {
				if stepErr = step(); stepErr != nil {
					r.fd = -1
					return stepErr != errWouldBlock
				}
			}
		})
		if stepErr != nil && stepErr != errWouldBlock {
			return stepErr
		}
		if err == nil { // never: the callback ends only with an error
			err = errors.New("raw read ended")
		}
		r.failed = err
	}
}

// beginDecision and endDecision bracket a decision of the client loop's;
// stopWatch ends the watch's reads, before its end is awaited.
func (r *rawReader) beginDecision() { r.deciding.Store(true) }

func (r *rawReader) stopWatch() {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	r.watchStop = true
	if r.watchFile != nil {
		r.watchFile.SetReadDeadline(time.Unix(1, 0))
	}
}

func (r *rawReader) endDecision() {
	r.deciding.Store(false)
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.watchFile != nil {
		r.watchFile.Close()
		r.watchFile = nil
		// The watch read the socket: read before waiting.
		r.drained = false
	}
	r.watchStop = false
}

// watchRead is Read for the client watch: through a duplicate of the
// descriptor, until stopWatch.
func (r *rawReader) watchRead(p []byte) (int, error) {
	r.watchMu.Lock()
	if r.watchStop {
		r.watchMu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	if r.watchFile == nil {
		f, err := r.dup()
		if err != nil {
			r.watchMu.Unlock()
			return 0, r.opError(err)
		}
		r.watchFile = f
	}
	f := r.watchFile
	r.watchMu.Unlock()
	n, err := f.Read(p)
	switch {
	case err == nil, err == io.EOF:
		return n, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, os.ErrDeadlineExceeded
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = os.NewSyscallError("read", pe.Err)
	}
	return n, r.opError(err)
}

// dup returns a pollable duplicate of the connection's descriptor.
func (r *rawReader) dup() (*os.File, error) {
	var nfd int
	var derr error
	if err := r.rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	// Non-blocking, as the connection's: NewFile registers it with the
	// poller, so its deadlines work.
	return os.NewFile(uintptr(nfd), "client"), nil
}
