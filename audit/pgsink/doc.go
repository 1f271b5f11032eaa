// Package pgsink ships an audit journal to a PostgreSQL table that a fleet
// of agents shares, idempotently by sequence number.
//
// # Flow
//
//	journal on disk                 Sink.Run                          PostgreSQL
//	seg-…001.jsonl ──Follow(last+1)──► batch (1000 records or 200 ms)
//	seg-…734.jsonl                     │ BEGIN
//	                                   │ COPY ──────────────────────────► pg_temp.tollgate_audit_staging
//	                                   │ INSERT … SELECT … ON CONFLICT ─► tollgate_audit
//	                                   │   (journal_id, seq) DO NOTHING
//	                                   │ COMMIT
//	                                   └─ failed: keep the batch, back off
//	                                      (100 ms doubling to 10 s, jittered),
//	                                      reconnect, write it again
//
// At start Run reads the last (seq, hash) the table holds for its journal
// id and follows the journal from the record after it, which replays what
// is on disk first. The journal is the buffer: while PostgreSQL is down
// nothing more is read, and nothing is lost as long as the journal keeps
// the records (retention must not prune faster than the outage lasts; a
// gap is counted in Status.Missed). A batch written twice (a commit whose
// outcome was lost with the connection) is harmless: rows that exist are
// skipped.
//
// # Table
//
// The table (Options.Table, default tollgate_audit) is created when
// missing:
//
//	journal_id text        which journal (see below)
//	seq        bigint      Record.Seq
//	time       timestamptz Record.Time (PostgreSQL keeps microseconds; line keeps all)
//	type       text        Record.Type
//	prev       text        Record.Prev
//	hash       text        Record.Hash(): SHA-256 of line
//	data       jsonb       Record.Data, NULL if it holds a \u0000 escape (jsonb cannot)
//	line       text        the record's exact canonical line
//	PRIMARY KEY (journal_id, seq)
//
// line is the shipped copy's evidence: Export writes the lines of a
// journal id back into segment files that audit.Verify checks with the
// journal's public key. The other columns are for queries.
//
// # Journal id
//
// Rows are keyed by (journal_id, seq). By default journal_id is the
// journal's key ID, audit.KeyID(j.PublicKey()): each agent generates its
// own signing key, so the id is unique in a fleet, stays the same for the
// life of the journal (across restarts and host renames), and names the
// public key an auditor needs to verify the shipped copy (checkpoint
// records also carry it). Options.JournalID replaces it with a name of
// your choice, such as the host name; it must then be unique per journal
// and never reused for another one. Changing the id later ships the whole
// journal on disk again under the new id.
//
// # Divergence
//
// Every record shipped must chain onto the one before it: its Prev is the
// hash of the previous record as shipped, and a row already in the table
// for the same (journal_id, seq) must have the same hash. When that fails,
// the table and the journal disagree (two journals share an id, a journal
// was recreated with the same key, the table was restored from elsewhere,
// or the journal was altered on disk) and Run stops with ErrDiverged rather
// than mix two histories. Nothing is written past the last record that
// chains.
//
// # Connection
//
// The sink holds one connection and a temporary staging table on it, so
// the DSN must reach a session, not a transaction-pooling proxy. The
// database must be UTF8. The role needs INSERT and SELECT on the table,
// and CREATE on its schema only if the table does not exist yet.
package pgsink
