package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Durability says when Append returns.
type Durability string

const (
	// Batch (group commit): Append returns once the record is buffered; a
	// background flusher writes what is buffered to the segment file every
	// FlushInterval or FlushRecords records, and syncs what it wrote every
	// SyncInterval. A crash of the process loses at most the records not
	// yet written (FlushInterval's worth); a crash of the machine at most
	// those not yet synced (SyncInterval's worth).
	Batch Durability = "batch"
	// Strict: Append returns once the record is written and synced.
	// Concurrent appends share one sync.
	Strict Durability = "strict"
)

// Errors callers branch on.
var (
	// ErrUnavailable: the journal cannot write. It wraps the cause; the
	// journal retries in the background and on Append (at most every
	// RetryInterval) and accepts records again once a write succeeds.
	ErrUnavailable = errors.New("audit journal unavailable")
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("audit journal closed")
	// ErrCorrupt: Open found records it will not overwrite or drop (not a
	// torn tail). Run Verify to see what is wrong.
	ErrCorrupt = errors.New("audit journal corrupt")
	// ErrLocked: another process has the journal open.
	ErrLocked = errors.New("audit journal locked by another process")
	// ErrTooLarge: the record's data exceeds Options.MaxRecordBytes.
	ErrTooLarge = errors.New("audit record too large")
	// ErrInvalidType: the type is malformed or reserved to the journal.
	ErrInvalidType = errors.New("invalid audit record type")
)

