package approval

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// State is where a request is in its life.
type State string

// States of a Request. Only pending changes; the others are final.
const (
	StatePending   State = "pending"
	StateApproved  State = "approved"
	StateDenied    State = "denied"
	StateExpired   State = "expired"
	StateAbandoned State = "abandoned"
)

// Scopes: what an approval covers.
const (
	ScopeStatement = "statement" // the held statement only
	ScopeSession   = "session"   // also the later statements of the same session, until it ends
	ScopeWindow    = "window"    // the statements of the same identity on the same target, for a while
)

// Journal record types (audit.TypeApproval*).
const (
	TypeRequested = "approval_requested"
	TypeGranted   = "approval_granted"
	TypeDenied    = "approval_denied"
	TypeExpired   = "approval_expired"
	TypeAbandoned = "approval_abandoned"
)

// Via says how an approver reached the agent.
const (
	ViaUnix = "unix" // the control socket: the peer's uid
	ViaOIDC = "oidc" // the TCP control API with an OIDC ID token
)

// DefaultTimeout is how long a statement is held when neither the policy nor
// Options says.
const DefaultTimeout = 10 * time.Minute

// ReasonShuttingDown is the Outcome.Reason of holds that Close ends and of
// Holds after Close.
const ReasonShuttingDown = "agent shutting down"

// Errors of Approve and Deny. They are wrapped with details.
var (
	ErrNotFound       = errors.New("no such approval request")
	ErrNotPending     = errors.New("approval request is no longer pending")
	ErrSelfApproval   = errors.New("an approver may not decide on their own statement")
	ErrNotAllowed     = errors.New("not an approver of this request")
	ErrReasonRequired = errors.New("a reason is required")
	ErrBadScope       = errors.New("bad approval scope")
)

const (
	maxDecided     = 100              // decided requests kept for List and Get
	watchBuffer    = 256              // events a watcher may fall behind by
	journalTimeout = 30 * time.Second // bounds a decision's journal write
)

// Ask is what the proxy asks for when a decision requires approval.
type Ask struct {
	SessionID string
	Identity  string // workload name
	// UID is the uid of the process that sent the statement: it may not
	// approve it.
	UID    uint32
	PID    int
	Origin string // where the client is: cgroup path / pod / exe, free text
	Target string // target name
	SQL    string
	Reason string // the policy's reason
	// Approvers are "user:NAME" | "group:NAME"; empty: anyone allowed on
	// the control API.
	Approvers []string
	// Scope is what the policy asked for: statement | session ("" =
	// statement).
	Scope string
	// Timeout is how long the statement is held; 0: the broker's default.
	Timeout time.Duration
	// User is the user name of UID; "": looked up with os/user. An OIDC
	// approver whose name is this user may not approve.
	User string
}

// Request is a held statement, as listed by `tollctl approvals ls -o json`.
type Request struct {
	ID             string    `json:"id"`
	State          State     `json:"state"`
	Identity       string    `json:"identity"`
	UID            uint32    `json:"uid"`
	User           string    `json:"user,omitempty"`
	PID            int       `json:"pid"`
	Origin         string    `json:"origin"`
	Target         string    `json:"target"`
	Session        string    `json:"session"`
	SQL            string    `json:"sql"`
	Reason         string    `json:"reason,omitempty"`
	Approvers      []string  `json:"approvers,omitempty"`
	Scope          string    `json:"scope"`
	Created        time.Time `json:"created"`
	Expires        time.Time `json:"expires"`
	DecidedBy      string    `json:"decided_by,omitempty"`
	DecidedVia     string    `json:"decided_via,omitempty"`
	DecisionReason string    `json:"decision_reason,omitempty"`
	DecidedAt      time.Time `json:"decided_at,omitzero"`
	Grant          string    `json:"grant,omitempty"` // statement | session | window
	GrantUntil     time.Time `json:"grant_until,omitzero"`
	// GrantOf is the request whose session or window grant approved this
	// one.
	GrantOf string `json:"grant_of,omitempty"`
}

// Outcome is how a hold ended.
type Outcome struct {
	Approved  bool
	State     State
	RequestID string // "" when a standing grant approved it without a request
	By        string // approver name
	// Reason is the approver's reason, or "approval timed out after
	// 10m0s", or why the hold was abandoned or refused.
	Reason string
	Grant  string // scope that applied: statement | session | window
	// GrantOf is the request whose grant approved it, when a standing
	// grant did.
	GrantOf string
}

