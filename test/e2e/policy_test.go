package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tollgate-dev/tollgate/pkg/control"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

const testPolicy = `package tollgate

import rego.v1

default decision := {"allow": false, "reason": "not allowed by the test policy"}

known if input.identity.known

decision := {"allow": false, "reason": sprintf("unknown workload %s", [input.identity.name])} if not known

decision := {"allow": true} if {
	known
	input.request.kind == "connect"
	input.session.database != "forbidden_db"
	input.target.name != "blocked"
}

decision := {"allow": false, "reason": "the forbidden_db database is off limits"} if {
	known
	input.request.kind == "connect"
	input.session.database == "forbidden_db"
}

decision := {"allow": false, "reason": "the blocked target is closed"} if {
	known
	input.request.kind == "connect"
	input.target.name == "blocked"
}

writes_ok if {
	count(input.request.tables) > 0
	every t in input.request.tables { t.name == "allowed_t" }
}

decision := {"allow": true, "cache": true} if {
	known
	input.request.kind == "statement"
	input.request.read_only
}

decision := {"allow": true} if {
	known
	input.request.kind == "statement"
	not input.request.read_only
	writes_ok
}

decision := {"allow": false, "reason": sprintf("%s is not allowed for %s", [concat(",", input.request.commands), input.identity.name])} if {
	known
	input.request.kind == "statement"
	not input.request.read_only
	not writes_ok
}
`

func TestPolicyDecidesStatementsAndConnections(t *testing.T) {
	f := newPG(t)
	f.pg.Exec(t, "CREATE TABLE allowed_t (v int); CREATE TABLE other_t (v int); GRANT ALL ON allowed_t, other_t TO "+f.pg.App.Name)
	f.setPolicy(testPolicy)

	psql := func(db, sql string) (string, error) {
		return f.run("psql", "-X", "-At", "-v", "VERBOSITY=verbose", fmt.Sprintf("host=%s port=%s dbname=%s user=x", f.host, f.port, db), "-c", sql)
	}
	if out, err := psql(f.pg.Database, "SELECT count(*) FROM other_t"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("read: %v %q", err, out)
	}
	out, err := psql(f.pg.Database, "DELETE FROM other_t")
	if err == nil || !strings.Contains(out, "42501") || !strings.Contains(out, "DELETE is not allowed for reporting") {
		t.Errorf("write: %v %q; want 42501 with the policy's reason", err, out)
	}
	// One denied statement in a Query: none of it runs.
	out, err = psql(f.pg.Database, "INSERT INTO allowed_t VALUES (1); DROP TABLE other_t")
	if err == nil || !strings.Contains(out, "statement 2 of 2") {
		t.Errorf("multi-statement: %v %q", err, out)
	}
	if r := f.pg.Exec(t, "SELECT count(*) FROM allowed_t"); string(r[0].Rows[0][0]) != "0" {
		t.Errorf("the allowed half of a denied Query ran: %s rows", r[0].Rows[0][0])
	}
	if out, err := psql(f.pg.Database, "INSERT INTO allowed_t VALUES (2)"); err != nil {
		t.Errorf("allowed write: %v %q", err, out)
	}
	// Statements the parser cannot read are denied, never forwarded.
	out, err = psql(f.pg.Database, "SELEKT * FROM other_t")
	if err == nil || !strings.Contains(out, "42501") || !strings.Contains(out, "could not be judged") {
		t.Errorf("unparseable: %v %q", err, out)
	}

	out, err = psql("forbidden_db", "SELECT 1")
	if err == nil || !strings.Contains(out, "FATAL:  denied by tollgate policy: the forbidden_db database is off limits") {
		t.Errorf("connect denied: %v %q; want FATAL with the reason", err, out)
	}
	// psql prints no SQLSTATE for a failed connection; pgx shows it.
	pc := testenv.Helper("pgxconnect", fmt.Sprintf("postgres://x@%s/forbidden_db", f.target))
	testenv.InCgroup(t, pc, f.cg)
	var conn map[string]any
	testenv.RunJSON(t, pc, &conn)
	if conn["code"] != "28000" || conn["severity"] != "FATAL" {
		t.Errorf("pgx connect to forbidden_db: %v; want FATAL 28000", conn)
	}

	// A workload no identity matches is unknown, and this policy denies it.
	stranger := testenv.NewCgroup(t, f.cg)
	cmd := exec.Command("psql", "-X", "-At", "-v", "VERBOSITY=verbose", f.conninfo(""), "-c", "SELECT 1")
	testenv.InCgroup(t, cmd, stranger)
	o, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(o), "unknown workload") {
		t.Errorf("unknown workload: %v %q", err, o)
	}

	// pgx, extended protocol: the denial is 42501 and the connection lives on.
	pc = testenv.Helper("pgxdeny", fmt.Sprintf("postgres://x@%s/%s", f.target, f.pg.Database))
	testenv.InCgroup(t, pc, f.cg)
	var got map[string]any
	testenv.RunJSON(t, pc, &got)
	if got["code"] != "42501" || got["after"] != float64(1) || !strings.Contains(fmt.Sprint(got["message"]), "UPDATE is not allowed") {
		t.Errorf("pgx: %v", got)
	}

	ids := f.identities()
	if len(ids) == 0 || ids[0].Denied == 0 || ids[0].Allowed == 0 {
		t.Errorf("inventory does not count allowed and denied statements: %+v", ids)
	}
}

