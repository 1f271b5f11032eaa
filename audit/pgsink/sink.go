package pgsink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/pkg/logfields"
)

// DefaultTable is the table a Sink writes and Export reads by default.
const DefaultTable = "tollgate_audit"

// Errors callers branch on.
var (
	// ErrDiverged: the table holds records for this journal id that the
	// journal does not (see the package documentation). Run stops with
	// it; retrying cannot help.
	ErrDiverged = errors.New("pgsink: table and journal disagree")
	// ErrRunning: Run was called while the Sink was already running.
	ErrRunning = errors.New("pgsink: already running")
	// ErrNoRecords: Export found no records for the journal id.
	ErrNoRecords = errors.New("pgsink: no records")
)

// Options configures a Sink. Zero values take the documented defaults.
type Options struct {
	// JournalID keys this journal's rows. Default: the journal's key ID,
	// audit.KeyID(j.PublicKey()). See the package documentation.
	JournalID string
	// Table is the table's name, optionally schema-qualified
	// ("audit.records"), each part taken as written (case kept). Default
	// DefaultTable.
	Table string
	// BatchRecords ships a batch once it holds this many records.
	// Default 1000.
	BatchRecords int
	// BatchBytes ships a batch once its lines and data add up to this
	// many bytes. Default 8 MiB.
	BatchBytes int
	// BatchInterval ships a batch at most this long after its first
	// record was read. Default 200ms.
	BatchInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts while
	// PostgreSQL is unreachable or a write fails: it starts at
	// MinBackoff, doubles up to MaxBackoff, and is jittered down by up to
	// half. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one attempt: connecting and writing one
	// batch. Default 30s.
	AttemptTimeout time.Duration
	// Logger gets a line when shipping starts failing, when it recovers,
	// and when records were pruned from the journal before they were
	// shipped. Default: no logging.
	Logger *zap.Logger
}

func (o *Options) setDefaults() {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = 1000
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 8 << 20
	}
	if o.BatchInterval <= 0 {
		o.BatchInterval = 200 * time.Millisecond
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Validate reports the first option that is wrong, naming it.
func (o Options) Validate() error {
	if o.Table != "" {
		if _, err := parseTable(o.Table); err != nil {
			return fmt.Errorf("pgsink: table: %w", err)
		}
	}
	if strings.ContainsRune(o.JournalID, 0) {
		return errors.New("pgsink: journal_id: contains a NUL byte")
	}
	return nil
}

// parseTable splits "table" or "schema.table" into an identifier.
func parseTable(name string) (pgx.Identifier, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q: want table or schema.table", name)
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 || strings.ContainsRune(p, 0) {
			return nil, fmt.Errorf("%q: each part 1 to 63 bytes, no NUL", name)
		}
	}
	return pgx.Identifier(parts), nil
}

// Sink ships a journal's records to a PostgreSQL table. Status is safe to
// call while Run runs.
type Sink struct {
	dsn     string
	opts    Options
	running atomic.Bool

	mu     sync.Mutex
	j      *audit.Journal
	st     Status
	oldest time.Time // Time of the first record in the batch (zero: none)
}

// New returns a Sink that writes to the database at dsn (a postgres://
// URL or key=value string as pgx parses it). Nothing is dialed before Run.
func New(dsn string, opts Options) *Sink {
	opts.setDefaults()
	return &Sink{dsn: dsn, opts: opts}
}

// Status is a snapshot of a Sink's progress.
type Status struct {
	// JournalID is the id the rows are keyed by ("" before Run).
	JournalID string
	// Running reports whether Run is running.
	Running bool
	// Resumed is the last seq the table held for the journal when Run
	// started (0: none), so Run shipped from Resumed+1.
	Resumed uint64
	// Shipped is the last seq known to be in the table, ShippedAt when
	// its batch was committed (zero: nothing shipped by this Run).
	Shipped   uint64
	ShippedAt time.Time
	// LastSeq is the journal's last record, Lag how many records are not
	// shipped yet (LastSeq - Shipped).
	LastSeq, Lag uint64
	// Behind is how long ago the oldest record that was read but not yet
	// shipped was appended; zero when none waits.
	Behind time.Duration
	// Sent counts the records this Run sent to PostgreSQL, a batch sent
	// again after a failure counted again.
	Sent uint64
	// Missed counts records the journal no longer held when the sink came
	// to them (pruned before they were shipped): they are not in the
	// table.
	Missed uint64
	// Err is the last error while the sink is failing (nil once an
	// attempt succeeds, and nil while it works); Since is when the
	// failures started and Failures how many attempts failed since.
	Err      error
	Since    time.Time
	Failures int
}