// Options configures a Journal. Zero values take the documented defaults.
type Options struct {
	// Durability is Batch (default) or Strict.
	Durability Durability
	// SegmentBytes starts a new segment file when the next record would
	// make the active one larger. Default 64 MiB.
	SegmentBytes int64
	// SegmentAge starts a new segment file when the active one got its
	// first record this long ago. Default 24h; negative: never.
	SegmentAge time.Duration
	// FlushInterval is how long Batch buffers a record at most before it
	// is written to the segment file. Default 50ms.
	FlushInterval time.Duration
	// SyncInterval is how long a record Batch wrote stays unsynced at most
	// (fdatasync, which costs far more than the write). Default 50ms; at
	// least FlushInterval.
	SyncInterval time.Duration
	// FlushRecords makes Batch flush at once when this many records are
	// buffered. Default 4096.
	FlushRecords int
	// MaxPendingBytes makes Append wait while more than this many bytes
	// are buffered. Default 32 MiB.
	MaxPendingBytes int
	// CheckpointEvery writes a checkpoint this often when records were
	// appended since the last one. Default 1s.
	CheckpointEvery time.Duration
	// CheckpointRecords writes a checkpoint after this many records.
	// Default 10000; negative: only by time and at Close.
	CheckpointRecords int
	// RetryInterval is how often a failed journal retries writing, in the
	// background and at most as often on Append. Default 1s.
	RetryInterval time.Duration
	// MaxRecordBytes bounds a record's data (canonical JSON). Default
	// 4 MiB, at most 15 MiB.
	MaxRecordBytes int
	// KeyDir holds the signing key pair (LoadOrCreateKey), typically
	// <state_dir>/keys: never inside the journal directory, which is
	// handed to auditors. Required unless PrivateKey is set.
	KeyDir string
	// PrivateKey signs checkpoints instead of the key in KeyDir.
	PrivateKey ed25519.PrivateKey
	// Now is the clock for record times and intervals. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() error {
	switch o.Durability {
	case "":
		o.Durability = Batch
	case Batch, Strict:
	default:
		return fmt.Errorf("audit: durability %q: want %q or %q", o.Durability, Batch, Strict)
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.SegmentAge == 0 {
		o.SegmentAge = 24 * time.Hour
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 50 * time.Millisecond
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = 50 * time.Millisecond
	}
	o.SyncInterval = max(o.SyncInterval, o.FlushInterval)
	if o.FlushRecords <= 0 {
		o.FlushRecords = 4096
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 32 << 20
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = time.Second
	}
	if o.CheckpointRecords == 0 {
		o.CheckpointRecords = 10000
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = time.Second
	}
	if o.MaxRecordBytes <= 0 {
		o.MaxRecordBytes = 4 << 20
	}
	o.MaxRecordBytes = min(o.MaxRecordBytes, 15<<20)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PrivateKey == nil && o.KeyDir == "" {
		return errors.New("audit: Options.KeyDir is required")
	}
	return nil
}

// lineRef locates one line (with its newline) in a batch.
type lineRef struct {
	seq        uint64
	start, end int
}

func (r lineRef) len() int { return r.end - r.start }

// batch is a run of record lines.
type batch struct {
	buf  []byte
	refs []lineRef
}

func (b *batch) reset() {
	b.buf, b.refs = b.buf[:0], b.refs[:0]
}

// queued is a record appended but not yet chained: the flusher writes its
// line, with the hash of the record before it, when it takes the record
// from the queue. Appends so only copy their data under the journal's
// lock; the hashing, the line and a checkpoint's signature are the
// flusher's work.
type queued struct {
	seq        uint64
	at         time.Time
	typ        string
	start, end int // data in queue.buf; none for a checkpoint (made when chained)
}

// queue holds appended records in seq order, without gaps.
type queue struct {
	buf  []byte
	recs []queued
}

func (q *queue) reset() {
	q.buf, q.recs = q.buf[:0], q.recs[:0]
}

// find returns record seq, or nil when q does not hold it.
func (q *queue) find(seq uint64) *queued {
	if len(q.recs) == 0 || seq < q.recs[0].seq || seq-q.recs[0].seq >= uint64(len(q.recs)) {
		return nil
	}
	return &q.recs[seq-q.recs[0].seq]
}

// Journal is an append-only, hash-chained, signed audit journal in a
// directory of segment files. Its methods are safe for concurrent use.
type Journal struct {
	dir   string
	opts  Options
	priv  ed25519.PrivateKey
	keyID string
	lock  *os.File

	mu          sync.Mutex
	nextSeq     uint64
	pend        queue  // appended, not yet taken by the flusher
	durable     uint64 // highest seq written and synced
	syncTo      uint64 // Sync waits for this record: sync until durable
	since       int    // records since the last checkpoint
	failed      error  // non-nil: unavailable (wraps ErrUnavailable and cause)
	cause       error  // why the last write failed
	failedAt    time.Time
	refused     uint64 // appends refused during the current outage
	lastAttempt time.Time
	attempts    uint64 // write attempts so far
	closed      bool   // no more appends
	stopped     bool   // the flusher has exited
	changed     chan struct{}
	// armed: flushT will fire no later than FlushInterval after the
	// oldest record in pend was appended (Batch). Cleared when flushT
	// fires and when the flusher takes pend; set, and flushT reset, by
	// whoever leaves records in an unarmed pend (armLocked), so that no
	// goroutine is woken just to start a timer.
	armed  bool
	flushT *time.Timer

	activeFirst atomic.Uint64 // first seq of the active segment
	pruneMu     sync.Mutex

	kick    chan struct{} // flush now
	closing chan struct{}
	done    chan struct{}
	stopErr error // set by the flusher before done closes

	// Owned by the flusher.
	final      bool // stopping: write everything
	w          writer
	last       [sha256.Size]byte // hash of the last record chained
	times      timeCache         // formats record times
	inflight   batch             // chained from pend, not yet all durable
	infNext    int               // first line of inflight not written
	infSynced  int               // first line of inflight not durable (<= infNext)
	unsyncedAt time.Time         // when the oldest line written but not synced was written
	spare      queue             // swapped for pend, then chained onto inflight
	syncT      *time.Timer
}

// maxUnsynced makes Batch sync at once when this many bytes are written
// but not synced, whatever SyncInterval says.
const maxUnsynced = 4 << 20

// Open opens the journal in dir (creating it, mode 0750), recovers its tail
// and starts its flusher. An incomplete last line (a write cut short by a
// crash) is dropped and a TypeRecovery record says so; anything else wrong
// in the last segment is ErrCorrupt. Only one process may have a journal
// open (ErrLocked).
func Open(dir string, opts Options) (*Journal, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	j, err := open(dir, opts, lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return j, nil
}

func open(dir string, opts Options, lock *os.File) (*Journal, error) {
	priv := opts.PrivateKey
	if priv == nil {
		var err error
		if priv, err = LoadOrCreateKey(opts.KeyDir); err != nil {
			return nil, err
		}
	}
	tail, err := recoverTail(dir)
	if err != nil {
		return nil, err
	}
	dirf, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	j := &Journal{
		dir:     dir,
		opts:    opts,
		priv:    priv,
		keyID:   KeyID(priv.Public().(ed25519.PublicKey)),
		lock:    lock,
		nextSeq: tail.nextSeq,
		last:    tail.last,
		durable: tail.nextSeq - 1,
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		flushT:  time.NewTimer(time.Hour),
		syncT:   time.NewTimer(time.Hour),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	j.w = writer{
		dir: dir, dirf: dirf, segBytes: opts.SegmentBytes, segAge: opts.SegmentAge,
		onCreate: j.activeFirst.Store,
	}
	if tail.active != "" {
		f, err := os.OpenFile(filepath.Join(dir, tail.active), os.O_WRONLY, 0)
		if err != nil {
			dirf.Close()
			return nil, fmt.Errorf("audit: %w", err)
		}
		j.w.f, j.w.name, j.w.off, j.w.end, j.w.opened = f, tail.active, tail.size, tail.size, tail.opened
		j.activeFirst.Store(tail.activeFirst)
	}
	j.flushT.Stop()
	j.syncT.Stop()
	if tail.nextSeq > 1 && !tail.anchored {
		j.since = 1 // a crash left records no checkpoint signs yet
	}
	go j.run()
	if tail.torn != nil {
		j.mu.Lock()
		j.appendLocked(TypeRecovery, mustCanonical(tail.torn))
		j.mu.Unlock()
		signal(j.kick)
	}
	return j, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("audit: lock %s: %w", dir, err)
	}
	return f, nil
}

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.dir }

// Strict reports whether Append waits for its record to be on disk.
func (j *Journal) Strict() bool { return j.opts.Durability == Strict }

// PublicKey returns the key that verifies the journal's checkpoints.
func (j *Journal) PublicKey() ed25519.PublicKey {
	return j.priv.Public().(ed25519.PublicKey)
}

// LastSeq returns the seq of the last record appended (0 if none).
func (j *Journal) LastSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.nextSeq - 1
}