// pgxDeny runs in the governed cgroup: a denied UPDATE through the extended
// protocol, then a query on the same connection.
func pgxDeny(args []string) any {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, args[0])
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	defer conn.Close(ctx)
	out := map[string]any{}
	_, err = conn.Exec(ctx, "UPDATE other_t SET v = $1", 1)
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		out["code"], out["message"] = pe.Code, pe.Message
	} else {
		out["error"] = fmt.Sprint(err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		out["after_error"] = err.Error()
	}
	out["after"] = one
	return out
}

// pgxConnect runs in the governed cgroup and reports how a connection
// attempt failed.
func pgxConnect(args []string) any {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, args[0])
	if err == nil {
		conn.Close(ctx)
		return map[string]any{"connected": true}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return map[string]any{"code": pe.Code, "severity": pe.Severity, "message": pe.Message}
	}
	return map[string]any{"error": err.Error()}
}

func TestPolicyHotReloadBrokenAndMissing(t *testing.T) {
	f := newPG(t)
	v1 := f.setPolicy(testPolicy)
	psql := func(sql string) (string, error) {
		return f.run("psql", "-X", "-At", f.conninfo(""), "-c", sql)
	}
	if _, err := psql("CREATE TEMP TABLE x (v int)"); err == nil {
		t.Fatal("DDL allowed under the test policy")
	}

	// A broken file: the previous policy stays and the error is reported.
	f.writePolicy("package tollgate\n\ndecision := {\n")
	waitPolicy(t, f.agent, func(p control.PolicyStatus) bool { return p.LastError != "" })
	if st := status(t, f.agent); st.Policy.Version != v1 {
		t.Errorf("version after a broken file = %s; want the previous %s", st.Policy.Version, v1)
	}
	if out, _ := f.tollctl("status"); !strings.Contains(out, "policy error:") {
		t.Errorf("tollctl status does not show the policy error:\n%s", out)
	}
	if out, err := psql("SELECT 1"); err != nil {
		t.Errorf("reads under the kept policy: %v %q", err, out)
	}

	// A good file: in force without a restart, sessions untouched.
	f.writePolicy(allowAll)
	waitPolicy(t, f.agent, func(p control.PolicyStatus) bool { return p.Version != v1 && p.LastError == "" })
	if out, err := psql("CREATE TEMP TABLE x (v int)"); err != nil {
		t.Errorf("DDL after reload to allow-all: %v %q", err, out)
	}

	// No policy at all: everything is denied, saying why.
	os.Remove(filepath.Join(f.policyDir, "policy.rego"))
	waitPolicy(t, f.agent, func(p control.PolicyStatus) bool { return p.Version == "" })
	out, err := psql("SELECT 1")
	if err == nil || !strings.Contains(out, "no policy loaded") {
		t.Errorf("with no policy: %v %q; want a denial that says no policy is loaded", err, out)
	}
}