// Status returns the sink's progress, for health checks and metrics.
func (s *Sink) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Running = s.running.Load()
	if s.j != nil {
		st.LastSeq = s.j.LastSeq()
		if st.LastSeq > st.Shipped {
			st.Lag = st.LastSeq - st.Shipped
		}
	}
	if !s.oldest.IsZero() {
		st.Behind = time.Since(s.oldest)
	}
	return st
}

// Run ships the journal's records until ctx is done: it finds the last
// seq the table holds for the journal id, follows the journal from the
// record after it, and writes batches, retrying with backoff while
// PostgreSQL is down. When the journal is closed, Run ships what is left
// and returns nil. Otherwise it returns ctx.Err() when ctx is done
// (records not shipped yet stay in the journal for the next Run), or an
// error that retrying cannot fix: options or DSN that do not parse, or
// ErrDiverged.
func (s *Sink) Run(ctx context.Context, j *audit.Journal) error {
	if err := s.opts.Validate(); err != nil {
		return err
	}
	table, _ := parseTable(s.opts.Table)
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("pgsink: dsn: %w", err)
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	id := s.opts.JournalID
	if id == "" {
		id = audit.KeyID(j.PublicKey())
	}
	s.mu.Lock()
	s.j, s.st, s.oldest = j, Status{JournalID: id}, time.Time{}
	s.mu.Unlock()

	r := &run{
		s:   s,
		j:   j,
		id:  id,
		log: s.opts.Logger.With(zap.String(fieldJournalID, id)),
		w:   &pgWriter{cfg: cfg, table: table},
		bo:  backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff},
	}
	defer r.w.drop()
	return r.run(ctx)
}

// Log field names local to the sink (pkg/logfields has no such keys yet).
const (
	fieldJournalID = "journal_id"
	fieldSeq       = "seq"
)

// run is one Run's state; only Run's goroutine uses it.
type run struct {
	s   *Sink
	j   *audit.Journal
	id  string
	log *zap.Logger
	w   *pgWriter
	bo  backoff

	b    batch
	next uint64 // seq of the next record to add
	prev string // hash of the record before next ("": unknown)
}

