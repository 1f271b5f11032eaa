package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Prune removes the oldest whole segments while their last record is older
// than maxAge or the journal is larger than maxBytes (zero or negative: no
// such limit). It never removes the active segment, nor the last segment
// that holds a record. Before removing anything it appends a signed
// TypeRetention record naming the segments (first and last seq, last
// hash), followed by a checkpoint, and syncs them, so that Verify accepts
// the journal's new start. While the journal cannot write (a full disk),
// it removes the segments first and leaves the retention record to be
// written once space is free; the error then says it is pending.
func (j *Journal) Prune(maxAge time.Duration, maxBytes int64) ([]RemovedSegment, error) {
	j.pruneMu.Lock()
	defer j.pruneMu.Unlock()
	if maxAge <= 0 && maxBytes <= 0 {
		return nil, nil
	}
	victims, reason, err := j.pruneCandidates(maxAge, maxBytes)
	if err != nil || len(victims) == 0 {
		return nil, err
	}
	last := victims[len(victims)-1]
	var lastHash [sha256.Size]byte
	if err := decodeHash(last.LastHash, &lastHash); err != nil {
		return nil, err
	}
	sig := ed25519.Sign(j.priv, RetentionMessage(victims[0].FirstSeq, last.LastSeq, lastHash))
	data := mustCanonical(Retention{
		FirstSeq:  victims[0].FirstSeq,
		LastSeq:   last.LastSeq,
		LastHash:  last.LastHash,
		Segments:  victims,
		Reason:    reason,
		Signature: base64.StdEncoding.EncodeToString(sig),
		KeyID:     j.keyID,
	})

	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil, ErrClosed
	}
	j.appendLocked(TypeRetention, data)
	j.checkpointLocked()
	failed := j.failed != nil
	j.mu.Unlock()
	if !failed {
		if err := j.Sync(); err != nil {
			if !errors.Is(err, ErrUnavailable) {
				return nil, fmt.Errorf("audit prune: %w", err)
			}
			failed = true // free the space the retention record needs
		}
	}

	var removed []RemovedSegment
	var rmErr error
	for _, v := range victims {
		if rmErr = os.Remove(filepath.Join(j.dir, v.Name)); rmErr != nil {
			break
		}
		removed = append(removed, v)
	}
	if err := syncDir(j.dir); err != nil && rmErr == nil {
		rmErr = err
	}
	if rmErr != nil {
		rmErr = fmt.Errorf("audit prune: %w", rmErr)
	}
	if failed {
		j.mu.Lock()
		j.attemptLocked(context.Background())
		j.mu.Unlock()
		if err := j.Sync(); err != nil {
			return removed, errors.Join(rmErr, fmt.Errorf("audit prune: removed %d segments; the retention record is pending: %w", len(removed), err))
		}
	}
	return removed, rmErr
}

// pruneCandidates lists the oldest segments that the limits select.
func (j *Journal) pruneCandidates(maxAge time.Duration, maxBytes int64) ([]RemovedSegment, string, error) {
	segs, err := listSegments(os.DirFS(j.dir))
	if err != nil {
		return nil, "", fmt.Errorf("audit prune: %w", err)
	}
	keep := len(segs) - 1 // the last segment holding a record, and all after it
	for keep > 0 && segs[keep].size == 0 {
		keep--
	}
	active := j.activeFirst.Load()
	var total int64
	for _, s := range segs {
		total += s.size
	}
	now := j.opts.Now()
	var victims []RemovedSegment
	var anyOld, anyBig bool
	for i := 0; i < keep; i++ {
		s := segs[i]
		if active != 0 && s.first >= active {
			break
		}
		line, err := lastLine(filepath.Join(j.dir, s.name))
		if err != nil {
			return nil, "", fmt.Errorf("audit prune: %w", err)
		}
		rec, sum, err := readRecord(line)
		if err != nil {
			return nil, "", fmt.Errorf("%w: prune: %s last line: %v", ErrCorrupt, s.name, err)
		}
		if rec.Seq+1 != segs[i+1].first {
			return nil, "", fmt.Errorf("%w: prune: %s ends at seq %d but %s starts at seq %d", ErrCorrupt, s.name, rec.Seq, segs[i+1].name, segs[i+1].first)
		}
		old := maxAge > 0 && now.Sub(rec.Time) > maxAge
		big := maxBytes > 0 && total > maxBytes
		if !old && !big {
			break
		}
		anyOld, anyBig = anyOld || old, anyBig || big
		victims = append(victims, RemovedSegment{
			Name: s.name, FirstSeq: s.first, LastSeq: rec.Seq, LastHash: hexHash(sum), Bytes: s.size,
		})
		total -= s.size
	}
	var why []string
	if anyOld {
		why = append(why, "max_age="+maxAge.String())
	}
	if anyBig {
		why = append(why, fmt.Sprintf("max_bytes=%d", maxBytes))
	}
	return victims, strings.Join(why, " "), nil
}
