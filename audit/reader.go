package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Filter selects records for a Reader. The zero Filter selects everything.
type Filter struct {
	// FromSeq skips records before it.
	FromSeq uint64
	// Since skips records before it, Until records at or after it (zero:
	// no bound).
	Since, Until time.Time
	// Types keeps only these record types (empty: all).
	Types []string
}

func (f *Filter) match(r *Record) bool {
	switch {
	case r.Seq < f.FromSeq:
		return false
	case !f.Since.IsZero() && r.Time.Before(f.Since):
		return false
	case !f.Until.IsZero() && !r.Time.Before(f.Until):
		return false
	case len(f.Types) > 0 && !slices.Contains(f.Types, r.Type):
		return false
	}
	return true
}

// Reader reads a journal's records in order, from disk. It checks that
// each line is a canonical record but not the chain (that is Verify's
// job). At the end of what is written, Next returns io.EOF; calling it
// again later returns records written since, so a Reader can follow a
// live journal. An incomplete last line is taken as not written yet.
type Reader struct {
	dir    string
	filter Filter

	f      *os.File
	seg    segment
	buf    []byte // read, not yet returned
	off    int64  // bytes of f read into buf so far
	line   int
	sealed bool // a later segment exists, so this one is complete
	err    error
}

// NewReader returns a Reader of the journal in dir.
func NewReader(dir string, f Filter) (*Reader, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("audit reader: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("audit reader: %s is not a directory", dir)
	}
	return &Reader{dir: dir, filter: f}, nil
}

// Close releases the open segment file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// All iterates the records up to the end of what is written, stopping at
// the first error (yielded with a zero Record).
func (r *Reader) All() iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if !yield(rec, err) || err != nil {
				return
			}
		}
	}
}

// Next returns the next record that the filter selects, or io.EOF at the
// end of what is written so far.
func (r *Reader) Next() (Record, error) {
	for r.err == nil {
		if r.f == nil {
			more, err := r.openSegment(0)
			if err != nil {
				r.err = err
				break
			}
			if !more {
				return Record{}, io.EOF
			}
		}
		line, err := r.readLine()
		if err != nil {
			r.err = err
			break
		}
		if line != nil {
			rec, err := ReadRecord(line)
			if err != nil {
				r.err = fmt.Errorf("audit reader: %s line %d: %w", r.seg.name, r.line, err)
				break
			}
			if r.filter.match(&rec) {
				return rec, nil
			}
			continue
		}
		// End of what the active file holds.
		if !r.sealed {
			later, err := r.laterSegment()
			if err != nil {
				r.err = err
				break
			}
			if !later {
				return Record{}, io.EOF
			}
			r.sealed = true // read it to its end once more, then move on
			continue
		}
		if len(r.buf) > 0 {
			// A write that failed and was retried into the next
			// segment leaves this one shorter than what we read.
			if fi, err := r.f.Stat(); err != nil || fi.Size() >= r.off {
				r.err = fmt.Errorf("audit reader: %s line %d: %w: file ends inside a record", r.seg.name, r.line+1, ErrMalformed)
				break
			}
		}
		after := r.seg.first
		r.Close()
		if _, err := r.openSegment(after); err != nil {
			r.err = err
		}
	}
	return Record{}, r.err
}

// openSegment opens the first segment to read: the one holding FromSeq
// when after is 0, else the first one after the segment that starts at
// after. It reports false when there is none (yet).
func (r *Reader) openSegment(after uint64) (bool, error) {
	for range 3 { // a segment may be pruned between listing and opening
		segs, err := listSegments(os.DirFS(r.dir))
		if err != nil {
			return false, fmt.Errorf("audit reader: %w", err)
		}
		i := 0
		if after == 0 {
			for k, s := range segs {
				if s.first <= r.filter.FromSeq {
					i = k
				}
			}
		} else {
			i = slices.IndexFunc(segs, func(s segment) bool { return s.first > after })
		}
		if i < 0 || i >= len(segs) {
			return false, nil
		}
		f, err := os.Open(filepath.Join(r.dir, segs[i].name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("audit reader: %w", err)
		}
		r.f, r.seg, r.buf, r.off, r.line, r.sealed = f, segs[i], r.buf[:0], 0, 0, false
		return true, nil
	}
	return false, fmt.Errorf("audit reader: segments keep disappearing in %s", r.dir)
}

// laterSegment reports whether a segment after the open one exists.
func (r *Reader) laterSegment() (bool, error) {
	segs, err := listSegments(os.DirFS(r.dir))
	if err != nil {
		return false, fmt.Errorf("audit reader: %w", err)
	}
	return slices.ContainsFunc(segs, func(s segment) bool { return s.first > r.seg.first }), nil
}

// readLine returns the next complete line (nil at the end of the file).
func (r *Reader) readLine() ([]byte, error) {
	scanned := 0
	for {
		if i := bytes.IndexByte(r.buf[scanned:], '\n'); i >= 0 {
			line := r.buf[:scanned+i]
			r.buf = r.buf[scanned+i+1:]
			r.line++
			return line, nil
		}
		scanned = len(r.buf)
		if len(r.buf) > maxLineBytes {
			return nil, fmt.Errorf("audit reader: %s line %d: %w: longer than %d bytes", r.seg.name, r.line+1, ErrMalformed, maxLineBytes)
		}
		if cap(r.buf)-len(r.buf) < 32<<10 {
			r.buf = append(make([]byte, 0, max(2*cap(r.buf), 64<<10)), r.buf...)
		}
		n, err := r.f.Read(r.buf[len(r.buf):cap(r.buf)])
		r.buf = r.buf[:len(r.buf)+n]
		r.off += int64(n)
		switch {
		case n > 0:
		case err == nil || errors.Is(err, io.EOF):
			return nil, nil
		default:
			return nil, fmt.Errorf("audit reader: %w", err)
		}
	}
}

// Follow returns a channel of the records from fromSeq on (0: only records
// appended after the call), as they are written: history still on disk
// first, then each new record within one flush of being appended. The
// channel is closed when ctx is done, the journal is closed (after the
// last records), or a segment cannot be read. On a closed journal Follow
// returns ErrClosed once the flusher has written what Close left it, so a
// reader opened after that sees every record.
func (j *Journal) Follow(ctx context.Context, fromSeq uint64) (<-chan Record, error) {
	j.mu.Lock()
	closed := j.closed
	if fromSeq == 0 {
		fromSeq = j.nextSeq
	}
	j.mu.Unlock()
	if closed {
		<-j.done
		return nil, ErrClosed
	}
	r, err := NewReader(j.dir, Filter{FromSeq: fromSeq})
	if err != nil {
		return nil, err
	}
	ch := make(chan Record, 256)
	go func() {
		defer close(ch)
		defer r.Close()
		send := func(rec Record) bool {
			select {
			case ch <- rec:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			wake := j.changes()
			rec, err := r.Next()
			if err == nil {
				if !send(rec) {
					return
				}
				continue
			}
			if !errors.Is(err, io.EOF) {
				return
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			case <-j.done:
				for {
					rec, err := r.Next()
					if err != nil || !send(rec) {
						return
					}
				}
			}
		}
	}()
	return ch, nil
}
