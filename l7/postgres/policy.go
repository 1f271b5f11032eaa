package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
	"github.com/tollgate-dev/tollgate/policy"
)

// PolicyDecider judges requests with the policy: it turns each request
// into the policy input of DESIGN.md ("connect" at startup, "statement" for
// each statement, with what sqlinfo reads from the SQL) and asks Policy.
//
// A statement that cannot be parsed is denied. A Query of several
// statements is judged as a whole: if one is denied, none runs. A decision
// that requires approval is denied until approvals exist.
type PolicyDecider struct {
	Policy   l7.Policy
	Analyzer *sqlinfo.Analyzer
	// Approvals holds statements whose decision requires approval; nil:
	// they are denied.
	Approvals l7.Approvals
}

var _ Decider = PolicyDecider{}

// Decide implements Decider.
func (p PolicyDecider) Decide(ctx context.Context, s *l7.Session, r Request) Decision {
	in := s.PolicyInput()
	if r.prepared != nil && r.Kind == KindStatement {
		in.Identity = r.prepared.identity(p.Policy, in.Identity)
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
		return p.approve(ctx, s, p.Policy.Decide(ctx, in), "FunctionCall "+in.Request.Functions[0])
	}

	stmts, err := p.Analyzer.Analyze(r.SQL)
	if err != nil {
		return Decision{Reason: "statement could not be judged: " + err.Error()}
	}
	if len(stmts) == 0 { // an empty query: nothing to run, nothing to judge
		return Decision{Allow: true}
	}
	var out Decision
	for i, st := range stmts {
		in.Request = policy.Request{
			Kind:        policy.KindStatement,
			SQL:         st.SQL,
			Fingerprint: st.Fingerprint,
			Commands:    st.Commands,
			Functions:   st.Functions,
			ReadOnly:    st.ReadOnly,
		}
		in.Request.Tables = make([]policy.Table, len(st.Tables))
		for j, t := range st.Tables {
			in.Request.Tables[j] = policy.Table{Schema: t.Schema, Name: t.Name, Access: t.Access}
		}
		d := p.approve(ctx, s, p.Policy.Decide(ctx, in), st.SQL)
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
	return out
}

// approve turns a statement's policy decision into the engine's: one that
// requires approval waits here until a human decides, the request expires
// or the session ends.
func (p PolicyDecider) approve(ctx context.Context, s *l7.Session, pd policy.Decision, sql string) Decision {
	if !pd.NeedsApproval() || p.Approvals == nil {
		return fromPolicy(pd)
	}
	out := p.Approvals.Hold(ctx, l7.Ask(s, pd, sql))
	d := Decision{Allow: out.Approved, Mask: pd.Mask, Record: pd.Record, PolicyVersion: pd.PolicyVersion}
	if !d.Allow {
		d.Reason = "approval " + string(out.State)
		if out.By != "" {
			d.Reason += " by " + out.By
		}
		if out.Reason != "" {
			d.Reason += ": " + out.Reason
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

// identity returns the prepared form of id, the session's identity.
func (pi *preparedIdentity) identity(p l7.Policy, id any) any {
	version := ""
	if v, ok := p.(interface{ Version() string }); ok {
		version = v.Version()
	}
	if pi.id == nil || pi.version != version {
		prep, err := policy.PrepareIdentity(id)
		if err != nil {
			return id // the policy engine says what is wrong with it
		}
		pi.id, pi.version = prep, version
	}
	return pi.id
}