// Approver is who decides.
type Approver struct {
	// Name is the user name (unix: from the uid via os/user, or the uid in
	// decimal when it has no name; OIDC: preferred_username, else email,
	// else sub).
	Name string
	// Groups are the unix groups of the user / the token's groups claim.
	Groups []string
	// UID and HasUID are set for local (unix socket) approvers.
	UID    uint32
	HasUID bool
	Via    string // ViaUnix | ViaOIDC
}

// LocalApprover is the approver behind a local uid: its user name and the
// names of its groups, from os/user.
func LocalApprover(uid uint32) Approver {
	a := Approver{Name: strconv.FormatUint(uint64(uid), 10), UID: uid, HasUID: true, Via: ViaUnix}
	u, err := user.LookupId(a.Name)
	if err != nil {
		return a
	}
	a.Name = u.Username
	gids, _ := u.GroupIds()
	for _, gid := range gids {
		if g, err := user.LookupGroupId(gid); err == nil {
			a.Groups = append(a.Groups, g.Name)
		}
	}
	return a
}

// userName is uid's user name, or "" when it has none.
func userName(uid uint32) string {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return ""
	}
	return u.Username
}

// Journal is where the broker records what happens. l7.Journal and
// *audit.Journal satisfy it.
type Journal interface {
	Append(ctx context.Context, typ string, data any) (uint64, error)
}

// Notifier tells approvers that a request waits. Notify must not block.
type Notifier interface {
	Notify(r Request)
}

// Options configure a Broker.
type Options struct {
	Journal        Journal          // nil: no journal (tests)
	Notifier       Notifier         // nil: none
	DefaultTimeout time.Duration    // 0: 10m
	Now            func() time.Time // nil: time.Now
}

// Broker holds statements until approvers decide. Its methods are safe for
// concurrent use.
type Broker struct {
	journal  Journal
	notifier Notifier
	timeout  time.Duration
	now      func() time.Time

	inflight sync.WaitGroup // Holds between "not closed" and "visible"

	mu       sync.Mutex
	closed   bool
	pending  map[string]*hold // by id; also requests still being journaled (not visible)
	decided  []*hold          // oldest decision first, at most maxDecided
	grants   []grant
	watchers map[*watcher]struct{}
}

type hold struct {
	ask  Ask
	user string // ask.UID's user name

	// dmu serialises decisions on this hold; it is held across the
	// journal write so that one decision wins and is journaled first.
	dmu sync.Mutex

	// Guarded by Broker.mu.
	visible bool // approval_requested is journaled
	req     Request
	out     Outcome
	done    chan struct{} // closed when req.State is final
}

// grant is a standing approval: a session or window scope.
type grant struct {
	scope    string
	session  string    // ScopeSession
	identity string    // ScopeWindow
	target   string    // ScopeWindow
	until    time.Time // ScopeWindow
	origin   string    // the request approved with it
	by       Approver
	reason   string
}

type watcher struct {
	ch   chan Request
	stop func() bool // unregisters the ctx callback
}

// New returns a Broker.
func New(o Options) *Broker {
	b := &Broker{
		journal:  o.Journal,
		notifier: o.Notifier,
		timeout:  o.DefaultTimeout,
		now:      o.Now,
		pending:  map[string]*hold{},
		watchers: map[*watcher]struct{}{},
	}
	if b.timeout <= 0 {
		b.timeout = DefaultTimeout
	}
	if b.now == nil {
		b.now = time.Now
	}
	return b
}