// Status is a snapshot of a journal's state.
type Status struct {
	// LastSeq is the last record appended, Durable the last one written
	// and synced.
	LastSeq, Durable uint64
	// Err is non-nil while the journal cannot write (it wraps
	// ErrUnavailable and the cause); Since is when that started, and
	// Refused counts the appends refused since.
	Err     error
	Since   time.Time
	Refused uint64
}

// Status returns the journal's state, for health checks and metrics.
func (j *Journal) Status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := Status{LastSeq: j.nextSeq - 1, Durable: j.durable, Err: j.failed}
	if j.failed != nil {
		s.Since, s.Refused = j.failedAt, j.refused
	}
	return s
}

// Append adds a record of type typ whose data is data's JSON encoding
// (json.RawMessage and []byte are taken as JSON text, Canonical as
// canonical JSON text; nil or empty is {}),
// and returns its seq. With Batch durability it returns once the record is
// buffered, with Strict once it is written and synced. While the journal
// cannot write, it returns an error wrapping ErrUnavailable and the cause;
// in Strict mode a record whose Append failed that way may still be
// written when the journal recovers (its fate was in doubt, as with a
// failed commit). Malformed types and the types only the journal writes
// (checkpoint, retention, recovery) are refused with ErrInvalidType.
func (j *Journal) Append(ctx context.Context, typ string, data any) (uint64, error) {
	if !validType(typ) || reservedType(typ) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidType, typ)
	}
	canon, err := canonicalData(data)
	if err != nil {
		return 0, fmt.Errorf("audit: %s data: %w", typ, err)
	}
	return j.append(ctx, typ, canon)
}

// AppendCanonical is Append(ctx, typ, Canonical(data)) without making data
// an interface value: for callers that encode their records' canonical
// JSON themselves, once or twice per statement.
func (j *Journal) AppendCanonical(ctx context.Context, typ string, data []byte) (uint64, error) {
	if !validType(typ) || reservedType(typ) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidType, typ)
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	return j.append(ctx, typ, data)
}

