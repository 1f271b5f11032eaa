package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The event loop serves sessions without a goroutine per direction. A
// session's two loops (relay.go) each wait in the netpoller for their
// socket, and every message costs the Go scheduler a park and a wake-up, a
// read that finds nothing, and often a thread hand-off: more than the
// relay's own work (docs/benchmarks.md). An eventLoop instead waits for the
// sockets of many sessions at once (epoll, level-triggered), reads each
// ready socket once, and runs the relay's code for the whole messages it
// holds, on the loop's goroutine, as PgBouncer's event loop does.
//
// Nothing on the loop may wait, so a session leaves it for the two loops,
// for good, when it would:
//   - a write would block (a client that reads slowly, a large result);
//   - a decision may wait: an approval, or masking, which reads the
//     catalog before a statement runs and as its results arrive. The
//     message is read again by the client loop, and judged again there;
//   - the context of the session ends (the agent stops, tollctl kills it).
//
// Sessions over TLS, with an idle timeout, a strict journal, or hooks the
// engine cannot vouch for (custom Deciders and RowHooks) never use it.

// errWouldBlock is what the event loop's reads and writes return instead of
// waiting.
var errWouldBlock = errors.New("operation would block")

// errDecideLater is relay.decide's answer on the event loop to a request
// whose decision may wait: the session leaves the loop, and the request is
// decided again.
var errDecideLater = errors.New("the decision may wait")

// errLeaveLoop ends a session's time on the event loop: its loops take over.
var errLeaveLoop = errors.New("leave the event loop")

// EventLoopsEnv sets how many event loops the engine runs: 0 turns them
// off (every session runs two goroutines). Default: GOMAXPROCS.
const EventLoopsEnv = "TOLLGATE_EVENT_LOOPS"

// LoopSpinEnv sets, in microseconds, how long at most a loop that runs out
// of events keeps polling before it parks: 0 turns it off. Default 50.
const LoopSpinEnv = "TOLLGATE_LOOP_SPIN_US"

// maxSpin is the default of LoopSpinEnv: about one transaction's round
// trip to a PostgreSQL server on the same host.
const maxSpin = 50 * time.Microsecond

// spinning is held by the one loop that may poll before parking: the
// others park at once, so that a spinning loop never holds every P and
// the goroutines (sessions off the loops, the journal) keep theirs.
var spinning atomic.Bool

// eventLoop waits for the sockets of the sessions it serves and relays
// their messages.
type eventLoop struct {
	ep   int             // epoll
	wait syscall.RawConn // of ep, in the netpoller: the loop waits for it as a goroutine
	wake int             // eventfd: cmds has work

	mu   sync.Mutex
	cmds []loopCmd

	// The loop goroutine's: the sessions by socket.
	conns map[int32]loopConn

	// spin is how long the loop polls before it parks, up to spinMax:
	// doubled when the wait it gave up on ended soon after, halved when
	// it waited long (adapt).
	spin, spinMax time.Duration
}

// loopConn is one socket of a session on the loop.
type loopConn struct {
	r        *relay
	upstream bool
}

// loopCmd asks the loop to serve r (add), or to stop serving it and then
// close done.
type loopCmd struct {
	r    *relay
	add  bool
	done chan struct{}
}

// loopSession is a relay's state while the loop serves it.
type loopSession struct {
	l        *eventLoop
	cfd, ufd int           // the client's and the upstream's sockets, out of the netpoller
	added    bool          // the loop's: the sockets are in its epoll
	exit     chan loopExit // the loop's word that it no longer serves the session
}

// loopExit says why the loop let a session go.
type loopExit struct {
	leave bool  // the session goes on in its loops
	err   error // else why it ended
}

// loopStats counts the sessions the event loops took, and those of them
// that left for their goroutines.
var loopStats struct{ served, left atomic.Int64 }

var (
	loopsOnce sync.Once
	loops     []*eventLoop
	loopNext  atomic.Uint32
)