// Hold journals approval_requested (before anything else is visible),
// publishes the request, notifies, and blocks until it is approved, denied,
// expired (the timeout passed) or ctx ends (abandoned). A grant that already
// covers the ask (a session grant for its SessionID, or a window grant for
// its Identity and Target that has not ended, made by an approver who could
// approve this ask) approves at once, journaled as approval_granted with
// "standing": true and the grant's origin request id in "grant_of"; no
// request is created.
//
// If the journal cannot be written, the Outcome is not approved (State
// denied, Reason says the journal failed). After Close, Holds are refused
// (State abandoned, Reason "agent shutting down").
func (b *Broker) Hold(ctx context.Context, a Ask) Outcome {
	scope := cmp.Or(a.Scope, ScopeStatement)
	if scope != ScopeStatement && scope != ScopeSession {
		return Outcome{State: StateDenied, Reason: fmt.Sprintf("the policy asked for approval scope %q: want statement or session", a.Scope)}
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = b.timeout
	}
	usr := a.User
	if usr == "" {
		usr = userName(a.UID)
	}

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return Outcome{State: StateAbandoned, Reason: ReasonShuttingDown}
	}
	if g, ok := b.coveringLocked(a, usr); ok {
		b.mu.Unlock()
		return b.standing(ctx, a, usr, g)
	}
	now := b.now()
	h := &hold{ask: a, user: usr, done: make(chan struct{})}
	h.req = Request{
		ID:        b.newIDLocked(),
		State:     StatePending,
		Identity:  a.Identity,
		UID:       a.UID,
		User:      usr,
		PID:       a.PID,
		Origin:    a.Origin,
		Target:    a.Target,
		Session:   a.SessionID,
		SQL:       a.SQL,
		Reason:    a.Reason,
		Approvers: slices.Clone(a.Approvers),
		Scope:     scope,
		Created:   now,
		Expires:   now.Add(timeout),
	}
	b.pending[h.req.ID] = h
	b.inflight.Add(1)
	req := h.req
	b.mu.Unlock()

	if err := b.append(ctx, TypeRequested, recordOf(req, nil)); err != nil {
		b.mu.Lock()
		delete(b.pending, req.ID)
		b.mu.Unlock()
		b.inflight.Done()
		return Outcome{State: StateDenied, Reason: "approval could not be requested: the audit journal failed: " + err.Error()}
	}
	b.mu.Lock()
	h.visible = true
	b.publishLocked(h.req)
	b.mu.Unlock()
	b.inflight.Done()
	if b.notifier != nil {
		b.notifier.Notify(req)
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-h.done:
	case <-timer.C:
		b.finish(h, decision{state: StateExpired, reason: fmt.Sprintf("approval timed out after %s", timeout)}, nil)
	case <-ctx.Done():
		b.finish(h, decision{state: StateAbandoned, reason: fmt.Sprintf("the statement was abandoned while it waited for approval: %v", context.Cause(ctx))}, nil)
	}
	<-h.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return h.out
}

// standing approves a with grant g, without a request.
func (b *Broker) standing(ctx context.Context, a Ask, usr string, g grant) Outcome {
	req := Request{
		Identity: a.Identity, UID: a.UID, User: usr, PID: a.PID, Origin: a.Origin, Target: a.Target,
		Session: a.SessionID, SQL: a.SQL, Reason: a.Reason, Approvers: a.Approvers, Scope: cmp.Or(a.Scope, ScopeStatement),
	}
	d := decision{state: StateApproved, by: &g.by, reason: g.reason, grant: g.scope, until: g.until, grantOf: g.origin}
	if err := b.append(ctx, TypeGranted, recordOf(req, &d)); err != nil {
		return Outcome{State: StateDenied, Reason: "approval could not be recorded: the audit journal failed: " + err.Error()}
	}
	return Outcome{Approved: true, State: StateApproved, By: g.by.Name, Reason: g.reason, Grant: g.scope, GrantOf: g.origin}
}

// decision is how finish ends a hold.
type decision struct {
	state   State
	by      *Approver
	reason  string
	grant   string        // approved: the scope that applies
	window  time.Duration // approved with ScopeWindow: until = decision time + window
	until   time.Time     // approved by a standing window grant
	grantOf string        // approved by a standing grant: its origin request
}

func (d decision) journalType() string {
	switch d.state {
	case StateApproved:
		return TypeGranted
	case StateDenied:
		return TypeDenied
	case StateExpired:
		return TypeExpired
	}
	return TypeAbandoned
}

