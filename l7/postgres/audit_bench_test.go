package postgres

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
)

// BenchmarkJournalStatement is the journal's work for one simple-protocol
// statement of pgbench -S: its decision record, and its result inserted
// into that record while the journal queues it, in batch mode, with an
// allow-everything decider. The flusher's work (the line, the hash, the
// write) runs beside it.
func BenchmarkJournalStatement(b *testing.B) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	j, err := audit.Open(b.TempDir(), audit.Options{PrivateKey: priv})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	s := testSession()
	dec := journalingDecider{journal: j, next: DeciderFunc(func(context.Context, *l7.Session, Request) Decision {
		return Decision{Allow: true, PolicyVersion: "sha256:4f9a1c0d2e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"}
	})}
	rec := auditRecorder{journal: j}
	req := Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"}
	b.ReportAllocs()
	for b.Loop() {
		d := dec.Decide(b.Context(), s, req)
		rec.StatementDone(s, Statement{Protocol: ProtocolSimple, SQL: req.SQL, Decision: d, Duration: 83 * time.Microsecond, Commands: []string{"SELECT 1"}, Rows: 1})
	}
}
