package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests; reaching it is a failure.
const waitLimit = 10 * time.Second

// memJournal collects records, and fails while failing is set.
type memJournal struct {
	mu      sync.Mutex
	recs    []memRecord
	failing error
}

type memRecord struct {
	Type string
	Data map[string]any
}

func (j *memJournal) Append(_ context.Context, typ string, data any) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failing != nil {
		return 0, j.failing
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, err
	}
	j.recs = append(j.recs, memRecord{typ, m})
	return uint64(len(j.recs)), nil
}

func (j *memJournal) records() []memRecord {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.recs)
}

func (j *memJournal) types() []string {
	var out []string
	for _, r := range j.records() {
		out = append(out, r.Type)
	}
	return out
}

func (j *memJournal) fail(err error) {
	j.mu.Lock()
	j.failing = err
	j.mu.Unlock()
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a broker with a journal, a clock and a watcher.
type env struct {
	t       *testing.T
	b       *Broker
	j       *memJournal
	clk     *clock
	events  <-chan Request
	cancelW context.CancelFunc
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, j: &memJournal{}, clk: newClock()}
	e.b = New(Options{Journal: e.j, Now: e.clk.Now})
	var ctx context.Context
	ctx, e.cancelW = context.WithCancel(context.Background())
	e.events = e.b.Watch(ctx)
	t.Cleanup(func() {
		e.cancelW()
		e.b.Close()
	})
	return e
}

// hold starts a Hold and returns where its outcome arrives.
func (e *env) hold(ctx context.Context, a Ask) <-chan Outcome {
	out := make(chan Outcome, 1)
	go func() { out <- e.b.Hold(ctx, a) }()
	return out
}

// next returns the next watch event.
func (e *env) next() Request {
	e.t.Helper()
	select {
	case r, ok := <-e.events:
		if !ok {
			e.t.Fatal("watch channel closed")
		}
		return r
	case <-time.After(waitLimit):
		e.t.Fatal("no watch event")
	}
	return Request{}
}

// pending starts a Hold and returns its request once it is visible.
func (e *env) pending(ctx context.Context, a Ask) (Request, <-chan Outcome) {
	e.t.Helper()
	out := e.hold(ctx, a)
	r := e.next()
	if r.State != StatePending {
		e.t.Fatalf("first event %+v; want a pending request", r)
	}
	return r, out
}

func outcome(t *testing.T, ch <-chan Outcome) Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(waitLimit):
		t.Fatal("Hold did not return")
	}
	return Outcome{}
}

// stillHeld asserts that Hold has not returned: the next event is a new
// pending request.
func (e *env) stillHeld(ch <-chan Outcome) Request {
	e.t.Helper()
	r := e.next()
	select {
	case o := <-ch:
		e.t.Fatalf("Hold returned %+v; want it held", o)
	default:
	}
	if r.State != StatePending {
		e.t.Fatalf("event %+v; want a new pending request", r)
	}
	return r
}

var (
	alice = Approver{Name: "alice", Groups: []string{"dba", "staff"}, Via: ViaOIDC}
	bob   = Approver{Name: "bob", Groups: []string{"dev"}, Via: ViaOIDC}
	root  = Approver{Name: "root", Groups: []string{"root"}, UID: 0, HasUID: true, Via: ViaUnix}
)

func ask(session string) Ask {
	return Ask{SessionID: session, Identity: "billing-export", UID: 1001, User: "billing", PID: 4242,
		Origin: "/system.slice/billing-export.service", Target: "orders-db", SQL: "DELETE FROM invoices WHERE id = 7",
		Reason: "deletes need a DBA", Approvers: []string{"group:dba"}}
}