// finish ends pending hold h with d once check (run under b.mu) passes and
// the decision is journaled. An approval or denial that cannot be journaled
// is not made: h stays pending and the error says why. An expiry or an
// abandonment ends h even then.
func (b *Broker) finish(h *hold, d decision, check func() error) error {
	h.dmu.Lock()
	defer h.dmu.Unlock()
	b.mu.Lock()
	if h.req.State != StatePending {
		err := notPending(h.req)
		b.mu.Unlock()
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			b.mu.Unlock()
			return err
		}
	}
	now := b.now()
	if d.window > 0 {
		d.until = now.Add(d.window)
	}
	req := h.req
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), journalTimeout)
	jerr := b.append(ctx, d.journalType(), recordOf(req, &d))
	cancel()
	reason := d.reason
	if jerr != nil {
		if d.state == StateApproved || d.state == StateDenied {
			return fmt.Errorf("%s not %s: the audit journal failed: %w", req.ID, d.state, jerr)
		}
		reason += " (the audit journal failed: " + jerr.Error() + ")"
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	r := &h.req
	r.State, r.DecisionReason, r.DecidedAt = d.state, reason, now
	if d.by != nil {
		r.DecidedBy, r.DecidedVia = d.by.Name, d.by.Via
	}
	if d.state == StateApproved {
		r.Grant, r.GrantUntil, r.GrantOf = d.grant, d.until, d.grantOf
	}
	h.out = Outcome{Approved: d.state == StateApproved, State: d.state, RequestID: r.ID, By: r.DecidedBy,
		Reason: reason, Grant: r.Grant, GrantOf: d.grantOf}
	delete(b.pending, r.ID)
	b.decided = append(b.decided, h)
	if n := len(b.decided) - maxDecided; n > 0 {
		b.decided = slices.Delete(b.decided, 0, n)
	}
	if d.state == StateApproved && d.grantOf == "" && d.grant != ScopeStatement {
		b.grants = append(b.grants, grant{scope: d.grant, session: r.Session, identity: r.Identity, target: r.Target,
			until: d.until, origin: r.ID, by: *d.by, reason: d.reason})
	}
	b.publishLocked(*r)
	close(h.done)
	return nil
}

func notPending(r Request) error {
	if r.DecidedBy != "" {
		return fmt.Errorf("%w: %s was %s by %s at %s", ErrNotPending, r.ID, r.State, r.DecidedBy, r.DecidedAt.Format(time.RFC3339))
	}
	return fmt.Errorf("%w: %s is %s", ErrNotPending, r.ID, r.State)
}

// Approve approves pending request id on behalf of who. scope "" is the
// scope the policy asked for; window > 0 makes a window grant for that long
// (scope must then be "" or "window"). The approval is journaled
// (approval_granted) before the statement goes on. A session or window grant
// also approves the pending requests it covers.
//
// Errors wrap ErrNotFound, ErrNotPending (already decided, expired or
// abandoned), ErrSelfApproval (who sent the statement), ErrNotAllowed (who
// matches none of the request's approvers), ErrBadScope, or say that the
// journal failed (the request then stays pending).
func (b *Broker) Approve(id string, who Approver, reason, scope string, window time.Duration) error {
	h, err := b.lookup(id)
	if err != nil {
		return err
	}
	switch {
	case window < 0:
		return fmt.Errorf("%w: a window of %s", ErrBadScope, window)
	case window > 0 && scope != "" && scope != ScopeWindow:
		return fmt.Errorf("%w: a duration makes a window grant, not a %s grant", ErrBadScope, scope)
	case window > 0:
		scope = ScopeWindow
	case scope == "":
		scope = cmp.Or(h.ask.Scope, ScopeStatement)
	case scope == ScopeWindow:
		return fmt.Errorf("%w: a window grant needs a duration", ErrBadScope)
	case scope != ScopeStatement && scope != ScopeSession:
		return fmt.Errorf("%w: %q: want statement, session or a window duration", ErrBadScope, scope)
	}
	switch {
	case scope == ScopeSession && h.ask.SessionID == "":
		return fmt.Errorf("%w: %s has no session", ErrBadScope, id)
	case scope == ScopeWindow && (h.ask.Identity == "" || h.ask.Target == ""):
		return fmt.Errorf("%w: %s has no identity or target to make a window grant for", ErrBadScope, id)
	}
	d := decision{state: StateApproved, by: &who, reason: reason, grant: scope, window: window}
	if err := b.finish(h, d, func() error { return permitted(who, h.ask, h.user) }); err != nil {
		return err
	}
	if scope != ScopeStatement {
		b.sweep()
	}
	return nil
}

// Deny denies pending request id on behalf of who, for reason (required):
// the held statement ends with it. Errors as Approve's, and
// ErrReasonRequired.
func (b *Broker) Deny(id string, who Approver, reason string) error {
	h, err := b.lookup(id)
	if err != nil {
		return err
	}
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("%w: say why %s is denied: the client sees it", ErrReasonRequired, id)
	}
	d := decision{state: StateDenied, by: &who, reason: reason}
	return b.finish(h, d, func() error { return permitted(who, h.ask, h.user) })
}