// append is Append once the type is checked and canon is canonical.
func (j *Journal) append(ctx context.Context, typ string, canon []byte) (uint64, error) {
	if len(canon) > j.opts.MaxRecordBytes {
		return 0, fmt.Errorf("%w: %s data is %d bytes, limit %d", ErrTooLarge, typ, len(canon), j.opts.MaxRecordBytes)
	}
	j.mu.Lock()
	for {
		if j.closed {
			j.mu.Unlock()
			return 0, ErrClosed
		}
		if j.failed != nil {
			if !j.retryLocked(ctx) {
				j.refused++
				err := j.failed
				j.mu.Unlock()
				return 0, err
			}
			continue
		}
		if len(j.pend.buf) > j.opts.MaxPendingBytes {
			if err := j.waitLocked(ctx); err != nil {
				j.mu.Unlock()
				return 0, err
			}
			continue
		}
		break
	}
	seq := j.appendLocked(typ, canon)
	if j.opts.CheckpointRecords > 0 && j.since >= j.opts.CheckpointRecords {
		j.checkpointLocked()
	}
	n := len(j.pend.recs)
	if j.opts.Durability == Strict {
		j.mu.Unlock()
		signal(j.kick)
		return seq, j.waitDurable(ctx, seq)
	}
	j.armLocked()
	j.mu.Unlock()
	if n >= j.opts.FlushRecords {
		signal(j.kick)
	}
	return seq, nil
}

// armLocked makes sure the flusher writes pend within FlushInterval.
func (j *Journal) armLocked() {
	if !j.armed && len(j.pend.recs) > 0 {
		j.armed = true
		j.flushT.Reset(j.opts.FlushInterval)
	}
}

// canonicalData returns data's canonical JSON encoding.
func canonicalData(data any) ([]byte, error) {
	var raw []byte
	switch d := data.(type) {
	case nil:
		return []byte("{}"), nil
	case Canonical:
		if len(d) == 0 {
			return []byte("{}"), nil
		}
		return d, nil
	case json.RawMessage:
		raw = d
	case []byte:
		raw = d
	default:
		var err error
		if raw, err = json.Marshal(d); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		return []byte("{}"), nil
	}
	return appendCanonical(make([]byte, 0, len(raw)), raw)
}

func mustCanonical(v any) []byte {
	b, err := canonicalData(v)
	if err != nil {
		panic(fmt.Sprintf("audit: encode %T: %v", v, err))
	}
	return b
}

func hexHash(h [sha256.Size]byte) string { return hex.EncodeToString(h[:]) }

// appendLocked queues a record and returns its seq. data must be
// canonical.
func (j *Journal) appendLocked(typ string, data []byte) uint64 {
	return j.appendLockedAt(typ, data, j.opts.Now())
}

func (j *Journal) appendLockedAt(typ string, data []byte, at time.Time) uint64 {
	seq := j.nextSeq
	start := len(j.pend.buf)
	j.pend.buf = append(j.pend.buf, data...)
	j.pend.recs = append(j.pend.recs, queued{seq: seq, at: at, typ: typ, start: start, end: len(j.pend.buf)})
	j.nextSeq++
	if typ == TypeCheckpoint {
		j.since = 0
	} else {
		j.since++
	}
	return seq
}

// checkpointLocked queues a checkpoint signing the record before it: the
// flusher signs it when it chains it.
func (j *Journal) checkpointLocked() {
	if j.nextSeq == 1 {
		return
	}
	j.appendLockedAt(TypeCheckpoint, nil, j.opts.Now())
}

// InsertCanonical inserts fragment into the data of record seq, of type
// typ, at byte offset at, while the record is still queued: appended, in
// Batch durability, and not yet taken by the flusher, so no line and no
// hash holds it yet. It reports whether it did; once the record is chained
// it stands as appended, and the caller appends what it wanted to add as a
// record of its own. The fragment is the caller's to keep canonical: a
// field it adds, in its place, to an object it encoded. The PostgreSQL
// engine so writes a statement's outcome into the statement's record when
// the statement ends within a flush interval: one record instead of two.
func (j *Journal) InsertCanonical(seq uint64, typ string, at int, fragment []byte) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	q := j.pend.find(seq)
	if q == nil || q.typ != typ || j.closed {
		return false, nil
	}
	size := q.end - q.start
	if at < 0 || at > size {
		return false, fmt.Errorf("audit: insert into record %d at %d: its data is %d bytes", seq, at, size)
	}
	if size+len(fragment) > j.opts.MaxRecordBytes {
		return false, fmt.Errorf("%w: %s data would be %d bytes, limit %d", ErrTooLarge, typ, size+len(fragment), j.opts.MaxRecordBytes)
	}
	start := len(j.pend.buf)
	j.pend.buf = append(j.pend.buf, j.pend.buf[q.start:q.start+at]...)
	j.pend.buf = append(j.pend.buf, fragment...)
	j.pend.buf = append(j.pend.buf, j.pend.buf[q.start+at:q.end]...)
	q.start, q.end = start, len(j.pend.buf)
	return true, nil
}