// pickLoop returns the event loop a new session goes to, nil when there
// are none.
func pickLoop() *eventLoop {
	loopsOnce.Do(func() {
		// One per CPU: a loop runs its sessions one after the other, so
		// fewer loops than CPUs leave the others idle while sessions wait
		// (pgbench at 8 clients on two cores: 1.04x and 1.11x the TPS of
		// one loop, for the same CPU per transaction).
		n := runtime.GOMAXPROCS(0)
		if v, ok := os.LookupEnv(EventLoopsEnv); ok {
			if k, err := strconv.Atoi(v); err == nil && k >= 0 {
				n = k
			}
		}
		for range n {
			l, err := newEventLoop()
			if err != nil {
				break // sessions run on goroutines
			}
			loops = append(loops, l)
			go l.run()
		}
	})
	if len(loops) == 0 {
		return nil
	}
	return loops[int(loopNext.Add(1))%len(loops)]
}

func newEventLoop() (*eventLoop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		syscall.Close(ep)
		return nil, os.NewSyscallError("eventfd2", errno)
	}
	l := &eventLoop{ep: ep, wake: int(wake), conns: map[int32]loopConn{}, spinMax: loopSpin()}
	l.spin = l.spinMax
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake)}
	err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, l.wake, &ev)
	if err == nil {
		err = syscall.SetNonblock(ep, true)
	}
	if err != nil {
		syscall.Close(ep)
		syscall.Close(l.wake)
		return nil, os.NewSyscallError("epoll", err)
	}
	// An epoll descriptor is readable while events are ready: the runtime
	// parks the loop until then, and no thread waits in epoll_wait.
	f := os.NewFile(uintptr(ep), "eventloop")
	if l.wait, err = f.SyscallConn(); err != nil {
		f.Close()
		syscall.Close(l.wake)
		return nil, err
	}
	return l, nil
}

// run serves the loop's sessions, for the life of the process.
func (l *eventLoop) run() {
	evs := make([]syscall.EpollEvent, 128)
	n := 0
	var parked time.Time
	poll := func(uintptr) bool {
		if !parked.IsZero() {
			l.adapt(time.Since(parked))
			parked = time.Time{}
		}
		if n = epollPoll(l.ep, evs); n > 0 {
			return true
		}
		if n = l.spinPoll(evs); n > 0 {
			return true
		}
		parked = time.Now()
		return false
	}
	for {
		// A busy loop finds events at once, or soon; an idle one parks
		// until the netpoller sees some.
		if l.wait.Read(poll) != nil {
			return // never: ep stays open
		}
		for _, ev := range evs[:n] {
			if ev.Fd == int32(l.wake) {
				l.commands()
				continue
			}
			// A session that left in this batch has no entry (or, should its
			// socket's number be taken again already, another session finds
			// nothing to read).
			if c, ok := l.conns[ev.Fd]; ok {
				c.r.loopReady(c.upstream)
			}
		}
	}
}

// loopSpin reads LoopSpinEnv. A single P has nothing to spare for it.
func loopSpin() time.Duration {
	if runtime.GOMAXPROCS(0) < 2 {
		return 0
	}
	if v, err := strconv.Atoi(os.Getenv(LoopSpinEnv)); err == nil && v >= 0 {
		return time.Duration(v) * time.Microsecond
	}
	return maxSpin
}

// spinPoll polls for up to l.spin, yielding the CPU between polls to any
// thread that wants it, and returns the events it found. Waking a parked
// loop costs more than the polls: on the benchmark's two CPUs, a loop
// that stays awake for the reply of the statement it just forwarded is
// worth 5% to 8% of TPS. One loop spins at a time (spinning).
func (l *eventLoop) spinPoll(evs []syscall.EpollEvent) int {
	if l.spin == 0 || !spinning.CompareAndSwap(false, true) {
		return 0
	}
	defer spinning.Store(false)
	for start := time.Now(); time.Since(start) < l.spin; {
		syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
		if n := epollPoll(l.ep, evs); n > 0 {
			return n
		}
	}
	return 0
}

// adapt sets the next spin from how long the loop stayed parked: a wait
// that ended within spinMax would have been caught by spinning, so spin
// longer; a long one would have been spun in vain, so spin less.
func (l *eventLoop) adapt(parked time.Duration) {
	switch {
	case parked < l.spinMax:
		l.spin = min(l.spinMax, max(2*l.spin, l.spinMax/8))
	case parked > 4*l.spinMax:
		l.spin /= 2
		if l.spin < l.spinMax/8 {
			l.spin = 0
		}
	}
}

