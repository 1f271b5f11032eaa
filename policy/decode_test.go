package policy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func decodeJSON(t testing.TB, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

var decodeTests = []struct {
	name, json string
	want       Decision
	wantErr    string
}{
	{name: "empty", json: `{}`, want: Decision{}},
	{name: "allow", json: `{"allow": true, "reason": "ok", "unknown": [1, {"x": null}]}`, want: Decision{Allow: true, Reason: "ok"}},
	{name: "nulls are absent", json: `{"allow": null, "reason": null, "approval": null, "mask": null, "record": null, "cache": null}`, want: Decision{}},
	{
		name: "full",
		json: `{"allow": true, "reason": "r", "record": "full", "cache": true,
			"approval": {"required": true, "approvers": ["group:dba", "user:ann"], "scope": "session", "timeout": "1h30m"},
			"mask": [{"table": "public.customers", "column": "email", "method": "email"},
			         {"classifier": "credit_card", "method": "last4", "keep": 4, "note": {"a": [true]}}]}`,
		want: Decision{
			Allow: true, Reason: "r", Record: RecordFull, Cache: true,
			Approval: &Approval{Required: true, Approvers: []string{"group:dba", "user:ann"}, Scope: ScopeSession, Timeout: "1h30m"},
			Mask: []MaskRule{
				{Table: "public.customers", Column: "email", Method: "email"},
				{Classifier: "credit_card", Method: "last4", Params: map[string]any{"keep": json.Number("4"), "note": map[string]any{"a": []any{true}}}},
			},
		},
	},
	{name: "approval scope defaults", json: `{"approval": {"required": true, "approvers": ["g"]}}`, want: Decision{Approval: &Approval{Required: true, Approvers: []string{"g"}, Scope: ScopeStatement}}},
	{name: "evidence fields are not the policy's", json: `{"policy_version": "x", "cached": true, "error": "e"}`, want: Decision{}},
	{name: "not an object", json: `[]`, wantErr: "decision is an array, want an object"},
	{name: "null", json: `null`, wantErr: "decision is null, want an object"},
	{name: "allow string", json: `{"allow": "true"}`, wantErr: "allow is a string, want a boolean"},
	{name: "reason number", json: `{"reason": 1}`, wantErr: "reason is a number, want a string"},
	{name: "cache string", json: `{"cache": "yes"}`, wantErr: "cache is a string"},
	{name: "record", json: `{"record": "everything"}`, wantErr: `record: "everything" is not`},
	{name: "approval array", json: `{"approval": []}`, wantErr: "approval is an array, want an object"},
	{name: "approval required", json: `{"approval": {"required": 1}}`, wantErr: "approval.required is a number"},
	{name: "approvers string", json: `{"approval": {"approvers": "group:dba"}}`, wantErr: "approval.approvers is a string, want an array"},
	{name: "approver number", json: `{"approval": {"approvers": ["a", 2]}}`, wantErr: "approval.approvers[1] is a number"},
	{name: "scope", json: `{"approval": {"scope": "forever"}}`, wantErr: `approval.scope: "forever" is not`},
	{name: "timeout", json: `{"approval": {"timeout": "10"}}`, wantErr: "approval.timeout"},
	{name: "negative timeout", json: `{"approval": {"timeout": "-1m"}}`, wantErr: "approval.timeout"},
	{name: "mask object", json: `{"mask": {"column": "email"}}`, wantErr: "mask is an object, want an array"},
	{name: "mask rule string", json: `{"mask": ["email"]}`, wantErr: "mask[0] is a string, want an object"},
	{name: "mask method", json: `{"mask": [{"column": "c", "method": "m"}, {"column": "email", "method": 1}]}`, wantErr: "mask[1].method is a number"},
	{name: "mask target", json: `{"mask": [{"table": "t", "method": "m"}]}`, wantErr: "mask[0]: names neither a column nor a classifier"},
}

func TestDecodeDecision(t *testing.T) {
	for _, tc := range decodeTests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeDecision(decodeJSON(t, tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestDecisionJSON: a decision's JSON, as the audit journal and tollctl
// see it, keeps a mask rule's parameters beside its named fields.
func TestDecisionJSON(t *testing.T) {
	d := Decision{Allow: true, Mask: []MaskRule{{Classifier: "credit_card", Method: "last4", Params: map[string]any{"keep": 4, "method": "ignored"}}}, PolicyVersion: "v", Cached: true}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"allow":true,"mask":[{"classifier":"credit_card","keep":4,"method":"last4"}],"policy_version":"v","cached":true}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Mask[0].Params["keep"] != 4.0 || back.Mask[0].Method != "last4" {
		t.Errorf("decoded back: %+v", back.Mask[0])
	}
	if err := json.Unmarshal([]byte(`{"mask":[{"method":"x"}]}`), &back); err == nil {
		t.Error("a mask rule with no column nor classifier decoded")
	}
}

// FuzzDecodeDecision feeds arbitrary JSON values to the decoder: it never
// panics, and a decision it accepts survives its own JSON form unchanged.
func FuzzDecodeDecision(f *testing.F) {
	for _, tc := range decodeTests {
		f.Add([]byte(tc.json))
	}
	f.Add([]byte(`{"allow": true, "mask": [{"column": "c", "method": "m", "table": null, "x": 1e400}]}`))
	f.Add([]byte(`{"approval": {"required": true, "approvers": [], "timeout": "0s"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, useNumber := range []bool{true, false} {
			d := json.NewDecoder(bytes.NewReader(b))
			if useNumber {
				d.UseNumber()
			}
			var v any
			if d.Decode(&v) != nil {
				return
			}
			got, err := decodeDecision(v)
			if err != nil {
				if got.Allow {
					t.Errorf("error %v with an allowing decision", err)
				}
				continue
			}
			out, err := json.Marshal(got)
			if err != nil {
				// A parameter JSON cannot carry (none from JSON input).
				t.Fatalf("marshal %+v: %v", got, err)
			}
			d = json.NewDecoder(bytes.NewReader(out))
			if useNumber {
				d.UseNumber()
			}
			var v2 any
			if err := d.Decode(&v2); err != nil {
				t.Fatal(err)
			}
			again, err := decodeDecision(v2)
			if err != nil {
				t.Fatalf("decision %s does not decode again: %v", out, err)
			}
			if !reflect.DeepEqual(got, again) {
				t.Errorf("round trip changed the decision:\n%+v\n%+v", got, again)
			}
		}
	})
}
