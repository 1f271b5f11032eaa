package policy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/tollgate-dev/tollgate/pkg/identity"
)

// rulesPolicy allows the workload "app" what the other rules do not deny,
// and denies by identity, target, command, table and function.
const rulesPolicy = `package tollgate

default decision := {"allow": false, "reason": "default deny"}

known if input.identity.known == true

decision := {"allow": false, "reason": sprintf("unknown workload %s", [object.get(input.identity, "name", "?")])} if {
	not known
} else := {"allow": false, "reason": "target secret-db is closed"} if {
	input.target.name == "secret-db"
} else := {"allow": true} if {
	input.request.kind == "connect"
} else := {"allow": false, "reason": "DELETE is denied"} if {
	"DELETE" in input.request.commands
} else := {"allow": false, "reason": "salaries are private"} if {
	some t in input.request.tables
	t.schema == "public"
	t.name == "salaries"
} else := {"allow": false, "reason": "no sleeping"} if {
	"pg_sleep" in input.request.functions
} else := {"allow": false, "reason": "only app may run statements"} if {
	input.identity.name != "app"
} else := {
	"allow": true,
	"cache": input.session.application_name != "nocache",
	"record": "metadata",
	"mask": [{"table": "public.customers", "column": "email", "method": "email"}, {"classifier": "credit_card", "method": "hash", "salt": "k1"}],
} if {
	input.request.read_only
} else := {
	"allow": true,
	"cache": true,
	"approval": {"required": true, "approvers": ["group:dba"], "timeout": "10m"},
} if {
	input.request.kind == "statement"
}
`

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// newEngine is New for tests: unless a test sets one, the time-out is long,
// since a loaded CI machine running -race can take 50ms over anything.
func newEngine(t testing.TB, dir string, opts Options) *Engine {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	e, err := New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func workload(name string, known bool) identity.Workload {
	return identity.Workload{
		Name: name, Known: known, Owner: "team", Cgroup: "/system.slice/" + name + ".service",
		SystemdUnit: name + ".service", PID: 4242, UID: 1001, User: "svc", Exe: "/usr/bin/psql",
	}
}

func mustPrepare(t testing.TB, id any) *PreparedIdentity {
	t.Helper()
	p, err := PrepareIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func connectReq(id any, target string) Input {
	return Input{
		Identity: id,
		Target:   Target{Name: target, Protocol: "postgres", Address: "127.77.0.5:5432"},
		Session:  Session{ID: "s1", Database: "orders", User: "app", ApplicationName: "psql"},
		Request:  Request{Kind: KindConnect},
	}
}

// stmtReq is a statement request whose fingerprint stands for its shape
// (command, tables, functions), as a real one does.
func stmtReq(id any, target, command string, tables []Table, functions []string, readOnly bool) Input {
	in := connectReq(id, target)
	shape, _ := json.Marshal([]any{command, tables, functions, readOnly})
	in.Request = Request{
		Kind: KindStatement, SQL: "-- " + command, Fingerprint: string(shape),
		Commands: []string{command}, Tables: tables, Functions: functions, ReadOnly: readOnly,
	}
	return in
}

func TestDecide(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"rules.rego": rulesPolicy})
	e := newEngine(t, dir, Options{})
	app := workload("app", true)
	customers := []Table{{Schema: "public", Name: "customers", Access: "select"}}
	tests := []struct {
		name       string
		in         Input
		wantAllow  bool
		wantReason string
	}{
		{"known connects", connectReq(app, "orders-db"), true, ""},
		{"known connects, identity by pointer", connectReq(&app, "orders-db"), true, ""},
		{"known connects, identity prepared", connectReq(mustPrepare(t, app), "orders-db"), true, ""},
		{"known connects, identity as map", connectReq(map[string]any{"name": "app", "known": true}, "orders-db"), true, ""},
		{"unknown workload", connectReq(workload("session-3.scope", false), "orders-db"), false, "unknown workload session-3.scope"},
		{"no identity", connectReq(nil, "orders-db"), false, "unknown workload ?"},
		{"closed target", connectReq(app, "secret-db"), false, "target secret-db is closed"},
		{"select", stmtReq(app, "orders-db", "SELECT", customers, nil, true), true, ""},
		{"other workload", stmtReq(workload("batch", true), "orders-db", "SELECT", customers, nil, true), false, "only app may run statements"},
		{"denied command", stmtReq(app, "orders-db", "DELETE", customers, nil, false), false, "DELETE is denied"},
		{"denied table", stmtReq(app, "orders-db", "SELECT", []Table{{Schema: "public", Name: "salaries", Access: "select"}}, nil, true), false, "salaries are private"},
		{"same name, other schema", stmtReq(app, "orders-db", "SELECT", []Table{{Schema: "hr", Name: "salaries", Access: "select"}}, nil, true), true, ""},
		{"denied function", stmtReq(app, "orders-db", "SELECT", nil, []string{"now", "pg_sleep"}, false), false, "no sleeping"},
		{"write held", stmtReq(app, "orders-db", "INSERT", customers, nil, false), true, ""},
		{"unknown kind", func() Input { in := connectReq(app, "orders-db"); in.Request.Kind = "copy"; return in }(), false, "default deny"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.Decide(context.Background(), tc.in)
			if got.Allow != tc.wantAllow || got.Reason != tc.wantReason {
				t.Errorf("Decide = allow %v, reason %q (error %q); want allow %v, reason %q", got.Allow, got.Reason, got.Error, tc.wantAllow, tc.wantReason)
			}
			if got.PolicyVersion != e.Version() || got.PolicyVersion == "" {
				t.Errorf("PolicyVersion = %q, want %q", got.PolicyVersion, e.Version())
			}
		})
	}
}