func TestApprove(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	if !strings.HasPrefix(r.ID, "ap-") || len(r.ID) != 11 {
		t.Errorf("id %q; want ap- and 8 hex digits", r.ID)
	}
	if r.Scope != ScopeStatement || r.Identity != "billing-export" || r.Session != "s1" || r.SQL != ask("").SQL ||
		!r.Expires.Equal(e.clk.Now().Add(DefaultTimeout)) {
		t.Errorf("request %+v", r)
	}
	if got, ok := e.b.Get(r.ID); !ok || got.State != StatePending {
		t.Errorf("Get = %+v, %v", got, ok)
	}
	if err := e.b.Approve(r.ID, alice, "ticket OPS-12", "", 0); err != nil {
		t.Fatal(err)
	}
	o := outcome(t, out)
	want := Outcome{Approved: true, State: StateApproved, RequestID: r.ID, By: "alice", Reason: "ticket OPS-12", Grant: ScopeStatement}
	if o != want {
		t.Errorf("outcome %+v; want %+v", o, want)
	}
	if ev := e.next(); ev.ID != r.ID || ev.State != StateApproved || ev.DecidedBy != "alice" || ev.Grant != ScopeStatement {
		t.Errorf("watch event %+v; want the approval", ev)
	}
	if err := e.b.Approve(r.ID, alice, "", "", 0); !errors.Is(err, ErrNotPending) {
		t.Errorf("second Approve: %v; want ErrNotPending", err)
	}
	if err := e.b.Deny(r.ID, alice, "no"); !errors.Is(err, ErrNotPending) {
		t.Errorf("Deny after Approve: %v; want ErrNotPending", err)
	}
	if err := e.b.Approve("ap-00000000", alice, "", "", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Approve(unknown): %v; want ErrNotFound", err)
	}

	recs := e.j.records()
	if got, want := e.j.types(), []string{TypeRequested, TypeGranted}; !slices.Equal(got, want) {
		t.Fatalf("journal %v; want %v", got, want)
	}
	for _, rec := range recs {
		for k, v := range map[string]any{"request": r.ID, "session": "s1", "identity": "billing-export", "uid": 1001.0,
			"target": "orders-db", "sql": r.SQL, "reason": "deletes need a DBA", "scope": "statement",
			"expires": r.Expires.Format(time.RFC3339Nano)} {
			if rec.Data[k] != v {
				t.Errorf("%s: %s = %v; want %v", rec.Type, k, rec.Data[k], v)
			}
		}
		if fmt.Sprint(rec.Data["approvers"]) != "[group:dba]" {
			t.Errorf("%s: approvers = %v", rec.Type, rec.Data["approvers"])
		}
	}
	g := recs[1].Data
	if g["by"] != "alice" || g["via"] != "oidc" || g["decision_reason"] != "ticket OPS-12" || g["grant"] != "statement" || g["standing"] != nil {
		t.Errorf("approval_granted = %v", g)
	}
}

func TestDeny(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	if err := e.b.Deny(r.ID, alice, "  "); !errors.Is(err, ErrReasonRequired) {
		t.Errorf("Deny without a reason: %v; want ErrReasonRequired", err)
	}
	if err := e.b.Deny(r.ID, alice, "not during the freeze"); err != nil {
		t.Fatal(err)
	}
	o := outcome(t, out)
	if o.Approved || o.State != StateDenied || o.Reason != "not during the freeze" || o.By != "alice" || o.RequestID != r.ID {
		t.Errorf("outcome %+v", o)
	}
	recs := e.j.records()
	if len(recs) != 2 || recs[1].Type != TypeDenied || recs[1].Data["by"] != "alice" || recs[1].Data["decision_reason"] != "not during the freeze" {
		t.Errorf("journal %+v", recs)
	}
	if got, _ := e.b.Get(r.ID); got.State != StateDenied || got.DecisionReason != "not during the freeze" || got.DecidedAt.IsZero() {
		t.Errorf("Get after deny = %+v", got)
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t)
	a := ask("s1")
	a.Timeout = 50 * time.Millisecond
	r, out := e.pending(context.Background(), a)
	o := outcome(t, out)
	if o.Approved || o.State != StateExpired || o.Reason != "approval timed out after 50ms" || o.RequestID != r.ID {
		t.Errorf("outcome %+v", o)
	}
	if err := e.b.Approve(r.ID, alice, "", "", 0); !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Approve after expiry: %v; want ErrNotPending saying expired", err)
	}
	if got, want := e.j.types(), []string{TypeRequested, TypeExpired}; !slices.Equal(got, want) {
		t.Errorf("journal %v; want %v", got, want)
	}
	if got := e.j.records()[1].Data["decision_reason"]; got != "approval timed out after 50ms" {
		t.Errorf("expired record reason %v", got)
	}
}

