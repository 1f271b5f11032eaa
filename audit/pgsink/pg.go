package pgsink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// stagingTable is the temporary table each batch is copied into; it lives
// in the connection's pg_temp schema and empties at each commit.
const stagingTable = "tollgate_audit_staging"

var stagingColumns = []string{"seq", "time", "type", "prev", "hash", "data", "line"}

// pgWriter holds the sink's connection. Only Run's goroutine uses it.
type pgWriter struct {
	cfg   *pgx.ConnConfig
	table pgx.Identifier
	conn  *pgx.Conn
}

// connect returns the connection, dialing it and preparing the tables
// when there is none.
func (w *pgWriter) connect(ctx context.Context) (*pgx.Conn, error) {
	if w.conn != nil && !w.conn.IsClosed() {
		return w.conn, nil
	}
	w.drop()
	conn, err := pgx.ConnectConfig(ctx, w.cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := w.setup(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	w.conn = conn
	return conn, nil
}

// drop closes the connection, if any.
func (w *pgWriter) drop() {
	if w.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	w.conn.Close(ctx)
	w.conn = nil
}

// setup creates the table when it is missing, and the staging table.
func (w *pgWriter) setup(ctx context.Context, conn *pgx.Conn) error {
	var enc string
	if err := conn.QueryRow(ctx, `SHOW server_encoding`).Scan(&enc); err != nil {
		return fmt.Errorf("server encoding: %w", err)
	}
	if enc != "UTF8" {
		return fmt.Errorf("database encoding is %s: the audit table needs a UTF8 database", enc)
	}
	t := w.table.Sanitize()
	// Look first: CREATE TABLE IF NOT EXISTS needs CREATE on the schema
	// even when the table exists.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t).Scan(&exists); err != nil {
		return fmt.Errorf("look up table %s: %w", t, err)
	}
	if !exists {
		_, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t+` (
	journal_id text NOT NULL,
	seq bigint NOT NULL CHECK (seq > 0),
	time timestamptz NOT NULL,
	type text NOT NULL,
	prev text NOT NULL,
	hash text NOT NULL,
	data jsonb,
	line text NOT NULL,
	PRIMARY KEY (journal_id, seq)
)`)
		// Agents racing to create it: one wins, the others see a
		// duplicate table or type.
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42P07" || pgErr.Code == "23505")) {
			return fmt.Errorf("create table %s: %w", t, err)
		}
	}
	_, err := conn.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS `+stagingTable+` (
	seq bigint NOT NULL,
	time timestamptz NOT NULL,
	type text NOT NULL,
	prev text NOT NULL,
	hash text NOT NULL,
	data text,
	line text NOT NULL
) ON COMMIT DELETE ROWS`)
	if err != nil {
		return fmt.Errorf("create staging table: %w", err)
	}
	return nil
}

// resume returns the last seq and hash the table holds for journal id
// (0 and "" when none).
func (w *pgWriter) resume(ctx context.Context, id string) (uint64, string, error) {
	conn, err := w.connect(ctx)
	if err != nil {
		return 0, "", err
	}
	var seq int64
	var hash string
	err = conn.QueryRow(ctx, `SELECT seq, hash FROM `+w.table.Sanitize()+
		` WHERE journal_id = $1 ORDER BY seq DESC LIMIT 1`, id).Scan(&seq, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("find last shipped record: %w", err)
	}
	return uint64(seq), hash, nil
}

// write copies rows into the staging table and inserts them into the
// table in one transaction, skipping rows already there. A row already
// there with another hash is ErrDiverged, and nothing is written.
// It returns how many rows it sent, whether or not they were committed.
func (w *pgWriter) write(ctx context.Context, id string, rows []row) (int, error) {
	conn, err := w.connect(ctx)
	if err != nil {
		return 0, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := &rows[i]
		return []any{int64(r.seq), r.time, r.typ, r.prev, r.hash, r.data, r.line}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"pg_temp", stagingTable}, stagingColumns, src); err != nil {
		return 0, fmt.Errorf("copy %d records from seq %d: %w", len(rows), rows[0].seq, err)
	}
	// The main query sees the table as it was before the insert (a
	// data-modifying WITH runs whether or not it is referenced), so the
	// join finds exactly the rows that were there already.
	t := w.table.Sanitize()
	var differs *int64
	err = tx.QueryRow(ctx, `WITH ins AS (
	INSERT INTO `+t+` (journal_id, seq, time, type, prev, hash, data, line)
	SELECT $1::text, seq, time, type, prev, hash, data::jsonb, line FROM pg_temp.`+stagingTable+` ORDER BY seq
	ON CONFLICT (journal_id, seq) DO NOTHING
)
SELECT min(s.seq) FROM pg_temp.`+stagingTable+` s JOIN `+t+` t ON t.journal_id = $1::text AND t.seq = s.seq WHERE t.hash <> s.hash`,
		id).Scan(&differs)
	if err != nil {
		return len(rows), fmt.Errorf("insert %d records from seq %d: %w", len(rows), rows[0].seq, err)
	}
	if differs != nil {
		return len(rows), fmt.Errorf("%w: journal id %q: seq %d is in the table with another hash", ErrDiverged, id, *differs)
	}
	if err := tx.Commit(ctx); err != nil {
		return len(rows), fmt.Errorf("commit %d records from seq %d: %w", len(rows), rows[0].seq, err)
	}
	return len(rows), nil
}
