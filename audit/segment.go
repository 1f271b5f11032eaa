package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxLineBytes bounds a record line that readers accept.
const maxLineBytes = 16 << 20

const (
	segPrefix = "seg-"
	segSuffix = ".jsonl"
	segDigits = 20
)

// segmentName returns the file name of the segment whose first record is seq.
func segmentName(seq uint64) string {
	return fmt.Sprintf("%s%0*d%s", segPrefix, segDigits, seq, segSuffix)
}

// parseSegmentName returns the first seq a segment file name declares.
func parseSegmentName(name string) (uint64, bool) {
	if len(name) != len(segPrefix)+segDigits+len(segSuffix) ||
		!strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
		return 0, false
	}
	digits := name[len(segPrefix) : len(segPrefix)+segDigits]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil
}

// segment is a segment file found in a journal directory.
type segment struct {
	name  string
	first uint64 // from the name
	size  int64
}

// listSegments returns the segment files of fsys's root, oldest first.
// Other files are ignored.
func listSegments(fsys fs.FS) ([]segment, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range entries {
		first, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		s := segment{name: e.Name(), first: first}
		if fi, err := e.Info(); err == nil {
			s.size = fi.Size()
		}
		segs = append(segs, s)
	}
	slices.SortFunc(segs, func(a, b segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return segs, nil
}

// lastLine returns the last newline-terminated line of the file at path
// (without the newline), or nil when there is none.
func lastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	for chunk := int64(64 << 10); ; chunk *= 4 {
		start := max(size-chunk, 0)
		buf := make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		end := bytes.LastIndexByte(buf, '\n')
		if end < 0 {
			if start == 0 {
				return nil, nil
			}
			continue
		}
		buf = buf[:end]
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			return buf[i+1:], nil
		}
		if start == 0 {
			return buf, nil
		}
	}
}

// writer appends batches of lines to segment files. Only the journal's
// flusher goroutine uses it.
type writer struct {
	dir      string
	dirf     *os.File
	segBytes int64
	segAge   time.Duration
	onCreate func(first uint64)

	f    *os.File // the active segment, nil before the first write
	name string
	off  int64 // bytes of f that are written and synced
	end  int64 // bytes of f that are written (off <= end)
	// reserved: blocks up to here are allocated (fallocate), so writes
	// below it cannot fail for want of space.
	reserved int64
	opened   time.Time // when the active segment got its first record
	dirty    bool      // f may hold bytes past off: truncate before writing
	dropped  int64     // f's pages below this left the page cache (dropCached)
}

// write writes b's lines from index from on, rotating segments as needed,
// and syncs them when sync is set. Lines synced and written before from
// are b's lines from index synced on, all in the active segment; a segment
// is synced before the next one is created. It returns the index of the
// first line not written and of the first line not synced. On error
// nothing past the last synced line is left in the file (or dirty is set
// to remove it before the next write), and both indexes are that of the
// first line not synced: the caller writes the rest again.
func (w *writer) write(b *batch, from, synced int, now time.Time, sync bool) (written, durable int, err error) {
	fail := func(err error) (int, int, error) {
		w.undo()
		return synced, synced, err
	}
	i := from
	for i < len(b.refs) {
		if w.f != nil && w.end > 0 && w.rotateDue(b.refs[i].len(), now) {
			if err := w.sync(); err != nil {
				return fail(err)
			}
			synced = i
			w.f.Truncate(w.end) // gives back blocks reserved past the end
			w.f.Close()         // all of it is synced: nothing to lose
			w.f = nil
		}
		if w.f == nil {
			if err := w.create(b.refs[i].seq, now); err != nil {
				return synced, synced, err
			}
		}
		if w.dirty {
			if err := w.f.Truncate(w.off); err != nil {
				return synced, synced, fmt.Errorf("truncate %s: %w", w.name, err)
			}
			w.dirty = false
		}
		k, size := i, w.end
		for k < len(b.refs) {
			n := int64(b.refs[k].len())
			if size > 0 && size+n > w.segBytes {
				break
			}
			size += n
			k++
		}
		chunk := b.buf[b.refs[i].start:b.refs[k-1].end]
		if end := w.end + int64(len(chunk)); end > w.reserved {
			// Reserve ahead, so that most writes need no fallocate;
			// on a nearly full disk, just what this write needs.
			ahead := max(end, min(w.end+reserveAhead, w.segBytes))
			err := reserve(w.f, w.end, ahead-w.end)
			if err != nil && ahead > end {
				ahead = end
				err = reserve(w.f, w.end, ahead-w.end)
			}
			if err != nil {
				return fail(fmt.Errorf("write %s: %w", w.name, err))
			}
			w.reserved = ahead
		}
		if _, err := w.f.WriteAt(chunk, w.end); err != nil {
			return fail(fmt.Errorf("write %s: %w", w.name, err))
		}
		w.end += int64(len(chunk))
		i = k
	}
	if sync {
		if err := w.sync(); err != nil {
			return fail(err)
		}
		synced = i
	}
	return i, synced, nil
}