func TestDefaultTimeoutOption(t *testing.T) {
	b := New(Options{DefaultTimeout: 30 * time.Millisecond})
	defer b.Close()
	if o := b.Hold(context.Background(), ask("s")); o.State != StateExpired || o.Reason != "approval timed out after 30ms" {
		t.Errorf("outcome %+v", o)
	}
}

func TestScopeStatement(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	if err := e.b.Approve(r.ID, alice, "", ScopeStatement, 0); err != nil {
		t.Fatal(err)
	}
	outcome(t, out)
	e.next() // the approval
	// The same statement again is held again.
	out2 := e.hold(context.Background(), ask("s1"))
	r2 := e.stillHeld(out2)
	if r2.ID == r.ID {
		t.Error("the second hold reused the request id")
	}
	e.b.Deny(r2.ID, alice, "once was enough")
	if o := outcome(t, out2); o.Approved {
		t.Errorf("second outcome %+v; want denied", o)
	}
}

func TestScopeSession(t *testing.T) {
	e := newEnv(t)
	a := ask("s1")
	a.Scope = ScopeSession
	r, out := e.pending(context.Background(), a)
	if r.Scope != ScopeSession {
		t.Errorf("scope %q; want session", r.Scope)
	}
	if err := e.b.Approve(r.ID, alice, "migration window", "", 0); err != nil {
		t.Fatal(err)
	}
	if o := outcome(t, out); !o.Approved || o.Grant != ScopeSession {
		t.Errorf("outcome %+v", o)
	}
	e.next()

	// Later asks of s1 pass at once, with no request.
	later := ask("s1")
	later.SQL = "DELETE FROM invoices WHERE id = 8"
	o := e.b.Hold(context.Background(), later)
	if !o.Approved || o.RequestID != "" || o.GrantOf != r.ID || o.Grant != ScopeSession || o.By != "alice" {
		t.Errorf("standing outcome %+v", o)
	}
	recs := e.j.records()
	last := recs[len(recs)-1]
	if last.Type != TypeGranted || last.Data["standing"] != true || last.Data["grant_of"] != r.ID || last.Data["request"] != nil ||
		last.Data["sql"] != later.SQL || last.Data["session"] != "s1" || last.Data["by"] != "alice" {
		t.Errorf("standing record %+v", last)
	}

	// Another session is held.
	out2 := e.hold(context.Background(), ask("s2"))
	r2 := e.stillHeld(out2)

	// The session ends: its grant goes.
	e.b.EndSession("s1")
	out3 := e.hold(context.Background(), ask("s1"))
	r3 := e.stillHeld(out3)
	for _, id := range []string{r2.ID, r3.ID} {
		e.b.Deny(id, alice, "test over")
	}
	outcome(t, out2)
	outcome(t, out3)
}

func TestScopeSessionNeedsApproverMatch(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	if err := e.b.Approve(r.ID, alice, "", ScopeSession, 0); err != nil {
		t.Fatal(err)
	}
	outcome(t, out)
	e.next()
	// A later statement of the session that only security may approve is
	// not covered by alice's grant.
	a := ask("s1")
	a.Approvers = []string{"group:security"}
	out2 := e.hold(context.Background(), a)
	r2 := e.stillHeld(out2)
	e.b.Approve(r2.ID, Approver{Name: "carol", Groups: []string{"security"}, Via: ViaOIDC}, "", "", 0)
	if o := outcome(t, out2); !o.Approved || o.By != "carol" {
		t.Errorf("outcome %+v", o)
	}
}

