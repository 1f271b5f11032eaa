package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres"
	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/test/pgtest"
)

// approvalPolicy allows everything; UPDATE needs an approval of the given
// scope and timeout.
type approvalPolicy struct {
	scope   string
	timeout string
}

func (p approvalPolicy) Decide(_ context.Context, in policy.Input) policy.Decision {
	d := policy.Decision{Allow: true, PolicyVersion: "test"}
	for _, c := range in.Request.Commands {
		if c == "UPDATE" {
			d.Reason = "writes need a DBA"
			d.Approval = &policy.Approval{Required: true, Approvers: []string{"group:dba"}, Scope: p.scope, Timeout: p.timeout}
		}
	}
	return d
}

var dba = approval.Approver{Name: "alice", Groups: []string{"dba"}, Via: approval.ViaOIDC}

func approvalProxy(t *testing.T, pol approvalPolicy) (*proxy, *approval.Broker, *pgtest.Server) {
	t.Helper()
	srv := pgtest.Shared(t)
	srv.Exec(t, "CREATE TABLE acct (id int PRIMARY KEY, balance int); INSERT INTO acct VALUES (1, 100), (2, 50); GRANT ALL ON acct TO "+srv.App.Name)
	b := approval.New(approval.Options{DefaultTimeout: time.Minute})
	t.Cleanup(b.Close)
	dec := postgres.PolicyDecider{Policy: pol, Analyzer: sqlinfo.NewAnalyzer(sqlinfo.Limits{}, 100), Approvals: b}
	return startProxy(t, srv, nil, postgres.WithDecider(dec)), b, srv
}

// pending waits for the next pending request.
func pending(t *testing.T, b *approval.Broker) approval.Request {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		for _, r := range b.List() {
			if r.State == approval.StatePending {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no request became pending")
	return approval.Request{}
}

func balance(t *testing.T, c *pgx.Conn, id int) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), "SELECT balance FROM acct WHERE id = $1", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestApprovalApprove(t *testing.T) {
	checkLeaks(t)
	p, b, _ := approvalProxy(t, approvalPolicy{})
	delta := loopDelta(t)
	c := p.connect(t)
	done := make(chan error, 1)
	go func() {
		_, err := p.connect(t).Exec(context.Background(), "UPDATE acct SET balance = balance + 1 WHERE id = 1")
		done <- err
	}()
	r := pending(t, b)
	if r.SQL != "UPDATE acct SET balance = balance + 1 WHERE id = 1" || r.Target != "db" || r.Reason != "writes need a DBA" {
		t.Errorf("request: %+v", r)
	}
	select {
	case err := <-done:
		t.Fatalf("the statement ran before approval: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if balance(t, c, 1) != 100 {
		t.Fatal("the held statement reached the server")
	}
	if err := b.Approve(r.ID, approval.Approver{Name: "mallory", Via: approval.ViaOIDC}, "", "", 0); !errors.Is(err, approval.ErrNotAllowed) {
		t.Errorf("approve by a non-DBA: %v", err)
	}
	if err := b.Approve(r.ID, dba, "looks fine", "", 0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("approved statement: %v", err)
	}
	if balance(t, c, 1) != 101 {
		t.Error("the approved statement did not run")
	}
	// The held session waited in its goroutines, not on the event loop;
	// the other one never left it.
	if served, left := delta(); served > 0 && (served != 2 || left != 1) {
		t.Errorf("the event loops served %d sessions, %d left; want 2, 1", served, left)
	}
}

func TestApprovalDenyAndTimeout(t *testing.T) {
	checkLeaks(t)
	p, b, _ := approvalProxy(t, approvalPolicy{timeout: "300ms"})
	c := p.connect(t)
	// Denied inside a transaction, through the extended protocol: the
	// transaction fails, the session stays usable.
	tx, err := c.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := tx.Exec(context.Background(), "UPDATE acct SET balance = $1 WHERE id = $2", 0, 2)
		errc <- err
	}()
	r := pending(t, b)
	if err := b.Deny(r.ID, dba, "not during business hours"); err != nil {
		t.Fatal(err)
	}
	err = <-errc
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "not during business hours") || !strings.Contains(pe.Message, "alice") {
		t.Fatalf("denied statement: %v; want 42501 with the approver and reason", err)
	}
	if _, err := tx.Exec(context.Background(), "SELECT 1"); err == nil || !strings.Contains(err.Error(), "25P02") {
		t.Errorf("after a denial in a transaction: %v; want the transaction aborted (25P02)", err)
	}
	tx.Rollback(context.Background())
	if balance(t, c, 2) != 50 {
		t.Error("a denied statement ran")
	}
	// Timeout.
	_, err = c.Exec(context.Background(), "UPDATE acct SET balance = 0 WHERE id = 2", pgx.QueryExecModeSimpleProtocol)
	if !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "timed out after 300ms") {
		t.Fatalf("expired statement: %v", err)
	}
	if balance(t, c, 2) != 50 {
		t.Error("an expired statement ran")
	}
}