// chain writes q's records as lines onto the end of inflight, each with
// the hash of the line before it, signs the checkpoints among them, and
// empties q.
func (j *Journal) chain(q *queue) {
	for i := range q.recs {
		rec := &q.recs[i]
		data := q.buf[rec.start:rec.end]
		if rec.typ == TypeCheckpoint {
			data = j.checkpointData(rec.seq-1, rec.at)
		}
		start := len(j.inflight.buf)
		j.inflight.buf = appendLine(j.inflight.buf, rec.seq, rec.at, rec.typ, &j.last, data, &j.times)
		j.last = sha256.Sum256(j.inflight.buf[start:])
		j.inflight.buf = append(j.inflight.buf, '\n')
		j.inflight.refs = append(j.inflight.refs, lineRef{seq: rec.seq, start: start, end: len(j.inflight.buf)})
	}
	q.reset()
}

// checkpointData is the data of a checkpoint, made at, over record seq,
// the last one chained.
func (j *Journal) checkpointData(seq uint64, at time.Time) []byte {
	sig := ed25519.Sign(j.priv, CheckpointMessage(seq, j.last, at))
	return mustCanonical(Checkpoint{
		Seq:       seq,
		Hash:      hexHash(j.last),
		Signature: base64.StdEncoding.EncodeToString(sig),
		KeyID:     j.keyID,
	})
}

// retryLocked asks the flusher for a write attempt when none was made in
// the last RetryInterval, waits for it, and reports whether the journal can
// write again.
func (j *Journal) retryLocked(ctx context.Context) bool {
	if j.opts.Now().Sub(j.lastAttempt) < j.opts.RetryInterval {
		return false
	}
	if !j.attemptLocked(ctx) {
		return false
	}
	return j.failed == nil
}

// attemptLocked makes the flusher attempt a write now and waits for it.
func (j *Journal) attemptLocked(ctx context.Context) bool {
	gen := j.attempts
	for j.attempts == gen && !j.stopped {
		signal(j.kick)
		if j.waitLocked(ctx) != nil {
			return false
		}
	}
	return j.attempts != gen
}

// waitLocked waits, unlocked, for the next change of durable, failed or
// attempts.
func (j *Journal) waitLocked(ctx context.Context) error {
	ch := j.changed
	j.mu.Unlock()
	defer j.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// broadcastLocked wakes everything waiting in waitLocked.
func (j *Journal) broadcastLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// changes returns a channel that is closed at the next change.
func (j *Journal) changes() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.changed
}

// waitDurable waits until record seq is synced or the journal fails.
func (j *Journal) waitDurable(ctx context.Context, seq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		switch {
		case j.durable >= seq:
			return nil
		case j.failed != nil:
			return j.failed
		case j.stopped:
			return fmt.Errorf("%w: closed before record %d was written", ErrUnavailable, seq)
		}
		if err := j.waitLocked(ctx); err != nil {
			return err
		}
	}
}

// Sync writes and syncs every record appended so far.
func (j *Journal) Sync() error {
	j.mu.Lock()
	target := j.nextSeq - 1
	j.syncTo = max(j.syncTo, target)
	j.mu.Unlock()
	signal(j.kick)
	return j.waitDurable(context.Background(), target)
}

// Close writes a final checkpoint, flushes, and stops the journal. It
// returns an error wrapping ErrUnavailable if records could not be written.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		<-j.done
		return ErrClosed
	}
	j.closed = true
	if j.since > 0 && j.failed == nil {
		j.checkpointLocked()
	}
	j.mu.Unlock()
	close(j.closing)
	<-j.done
	return errors.Join(j.stopErr, j.lock.Close())
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run is the flusher: it owns the segment files.
func (j *Journal) run() {
	defer close(j.done)
	retryT := time.NewTimer(time.Hour)
	retryT.Stop()
	cp := time.NewTicker(j.opts.CheckpointEvery)
	defer cp.Stop()
	for {
		select {
		case <-j.kick:
		case <-j.flushT.C:
			j.mu.Lock()
			j.armed = false
			j.mu.Unlock()
		case <-j.syncT.C:
		case <-retryT.C:
		case <-cp.C:
			j.mu.Lock()
			if j.since > 0 && j.failed == nil && !j.closed {
				j.checkpointLocked()
			}
			j.mu.Unlock()
		case <-j.closing:
			j.stop()
			return
		}
		if !j.flush() {
			retryT.Reset(j.opts.RetryInterval)
		}
		j.syncT.Stop()
		if j.infSynced < j.infNext {
			j.syncT.Reset(j.unsyncedAt.Add(j.opts.SyncInterval).Sub(j.opts.Now()))
		}
	}
}

