package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// examplePolicy is the policy shipped in deploy/policies.
const examplePolicy = "../deploy/policies"

// TestExamplePolicyTests runs the example policy's own Rego tests.
func TestExamplePolicyTests(t *testing.T) {
	var out bytes.Buffer
	passed, failed, err := Test(context.Background(), examplePolicy, &out)
	if err != nil {
		t.Fatal(err)
	}
	if failed != 0 || passed < 16 {
		t.Errorf("passed %d, failed %d; want at least 16 passed, none failed; report:\n%s", passed, failed, out.String())
	}
}

// TestExamplePolicy judges requests with the example policy through the
// engine, with identities as pkg/identity resolves them.
func TestExamplePolicy(t *testing.T) {
	var errs []error
	e := newEngine(t, examplePolicy, Options{OnError: func(err error) { errs = append(errs, err) }})
	if s := e.Status(); s.LastError != "" || len(s.Files) != 1 {
		t.Fatalf("Status = %+v, want tollgate.rego loaded", s)
	}
	billing, reporting := workload("billing-export", true), workload("reporting-cron", true)
	stranger := workload("session-3.scope", false)
	customers := func(access string) []Table { return []Table{{Schema: "public", Name: "customers", Access: access}} }
	tests := []struct {
		name         string
		in           Input
		wantAllow    bool
		wantApproval bool
		wantReason   string
	}{
		{"known connects", connectReq(billing, "orders-db"), true, false, ""},
		{"unknown denied by name", connectReq(stranger, "orders-db"), false, false, `unknown workload "session-3.scope": no identity in the tollgate config matches it`},
		{"read", stmtReq(reporting, "orders-db", "SELECT", customers("select"), []string{"lower"}, true), true, false, ""},
		{"ddl", stmtReq(billing, "orders-db", "ALTER TABLE", customers("ddl"), nil, false), false, false, "DDL is not allowed through tollgate (ALTER TABLE): use the migration pipeline"},
		{"function", stmtReq(billing, "orders-db", "SELECT", nil, []string{"pg_terminate_backend"}, false), false, false, "function pg_terminate_backend is not allowed through tollgate"},
		{"write by a reader", stmtReq(reporting, "orders-db", "DELETE", customers("delete"), nil, false), false, false, `workload "reporting-cron" may only read on target "orders-db"`},
		{"write on a listed target", stmtReq(billing, "orders-db", "UPDATE", customers("update"), nil, false), true, true, ""},
		{"write on a prod target", stmtReq(billing, "payments-prod", "INSERT", customers("insert"), nil, false), true, true, ""},
		{"write on staging", stmtReq(billing, "billing-staging", "INSERT", customers("insert"), nil, false), true, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.Decide(context.Background(), tc.in)
			if got.Allow != tc.wantAllow || got.NeedsApproval() != tc.wantApproval || got.Reason != tc.wantReason {
				t.Errorf("Decide = %+v; want allow %v, approval %v, reason %q", got, tc.wantAllow, tc.wantApproval, tc.wantReason)
			}
			if tc.in.Request.Kind == KindStatement && got.Allow && len(got.Mask) != 2 {
				t.Errorf("mask = %+v, want the customers' email and card", got.Mask)
			}
		})
	}
	if len(errs) != 0 {
		t.Errorf("engine errors: %v", errs)
	}
}

func TestTestReport(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.rego": "package tollgate\n\ndecision := {\"allow\": input.ok == true}\n",
		"p_test.rego": `package tollgate_test

import data.tollgate

test_allows if tollgate.decision.allow with input as {"ok": true}

test_wrong if {
	print("looking at", tollgate.decision)
	tollgate.decision.allow with input as {"ok": false}
}

test_errs if {
	x := 1 / 0
	x > 0
}

todo_test_later if false

c := 1 if input.x == 1

c := 2 if input.y == 1

test_conflict if c == 1 with input as {"x": 1, "y": 1}
`,
	})
	var out bytes.Buffer
	passed, failed, err := Test(context.Background(), dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	if passed != 1 || failed != 3 {
		t.Errorf("passed %d, failed %d; want 1 and 3", passed, failed)
	}
	got := out.String()
	for _, want := range []string{
		"PASS  data.tollgate_test.test_allows (",
		"FAIL  data.tollgate_test.test_wrong (",
		"p_test.rego:9: data.tollgate.decision.allow with input as {\"ok\": false}",
		"looking at",
		"FAIL  data.tollgate_test.test_errs (",
		"SKIP  data.tollgate_test.todo_test_later",
		"ERROR data.tollgate_test.test_conflict (",
		"eval_conflict_error",
		"\n1 passed, 3 failed\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestTestErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Test(context.Background(), dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "no .rego files") {
		t.Errorf("Test of an empty dir = %v", err)
	}
	writeFiles(t, dir, map[string]string{"p_test.rego": "package x\ntest_a if { y }\n"})
	if _, _, err := Test(context.Background(), dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "rego_unsafe_var_error") {
		t.Errorf("Test of a broken policy = %v", err)
	}
	writeFiles(t, dir, map[string]string{"p_test.rego": "package x\ntest_a if http.send({}).status_code == 200\n"})
	if _, _, err := Test(context.Background(), dir, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "undefined function http.send") {
		t.Errorf("Test of a policy calling http.send = %v", err)
	}
}