// epollPoll returns the events ready now, without waiting: a raw system
// call, since it never blocks.
func epollPoll(ep int, evs []syscall.EpollEvent) int {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// send has the loop run c.
func (l *eventLoop) send(c loopCmd) {
	l.mu.Lock()
	l.cmds = append(l.cmds, c)
	l.mu.Unlock()
	one := uint64(1)
	syscall.Write(l.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
}

// commands runs what was sent.
func (l *eventLoop) commands() {
	var b [8]byte
	syscall.Read(l.wake, b[:])
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, c := range cmds {
		if c.add {
			l.add(c.r)
			continue
		}
		l.remove(c.r)
		close(c.done)
	}
}

// add serves r, and relays what its client sent with its startup.
func (l *eventLoop) add(r *relay) {
	lp := r.lp
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lp.cfd)}
	err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, lp.cfd, &ev)
	if err == nil {
		ev.Fd = int32(lp.ufd)
		if err = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, lp.ufd, &ev); err != nil {
			syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, lp.cfd, nil)
		}
	}
	if err != nil {
		lp.exit <- loopExit{leave: true}
		return
	}
	lp.added = true
	loopStats.served.Add(1)
	l.conns[int32(lp.cfd)] = loopConn{r: r}
	l.conns[int32(lp.ufd)] = loopConn{r: r, upstream: true}
	if r.cr.ready() {
		r.loopReady(false)
	}
}

// remove stops serving r.
func (l *eventLoop) remove(r *relay) {
	lp := r.lp
	if !lp.added {
		return
	}
	lp.added = false
	syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, lp.cfd, nil)
	syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, lp.ufd, nil)
	delete(l.conns, int32(lp.cfd))
	delete(l.conns, int32(lp.ufd))
}

// eventLoop returns the loop that is to serve the session, nil when it
// runs on goroutines from the start.
func (r *relay) eventLoop() *eventLoop {
	e := r.e
	if e.idleTimeout > 0 || !loopSafe(e.decider) || (e.rows != nil && e.rows != RowHook(e.masking)) {
		return nil
	}
	if _, ok := r.client.(*net.TCPConn); !ok {
		return nil
	}
	if _, ok := r.up.(*net.TCPConn); !ok {
		return nil
	}
	return pickLoop()
}

// loopSafe reports whether d decides a nonBlocking request without
// waiting.
func loopSafe(d Decider) bool {
	switch d := d.(type) {
	case allowAll, PolicyDecider:
		return true
	case maskingDecider:
		return loopSafe(d.next)
	case journalingDecider:
		s, ok := d.journal.(interface{ Strict() bool })
		return ok && !s.Strict() && loopSafe(d.next)
	}
	return false
}

// runInLoop has l serve the session until it ends (ended, why) or must
// go on in its loops. Either way the relay's connections are net.Conns
// again when it returns.
func (r *relay) runInLoop(ctx context.Context, l *eventLoop) (ended bool, why error) {
	client, up := r.client, r.up
	cfd, err := detach(client)
	if err != nil {
		return false, nil
	}
	ufd, err := detach(up)
	if err != nil {
		if r.client, err = attach(cfd, client); err != nil {
			return true, err
		}
		r.blockingIO(r.startup)
		return false, nil
	}
	lp := &loopSession{l: l, cfd: cfd, ufd: ufd, exit: make(chan loopExit, 1)}
	r.lp = lp
	cio, uio := &fdIO{fd: cfd, conn: client}, &fdIO{fd: ufd, conn: up}
	r.cr.r, r.cw.w = cio, cio
	r.ur.r, r.uw.w = uio, uio
	if b := r.startup; b != nil && b.Buffered() > 0 {
		p, _ := b.Peek(b.Buffered())
		r.cr.prime(p)
	}
	r.startup = nil
	l.send(loopCmd{r: r, add: true})

	var x loopExit
	select {
	case x = <-lp.exit:
	case <-ctx.Done():
		done := make(chan struct{})
		l.send(loopCmd{r: r, done: done})
		<-done
		select {
		case x = <-lp.exit:
		default:
		}
		if x.leave || x.err == nil {
			x = loopExit{err: shutdownError(ctx)}
		}
	}
	r.lp = nil

	// The sockets go back to the netpoller: the loops need them, and so
	// does the client's last error.
	var aerr error
	if r.client, err = attach(cfd, client); err != nil {
		aerr = err
	}
	if r.up, err = attach(ufd, up); err != nil && aerr == nil {
		aerr = err
	}
	r.blockingIO(nil)
	if aerr != nil {
		return true, aerr
	}
	if x.leave {
		loopStats.left.Add(1)
		return false, nil
	}
	return true, x.err
}