// stop flushes what is left (one attempt when failing) and closes files.
func (j *Journal) stop() {
	j.final = true
	j.flush()
	j.mu.Lock()
	var errs []error
	if lost := len(j.pend.recs) + len(j.inflight.refs) - j.infSynced; lost > 0 {
		cause := j.cause
		if cause == nil {
			cause = errors.New("no write succeeded")
		}
		errs = append(errs, fmt.Errorf("%w: %d records not written: %w", ErrUnavailable, lost, cause))
	}
	j.mu.Unlock()
	errs = append(errs, j.w.close())
	j.mu.Lock()
	j.stopErr = errors.Join(errs...)
	j.stopped = true
	j.broadcastLocked()
	j.mu.Unlock()
}

// flush writes what is pending, syncs when that is due, and reports
// whether it succeeded. Strict (and a final flush) loops until nothing is
// pending and all is synced, so appends made during a sync share the next
// one; Batch writes again at once only when FlushRecords more are pending,
// else within FlushInterval, and syncs what it wrote within SyncInterval
// (at once when Sync waits). Lines written but not synced stay in inflight
// until they are: a failed sync truncates them away and writes them again.
func (j *Journal) flush() bool {
	for {
		now := j.opts.Now()
		j.mu.Lock()
		if j.infNext == len(j.inflight.refs) && len(j.pend.recs) > 0 {
			j.pend, j.spare = j.spare, j.pend
			j.armed = false
		}
		syncWanted := j.syncTo > j.durable // all it needs is in inflight now
		j.lastAttempt = now
		j.mu.Unlock()
		if len(j.spare.recs) > 0 {
			j.chain(&j.spare)
		}
		// Sync with this write when the intervals are equal (the
		// default): a record is then on disk within one FlushInterval,
		// not two.
		unsynced := j.inflight.refs[j.infSynced:j.infNext]
		sync := j.opts.Durability == Strict || j.final || syncWanted ||
			j.opts.SyncInterval <= j.opts.FlushInterval ||
			len(unsynced) > 0 && (now.Sub(j.unsyncedAt) >= j.opts.SyncInterval ||
				j.inflight.refs[j.infNext-1].end-j.inflight.refs[j.infSynced].start >= maxUnsynced)
		if j.infNext == len(j.inflight.refs) && (len(unsynced) == 0 || !sync) {
			// Nothing to write or sync. A failure always leaves lines
			// behind, so this does not happen while failed; if it did,
			// count the attempt so nobody waits on it.
			j.mu.Lock()
			if j.failed != nil {
				j.attempts++
				j.failed = nil
				j.broadcastLocked()
			}
			j.mu.Unlock()
			return true
		}
		written, synced, err := j.w.write(&j.inflight, j.infNext, j.infSynced, now, sync)

		if j.infSynced == j.infNext && written > j.infNext {
			j.unsyncedAt = now
		}
		j.infNext, j.infSynced = written, synced
		j.mu.Lock()
		j.attempts++
		if synced > 0 {
			j.durable = max(j.durable, j.inflight.refs[synced-1].seq)
		}
		if j.infSynced == len(j.inflight.refs) {
			j.inflight.reset()
			j.infNext, j.infSynced = 0, 0
		}
		if err != nil {
			if j.failed == nil {
				j.failedAt, j.refused = now, 0
			}
			j.failed, j.cause = fmt.Errorf("%w: %w", ErrUnavailable, err), err
			j.broadcastLocked()
			j.mu.Unlock()
			return false
		}
		if j.failed != nil {
			since, until := j.failedAt.UTC(), now.UTC()
			j.appendLocked(TypeRecovery, mustCanonical(Recovery{
				Event:   "outage",
				Error:   j.cause.Error(),
				Since:   &since,
				Until:   &until,
				Refused: j.refused,
			}))
			j.failed = nil
		}
		j.broadcastLocked()
		if j.opts.Durability == Batch && !j.final && j.syncTo <= j.durable && len(j.pend.recs) < j.opts.FlushRecords {
			j.armLocked()
			j.mu.Unlock()
			return true
		}
		done := len(j.pend.recs) == 0 && j.infSynced == len(j.inflight.refs)
		j.mu.Unlock()
		if done {
			return true
		}
	}
}