func TestPolicyDeniesTCPConnection(t *testing.T) {
	up := startUpstream(t, "up", "127.0.0.1:0")
	target := fmt.Sprintf("127.77.0.13:%d", freePort(t))
	a := newAgent(t, "")
	a.extra = fmt.Sprintf("identities:\n  - {name: app, owner: o, purpose: p, match: {cgroup: %q}}\ntargets:\n%s", a.cg.Path, tcpTarget("blocked", target, up.addr()))
	a.writeConfig()
	a.writePolicy(testPolicy)
	a.start()
	d := testenv.Dial(t, a.cg, "tcp4", target, "hello\n")
	if d.Reply != "" {
		t.Errorf("denied connection got a reply: %+v", d)
	}
	if n := up.conns.Load(); n != 0 {
		t.Errorf("upstream saw %d connections; want 0", n)
	}
	if ss := a.sessions(); len(ss) != 1 || ss[0].Denied != 1 {
		t.Errorf("sessions = %+v; want one denied", ss)
	}
}

// setPolicy writes rego and waits until the running agent has it in force;
// it returns the new version.
func (a *agent) setPolicy(rego string) string {
	a.t.Helper()
	before := status(a.t, a).Policy.Version
	a.writePolicy(rego)
	waitPolicy(a.t, a, func(p control.PolicyStatus) bool { return p.Version != before && p.Version != "" && p.LastError == "" })
	return status(a.t, a).Policy.Version
}

func status(t *testing.T, a *agent) control.Status {
	t.Helper()
	out, code := a.tollctl("status", "-o", "json")
	var st control.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status: exit %d: %s", code, out)
	}
	return st
}

// waitPolicy waits until the agent's policy status satisfies ok.
func waitPolicy(t *testing.T, a *agent, ok func(control.PolicyStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := status(t, a)
		if ok(st.Policy) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy status never reached the wanted state: %+v", st.Policy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPolicyToolingTestAndEval(t *testing.T) {
	// The shipped example policies pass their own tests.
	out, err := exec.Command(filepath.Join(binDir, "tollgate"), "policy", "test", "../../deploy/policies").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 failed") {
		t.Errorf("tollgate policy test deploy/policies: %v\n%s", err, out)
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "p.rego"), []byte("package tollgate\n\ndecision := {\"allow\": true}\n"), 0o644)
	os.WriteFile(filepath.Join(bad, "p_test.rego"), []byte("package tollgate_test\n\nimport data.tollgate\n\ntest_denies if not tollgate.decision.allow\n"), 0o644)
	out, err = exec.Command(filepath.Join(binDir, "tollgate"), "policy", "test", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "1 failed") {
		t.Errorf("a failing rego test: %v\n%s; want exit 1 and 1 failed", err, out)
	}

	// tollctl policy eval asks the running agent.
	a := newAgent(t, "")
	a.writePolicy(testPolicy)
	a.start()
	in := filepath.Join(t.TempDir(), "input.json")
	os.WriteFile(in, []byte(`{"identity": {"name": "billing", "known": true},
		"target": {"name": "orders-db", "protocol": "postgres"},
		"session": {"database": "orders", "user": "app"},
		"request": {"kind": "statement", "sql": "DELETE FROM t", "commands": ["DELETE"],
		            "tables": [{"schema": "", "name": "t", "access": "delete"}], "read_only": false}}`), 0o644)
	res, code := a.tollctl("policy", "eval", "--input", in)
	if code != 0 || !strings.Contains(res, "DENY") || !strings.Contains(res, "DELETE is not allowed for billing") {
		t.Errorf("policy eval: exit %d\n%s", code, res)
	}
	res, code = a.tollctl("policy", "eval", "--input", in, "-o", "json")
	var d map[string]any
	if code != 0 || json.Unmarshal([]byte(res), &d) != nil || d["allow"] != false {
		t.Errorf("policy eval -o json: exit %d\n%s", code, res)
	}
	os.WriteFile(in, []byte(`{"identiy": {}}`), 0o644)
	if out, code := a.tollctl("policy", "eval", "--input", in); code != 2 {
		t.Errorf("policy eval with a misspelt key: exit %d; want 2\n%s", code, out)
	}
}