func TestApprovalSessionScope(t *testing.T) {
	checkLeaks(t)
	p, b, _ := approvalProxy(t, approvalPolicy{scope: approval.ScopeSession})
	c := p.connect(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "UPDATE acct SET balance = balance + 1 WHERE id = 1")
		errc <- err
	}()
	r := pending(t, b)
	if err := b.Approve(r.ID, dba, "maintenance", "", 0); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The rest of the session is approved; another session is held again.
	if _, err := c.Exec(context.Background(), "UPDATE acct SET balance = balance + 1 WHERE id = 1"); err != nil {
		t.Fatalf("second statement of an approved session: %v", err)
	}
	other := p.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// pgx cancels at its deadline: the hold ends, the statement never ran.
	if _, err := other.Exec(ctx, "UPDATE acct SET balance = 0 WHERE id = 1"); err == nil {
		t.Error("another session's statement ran without approval")
	}
	deadline := time.Now().Add(waitLimit)
	for abandoned := false; !abandoned; {
		for _, r := range b.List() {
			abandoned = abandoned || r.State == approval.StateAbandoned
		}
		if time.Now().After(deadline) {
			t.Fatalf("the canceled hold was not abandoned: %+v", b.List())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if balance(t, c, 1) != 102 {
		t.Errorf("balance %d; want 102", balance(t, c, 1))
	}
}

func TestApprovalCancelRequest(t *testing.T) {
	checkLeaks(t)
	p, b, _ := approvalProxy(t, approvalPolicy{})
	c := p.connect(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), "UPDATE acct SET balance = 0 WHERE id = 1", pgx.QueryExecModeSimpleProtocol)
		errc <- err
	}()
	pending(t, b)
	// A cancel request (as psql sends on Ctrl-C) ends the wait.
	if err := c.PgConn().CancelRequest(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("canceled held statement: %v; want 57014", err)
	}
	if balance(t, c, 1) != 100 {
		t.Error("a canceled held statement ran")
	}
}

func TestApprovalClientGone(t *testing.T) {
	checkLeaks(t)
	p, b, _ := approvalProxy(t, approvalPolicy{})
	c := p.connect(t)
	gone, err := pgconn.Connect(context.Background(), p.dsn())
	if err != nil {
		t.Fatal(err)
	}
	go gone.Exec(context.Background(), "UPDATE acct SET balance = 0 WHERE id = 1").ReadAll()
	r := pending(t, b)
	gone.Conn().Close() // the client dies while its statement is held
	deadline := time.Now().Add(waitLimit)
	for {
		got, _ := b.Get(r.ID)
		if got.State == approval.StateAbandoned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request of a client that went away: %+v; want abandoned", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.Approve(r.ID, dba, "late", "", 0); !errors.Is(err, approval.ErrNotPending) {
		t.Errorf("approving the abandoned request: %v", err)
	}
	if balance(t, c, 1) != 100 {
		t.Error("the statement of a client that went away ran")
	}
}

// Decisions that take about as long as the relay waits before it watches
// the client: the watch must start and end cleanly around each. (A smoke
// test under timing jitter; TestWatchEndsAsItStarts pins the race that once
// left sessions hung.)
func TestSlowDecisionsWatchTheClient(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	var n atomic.Int64
	dec := postgres.DeciderFunc(func(context.Context, *l7.Session, postgres.Request) postgres.Decision {
		time.Sleep(time.Duration(15+n.Add(1)%10) * time.Millisecond)
		return postgres.Decision{Allow: true}
	})
	p := startProxy(t, srv, nil, postgres.WithDecider(dec))
	c := p.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	for i := 0; i < 150; i++ {
		var got int
		mode := pgx.QueryExecModeSimpleProtocol
		if i%2 == 1 {
			mode = pgx.QueryExecModeExec
		}
		if err := c.QueryRow(ctx, "SELECT $1::int", mode, i).Scan(&got); err != nil || got != i {
			t.Fatalf("statement %d: %v (got %d)", i, err, got)
		}
	}
}

// A decision that ends while its client watch is starting: the watch must
// still stop (it once cleared the deadline that stops it, and read on).
func TestWatchEndsAsItStarts(t *testing.T) {
	checkLeaks(t)
	srv := pgtest.Shared(t)
	// The watch starts 20 ms into a decision and is held 60 ms before it
	// reads; the decision ends at 30 ms, so the end comes in between.
	t.Cleanup(postgres.SetWatchStarting(func() { time.Sleep(60 * time.Millisecond) }))
	dec := postgres.DeciderFunc(func(context.Context, *l7.Session, postgres.Request) postgres.Decision {
		time.Sleep(30 * time.Millisecond)
		return postgres.Decision{Allow: true}
	})
	p := startProxy(t, srv, nil, postgres.WithDecider(dec))
	c := p.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for i := 0; i < 3; i++ {
		var got int
		if err := c.QueryRow(ctx, "SELECT $1::int", pgx.QueryExecModeSimpleProtocol, i).Scan(&got); err != nil || got != i {
			t.Fatalf("statement %d: %v (got %d)", i, err, got)
		}
	}
}

// A prepared statement approved once runs once: each further execution
// (pgx runs cached statements with Bind and Execute only) is held again.
func TestApprovalEachExecutionOfAPreparedStatement(t *testing.T) {
	checkLeaks(t)
	p, b, _ := approvalProxy(t, approvalPolicy{})
	c := p.connect(t)
	watch := p.connect(t)
	exec := func() chan error {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Exec(context.Background(), "UPDATE acct SET balance = balance + $1 WHERE id = 1", pgx.QueryExecModeCacheStatement, 1)
			errc <- err
		}()
		return errc
	}
	for i := 1; i <= 2; i++ {
		errc := exec()
		r := pending(t, b)
		if err := b.Approve(r.ID, dba, "ok", "", 0); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("execution %d: %v", i, err)
		}
		if got := balance(t, watch, 1); got != 100+i {
			t.Fatalf("after execution %d: balance %d", i, got)
		}
	}
	errc := exec()
	r := pending(t, b)
	if err := b.Deny(r.ID, dba, "enough"); err != nil {
		t.Fatal(err)
	}
	var pe *pgconn.PgError
	if err := <-errc; !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "enough") {
		t.Fatalf("denied execution: %v", err)
	}
	if got := balance(t, watch, 1); got != 102 {
		t.Errorf("a denied execution ran: balance %d", got)
	}
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Errorf("session after a denied execution: %v", err)
	}
}