func TestDecideDecisionFields(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"rules.rego": rulesPolicy})
	e := newEngine(t, dir, Options{})
	app := workload("app", true)

	got := e.Decide(context.Background(), stmtReq(app, "orders-db", "SELECT", nil, nil, true))
	want := Decision{
		Allow:  true,
		Record: RecordMetadata,
		Cache:  true,
		Mask: []MaskRule{
			{Table: "public.customers", Column: "email", Method: "email"},
			{Classifier: "credit_card", Method: "hash", Params: map[string]any{"salt": "k1"}},
		},
		PolicyVersion: e.Version(),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read decision:\n got %+v\nwant %+v", got, want)
	}

	got = e.Decide(context.Background(), stmtReq(app, "orders-db", "UPDATE", nil, nil, false))
	wantApproval := &Approval{Required: true, Approvers: []string{"group:dba"}, Scope: ScopeStatement, Timeout: "10m"}
	if !got.Allow || !reflect.DeepEqual(got.Approval, wantApproval) || !got.NeedsApproval() {
		t.Errorf("write decision: got %+v approval %+v; want allow with %+v", got, got.Approval, wantApproval)
	}
	if d := got.Approval.TimeoutDuration(); d != 10*time.Minute {
		t.Errorf("TimeoutDuration = %v, want 10m", d)
	}
}

func TestNoPolicy(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"empty dir", nil},
		{"only tests", map[string]string{"x_test.rego": "package tollgate_test\ntest_x if true\n"}},
		{"other files", map[string]string{"README.md": "# policy\n", "data.json": "{}"}},
		{"hidden dir", map[string]string{"..2024_01_01/tollgate.rego": rulesPolicy}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			var reloads []string
			e := newEngine(t, dir, Options{OnReload: func(v string, err error) {
				if err != nil {
					t.Errorf("OnReload error: %v", err)
				}
				reloads = append(reloads, v)
			}})
			got := e.Decide(context.Background(), connectReq(workload("app", true), "orders-db"))
			want := "no policy loaded: tollgate denies everything until a policy is installed in " + dir
			if got.Allow || got.Reason != want {
				t.Errorf("Decide = %+v, want deny %q", got, want)
			}
			if e.Version() != "" || !reflect.DeepEqual(reloads, []string{""}) {
				t.Errorf("Version %q, OnReload calls %q; want \"\" and one call with \"\"", e.Version(), reloads)
			}
		})
	}
	t.Run("missing dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nope")
		e := newEngine(t, dir, Options{})
		if got := e.Decide(context.Background(), connectReq(workload("app", true), "x")); got.Allow || !strings.Contains(got.Reason, "no policy loaded") {
			t.Errorf("Decide = %+v, want no-policy deny", got)
		}
		if s := e.Status(); s.LastError != "" {
			t.Errorf("LastError = %q, want none", s.LastError)
		}
	})
}

