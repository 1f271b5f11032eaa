package postgres

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/policy"
)

// canonical is what the journal makes of v without the hand-written
// encoders: json.Marshal, then canonicalized.
func canonical(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := audit.AppendJSON(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzRecordJSON holds the hand-written encoders of the statement records
// to json.Marshal's output, canonicalized: the journal takes their bytes
// unchecked.
func FuzzRecordJSON(f *testing.F) {
	f.Add("s1", "billing", "orders-db", "statement", "simple", "SELECT 1", "", uint32(0), true, "", "full", "abc", "public.customers", "email", "", "email", false, int64(120), int64(3), "SELECT 3", "", "", uint64(7))
	f.Add("", "", "", "", "", "", "", uint32(42), false, "denied: \"x\" <y>", "", "", "", "", "credit_card", "last4", true, int64(-1), int64(0), "", "42501", "denied\n\xff", uint64(0))
	f.Add("é", "\u2028", "\x00", "k", "function", "select '\xc3'", "stmt", uint32(1<<31), true, "r", "metadata", "v", "", "", "", "", false, int64(1<<40), int64(-5), "INSERT 0 1", "P0001", "", uint64(1<<63))
	f.Fuzz(func(t *testing.T, session, identity, target, kind, protocol, sql, stmt string, fn uint32, allow bool, reason, record, version,
		table, column, classifier, method string, suspended bool, dur, rows int64, command, sqlstate, errText string, seq uint64) {
		rec := StatementRecord{Session: session, Identity: identity, Target: target, Kind: kind, Protocol: protocol, SQL: sql,
			Statement: stmt, FunctionOID: fn, Allow: allow, Reason: reason, Record: record, PolicyVersion: version}
		if method != "" || table != "" {
			rec.Mask = []policy.MaskRule{{Table: table, Column: column, Classifier: classifier, Method: method},
				{Method: method, Params: map[string]any{"salt_ref": sql, "n": 3}}}
		}
		got, _, err := rec.encode(nil, rec.Result)
		if err != nil {
			t.Fatal(err)
		}
		if want := canonical(t, rec); !bytes.Equal(got, want) {
			t.Fatalf("StatementRecord:\n got %s\nwant %s", got, want)
		}
		res := StatementResult{Session: session, Statement: seq, Protocol: protocol, Portal: stmt, DurationUS: dur,
			Rows: rows, SQLState: sqlstate, Error: errText, Suspended: suspended}
		if command != "" {
			res.Commands = []string{command, sql}
		}
		if got, want := res.appendJSON(nil), canonical(t, res); !bytes.Equal(got, want) {
			t.Fatalf("StatementResult:\n got %s\nwant %s", got, want)
		}
		// A statement record holding its result, which leaves out what the
		// record says: encoded with it, or inserted where encode said.
		res.Session, res.Statement, res.Protocol, res.Portal = "", 0, "", ""
		plain, slot, err := rec.encode(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		inserted := append(appendResultField(append([]byte(nil), plain[:slot]...), &res), plain[slot:]...)
		rec.Result = &res
		got, _, err = rec.encode(nil, rec.Result)
		if err != nil {
			t.Fatal(err)
		}
		want := canonical(t, rec)
		if !bytes.Equal(got, want) {
			t.Fatalf("StatementRecord with its result:\n got %s\nwant %s", got, want)
		}
		if !bytes.Equal(inserted, want) {
			t.Fatalf("StatementRecord with its result inserted at %d:\n got %s\nwant %s", slot, inserted, want)
		}
	})
}

// TestStatementRecordsVerify journals decisions and results through a real
// journal and verifies it: the records the engine encodes by hand must
// verify, and hold what json.Marshal would have written. A statement that
// ends while the journal still queues its record (batch) holds its result;
// else (strict, or a flush in between) a statement_result record follows.
func TestStatementRecordsVerify(t *testing.T) {
	for _, mode := range []struct {
		name       string
		durability audit.Durability
		flush      bool // sync the journal between the decision and the result
	}{{"strict", audit.Strict, false}, {"batch", audit.Batch, false}, {"batch flushed", audit.Batch, true}} {
		t.Run(mode.name, func(t *testing.T) {
			testStatementRecords(t, mode.durability, mode.flush)
		})
	}
}

func testStatementRecords(t *testing.T, durability audit.Durability, flush bool) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	j, err := audit.Open(dir, audit.Options{PrivateKey: priv, Durability: durability, FlushInterval: time.Hour, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s := testSession()
	mask := []policy.MaskRule{{Table: "public.customers", Column: "email", Method: "email"}, {Classifier: "credit_card", Method: "hash", Params: map[string]any{"salt_ref": "k1"}}}
	dec := journalingDecider{journal: j, next: DeciderFunc(func(_ context.Context, _ *l7.Session, r Request) Decision {
		return Decision{Allow: !strings.Contains(r.SQL, "deny"), Reason: "no <deny> \"here\"", Mask: mask, PolicyVersion: "v1"}
	})}
	rec := auditRecorder{journal: j}
	merged := durability == audit.Batch && !flush
	var want [][]byte
	for _, sql := range []string{"SELECT 1", "SELECT 'é\u2028\x01\xff' -- deny", "INSERT INTO t VALUES ('a\tb')", ""} {
		req := Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: sql}
		if sql == "" {
			req.Protocol, req.FunctionOID = ProtocolFunction, 1598
		}
		d := dec.Decide(t.Context(), s, req)
		if d.AuditSeq == 0 {
			t.Fatalf("%q: not journaled: %+v", sql, d)
		}
		if flush {
			if err := j.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		st := Statement{Protocol: req.Protocol, SQL: sql, FunctionOID: req.FunctionOID, Decision: d, Duration: 1500 * time.Microsecond, Commands: []string{"SELECT 1"}, Rows: 1}
		if !d.Allow {
			st.SQLState, st.Error, st.Commands, st.Rows = codeInsufficientPrivilege, denialMessage(d.Reason), nil, 0
		}
		rec.StatementDone(s, st)
		stmtRec := StatementRecord{Session: s.ID, Identity: s.Workload.Name, Target: s.Target.Name,
			Kind: KindStatement, Protocol: req.Protocol, SQL: sql, FunctionOID: req.FunctionOID, Allow: d.Allow, Reason: d.Reason, Record: policy.RecordFull,
			PolicyVersion: "v1", Mask: mask}
		res := StatementResult{DurationUS: 1500, Commands: st.Commands, Rows: st.Rows, SQLState: st.SQLState, Error: st.Error}
		if merged {
			stmtRec.Result = &res
			want = append(want, canonical(t, stmtRec))
			continue
		}
		want = append(want, canonical(t, stmtRec))
		res.Session, res.Statement, res.Protocol = s.ID, d.AuditSeq, req.Protocol
		want = append(want, canonical(t, res))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(dir, priv.Public().(ed25519.PublicKey))
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	rd, err := audit.NewReader(dir, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var got [][]byte
	for {
		r, err := rd.Next()
		if err != nil {
			break
		}
		if r.Type == RecordStatement || r.Type == RecordStatementResult {
			got = append(got, r.Data)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d statement records; want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("record %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}