// lookup returns the hold of request id, or why there is none to decide.
func (b *Broker) lookup(id string) (*hold, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h, ok := b.pending[id]; ok && h.visible {
		return h, nil
	}
	for _, h := range b.decided {
		if h.req.ID == id {
			return nil, notPending(h.req)
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
}

// permitted reports why who may not decide on a (asked by usr), if so.
func permitted(who Approver, a Ask, usr string) error {
	switch {
	case who.HasUID && who.UID == a.UID:
		return fmt.Errorf("%w: uid %d sent this statement", ErrSelfApproval, a.UID)
	case who.Name != "" && usr != "" && who.Name == usr:
		return fmt.Errorf("%w: user %s (uid %d) sent this statement", ErrSelfApproval, usr, a.UID)
	case who.Name == "":
		return fmt.Errorf("%w: the approver has no name", ErrNotAllowed)
	case len(a.Approvers) == 0:
		return nil
	}
	for _, want := range a.Approvers {
		kind, name, _ := strings.Cut(want, ":")
		switch {
		case kind == "user" && name == who.Name:
			return nil
		case kind == "group" && slices.Contains(who.Groups, name):
			return nil
		}
	}
	groups := "no groups"
	if len(who.Groups) > 0 {
		groups = "groups " + strings.Join(who.Groups, ",")
	}
	return fmt.Errorf("%w: %s (%s) is not one of %s", ErrNotAllowed, who.Name, groups, strings.Join(a.Approvers, ", "))
}

// coveringLocked returns a standing grant that covers a (asked by usr),
// dropping window grants that have ended.
func (b *Broker) coveringLocked(a Ask, usr string) (grant, bool) {
	now := b.now()
	b.grants = slices.DeleteFunc(b.grants, func(g grant) bool { return g.scope == ScopeWindow && !now.Before(g.until) })
	for _, g := range b.grants {
		match := g.scope == ScopeSession && a.SessionID != "" && g.session == a.SessionID ||
			g.scope == ScopeWindow && a.Identity != "" && g.identity == a.Identity && g.target == a.Target
		if match && permitted(g.by, a, usr) == nil {
			return g, true
		}
	}
	return grant{}, false
}

// sweep approves the pending requests that a standing grant now covers.
func (b *Broker) sweep() {
	type job struct {
		h *hold
		g grant
	}
	var jobs []job
	b.mu.Lock()
	for _, h := range b.pending {
		if !h.visible {
			continue
		}
		if g, ok := b.coveringLocked(h.ask, h.user); ok {
			jobs = append(jobs, job{h, g})
		}
	}
	b.mu.Unlock()
	for _, j := range jobs {
		d := decision{state: StateApproved, by: &j.g.by, reason: j.g.reason, grant: j.g.scope, until: j.g.until, grantOf: j.g.origin}
		b.finish(j.h, d, func() error {
			if _, ok := b.coveringLocked(j.h.ask, j.h.user); !ok {
				return errors.New("no longer covered")
			}
			return nil
		})
	}
}

// List returns the pending requests, then the recently decided ones (the
// last 100), each group by Created.
func (b *Broker) List() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Request, 0, len(b.pending)+len(b.decided))
	for _, h := range b.pending {
		if h.visible {
			out = append(out, h.req)
		}
	}
	byCreated := func(x, y Request) int { return cmp.Or(x.Created.Compare(y.Created), cmp.Compare(x.ID, y.ID)) }
	slices.SortFunc(out, byCreated)
	n := len(out)
	for _, h := range b.decided {
		out = append(out, h.req)
	}
	slices.SortStableFunc(out[n:], byCreated)
	return out
}

// Get returns request id, pending or recently decided.
func (b *Broker) Get(id string) (Request, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h, ok := b.pending[id]; ok && h.visible {
		return h.req, true
	}
	for _, h := range b.decided {
		if h.req.ID == id {
			return h.req, true
		}
	}
	return Request{}, false
}

// Watch streams new and changed requests until ctx ends or the broker
// closes; then the channel is closed. A watcher that falls more than a
// buffer behind is dropped (its channel closed) rather than slowing the
// broker: it should List again and Watch anew.
func (b *Broker) Watch(ctx context.Context) <-chan Request {
	w := &watcher{ch: make(chan Request, watchBuffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(w.ch)
		return w.ch
	}
	b.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.dropLocked(w)
	})
	return w.ch
}