func TestScopeWindow(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	if err := e.b.Approve(r.ID, alice, "batch run", "", time.Hour); err != nil {
		t.Fatal(err)
	}
	o := outcome(t, out)
	if !o.Approved || o.Grant != ScopeWindow {
		t.Errorf("outcome %+v", o)
	}
	ev := e.next()
	if want := e.clk.Now().Add(time.Hour); ev.Grant != ScopeWindow || !ev.GrantUntil.Equal(want) {
		t.Errorf("event %+v; want a window until %s", ev, want)
	}
	if rec := e.j.records()[1]; rec.Data["grant"] != "window" || rec.Data["until"] != ev.GrantUntil.Format(time.RFC3339Nano) {
		t.Errorf("granted record %+v", rec)
	}

	// Same identity and target, another session: passes.
	e.clk.Add(59 * time.Minute)
	if o := e.b.Hold(context.Background(), ask("s9")); !o.Approved || o.GrantOf != r.ID || o.Grant != ScopeWindow {
		t.Errorf("within the window: %+v", o)
	}
	// Another target: held.
	other := ask("s9")
	other.Target = "payments-db"
	out2 := e.hold(context.Background(), other)
	r2 := e.stillHeld(out2)
	e.b.Deny(r2.ID, alice, "other target")
	outcome(t, out2)
	e.next()
	// Once the window ends: held again.
	e.clk.Add(time.Minute)
	out3 := e.hold(context.Background(), ask("s9"))
	r3 := e.stillHeld(out3)
	e.b.Deny(r3.ID, alice, "window over")
	if o := outcome(t, out3); o.Approved {
		t.Errorf("after the window: %+v", o)
	}
}

func TestWindowApprovesWaitingRequests(t *testing.T) {
	e := newEnv(t)
	r1, out1 := e.pending(context.Background(), ask("s1"))
	r2, out2 := e.pending(context.Background(), ask("s2"))
	other := ask("s3")
	other.Target = "payments-db"
	r3, out3 := e.pending(context.Background(), other)
	if err := e.b.Approve(r1.ID, alice, "nightly batch", "window", 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	outcome(t, out1)
	o2 := outcome(t, out2)
	if !o2.Approved || o2.RequestID != r2.ID || o2.GrantOf != r1.ID || o2.By != "alice" {
		t.Errorf("covered waiting request: %+v", o2)
	}
	if got, _ := e.b.Get(r3.ID); got.State != StatePending {
		t.Errorf("request on another target: %+v; want still pending", got)
	}
	e.b.Deny(r3.ID, alice, "no")
	outcome(t, out3)
}

func TestApproveScopeErrors(t *testing.T) {
	e := newEnv(t)
	noSession := ask("")
	r, out := e.pending(context.Background(), noSession)
	for _, tc := range []struct {
		scope  string
		window time.Duration
	}{{"window", 0}, {"session", 0}, {"session", time.Hour}, {"forever", 0}, {"", -time.Minute}} {
		if err := e.b.Approve(r.ID, alice, "", tc.scope, tc.window); !errors.Is(err, ErrBadScope) {
			t.Errorf("Approve(scope %q, window %s): %v; want ErrBadScope", tc.scope, tc.window, err)
		}
	}
	e.b.Approve(r.ID, alice, "", "", 0)
	outcome(t, out)
	a := ask("s1")
	a.Scope = "window"
	if o := e.b.Hold(context.Background(), a); o.Approved || !strings.Contains(o.Reason, "window") {
		t.Errorf("a policy scope of window: %+v; want refused", o)
	}
}

func TestSelfApproval(t *testing.T) {
	e := newEnv(t)
	a := ask("s1")
	a.UID, a.User, a.Approvers = 0, "root", nil
	r, out := e.pending(context.Background(), a)
	if err := e.b.Approve(r.ID, root, "", "", 0); !errors.Is(err, ErrSelfApproval) {
		t.Errorf("root approving root's statement: %v; want ErrSelfApproval", err)
	}
	if err := e.b.Deny(r.ID, root, "x"); !errors.Is(err, ErrSelfApproval) {
		t.Errorf("root denying root's statement: %v; want ErrSelfApproval", err)
	}
	oidcRoot := Approver{Name: "root", Via: ViaOIDC}
	if err := e.b.Approve(r.ID, oidcRoot, "", "", 0); !errors.Is(err, ErrSelfApproval) {
		t.Errorf("an OIDC approver named like the sender: %v; want ErrSelfApproval", err)
	}
	if err := e.b.Approve(r.ID, bob, "", "", 0); err != nil {
		t.Errorf("bob: %v", err)
	}
	if o := outcome(t, out); !o.Approved {
		t.Errorf("outcome %+v", o)
	}
	// The refusals journaled nothing.
	if got, want := e.j.types(), []string{TypeRequested, TypeGranted}; !slices.Equal(got, want) {
		t.Errorf("journal %v; want %v", got, want)
	}
}

func TestApproversMatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		approvers []string
		who       Approver
		want      error
	}{
		{"user matches", []string{"user:alice"}, alice, nil},
		{"user differs", []string{"user:alice"}, bob, ErrNotAllowed},
		{"group matches", []string{"group:dev"}, bob, nil},
		{"group differs", []string{"group:dba"}, bob, ErrNotAllowed},
		{"one of several", []string{"user:carol", "group:staff"}, alice, nil},
		{"none listed: anyone", nil, bob, nil},
		{"a group name is not a user name", []string{"user:dba"}, alice, ErrNotAllowed},
		{"no name", nil, Approver{Via: ViaOIDC}, ErrNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := ask("s1")
			a.Approvers = tc.approvers
			r, out := e.pending(context.Background(), a)
			err := e.b.Approve(r.ID, tc.who, "", "", 0)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Approve: %v; want %v", err, tc.want)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.who.Name) {
					t.Errorf("error %q does not name the approver", err)
				}
				e.b.Close()
			}
			if o := outcome(t, out); o.Approved != (tc.want == nil) {
				t.Errorf("outcome %+v", o)
			}
		})
	}
}