func (r *run) run(ctx context.Context) error {
	var last uint64
	var lastHash string
	err := r.retry(ctx, func(ctx context.Context) error {
		var err error
		last, lastHash, err = r.w.resume(ctx, r.id)
		return err
	})
	if err != nil {
		return err
	}
	if err := r.checkStart(last, lastHash); err != nil {
		r.fail(err)
		return err
	}
	r.next, r.prev = last+1, lastHash
	r.s.mu.Lock()
	r.s.st.Resumed, r.s.st.Shipped = last, last
	r.s.mu.Unlock()

	broken := false // the last channel closed while the journal was open
	for {
		fctx, cancel := context.WithCancel(ctx)
		ch, err := r.j.Follow(fctx, r.next)
		if errors.Is(err, audit.ErrClosed) {
			cancel()
			return r.drain(ctx)
		}
		if err == nil && broken {
			// Follow stops early only when a segment cannot be
			// read: say why, back off, and follow again.
			cancel()
			for range ch {
			}
			if err = r.readError(); err == nil {
				err = fmt.Errorf("journal follow stopped at seq %d", r.next)
			}
		}
		if err != nil {
			cancel()
			r.fail(fmt.Errorf("read journal: %w", err))
			if err := r.bo.wait(ctx); err != nil {
				return err
			}
			broken = false
			continue
		}
		err = r.consume(ctx, ch)
		cancel()
		for range ch {
			// Wait for Follow's goroutine to see the cancel and exit.
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		broken = true
	}
}

// checkStart makes sure the journal continues what the table holds.
func (r *run) checkStart(last uint64, lastHash string) error {
	if last == 0 {
		return nil
	}
	if jl := r.j.LastSeq(); jl < last {
		return fmt.Errorf("%w: journal id %q: the table holds records up to seq %d, the journal ends at %d", ErrDiverged, r.id, last, jl)
	}
	rd, err := audit.NewReader(r.j.Dir(), audit.Filter{FromSeq: last})
	if err != nil {
		return nil // Follow will say
	}
	defer rd.Close()
	rec, err := rd.Next()
	if err != nil || rec.Seq != last {
		return nil // not on disk (pruned, or not written yet)
	}
	if h, err := rec.Hash(); err == nil && h != lastHash {
		return fmt.Errorf("%w: journal id %q: seq %d in the table has hash %s, in the journal %s", ErrDiverged, r.id, last, lastHash, h)
	}
	return nil
}

// readError returns why the journal cannot be read from r.next (nil if it
// can).
func (r *run) readError() error {
	rd, err := audit.NewReader(r.j.Dir(), audit.Filter{FromSeq: r.next})
	if err != nil {
		return err
	}
	defer rd.Close()
	if _, err := rd.Next(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// consume batches the records from ch and ships them. It returns nil when
// ch is closed and what came through it is shipped.
func (r *run) consume(ctx context.Context, ch <-chan audit.Record) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if len(r.b.rows) > 0 {
			due = timer.C
		}
		select {
		case rec, ok := <-ch:
			if !ok {
				return r.ship(ctx)
			}
			if err := r.add(ctx, rec); err != nil {
				return err
			}
			if len(r.b.rows) == 1 {
				timer.Reset(r.s.opts.BatchInterval)
			}
			if r.full() {
				if err := r.ship(ctx); err != nil {
					return err
				}
			}
		case <-due:
			if err := r.ship(ctx); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// drain ships the records of a closed journal.
func (r *run) drain(ctx context.Context) error {
	rd, err := audit.NewReader(r.j.Dir(), audit.Filter{FromSeq: r.next})
	if err != nil {
		return fmt.Errorf("pgsink: read journal: %w", err)
	}
	defer rd.Close()
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return r.ship(ctx)
		}
		if err != nil {
			return errors.Join(fmt.Errorf("pgsink: read journal: %w", err), r.ship(ctx))
		}
		if err := r.add(ctx, rec); err != nil {
			return err
		}
		if r.full() {
			if err := r.ship(ctx); err != nil {
				return err
			}
		}
	}
}

func (r *run) full() bool {
	return len(r.b.rows) >= r.s.opts.BatchRecords || r.b.bytes >= r.s.opts.BatchBytes
}

// add appends rec to the batch after checking that it chains onto the
// record before it. On ErrDiverged it ships what chained first.
func (r *run) add(ctx context.Context, rec audit.Record) error {
	switch {
	case rec.Seq < r.next:
		return nil // already shipped or batched
	case rec.Seq > r.next:
		n := rec.Seq - r.next
		r.log.Warn("audit records were pruned from the journal before they were shipped",
			zap.Uint64("first_"+fieldSeq, r.next), zap.Uint64("last_"+fieldSeq, rec.Seq-1))
		r.s.mu.Lock()
		r.s.st.Missed += n
		r.s.mu.Unlock()
		r.prev = ""
	}
	if r.prev != "" && rec.Prev != r.prev {
		err := fmt.Errorf("%w: journal id %q: record %d does not chain onto record %d as shipped (prev %s, want %s)",
			ErrDiverged, r.id, rec.Seq, rec.Seq-1, rec.Prev, r.prev)
		shipErr := r.ship(ctx) // what chains
		r.fail(err)
		return errors.Join(err, shipErr)
	}
	line, err := rec.MarshalJSON()
	if err != nil {
		return fmt.Errorf("pgsink: record %d: %w", rec.Seq, err)
	}
	sum := sha256.Sum256(line)
	hash := hex.EncodeToString(sum[:])
	var data any
	if !hasNUL(rec.Data) {
		data = string(rec.Data)
	}
	r.b.rows = append(r.b.rows, row{
		seq: rec.Seq, time: rec.Time, typ: rec.Type, prev: rec.Prev,
		hash: hash, data: data, line: string(line),
	})
	r.b.bytes += len(line) + len(rec.Data)
	if len(r.b.rows) == 1 {
		r.s.mu.Lock()
		r.s.oldest = rec.Time
		r.s.mu.Unlock()
	}
	r.next, r.prev = rec.Seq+1, hash
	return nil
}

// ship writes the batch, retrying until it is in the table or ctx is done.
func (r *run) ship(ctx context.Context) error {
	if len(r.b.rows) == 0 {
		return nil
	}
	last := r.b.rows[len(r.b.rows)-1].seq
	err := r.retry(ctx, func(ctx context.Context) error {
		// Ship only what a crash of the machine cannot take back.
		if r.j.Status().Durable < last {
			if err := r.j.Sync(); err != nil {
				return fmt.Errorf("journal sync: %w", err)
			}
		}
		sent, err := r.w.write(ctx, r.id, r.b.rows)
		r.s.mu.Lock()
		r.s.st.Sent += uint64(sent)
		r.s.mu.Unlock()
		return err
	})
	if err != nil {
		return err
	}
	r.s.mu.Lock()
	r.s.st.Shipped, r.s.st.ShippedAt, r.s.oldest = last, time.Now(), time.Time{}
	r.s.mu.Unlock()
	r.b.reset()
	return nil
}

// retry runs op, each attempt bounded by AttemptTimeout, until it succeeds,
// fails with ErrDiverged, or ctx is done. A failed attempt drops the
// connection, so the next one starts afresh.
func (r *run) retry(ctx context.Context, op func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, r.s.opts.AttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			r.ok()
			return nil
		}
		r.w.drop()
		if err := ctx.Err(); err != nil {
			return err
		}
		r.fail(err)
		if errors.Is(err, ErrDiverged) {
			return err
		}
		if err := r.bo.wait(ctx); err != nil {
			return err
		}
	}
}