// sync makes what was written to the active segment durable.
func (w *writer) sync() error {
	if w.f == nil || w.end == w.off {
		return nil
	}
	if err := syncFile(w.f); err != nil {
		return fmt.Errorf("sync %s: %w", w.name, err)
	}
	// What the sync before this one made durable leaves the cache: the
	// journal's followers (Follow: the sink, audit watch) read each write
	// soon after it, from the cache.
	w.dropped = dropCached(w.f, w.dropped, w.off)
	w.off = w.end
	return nil
}

// dropCached gives the page cache back the whole pages of [from, to) of f,
// which are synced, and returns where the pages it left begin. The cache
// has a journal's lines for nobody to read again, and pages the kernel
// takes back are the ones it hands out next, where a growing cache would
// take ever new ones (which, on a virtual machine, costs a fault in the
// host for each). The page holding offset to stays, so that the next
// write need not read it back. Advice only: its failure is no error.
func dropCached(f *os.File, from, to int64) int64 {
	from &^= pageSize - 1
	to &^= pageSize - 1
	if to <= from {
		return from
	}
	onFD(f, func(fd int) error { return unix.Fadvise(fd, from, to-from, unix.FADV_DONTNEED) })
	return to
}

const pageSize = 4096

func (w *writer) rotateDue(n int, now time.Time) bool {
	return w.end+int64(n) > w.segBytes || w.segAge > 0 && now.Sub(w.opened) >= w.segAge
}

// undo removes what was written past the synced offset.
func (w *writer) undo() {
	w.dirty = w.f.Truncate(w.off) != nil
	w.end, w.reserved = w.off, w.off
}

// create opens the segment whose first record is seq. A file of that name
// can only be left over from a failed attempt (no record from seq on was
// ever durable), so it is emptied.
func (w *writer) create(seq uint64, now time.Time) error {
	name := segmentName(seq)
	path := filepath.Join(w.dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			if err = f.Truncate(0); err != nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if err := w.dirf.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", w.dir, err)
	}
	w.f, w.name, w.off, w.end, w.reserved, w.opened, w.dirty, w.dropped = f, name, 0, 0, 0, now, false, 0
	if w.onCreate != nil {
		w.onCreate(seq)
	}
	return nil
}

func (w *writer) close() error {
	var errs []error
	if w.f != nil {
		w.f.Truncate(w.end) // gives back blocks reserved past the end
		errs = append(errs, w.f.Close())
		w.f = nil
	}
	errs = append(errs, w.dirf.Close())
	return errors.Join(errs...)
}

// reserveAhead is how far past a write the writer reserves blocks.
const reserveAhead = 1 << 20

// reserve allocates the blocks a write of n bytes at off needs, so that a
// full disk fails the write before any of it lands: readers (Follow, the
// sinks, an auditor copying the directory) never see a partial record,
// not even while a failed write is being undone. File systems without
// fallocate just write.
func reserve(f *os.File, off, n int64) error {
	err := onFD(f, func(fd int) error { return unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, n) })
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}

// onFD runs call on f's descriptor, again while it is interrupted.
func onFD(f *os.File, call func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if cerr = call(int(fd)); cerr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return cerr
}

// syncFile makes a segment's written bytes durable; tests replace it to
// make a sync fail, which a real disk does too rarely to test.
var syncFile = fdatasync

func fdatasync(f *os.File) error { return onFD(f, syscall.Fdatasync) }

// scanned is what scanSegment found in a segment's bytes.
type scanned struct {
	records  int
	validEnd int // offset after the last good line
	lastSeq  uint64
	lastHash [sha256.Size]byte
	lastType string
	first    time.Time // first record's time
	// badLine is the 1-based line where the good prefix ends (0: none),
	// and bad why; rest is then either torn (nothing readable follows) or
	// corrupt.
	badLine int
	bad     error
	corrupt bool
}

// scanSegment checks data, the bytes of the segment whose name declares
// first, line by line: each record canonical, numbered from first on, and
// chained to the one before it in the segment.
func scanSegment(data []byte, first uint64) scanned {
	var s scanned
	off, line := 0, 0
	for off < len(data) {
		line++
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			s.badLine, s.bad = line, errors.New("incomplete last line")
			break
		}
		r, sum, err := readRecord(data[off : off+nl])
		switch {
		case err != nil:
		case r.Seq != first+uint64(s.records):
			err = fmt.Errorf("seq %d, want %d", r.Seq, first+uint64(s.records))
		case s.records > 0 && r.Prev != hexHash(s.lastHash):
			err = fmt.Errorf("seq %d: prev does not match the record before it", r.Seq)
		}
		if err != nil {
			s.badLine, s.bad = line, err
			break
		}
		if s.records == 0 {
			s.first = r.Time
		}
		s.records++
		s.lastSeq, s.lastHash, s.lastType = r.Seq, sum, r.Type
		off += nl + 1
	}
	s.validEnd = off
	if off < len(data) {
		// Torn if nothing after the good prefix reads as a record: a
		// crash cuts a write short, it does not invent records.
		rest := data[off:]
		for len(rest) > 0 {
			nl := bytes.IndexByte(rest, '\n')
			if nl < 0 {
				break
			}
			if _, err := ReadRecord(rest[:nl]); err == nil {
				s.corrupt = true
				break
			}
			rest = rest[nl+1:]
		}
	}
	return s
}
