package approval

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/audit"
)

// The records go through the real journal, which verifies afterwards.
func TestRealJournal(t *testing.T) {
	dir := t.TempDir()
	j, err := audit.Open(dir, audit.Options{KeyDir: t.TempDir(), Durability: audit.Strict})
	if err != nil {
		t.Fatal(err)
	}
	b := New(Options{Journal: j})
	events := b.Watch(context.Background())
	next := func() Request {
		t.Helper()
		select {
		case r := <-events:
			return r
		case <-time.After(waitLimit):
			t.Fatal("no watch event")
		}
		return Request{}
	}
	hold := func(ctx context.Context, a Ask) <-chan Outcome {
		out := make(chan Outcome, 1)
		go func() { out <- b.Hold(ctx, a) }()
		return out
	}

	a := ask("s1")
	a.Scope = ScopeSession
	out := hold(context.Background(), a)
	r := next()
	if err := b.Approve(r.ID, alice, "OPS-1", "", 0); err != nil {
		t.Fatal(err)
	}
	if o := outcome(t, out); !o.Approved {
		t.Fatalf("outcome %+v", o)
	}
	next()
	if o := b.Hold(context.Background(), ask("s1")); !o.Approved || o.GrantOf != r.ID {
		t.Fatalf("standing outcome %+v", o)
	}
	out = hold(context.Background(), ask("s2"))
	r2 := next()
	b.Deny(r2.ID, alice, "no")
	outcome(t, out)
	next()
	short := ask("s3")
	short.Timeout = 20 * time.Millisecond
	outcome(t, hold(context.Background(), short))
	next()
	next()
	out = hold(context.Background(), ask("s4"))
	next()
	b.Close()
	if o := outcome(t, out); o.State != StateAbandoned {
		t.Errorf("outcome %+v", o)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	rep, err := audit.Verify(dir, j.PublicKey())
	if err != nil || !rep.OK() {
		t.Fatalf("Verify: %+v, %v", rep, err)
	}
	rd, err := audit.NewReader(dir, audit.Filter{Types: []string{audit.TypeApprovalRequested, audit.TypeApprovalGranted,
		audit.TypeApprovalDenied, audit.TypeApprovalExpired, audit.TypeApprovalAbandoned}})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var types []string
	var first map[string]any
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, rec.Type)
		if first == nil {
			json.Unmarshal(rec.Data, &first)
		}
	}
	want := []string{
		audit.TypeApprovalRequested, audit.TypeApprovalGranted, // session grant
		audit.TypeApprovalGranted, // standing
		audit.TypeApprovalRequested, audit.TypeApprovalDenied,
		audit.TypeApprovalRequested, audit.TypeApprovalExpired,
		audit.TypeApprovalRequested, audit.TypeApprovalAbandoned,
	}
	if !slices.Equal(types, want) {
		t.Errorf("journal types\n got %v\nwant %v", types, want)
	}
	if first["request"] != r.ID || first["identity"] != "billing-export" || first["sql"] != ask("").SQL || first["scope"] != "session" {
		t.Errorf("approval_requested data %v", first)
	}
}
