package pgsink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
)

// exportSegmentBytes starts a new segment file in an export once the
// current one holds this many bytes.
const exportSegmentBytes = 64 << 20

// ExportReport says what Export wrote.
type ExportReport struct {
	// Records is the number of records written, FirstSeq and LastSeq the
	// first and last of them.
	Records           uint64
	FirstSeq, LastSeq uint64
	// Segments is the number of segment files written.
	Segments int
}

// Export writes the records shipped to DefaultTable under journalID back
// into segment files in dir (created, mode 0750; it must hold no segment
// files yet), line for line as they were shipped, so that audit.Verify can
// check the shipped copy with the journal's public key.
func Export(ctx context.Context, dsn, journalID, dir string) (ExportReport, error) {
	return ExportTable(ctx, dsn, DefaultTable, journalID, dir)
}

// ExportTable is Export from another table ("table" or "schema.table").
func ExportTable(ctx context.Context, dsn, table, journalID, dir string) (ExportReport, error) {
	var rep ExportReport
	ident, err := parseTable(table)
	if err != nil {
		return rep, fmt.Errorf("pgsink: export: table: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return rep, fmt.Errorf("pgsink: export: %w", err)
	}
	if segs, err := filepath.Glob(filepath.Join(dir, "seg-*.jsonl")); err != nil || len(segs) > 0 {
		return rep, fmt.Errorf("pgsink: export: %s already holds segment files", dir)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return rep, fmt.Errorf("pgsink: export: connect: %w", err)
	}
	defer conn.Close(context.Background())

	e := exporter{dir: dir}
	err = e.write(ctx, conn, ident, journalID)
	err = errors.Join(err, e.closeSegment())
	if err == nil && e.rep.Records == 0 {
		err = fmt.Errorf("%w for journal id %q in %s", ErrNoRecords, journalID, ident.Sanitize())
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		for _, name := range e.files {
			os.Remove(name)
		}
		return ExportReport{}, fmt.Errorf("pgsink: export: %w", err)
	}
	return e.rep, nil
}

// exporter writes rows into segment files.
type exporter struct {
	dir   string
	files []string // created, for removal on failure
	f     *os.File
	w     *bufio.Writer
	size  int64
	rep   ExportReport
}

func (e *exporter) write(ctx context.Context, conn *pgx.Conn, table pgx.Identifier, id string) error {
	rows, err := conn.Query(ctx, `SELECT seq, line FROM `+table.Sanitize()+` WHERE journal_id = $1 ORDER BY seq`, id)
	if err != nil {
		return err
	}
	defer rows.Close()
	var seq int64
	var line []byte
	for rows.Next() {
		if err := rows.Scan(&seq, &line); err != nil {
			return err
		}
		if e.f == nil || e.size > 0 && e.size+int64(len(line))+1 > exportSegmentBytes {
			if err := e.closeSegment(); err != nil {
				return err
			}
			if err := e.openSegment(uint64(seq)); err != nil {
				return err
			}
		}
		e.w.Write(line)
		if err := e.w.WriteByte('\n'); err != nil {
			return err
		}
		e.size += int64(len(line)) + 1
		if e.rep.Records == 0 {
			e.rep.FirstSeq = uint64(seq)
		}
		e.rep.Records++
		e.rep.LastSeq = uint64(seq)
	}
	return rows.Err()
}

// openSegment creates the segment whose first record is seq, named as the
// journal names it.
func (e *exporter) openSegment(seq uint64) error {
	name := filepath.Join(e.dir, fmt.Sprintf("seg-%020d.jsonl", seq))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	e.files = append(e.files, name)
	e.f, e.w, e.size = f, bufio.NewWriterSize(f, 1<<20), 0
	e.rep.Segments++
	return nil
}

func (e *exporter) closeSegment() error {
	if e.f == nil {
		return nil
	}
	err := e.w.Flush()
	if err == nil {
		err = e.f.Sync()
	}
	err = errors.Join(err, e.f.Close())
	e.f, e.w = nil, nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