// ok records a successful attempt.
func (r *run) ok() {
	r.bo.reset()
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	st := &r.s.st
	if st.Err == nil {
		return
	}
	r.log.Info("audit sink recovered: shipping to PostgreSQL again",
		zap.Duration(logfields.Duration, time.Since(st.Since)), zap.Int("failures", st.Failures))
	st.Err, st.Since, st.Failures = nil, time.Time{}, 0
}

// fail records a failed attempt.
func (r *run) fail(err error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	st := &r.s.st
	if st.Err == nil {
		st.Since = time.Now()
		seq := r.next
		if len(r.b.rows) > 0 {
			seq = r.b.rows[0].seq
		}
		r.log.Warn("audit sink failing: records wait in the journal",
			zap.Uint64(fieldSeq, seq), zap.NamedError(logfields.Error, err))
	}
	st.Err = err
	st.Failures++
}

// row is one record as the staging table takes it.
type row struct {
	seq                   uint64
	time                  time.Time
	typ, prev, hash, line string
	data                  any // string, or nil for NULL
}

// batch is the records read and not yet shipped, in seq order.
type batch struct {
	rows  []row
	bytes int
}

func (b *batch) reset() {
	clear(b.rows)
	b.rows, b.bytes = b.rows[:0], 0
}

// hasNUL reports whether the JSON text holds a \u0000 escape, which jsonb
// cannot store.
func hasNUL(data []byte) bool {
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' || i+1 >= len(data) {
			continue
		}
		if data[i+1] == 'u' && i+6 <= len(data) && string(data[i+2:i+6]) == "0000" {
			return true
		}
		i++ // skip the escaped character
	}
	return false
}

// backoff is a jittered exponential backoff.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }

// next returns the next wait: cur doubled (from min, up to max), less up to
// half of it at random.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return b.cur - rand.N(half+1)
}

// wait waits for the next backoff or until ctx is done.
func (b *backoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