// loopReady relays what a ready socket of the session brought, on the
// loop.
func (r *relay) loopReady(upstream bool) {
	var err error
	if upstream {
		err = r.loopServer()
	} else {
		err = r.loopClient()
	}
	if err == nil {
		return
	}
	lp := r.lp
	lp.l.remove(r)
	if errors.Is(err, errLeaveLoop) || errors.Is(err, errWouldBlock) {
		lp.exit <- loopExit{leave: true}
		return
	}
	lp.exit <- loopExit{err: err}
}

// loopClient reads the client once and relays the whole messages it has
// sent: the client loop's work (clientLoop), without waiting.
func (r *relay) loopClient() error {
	m := r.cr
	rerr := m.readOnce()
	if rerr == errWouldBlock {
		rerr = nil
	}
	for m.ready() {
		mark := m.rp
		typ, frame, body, err := m.next()
		if err != nil {
			return r.clientReadError(err)
		}
		if err := r.fromClient(typ, frame, body); err != nil {
			if err == errDecideLater {
				m.unread(mark)
				err = errLeaveLoop
			}
			return err
		}
	}
	if err := r.uw.flush(); err != nil {
		return upstreamWriteError(err)
	}
	if rerr != nil {
		if rerr == io.EOF {
			r.clientIn.eof = true
			rerr = io.ErrUnexpectedEOF
		}
		return r.clientReadError(rerr)
	}
	return nil
}

// loopServer reads the upstream once and relays the whole messages it has
// sent: the server loop's work (serverLoop), without waiting.
func (r *relay) loopServer() error {
	m := r.ur
	rerr := m.readOnce()
	if rerr == errWouldBlock {
		rerr = nil
	}
	for m.ready() {
		typ, frame, body, err := m.next()
		if err != nil {
			return r.serverReadError(err)
		}
		if err := r.toClient(typ, frame, body); err != nil {
			return err
		}
	}
	if err := r.cw.flush(); err != nil {
		return clientWriteError(err)
	}
	if rerr != nil {
		if rerr == io.EOF {
			rerr = io.ErrUnexpectedEOF
		}
		return r.serverReadError(rerr)
	}
	return nil
}

// detach takes c's socket out of the netpoller: a duplicate of it, then c
// closed. The duplicate shares the socket's non-blocking mode.
func detach(c net.Conn) (int, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			derr = os.NewSyscallError("fcntl", errno)
			return
		}
		fd = int(r)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	c.Close()
	return fd, nil
}

// attach makes fd a net.Conn again (in the netpoller), and closes fd.
// old is the connection detached: when fd cannot be made one (no
// descriptor is left for the duplicate), old, closed, stands in for it,
// and the session ends.
func attach(fd int, old net.Conn) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), old.RemoteAddr().String())
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return old, &fatalError{code: codeInternalError, msg: "tollgate: session lost", err: fmt.Errorf("leave the event loop: %w", err)}
	}
	return c, nil
}

// fdIO reads and writes a socket on the event loop: a call that would wait
// returns errWouldBlock instead (a write, with what it wrote).
type fdIO struct {
	fd   int
	conn net.Conn // detached; for errors' addresses
}

func (f *fdIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	switch n, errno := sysRead(uintptr(f.fd), p); errno {
	case 0:
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	case syscall.EAGAIN:
		return 0, errWouldBlock
	default:
		return 0, opError(f.conn, "read", errno)
	}
}

func (f *fdIO) Write(p []byte) (int, error) {
	switch n, errno := sysWrite(uintptr(f.fd), p); errno {
	case 0:
		return n, nil
	case syscall.EAGAIN:
		return n, errWouldBlock
	default:
		return n, opError(f.conn, "write", errno)
	}
}
