package audit

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// tail is where Open continues a journal.
type tail struct {
	nextSeq     uint64
	last        [sha256.Size]byte
	active      string // segment to append to ("" for none yet)
	activeFirst uint64
	size        int64
	opened      time.Time
	anchored    bool      // the last record is a checkpoint
	torn        *Recovery // what was dropped, if anything
}

// maxDroppedCopy bounds the dropped bytes a torn_tail record quotes.
const maxDroppedCopy = 4 << 10

// recoverTail finds the last good record of the journal in dir: it checks
// the last segment, truncates a torn tail (bytes after the last good line
// from which no record can be read) and removes trailing empty segments.
func recoverTail(dir string) (tail, error) {
	t := tail{nextSeq: 1}
	segs, err := listSegments(os.DirFS(dir))
	if err != nil {
		return t, fmt.Errorf("audit: %w", err)
	}
	for len(segs) > 0 {
		s := segs[len(segs)-1]
		path := filepath.Join(dir, s.name)
		data, err := os.ReadFile(path)
		if err != nil {
			return t, fmt.Errorf("audit: %w", err)
		}
		sc := scanSegment(data, s.first)
		if sc.corrupt {
			return t, fmt.Errorf("%w: %s line %d: %v, and records follow it: run verify; move the segment aside to start over",
				ErrCorrupt, s.name, sc.badLine, sc.bad)
		}
		if sc.validEnd < len(data) {
			dropped := data[sc.validEnd:]
			sum := sha256.Sum256(dropped)
			note := &Recovery{
				Event:         "torn_tail",
				Segment:       s.name,
				Offset:        int64(sc.validEnd),
				DroppedBytes:  len(dropped),
				DroppedSHA256: hex.EncodeToString(sum[:]),
			}
			if len(dropped) <= maxDroppedCopy {
				note.Dropped = base64.StdEncoding.EncodeToString(dropped)
			}
			if t.torn == nil {
				t.torn = note
			}
			if err := truncateSync(path, int64(sc.validEnd)); err != nil {
				return t, fmt.Errorf("audit: drop torn tail: %w", err)
			}
		}
		if sc.records == 0 {
			if len(segs) == 1 && s.first != 1 {
				return t, fmt.Errorf("%w: the only segment, %s, holds no record to continue the chain from", ErrCorrupt, s.name)
			}
			if err := os.Remove(path); err != nil {
				return t, fmt.Errorf("audit: remove empty segment: %w", err)
			}
			if err := syncDir(dir); err != nil {
				return t, fmt.Errorf("audit: %w", err)
			}
			segs = segs[:len(segs)-1]
			continue
		}
		t.nextSeq = sc.lastSeq + 1
		t.last = sc.lastHash
		t.active, t.activeFirst = s.name, s.first
		t.size = int64(sc.validEnd)
		t.opened = sc.first
		t.anchored = sc.lastType == TypeCheckpoint
		return t, nil
	}
	return t, nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