func TestCloseAbandons(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	e.b.Close()
	o := outcome(t, out)
	if o.Approved || o.State != StateAbandoned || o.Reason != ReasonShuttingDown || o.RequestID != r.ID {
		t.Errorf("outcome %+v", o)
	}
	if o := e.b.Hold(context.Background(), ask("s1")); o.Approved || o.State != StateAbandoned || o.Reason != ReasonShuttingDown {
		t.Errorf("Hold after Close: %+v", o)
	}
	if got, want := e.j.types(), []string{TypeRequested, TypeAbandoned}; !slices.Equal(got, want) {
		t.Errorf("journal %v; want %v", got, want)
	}
	if got := e.j.records()[1].Data["decision_reason"]; got != ReasonShuttingDown {
		t.Errorf("abandoned record reason %v", got)
	}
	if err := e.b.Approve(r.ID, alice, "", "", 0); !errors.Is(err, ErrNotPending) {
		t.Errorf("Approve after Close: %v", err)
	}
	// The watch ends after the abandonment.
	if ev := e.next(); ev.State != StateAbandoned {
		t.Errorf("event %+v", ev)
	}
	if _, ok := <-e.events; ok {
		t.Error("watch channel still open after Close")
	}
	if _, ok := <-e.b.Watch(context.Background()); ok {
		t.Error("Watch after Close: channel open")
	}
	e.b.Close() // twice is fine
}

func TestCancelAbandons(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	r, out := e.pending(ctx, ask("s1"))
	cancel(errors.New("client disconnected"))
	o := outcome(t, out)
	if o.Approved || o.State != StateAbandoned || !strings.Contains(o.Reason, "client disconnected") {
		t.Errorf("outcome %+v", o)
	}
	recs := e.j.records()
	if len(recs) != 2 || recs[1].Type != TypeAbandoned || recs[1].Data["request"] != r.ID {
		t.Errorf("journal %+v", recs)
	}
}

func TestJournalFailure(t *testing.T) {
	e := newEnv(t)
	e.j.fail(errors.New("disk full"))
	o := e.b.Hold(context.Background(), ask("s1"))
	if o.Approved || o.State != StateDenied || !strings.Contains(o.Reason, "journal") || !strings.Contains(o.Reason, "disk full") {
		t.Errorf("outcome %+v", o)
	}
	if l := e.b.List(); len(l) != 0 {
		t.Errorf("List = %+v; want nothing published", l)
	}

	// A decision that cannot be journaled is not made.
	e.j.fail(nil)
	r, out := e.pending(context.Background(), ask("s1"))
	e.j.fail(errors.New("disk full"))
	if err := e.b.Approve(r.ID, alice, "", ScopeSession, 0); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Approve with a failing journal: %v", err)
	}
	if got, _ := e.b.Get(r.ID); got.State != StatePending {
		t.Errorf("request %+v; want still pending", got)
	}
	e.j.fail(nil)
	if err := e.b.Approve(r.ID, alice, "", ScopeSession, 0); err != nil {
		t.Fatal(err)
	}
	outcome(t, out)
	// A standing grant that cannot be journaled does not approve.
	e.j.fail(errors.New("disk full"))
	if o := e.b.Hold(context.Background(), ask("s1")); o.Approved || o.State != StateDenied {
		t.Errorf("standing grant with a failing journal: %+v", o)
	}
}