func TestDefaults(t *testing.T) {
	e, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.opts.Timeout != DefaultTimeout || e.opts.CacheSize != DefaultCacheSize || e.opts.Debounce != DefaultDebounce || e.cache == nil {
		t.Errorf("options %+v, want the defaults", e.opts)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New("", Options{}); err == nil {
		t.Error("New(\"\") succeeded")
	}
	if _, err := New(t.TempDir(), Options{Timeout: -1}); err == nil {
		t.Error("New with a negative timeout succeeded")
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, src, wantErr string
	}{
		{"parse error", "package tollgate\ndecision := {\n", "rego_parse_error"},
		{"v0 syntax", "package tollgate\ndecision = {\"allow\": true} { true }\n", "rego_parse_error"},
		{"no decision rule", "package other\ndecision := {\"allow\": true}\n", "no rule defines data.tollgate.decision"},
		{"unsafe var", "package tollgate\ndecision := {\"allow\": x} if { true }\n", "rego_unsafe_var_error"},
		{"network built-in", "package tollgate\ndecision := http.send({\"method\": \"get\", \"url\": \"http://127.0.0.1:1\"}).body\n", "undefined function http.send"},
		{"environment built-in", "package tollgate\ndecision := {\"allow\": opa.runtime().env.X == \"y\"}\n", "undefined function opa.runtime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": tc.src})
			var gotErr error
			e := newEngine(t, dir, Options{OnReload: func(_ string, err error) { gotErr = err }})
			if gotErr == nil || !strings.Contains(gotErr.Error(), tc.wantErr) {
				t.Fatalf("OnReload error = %v, want one containing %q", gotErr, tc.wantErr)
			}
			s := e.Status()
			if !strings.Contains(s.LastError, tc.wantErr) || s.LastErrorAt.IsZero() || s.Version != "" {
				t.Errorf("Status = %+v, want LastError containing %q and no version", s, tc.wantErr)
			}
			if got := e.Decide(context.Background(), connectReq(workload("app", true), "x")); got.Allow || !strings.Contains(got.Reason, "no policy loaded") {
				t.Errorf("Decide = %+v, want no-policy deny", got)
			}
		})
	}
}

func TestEvaluationFailures(t *testing.T) {
	app := workload("app", true)
	tests := []struct {
		name       string
		src        string
		opts       Options
		wantReason string
		wantErr    string
	}{
		{
			name:       "conflicting outputs",
			src:        "package tollgate\ndecision := {\"allow\": true} if input.request.kind == \"connect\"\ndecision := {\"allow\": false} if input.target.name == \"orders-db\"\n",
			wantReason: reasonError, wantErr: "conflicting values",
		},
		{
			name:       "object conflict",
			src:        "package tollgate\ndecision[\"allow\"] := true\ndecision[\"allow\"] := false if input.identity.known\n",
			wantReason: reasonError, wantErr: "conflict",
		},
		{
			name:       "division by zero, strict",
			src:        "package tollgate\ndefault decision := {\"allow\": true}\ndecision := {\"allow\": (1 / count(input.request.tables)) > 0}\n",
			opts:       Options{StrictBuiltinErrors: true},
			wantReason: reasonError, wantErr: "divide by zero",
		},
		{
			name:       "division by zero, lenient, no default",
			src:        "package tollgate\ndecision := {\"allow\": (1 / count(input.request.tables)) > 0}\n",
			wantReason: reasonNoDecision, wantErr: "undefined",
		},
		{
			name:       "undefined",
			src:        "package tollgate\ndecision := {\"allow\": true} if input.request.kind == \"never\"\n",
			wantReason: reasonNoDecision, wantErr: "undefined",
		},
		{
			name:       "not an object",
			src:        "package tollgate\ndecision := true\n",
			wantReason: reasonMalformed, wantErr: "decision is a boolean, want an object",
		},
		{
			name:       "wrong type",
			src:        "package tollgate\ndecision := {\"allow\": \"yes\"}\n",
			wantReason: reasonMalformed, wantErr: "allow is a string, want a boolean",
		},
		{
			name:       "bad approval timeout",
			src:        "package tollgate\ndecision := {\"allow\": true, \"approval\": {\"required\": true, \"approvers\": [\"x\"], \"timeout\": \"soon\"}}\n",
			wantReason: reasonMalformed, wantErr: "approval.timeout",
		},
		{
			name:       "mask rule without method",
			src:        "package tollgate\ndecision := {\"allow\": true, \"mask\": [{\"column\": \"email\"}]}\n",
			wantReason: reasonMalformed, wantErr: "mask[0].method: missing",
		},
		{
			name:       "time-out",
			src:        "package tollgate\ndecision := {\"allow\": n > 0} if {\n\tn := count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j])\n}\n",
			opts:       Options{Timeout: 50 * time.Millisecond},
			wantReason: reasonTimeout, wantErr: "exceeded 50ms",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": tc.src})
			var reported []error
			var mu sync.Mutex
			tc.opts.OnError = func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }
			tc.opts.OnReload = func(_ string, err error) {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
			}
			e := newEngine(t, dir, tc.opts)
			start := time.Now()
			got := e.Decide(context.Background(), connectReq(app, "orders-db"))
			took := time.Since(start)
			if got.Allow || got.Reason != tc.wantReason || !strings.Contains(got.Error, tc.wantErr) {
				t.Errorf("Decide = allow %v reason %q error %q; want deny %q with error containing %q", got.Allow, got.Reason, got.Error, tc.wantReason, tc.wantErr)
			}
			if len(reported) != 1 || reported[0].Error() != got.Error {
				t.Errorf("OnError calls = %v, want one with %q", reported, got.Error)
			}
			// Generous: the bound is the point, not the number.
			if took > 5*time.Second {
				t.Errorf("Decide took %v", took)
			}
		})
	}
}

