package postgres

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A decision may take long (an approval). While it is pending the client
// loop reads nothing, so a client that goes away would go unnoticed, and a
// statement it can no longer see the end of could be approved and run.
// watchClient reads the client meanwhile: its end ends the decision. What
// it reads (a client may send more before the answer) is kept for the
// client loop, in order.

// watchAfter is how long a decision runs before the client is watched: a
// quick decision costs no extra goroutine.
const watchAfter = 20 * time.Millisecond

// maxWatched bounds what the watch keeps of what the client sends.
const maxWatched = 1 << 20

// watchStarting, when set (tests), runs as a watch starts, before it reads.
var watchStarting func()

// errClientGone ends a decision whose client went away.
var errClientGone = errors.New("the client went away")

// clientWatch watches the client while a decision runs, once it has run
// watchAfter: one per relay, reused from decision to decision, so that a
// quick decision costs a few locks and nothing else. The watchdog starts
// the watches.
type clientWatch struct {
	r *relay // set by newRelay

	mu      sync.Mutex
	active  bool      // a decision runs
	since   time.Time // when it began
	started bool      // its watch runs (done closes when it returns)
	stop    context.CancelCauseFunc
	done    chan struct{}
}

// begin watches the client, after watchAfter, until end; stop ends the
// decision when the client is gone.
func (w *clientWatch) begin(stop context.CancelCauseFunc, now time.Time) {
	w.mu.Lock()
	w.active, w.started, w.stop, w.since = true, false, stop, now
	w.mu.Unlock()
	watchdogs.add(w)
}

// due starts the watch when the decision has run watchAfter at now.
func (w *clientWatch) due(now time.Time) {
	w.mu.Lock()
	if !w.active || w.started || now.Sub(w.since) < watchAfter {
		w.mu.Unlock()
		return
	}
	w.started = true
	w.done = make(chan struct{})
	stop, done := w.stop, w.done
	w.mu.Unlock()
	go func() {
		defer close(done)
		if watchStarting != nil {
			watchStarting()
		}
		w.r.watch(stop)
	}()
}

// watchdog starts the watches of the decisions that outlast watchAfter.
// One goroutine looks at the running decisions each watchAfter/2, while
// there are any: a timer armed and stopped for each decision would cost
// more, and wake a sleeping netpoller each time it is armed.
type watchdog struct {
	mu      sync.Mutex
	watches map[*clientWatch]struct{}
	running bool
}

// watchdogs serves every relay of the process.
var watchdogs watchdog

// add makes d look at w until remove.
func (d *watchdog) add(w *clientWatch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watches == nil {
		d.watches = make(map[*clientWatch]struct{})
	}
	d.watches[w] = struct{}{}
	if !d.running {
		d.running = true
		go d.run()
	}
}

func (d *watchdog) remove(w *clientWatch) {
	d.mu.Lock()
	delete(d.watches, w)
	d.mu.Unlock()
}

// run looks at the watches until none is left.
func (d *watchdog) run() {
	t := time.NewTicker(watchAfter / 2)
	defer t.Stop()
	for now := range t.C {
		d.mu.Lock()
		if len(d.watches) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		for w := range d.watches {
			w.due(now)
		}
		d.mu.Unlock()
	}
}

// end ends the watch; the client loop may read again once it returned.
func (w *clientWatch) end() {
	watchdogs.remove(w)
	w.mu.Lock()
	w.active = false
	started, done := w.started, w.done
	w.stop = nil
	w.mu.Unlock()
	if !started {
		return
	}
	// A past deadline ends the watch's read (set again until it ends:
	// nothing may clear it first); the client loop sets its own again
	// before it reads.
	for ended := false; !ended; {
		w.r.client.SetReadDeadline(time.Unix(1, 0))
		select {
		case <-done:
			ended = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	w.r.client.SetReadDeadline(time.Time{})
}

// watch reads the client until the watch is ended (a deadline) or the
// client is gone. It leaves the read deadline alone: end sets it to stop
// the watch, and an idle deadline the client loop set only stops it early.
func (r *relay) watch(stop context.CancelCauseFunc) {
	in := r.clientIn
	buf := make([]byte, 4096)
	for len(in.pending) < maxWatched {
		n, err := in.r.Read(buf)
		in.pending = append(in.pending, buf[:n]...)
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			return // ended by end, or the relay stopping
		}
		// Gone (EOF, reset) or unreadable: the client loop will say which.
		in.pendingErr = err
		stop(errClientGone)
		return
	}
}

// scrubError withholds what an error of a statement whose results are
// masked may quote of the values: the text between double quotes of its
// message and hint (a value that failed a cast, or an identifier), and its
// detail and context lines.
func scrubError(m *pgproto3.ErrorResponse) {
	m.Message = scrubQuoted(m.Message)
	m.Hint = scrubQuoted(m.Hint)
	if m.Detail != "" {
		m.Detail = "withheld by tollgate: the statement's results are masked, and this detail may quote masked values"
	}
	if m.Where != "" {
		m.Where = "withheld by tollgate"
	}
}

// scrubQuoted replaces what stands between double quotes with "…".
func scrubQuoted(s string) string {
	var out []byte
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' && !in:
			in = true
			out = append(out, `"…`...)
		case c == '"' && in:
			in = false
			out = append(out, '"')
		case !in:
			out = append(out, c)
		}
	}
	if in {
		out = append(out, '"')
	}
	return string(out)
}
