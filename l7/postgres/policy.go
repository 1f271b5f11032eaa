package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
	"github.com/tollgate-dev/tollgate/policy"
)

// PolicyDecider judges requests with the policy: it turns each request
// into the policy input of DESIGN.md ("connect" at startup, "statement" for
// each statement, with what sqlinfo reads from the SQL) and asks Policy.
//
// A statement that cannot be parsed is denied. A Query of several
// statements is judged as a whole: if one is denied, none runs. A statement
// whose decision requires approval is held (Approvals) once every statement
// of the request was judged and the engine's checks (masking) passed, so a
// human is never asked about a statement that would be refused anyway.
type PolicyDecider struct {
	Policy   l7.Policy
	Analyzer *sqlinfo.Analyzer
	// Approvals holds statements whose decision requires approval; nil:
	// they are denied.
	Approvals l7.Approvals

	// check runs on the allowed decision before any approval is asked
	// (the masking check); nil: none.
	check func(ctx context.Context, r Request, d Decision) Decision
}

var _ Decider = PolicyDecider{}

// Decide implements Decider.
func (p PolicyDecider) Decide(ctx context.Context, s *l7.Session, r Request) Decision {
	var in policy.Input
	if r.prepared != nil && r.Kind == KindStatement {
		in = s.PolicyInputAs(r.prepared.identity(p.Policy, s))
	} else {
		in = s.PolicyInput()
	}
	in.Session.Database = r.Facts.Database
	in.Session.User = r.Facts.User
	in.Session.ApplicationName = r.Facts.ApplicationName
	in.Session.Options = r.Facts.Parameters
	switch {
	case r.Kind == KindConnect:
		in.Request = policy.Request{Kind: policy.KindConnect}
		return fromPolicy(p.Policy.Decide(ctx, in))
	case r.Protocol == ProtocolFunction:
		// A FunctionCall names a function by OID and carries no SQL.
		in.Request = policy.Request{
			Kind:      policy.KindStatement,
			Commands:  []string{"FUNCTION CALL"},
			Functions: []string{"oid:" + strconv.FormatUint(uint64(r.FunctionOID), 10)},
		}
		pd := p.Policy.Decide(ctx, in)
		d := fromPolicy(pd)
		if pd.NeedsApproval() {
			d = Decision{Allow: true, Mask: pd.Mask, Record: pd.Record, PolicyVersion: pd.PolicyVersion}
			return p.finish(ctx, s, r, d, []pendingApproval{{pd, "FunctionCall " + in.Request.Functions[0]}})
		}
		return p.finish(ctx, s, r, d, nil)
	}

	stmts, err := p.Analyzer.Analyze(r.SQL)
	if err != nil {
		return Decision{Reason: "statement could not be judged: " + err.Error()}
	}
	if len(stmts) == 0 { // an empty query: nothing to run, nothing to judge
		return Decision{Allow: true}
	}
	var out Decision
	var asks []pendingApproval
	for i, st := range stmts {
		in.Request = policy.Request{
			Kind:        policy.KindStatement,
			SQL:         st.SQL,
			Fingerprint: st.Fingerprint,
			Commands:    st.Commands,
			Tables:      st.Tables, // never nil: the policy sees [] for none
			Functions:   st.Functions,
			ReadOnly:    st.ReadOnly,
		}
		pd := p.Policy.Decide(ctx, in)
		d := fromPolicy(pd)
		if pd.NeedsApproval() && p.Approvals != nil {
			d.Allow, d.Reason = true, ""
			asks = append(asks, pendingApproval{pd, st.SQL})
		}
		if !d.Allow {
			if len(stmts) > 1 {
				d.Reason = fmt.Sprintf("statement %d of %d: %s (none of them ran)", i+1, len(stmts), d.Reason)
			}
			return d
		}
		out.Allow = true
		out.Mask = append(out.Mask, d.Mask...)
		if d.Record == policy.RecordMetadata || out.Record == "" {
			out.Record = d.Record
		}
		out.PolicyVersion = d.PolicyVersion
	}
	return p.finish(ctx, s, r, out, asks)
}

// pendingApproval is a statement whose decision requires approval.
type pendingApproval struct {
	pd  policy.Decision
	sql string
}

// finish runs the engine's check on an allowed decision, then holds each
// statement that requires approval until a human decides, the request
// expires or the session ends. Any refusal refuses the request.
func (p PolicyDecider) finish(ctx context.Context, s *l7.Session, r Request, d Decision, asks []pendingApproval) Decision {
	if !d.Allow {
		return d
	}
	if r.nonBlocking && len(asks) > 0 {
		return Decision{later: true}
	}
	if p.check != nil {
		if d = p.check(ctx, r, d); !d.Allow {
			return d
		}
	}
	for _, a := range asks {
		if p.Approvals == nil {
			return fromPolicy(a.pd)
		}
		out := p.Approvals.Hold(ctx, l7.Ask(s, a.pd, a.sql))
		if !out.Approved {
			d.Allow, d.mask = false, nil
			d.Reason = "approval " + string(out.State)
			if out.By != "" {
				d.Reason += " by " + out.By
			}
			if out.Reason != "" {
				d.Reason += ": " + out.Reason
			}
			return d
		}
		// Only a session grant outlives this execution for certain: a
		// statement or window approval is asked again (a window still
		// open approves at once).
		if out.Grant != approval.ScopeSession {
			d.onceApproved = true
		}
	}
	return d
}

func fromPolicy(pd policy.Decision) Decision {
	d := Decision{Allow: pd.Allow, Reason: pd.Reason, Mask: pd.Mask, Record: pd.Record, PolicyVersion: pd.PolicyVersion}
	if pd.NeedsApproval() {
		d.Allow = false
		d.Reason = "approval required (" + pd.Reason + "); approvals are not available on this agent yet"
	}
	if !d.Allow && d.Reason == "" {
		d.Reason = "denied by policy"
	}
	return d
}

// preparedIdentity is a session's identity made ready for the policy
// (policy.PrepareIdentity) once, after the connect decision, rather than
// for each statement; prepared again when the policy in force changes.
// The session's client loop owns it.
type preparedIdentity struct {
	version string // of the policy it was prepared under
	id      *policy.PreparedIdentity
}

// identity returns the prepared form of the session's identity.
func (pi *preparedIdentity) identity(p l7.Policy, s *l7.Session) any {
	version := ""
	if v, ok := p.(interface{ Version() string }); ok {
		version = v.Version()
	}
	if pi.id == nil || pi.version != version {
		id := s.Identity()
		prep, err := policy.PrepareIdentity(id)
		if err != nil {
			return id // the policy engine says what is wrong with it
		}
		pi.id, pi.version = prep, version
	}
	return pi.id
}
