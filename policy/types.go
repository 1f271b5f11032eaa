package policy

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// Input is what the policy sees as input: DESIGN.md, "Policy". The JSON
// names are a public contract: extend it, never rename.
type Input struct {
	// Identity is the workload that dialled: a pkg/identity.Workload (or a
	// pointer to one), or the *PreparedIdentity of one, which spares each
	// decision the conversion; any value whose JSON form is an object
	// works, a map[string]any included. The decision cache reads its
	// "name", "known", "uid" and "cgroup" fields.
	Identity any     `json:"identity"`
	Target   Target  `json:"target"`
	Session  Session `json:"session"`
	Request  Request `json:"request"`
}

// Target is the protected resource the workload dialled.
type Target struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

// Session is the protocol session the request belongs to.
type Session struct {
	ID              string `json:"id"`
	Database        string `json:"database"`
	User            string `json:"user"`
	ApplicationName string `json:"application_name"`
	// Options are the other startup parameters the client sent
	// (PostgreSQL "options", "replication", ...).
	Options map[string]string `json:"options,omitempty"`
}

// Request kinds.
const (
	KindConnect   = "connect"
	KindStatement = "statement"
)

// Request is what the workload asks for: to open the session (KindConnect)
// or to run one statement (KindStatement). The policy sees Commands,
// Tables and Functions as arrays, empty rather than null when nil.
type Request struct {
	Kind string `json:"kind"`
	// SQL is the statement text as the client sent it.
	SQL string `json:"sql"`
	// Fingerprint identifies the statement with its literals removed; it
	// keys the decision cache.
	Fingerprint string   `json:"fingerprint"`
	Commands    []string `json:"commands"`
	Tables      []Table  `json:"tables"`
	Functions   []string `json:"functions"`
	ReadOnly    bool     `json:"read_only"`
}

// Table is one table a statement touches and how.
type Table struct {
	// Schema is the schema the statement qualifies the name with, or ""
	// when it does not.
	Schema string `json:"schema"`
	// Name is the relation's name as PostgreSQL reads it.
	Name string `json:"name"`
	// Access is "select", "insert", "update", "delete", ...
	Access string `json:"access"`
}

// Record levels of Decision.Record.
const (
	RecordFull     = "full"
	RecordMetadata = "metadata"
)

// Approval scopes of Approval.Scope.
const (
	ScopeStatement = "statement"
	ScopeSession   = "session"
)

// Decision is the policy's answer, data.tollgate.decision, plus the
// evidence the engine adds (PolicyVersion, Cached, Error). Every policy
// field is optional; an absent allow means deny.
type Decision struct {
	Allow bool `json:"allow"`
	// Reason is shown to the client on deny.
	Reason string `json:"reason,omitempty"`
	// Approval, when Required and Allow are both true, holds the request
	// until an approver grants it.
	Approval *Approval `json:"approval,omitempty"`
	// Mask lists the result values to mask.
	Mask []MaskRule `json:"mask,omitempty"`
	// Record is "full", "metadata" or empty (the journal's default).
	Record string `json:"record,omitempty"`
	// Cache is the policy's promise that its decision for a statement
	// depends on nothing but the decision cache key: the identity's name,
	// known, uid and cgroup, the target's name, the session's user and
	// database, the request kind and the statement fingerprint (so not on
	// the SQL text's literals, the time, the application name or the pid).
	// Only then is the decision cached. Default false.
	Cache bool `json:"cache,omitempty"`

	// PolicyVersion is the Version of the policy that decided; empty when
	// no policy was loaded.
	PolicyVersion string `json:"policy_version,omitempty"`
	// Cached reports whether the decision came from the decision cache.
	Cached bool `json:"cached,omitempty"`
	// Error is the detail of an engine-level failure (evaluation error,
	// time-out, malformed decision) that made this a deny; the client sees
	// only Reason. It may quote input values, so it belongs in the audit
	// journal, not in logs.
	Error string `json:"error,omitempty"`
}

// NeedsApproval reports whether the request is allowed only once an
// approver grants it.
func (d Decision) NeedsApproval() bool {
	return d.Allow && d.Approval != nil && d.Approval.Required
}

// clone returns a copy of d that shares nothing mutable with d.
func (d Decision) clone() Decision {
	if d.Approval != nil {
		a := *d.Approval
		a.Approvers = slices.Clone(a.Approvers)
		d.Approval = &a
	}
	if d.Mask != nil {
		m := slices.Clone(d.Mask)
		for i := range m {
			m[i].Params = maps.Clone(m[i].Params)
		}
		d.Mask = m
	}
	return d
}

// Approval says who must grant a held request and for how long it waits.
type Approval struct {
	Required  bool     `json:"required"`
	Approvers []string `json:"approvers,omitempty"`
	// Scope is "statement" (the default, set when the policy leaves it
	// empty) or "session".
	Scope string `json:"scope,omitempty"`
	// Timeout is a Go duration ("10m"); empty means the approval
	// subsystem's default. The decoder rejects one that does not parse.
	Timeout string `json:"timeout,omitempty"`
}

// TimeoutDuration is Timeout parsed, or 0 when it is empty.
func (a Approval) TimeoutDuration() time.Duration {
	d, err := time.ParseDuration(a.Timeout)
	if err != nil {
		return 0
	}
	return d
}

// MaskRule names the values to mask, by column or by classifier, and how.
// A rule has a Method and at least one of Column or Classifier.
type MaskRule struct {
	// Table is "schema.name"; empty means any table.
	Table      string `json:"table,omitempty"`
	Column     string `json:"column,omitempty"`
	Classifier string `json:"classifier,omitempty"`
	// Method is the masking function: "email", "last4", "redact", ...
	Method string `json:"method"`
	// Params are the rule's other fields, for the method to read
	// ({"method": "hash", "salt_ref": "k1"}). In JSON they sit beside the
	// named fields.
	Params map[string]any `json:"-"`
}

var maskRuleFields = []string{"table", "column", "classifier", "method"}

// MarshalJSON writes Params beside the named fields.
func (m MaskRule) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(m.Params)+4)
	for k, v := range m.Params {
		if !slices.Contains(maskRuleFields, k) {
			out[k] = v
		}
	}
	for k, v := range map[string]string{"table": m.Table, "column": m.Column, "classifier": m.Classifier} {
		if v != "" {
			out[k] = v
		}
	}
	out["method"] = m.Method
	return json.Marshal(out)
}

// UnmarshalJSON reads a mask rule with the rules Decide applies to one
// that a policy returns.
func (m *MaskRule) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r, err := decodeMaskRule(v, "mask rule")
	if err != nil {
		return err
	}
	*m = r
	return nil
}

// Status describes the policy in force and the last load that failed.
type Status struct {
	Dir string `json:"dir"`
	// Version is the policy in force's Version, empty when none is.
	Version string `json:"version"`
	// Loaded is when the policy in force was loaded.
	Loaded time.Time `json:"loaded"`
	// Files are the policy in force's files, relative to Dir.
	Files []string `json:"files"`
	// LastError is why the most recent load failed; empty once a load
	// succeeds.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt time.Time  `json:"last_error_at,omitzero"`
	Cache       CacheStats `json:"cache"`
}

// CacheStats counts decision cache look-ups of cacheable requests
// (statements with a fingerprint).
type CacheStats struct {
	Hits    uint64 `json:"hits"`
	Misses  uint64 `json:"misses"`
	Entries int    `json:"entries"`
}