func TestDecideCanceled(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"rules.rego": rulesPolicy})
	e := newEngine(t, dir, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := e.Decide(ctx, connectReq(workload("app", true), "orders-db"))
	if got.Allow || got.Reason != reasonCanceled {
		t.Errorf("Decide = %+v, want deny %q", got, reasonCanceled)
	}
}

// TestInputValue holds inputValue to the JSON form of Input: the policy
// sees the contract's names whichever way the value is built.
func TestInputValue(t *testing.T) {
	w := workload("app", true)
	w.Pod = &identity.Pod{UID: "0f0e"}
	w.Claims = map[string]any{"sub": "svc", "aud": []any{"a", "b"}, "exp": 17}
	ins := []Input{
		{
			Identity: w,
			Target:   Target{Name: "orders-db", Protocol: "postgres", Address: "127.77.0.5:5432"},
			Session:  Session{ID: "s", Database: "d", User: "u", ApplicationName: "a", Options: map[string]string{"replication": "database"}},
			Request: Request{
				Kind: KindStatement, SQL: "select 1", Fingerprint: "ab", Commands: []string{"SELECT"},
				Tables: []Table{{Schema: "public", Name: "t", Access: "select"}}, Functions: []string{"now"}, ReadOnly: true,
			},
		},
		{
			Identity: mustPrepare(t, &w),
			Request:  Request{Kind: KindStatement, Commands: []string{}, Tables: []Table{}, Functions: []string{}},
		},
		{
			Identity: map[string]any{"name": "x", "known": false, "uid": 7},
			Request:  Request{Kind: KindConnect, Commands: []string{}, Tables: []Table{}, Functions: []string{}},
		},
	}
	for i, in := range ins {
		got, err := inputValue(&in)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var x any
		if err := util.UnmarshalJSON(b, &x); err != nil {
			t.Fatal(err)
		}
		want, err := ast.InterfaceToValue(x)
		if err != nil {
			t.Fatal(err)
		}
		if got.Compare(want) != 0 {
			t.Errorf("input %d:\n got %v\nwant %v", i, got, want)
		}
	}
}

func TestInputValueBadIdentity(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"rules.rego": rulesPolicy})
	e := newEngine(t, dir, Options{})
	got := e.Decide(context.Background(), connectReq(map[string]any{"name": "x", "known": true, "f": func() {}}, "orders-db"))
	if got.Allow || got.Reason != reasonError {
		t.Errorf("Decide = %+v, want deny %q", got, reasonError)
	}
	if _, err := PrepareIdentity(struct{ C chan int }{}); err == nil {
		t.Error("PrepareIdentity of a value JSON cannot hold succeeded")
	}
	got = e.Decide(context.Background(), connectReq(struct{ C chan int }{}, "orders-db"))
	if got.Allow || got.Reason != reasonError || !strings.Contains(got.Error, "input identity") {
		t.Errorf("Decide = %+v, want deny %q naming the identity", got, reasonError)
	}
}

func TestStatusFiles(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"rules.rego":         rulesPolicy,
		"lib/helpers.rego":   "package tollgate.lib\nx := 1\n",
		"rules_test.rego":    "package tollgate_test\ntest_x if true\n",
		".hidden/evil.rego":  "package tollgate\ndecision := {\"allow\": true}\n",
		"notes.txt":          "not policy",
		"lib/.#helpers.rego": "emacs lock",
	})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newEngine(t, dir, Options{Now: func() time.Time { return now }})
	s := e.Status()
	if want := []string{"lib/helpers.rego", "rules.rego"}; !reflect.DeepEqual(s.Files, want) {
		t.Errorf("Files = %q, want %q", s.Files, want)
	}
	if s.Dir != dir || !s.Loaded.Equal(now) || s.LastError != "" || len(s.Version) != 64 {
		t.Errorf("Status = %+v", s)
	}
	// The version is the files' names and contents: the test file is not
	// part of it.
	writeFiles(t, dir, map[string]string{"rules_test.rego": "package tollgate_test\ntest_y if true\n"})
	if err := e.Reload(); err != nil || e.Version() != s.Version {
		t.Errorf("after a test file edit: Reload %v, version %s, want %s", err, e.Version(), s.Version)
	}
	if err := os.Rename(filepath.Join(dir, "lib"), filepath.Join(dir, "lib2")); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err != nil || e.Version() == s.Version {
		t.Errorf("after a rename: Reload %v, version unchanged", err)
	}
}

func TestSymlinkedDir(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{"v1/rules.rego": rulesPolicy})
	link := filepath.Join(base, "policy")
	if err := os.Symlink("v1", link); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, link, Options{})
	if got := e.Decide(context.Background(), connectReq(workload("app", true), "orders-db")); !got.Allow {
		t.Errorf("Decide through a symlinked dir = %+v, want allow", got)
	}
}
