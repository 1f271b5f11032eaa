// Package audit is tollgate's tamper-evident journal: an append-only,
// hash-chained, ed25519-checkpointed log of sessions, statements and
// decisions that an auditor verifies offline with only the public key.
//
// # Files
//
// A journal is a directory of segment files, seg-<first seq, 20 digits>.jsonl,
// one record per line. The active (last) segment is appended to; a new one
// starts when the active one would exceed Options.SegmentBytes or is older
// than Options.SegmentAge. The signing key lives elsewhere (Options.KeyDir:
// audit.key, PKCS #8 PEM, mode 0600; audit.pub, PKIX PEM), so the journal
// directory can be handed over as it is.
//
// # Records
//
// A record line is canonical JSON with exactly these keys, in this order:
//
//	{"data":{...},"prev":"<hex sha256>","seq":42,"time":"2025-01-02T03:04:05.123456789Z","type":"statement"}
//
// Canonical JSON here: no whitespace outside strings; object keys sorted by
// their UTF-8 bytes, never repeated; strings valid UTF-8 escaping only `"`,
// `\`, control characters (\n, \r, \t, else \u00xx) and U+2028/U+2029;
// integers digit for digit; other numbers as Go's encoding/json writes a
// float64; time in UTC, RFC 3339 with trailing zeros of the fraction
// dropped. A record's hash is the SHA-256 of its line without the newline;
// prev is the previous record's hash, 64 zeros for record 1. seq counts from
// 1 with no gaps, across segments.
//
//	seg-00000000000000000001.jsonl           seg-00000000000000000004.jsonl
//	┌────────────────────────────────┐       ┌────────────────────────────────┐
//	│ 1 statement   prev=000…0       │       │ 4 checkpoint  prev=H(3)        │
//	│ 2 statement   prev=H(1)        │  ───► │   data: seq 3, hash H(3), sig  │
//	│ 3 session_end prev=H(2)        │       │ 5 statement   prev=H(4)        │
//	└────────────────────────────────┘       └────────────────────────────────┘
//
// # Checkpoints and retention
//
// A checkpoint record (every Options.CheckpointEvery when records were
// appended, every Options.CheckpointRecords records, and at Close) carries
// {seq, hash, signature, key_id}: the seq and hash of the record before it
// and an ed25519 signature over CheckpointMessage(seq, hash, the checkpoint
// record's own time). Prune removes the oldest segments after appending a
// retention record that names them and signs RetentionMessage(first seq,
// last seq, last hash); Verify then starts the chain from that last hash.
//
// # Durability and failure
//
// Append gives a record its seq and time and queues its data; the flusher
// makes the lines, chaining each to the one before it, and signs the
// checkpoints, so appends contend only for a copy. Until the flusher takes
// it, a queued record may take a field in (InsertCanonical): a statement's
// outcome, when it ends that soon. Batch durability writes and syncs the
// queue every Options.FlushInterval (group commit); Strict returns from
// Append only once the record is synced, with concurrent appends sharing a
// sync. A
// failed write is cut back to the last synced byte and the journal refuses
// appends (ErrUnavailable) until a retry succeeds; what was accepted is
// kept and written then, followed by a recovery record saying how many
// appends were refused. At Open, an incomplete last line (a crash during a
// write) is dropped and a recovery record quotes it.
//
// # Reading
//
// A Reader iterates the records on disk from a seq, filtered by time and
// type (tollctl audit export, session replay); it reads a live journal too,
// returning io.EOF when caught up. Journal.Follow streams records as they
// are written (tollctl sessions watch).
//
// # Verification
//
// Verify reads every segment in order and names the first bad record:
// changed, inserted, missing, reordered, truncated, a bad signature, or a
// chain rewritten since the last checkpoint. Records after the last
// checkpoint are reported as unanchored. What the files alone cannot show
// is the removal of the newest records: compare Report.LastSeq with an
// earlier report, an export or the agent's own count.
package audit