func (b *Broker) dropLocked(w *watcher) {
	if _, ok := b.watchers[w]; !ok {
		return
	}
	delete(b.watchers, w)
	w.stop()
	close(w.ch)
}

func (b *Broker) publishLocked(r Request) {
	for w := range b.watchers {
		select {
		case w.ch <- r:
		default:
			b.dropLocked(w)
		}
	}
}

// EndSession drops the session's grants (called when a session ends).
func (b *Broker) EndSession(sessionID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.grants = slices.DeleteFunc(b.grants, func(g grant) bool { return g.scope == ScopeSession && g.session == sessionID })
}

// Close abandons every pending hold (journaled approval_abandoned, reason
// "agent shutting down"), ends the watchers, and refuses later Holds. It
// approves nothing. It returns once the abandonments are journaled.
func (b *Broker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	b.inflight.Wait() // Holds journaling their request become visible

	b.mu.Lock()
	var hs []*hold
	for _, h := range b.pending {
		hs = append(hs, h)
	}
	b.mu.Unlock()
	for _, h := range hs {
		b.finish(h, decision{state: StateAbandoned, reason: ReasonShuttingDown}, nil)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.watchers {
		b.dropLocked(w)
	}
}

// newIDLocked returns an unused request id: "ap-" and 8 random hex digits.
func (b *Broker) newIDLocked() string {
	for {
		var raw [4]byte
		rand.Read(raw[:])
		id := "ap-" + hex.EncodeToString(raw[:])
		if _, used := b.pending[id]; used {
			continue
		}
		if slices.ContainsFunc(b.decided, func(h *hold) bool { return h.req.ID == id }) {
			continue
		}
		return id
	}
}

func (b *Broker) append(ctx context.Context, typ string, rec record) error {
	if b.journal == nil {
		return nil
	}
	if _, err := b.journal.Append(ctx, typ, rec); err != nil {
		return fmt.Errorf("journal %s: %w", typ, err)
	}
	return nil
}

// record is the data of the approval journal records. Every record carries
// the request and what was asked; decisions add who decided and what the
// grant is.
type record struct {
	Request   string    `json:"request,omitempty"` // "" for a standing grant that needed no request
	Session   string    `json:"session"`
	Identity  string    `json:"identity"`
	UID       uint32    `json:"uid"`
	User      string    `json:"user,omitempty"`
	PID       int       `json:"pid"`
	Origin    string    `json:"origin,omitempty"`
	Target    string    `json:"target"`
	SQL       string    `json:"sql"`
	Reason    string    `json:"reason"` // the policy's
	Approvers []string  `json:"approvers"`
	Scope     string    `json:"scope"` // what the policy asked for
	Expires   time.Time `json:"expires,omitzero"`

	By             string    `json:"by,omitempty"`
	Via            string    `json:"via,omitempty"`
	ByUID          *uint32   `json:"by_uid,omitempty"`
	DecisionReason string    `json:"decision_reason,omitempty"`
	Grant          string    `json:"grant,omitempty"` // the scope that applies
	Until          time.Time `json:"until,omitzero"`
	Standing       bool      `json:"standing,omitempty"` // approved by an earlier session or window grant
	GrantOf        string    `json:"grant_of,omitempty"` // the request that made that grant
}

func recordOf(r Request, d *decision) record {
	rec := record{
		Request: r.ID, Session: r.Session, Identity: r.Identity, UID: r.UID, User: r.User, PID: r.PID,
		Origin: r.Origin, Target: r.Target, SQL: r.SQL, Reason: r.Reason, Approvers: r.Approvers,
		Scope: r.Scope, Expires: r.Expires,
	}
	if rec.Approvers == nil {
		rec.Approvers = []string{}
	}
	if d == nil {
		return rec
	}
	rec.DecisionReason = d.reason
	if d.by != nil {
		rec.By, rec.Via = d.by.Name, d.by.Via
		if d.by.HasUID {
			uid := d.by.UID
			rec.ByUID = &uid
		}
	}
	if d.state == StateApproved {
		rec.Grant, rec.Standing, rec.GrantOf = d.grant, d.grantOf != "", d.grantOf
		rec.Until = d.until
	}
	return rec
}
