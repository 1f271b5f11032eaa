package postgres

import (
	"bufio"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawSocket reads and writes a plain TCP connection with raw system calls,
// for the relay's hot path. The socket is non-blocking, so a read or write
// returns at once (EAGAIN parks the goroutine in the netpoller, as
// net.Conn does, deadlines included). What it saves is the runtime's
// system-call bookkeeping: a goroutine in a plain system call leaves its P
// for sysmon to retake, and on loopback a write runs the receiver's TCP
// input and wake-up, which on a busy machine outlasts sysmon's 20 µs tick:
// each such retake hands the P to another thread (a futex wake-up) and
// resets sysmon's back-off, so it polls every 20 µs again
// (docs/benchmarks.md).
type rawSocket struct {
	rc   syscall.RawConn
	conn net.Conn // for errors' addresses

	// One reader and one writer at a time: their calls' state, and the
	// callbacks RawConn runs, bound once (a closure per call allocates).
	rd, wr          rawCall
	readFn, writeFn func(fd uintptr) bool
}

type rawCall struct {
	p     []byte
	n     int
	errno syscall.Errno
}

// newRawSocket returns a rawSocket for conn when it is a plain TCP
// connection.
func newRawSocket(conn net.Conn) (*rawSocket, bool) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, false
	}
	s := &rawSocket{rc: rc, conn: conn}
	s.readFn, s.writeFn = s.read, s.write
	return s, true
}

func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rd = rawCall{p: p}
	err := s.rc.Read(s.readFn)
	n, errno := s.rd.n, s.rd.errno
	s.rd.p = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, s.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// read is Read's callback: false asks RawConn to wait for readability.
func (s *rawSocket) read(fd uintptr) bool {
	n, e := sysRead(fd, s.rd.p)
	if e == syscall.EAGAIN {
		return false
	}
	s.rd.n, s.rd.errno = n, e
	return true
}

func (s *rawSocket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wr = rawCall{p: p}
	err := s.rc.Write(s.writeFn)
	n, errno := s.wr.n, s.wr.errno
	s.wr.p = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, s.opError("write", errno)
	}
	return n, nil
}

// write is Write's callback: false asks RawConn to wait for writability.
func (s *rawSocket) write(fd uintptr) bool {
	n, e := sysWrite(fd, s.wr.p[s.wr.n:])
	s.wr.n += n
	if e == syscall.EAGAIN {
		return false
	}
	s.wr.errno = e
	return true
}

func (s *rawSocket) opError(op string, errno syscall.Errno) error { return opError(s.conn, op, errno) }

// sysRead reads fd once (p is not empty), again when a signal interrupted
// it. The count is valid only when errno is 0.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(r), e
		}
	}
}

// sysWrite writes p to fd until all of it is written or a call fails
// (EAGAIN included), and returns what it wrote.
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n := 0
	for n < len(p) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch e {
		case 0:
			n += int(r)
		case syscall.EINTR:
		default:
			return n, e
		}
	}
	return n, 0
}

// opError wraps errno as conn's methods do.
func opError(conn net.Conn, op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: conn.LocalAddr(), Addr: conn.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// bufferedRaw reads what b holds first, then the raw socket: the client's
// reader may hold bytes sent right after the startup message.
type bufferedRaw struct {
	b   *bufio.Reader
	raw *rawSocket
}

func (r *bufferedRaw) Read(p []byte) (int, error) {
	if r.b != nil {
		if r.b.Buffered() > 0 {
			return r.b.Read(p)
		}
		r.b = nil
	}
	return r.raw.Read(p)
}