func TestListOrder(t *testing.T) {
	e := newEnv(t)
	r1, out1 := e.pending(context.Background(), ask("s1"))
	e.clk.Add(time.Second)
	r2, out2 := e.pending(context.Background(), ask("s2"))
	e.clk.Add(time.Second)
	r3, out3 := e.pending(context.Background(), ask("s3"))
	e.b.Deny(r2.ID, alice, "no")
	outcome(t, out2)
	var got []string
	for _, r := range e.b.List() {
		got = append(got, r.ID+" "+string(r.State))
	}
	want := []string{r1.ID + " pending", r3.ID + " pending", r2.ID + " denied"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %v; want %v", got, want)
	}
	e.b.Deny(r1.ID, alice, "no")
	e.b.Deny(r3.ID, alice, "no")
	outcome(t, out1)
	outcome(t, out3)
}

func TestDecidedKept(t *testing.T) {
	b := New(Options{DefaultTimeout: time.Millisecond})
	defer b.Close()
	for range maxDecided + 5 {
		b.Hold(context.Background(), ask("s"))
	}
	if got := len(b.List()); got != maxDecided {
		t.Errorf("List holds %d decided; want %d", got, maxDecided)
	}
}

func TestWatchOverflowCloses(t *testing.T) {
	b := New(Options{DefaultTimeout: time.Millisecond})
	defer b.Close()
	ch := b.Watch(context.Background())
	for range watchBuffer { // each hold publishes two events
		b.Hold(context.Background(), ask("s"))
	}
	n := 0
	for range ch {
		n++
	}
	if n != watchBuffer {
		t.Errorf("read %d events before the close; want %d", n, watchBuffer)
	}
}

func TestWatchEndsWithContext(t *testing.T) {
	b := New(Options{})
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch := b.Watch(ctx)
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("event on an idle watch")
		}
	case <-time.After(waitLimit):
		t.Error("watch channel not closed after its context ended")
	}
}

func TestNotifier(t *testing.T) {
	n := &memNotifier{ch: make(chan Request, 1)}
	b := New(Options{Notifier: n, DefaultTimeout: time.Millisecond})
	defer b.Close()
	b.Hold(context.Background(), ask("s1"))
	select {
	case r := <-n.ch:
		if r.State != StatePending || r.SQL != ask("").SQL {
			t.Errorf("notified %+v", r)
		}
	default:
		t.Error("not notified")
	}
}

type memNotifier struct{ ch chan Request }

func (n *memNotifier) Notify(r Request) { n.ch <- r }

func TestLocalApprover(t *testing.T) {
	a := LocalApprover(0)
	if a.Name != "root" || !a.HasUID || a.UID != 0 || a.Via != ViaUnix || !slices.Contains(a.Groups, "root") {
		t.Errorf("LocalApprover(0) = %+v", a)
	}
	if a := LocalApprover(4000000000); a.Name != "4000000000" || len(a.Groups) != 0 {
		t.Errorf("LocalApprover(unknown uid) = %+v", a)
	}
}

func TestConcurrentDecisions(t *testing.T) {
	e := newEnv(t)
	r, out := e.pending(context.Background(), ask("s1"))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if i%2 == 0 {
				errs <- e.b.Approve(r.ID, alice, "", "", 0)
			} else {
				errs <- e.b.Deny(r.ID, alice, "no")
			}
		})
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, ErrNotPending) {
			t.Errorf("err %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d decisions succeeded; want 1", ok)
	}
	outcome(t, out)
	if n := len(e.j.records()); n != 2 {
		t.Errorf("%d records; want 2", n)
	}
}
