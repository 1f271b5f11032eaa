package postgres

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/l7/postgres/sqlinfo"
	"github.com/tollgate-dev/tollgate/pkg/config"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/policy"
	"github.com/tollgate-dev/tollgate/redirect"
)

// recordingPolicy keeps the inputs it was asked about and denies what
// touches a table named "secret".
type recordingPolicy struct{ inputs []policy.Input }

func (p *recordingPolicy) Decide(_ context.Context, in policy.Input) policy.Decision {
	p.inputs = append(p.inputs, in)
	for _, t := range in.Request.Tables {
		if t.Name == "secret" {
			return policy.Decision{Reason: "secret is secret"}
		}
	}
	return policy.Decision{Allow: true, Mask: []policy.MaskRule{{Table: "public.customers", Column: "email", Method: "email"}}}
}

func testSession() *l7.Session {
	return &l7.Session{
		ID:       "s_test",
		Target:   &config.Target{Name: "orders-db", Protocol: "postgres"},
		Origin:   redirect.Origin{Dst: netip.MustParseAddrPort("127.77.0.5:5432")},
		Workload: identity.Workload{Name: "billing", Known: true},
	}
}

func TestPolicyDeciderBuildsInput(t *testing.T) {
	p := &recordingPolicy{}
	d := PolicyDecider{Policy: p, Analyzer: sqlinfo.NewAnalyzer(sqlinfo.Limits{}, 100)}
	facts := SessionFacts{Database: "orders", User: "app", ApplicationName: "psql", Parameters: map[string]string{"options": "-c search_path=x"}}
	ctx := context.Background()

	got := d.Decide(ctx, testSession(), Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: "SELECT email FROM public.customers WHERE id = 1", Facts: facts})
	if !got.Allow || len(got.Mask) != 1 {
		t.Fatalf("decision = %+v; want allowed with the mask carried", got)
	}
	in := p.inputs[0]
	if in.Request.Kind != "statement" || in.Request.Commands[0] != "SELECT" || !in.Request.ReadOnly ||
		in.Request.Tables[0] != (policy.Table{Schema: "public", Name: "customers", Access: "select"}) || in.Request.Fingerprint == "" {
		t.Errorf("request = %+v", in.Request)
	}
	if in.Session.Database != "orders" || in.Session.Options["options"] != "-c search_path=x" || in.Target.Address != "127.77.0.5:5432" {
		t.Errorf("session/target = %+v %+v", in.Session, in.Target)
	}

	got = d.Decide(ctx, testSession(), Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: "SELECT 1; DELETE FROM secret", Facts: facts})
	if got.Allow || !strings.Contains(got.Reason, "statement 2 of 2") || !strings.Contains(got.Reason, "secret is secret") {
		t.Errorf("multi-statement = %+v", got)
	}
	got = d.Decide(ctx, testSession(), Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: "SELEC 1", Facts: facts})
	if got.Allow || !strings.Contains(got.Reason, "could not be judged") {
		t.Errorf("unparseable = %+v", got)
	}
	got = d.Decide(ctx, testSession(), Request{Kind: KindStatement, Protocol: ProtocolFunction, FunctionOID: 1234, Facts: facts})
	last := p.inputs[len(p.inputs)-1]
	if !got.Allow || last.Request.Functions[0] != "oid:1234" || last.Request.ReadOnly {
		t.Errorf("function call = %+v, input %+v", got, last.Request)
	}
	if d := d.Decide(ctx, testSession(), Request{Kind: KindConnect, Facts: facts}); !d.Allow || p.inputs[len(p.inputs)-1].Request.Kind != "connect" {
		t.Errorf("connect = %+v", d)
	}
}

func TestApprovalRequiredIsDeniedUntilApprovalsExist(t *testing.T) {
	pd := fromPolicy(policy.Decision{Allow: true, Reason: "writes need a DBA", Approval: &policy.Approval{Required: true, Approvers: []string{"group:dba"}}})
	if pd.Allow || !strings.Contains(pd.Reason, "approval required") {
		t.Errorf("decision = %+v", pd)
	}
}

// FuzzPolicyInput feeds arbitrary SQL through the decider with the shipped
// example policy: no panic, a denial always says why, and nothing the
// parser cannot read is allowed.
func FuzzPolicyInput(f *testing.F) {
	for _, s := range []string{
		"SELECT 1", "SELECT email FROM customers", "DELETE FROM orders WHERE id = 1", "DROP TABLE t",
		"SELECT 1; SELECT 2", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "COPY t TO STDOUT",
		"SELECT pg_read_file('/etc/passwd')", "BEGIN; UPDATE t SET v = 1; COMMIT", "", ";", "SELEC", "\x00", "((((",
	} {
		f.Add(s)
	}
	dir, _ := filepath.Abs("../../deploy/policies")
	eng, err := policy.New(dir, policy.Options{})
	if err != nil {
		f.Fatal(err)
	}
	if eng.Version() == "" {
		f.Fatalf("example policy did not load: %+v", eng.Status())
	}
	d := PolicyDecider{Policy: eng, Analyzer: sqlinfo.NewAnalyzer(sqlinfo.Limits{}, 1000)}
	f.Fuzz(func(t *testing.T, sql string) {
		got := d.Decide(context.Background(), testSession(), Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: sql})
		if !got.Allow && got.Reason == "" {
			t.Errorf("denial without a reason for %q", sql)
		}
		if _, err := sqlinfo.Analyze(sql); err != nil && got.Allow {
			t.Errorf("%q could not be parsed (%v) but was allowed", sql, err)
		}
	})
}

// versionedPolicy is a recordingPolicy with a version that changes on
// reload.
type versionedPolicy struct {
	recordingPolicy
	version string
}

func (p *versionedPolicy) Version() string { return p.version }

func TestPolicyDeciderPreparesIdentity(t *testing.T) {
	p := &versionedPolicy{version: "v1"}
	d := PolicyDecider{Policy: p, Analyzer: sqlinfo.NewAnalyzer(sqlinfo.Limits{}, 100)}
	ctx := context.Background()
	s := testSession()
	var prep preparedIdentity
	req := Request{Kind: KindStatement, Protocol: ProtocolSimple, SQL: "SELECT 1", prepared: &prep}

	d.Decide(ctx, s, Request{Kind: KindConnect, prepared: &prep})
	if _, ok := p.inputs[0].Identity.(identity.Workload); !ok || prep.id != nil {
		t.Errorf("connect: identity %T, prepared %v; want the workload, nothing prepared", p.inputs[0].Identity, prep.id)
	}
	d.Decide(ctx, s, req)
	d.Decide(ctx, s, req)
	first, ok := p.inputs[1].Identity.(*policy.PreparedIdentity)
	if !ok || p.inputs[2].Identity != first {
		t.Fatalf("statements: identities %T %T; want one prepared identity", p.inputs[1].Identity, p.inputs[2].Identity)
	}
	if w, ok := first.Identity().(identity.Workload); !ok || w.Name != "billing" {
		t.Errorf("prepared identity of %+v; want the session's workload", first.Identity())
	}
	p.version = "v2" // a reload
	d.Decide(ctx, s, req)
	if again := p.inputs[3].Identity.(*policy.PreparedIdentity); again == first {
		t.Error("the identity prepared under the previous policy is still used after a reload")
	}
}
