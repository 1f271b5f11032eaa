package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/audit/pgsink"
	"github.com/tollgate-dev/tollgate/test/pgtest"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

func TestAuditJournalRecordsSessionsAndVerifies(t *testing.T) {
	f := newPG(t)
	f.pg.Exec(t, "CREATE TABLE allowed_t (v int); CREATE TABLE other_t (v int); GRANT ALL ON allowed_t, other_t TO "+f.pg.App.Name)
	f.setPolicy(testPolicy)
	if out, err := f.run("psql", "-X", "-At", f.conninfo(""), "-c", "SELECT count(*) FROM other_t", "-c", "INSERT INTO allowed_t VALUES (1)"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := f.run("psql", "-X", "-At", f.conninfo(""), "-c", "DELETE FROM other_t"); err == nil {
		t.Fatalf("DELETE allowed: %s", out)
	}
	pub := filepath.Join(t.TempDir(), "audit.pub")
	pem, code := f.tollctl("audit", "pubkey")
	if code != 0 || !strings.Contains(pem, "BEGIN PUBLIC KEY") {
		t.Fatalf("audit pubkey: exit %d: %s", code, pem)
	}
	os.WriteFile(pub, []byte(pem), 0o644)
	f.stop(syscall.SIGTERM) // the final checkpoint anchors every record

	// An auditor's copy, verified offline with the public key alone.
	auditDir := filepath.Join(f.dir, "state", "audit")
	copyDir := filepath.Join(t.TempDir(), "journal")
	if out, err := exec.Command("cp", "-a", auditDir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	out, code := f.tollctl("audit", "verify", "--dir", copyDir, "--pubkey", pub)
	if code != 0 || !strings.Contains(out, "OK: the journal verifies") || strings.Contains(out, "unanchored") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}

	// What is in it.
	out, code = f.tollctl("audit", "export", "--dir", copyDir, "--identity", "reporting")
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, out)
	}
	types := map[string]int{}
	var sawDenied, sawRows bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var rec struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		types[rec.Type]++
		if rec.Type == "statement" {
			types["kind:"+rec.Data["kind"].(string)]++
		}
		if rec.Type == "statement" && rec.Data["sql"] == "DELETE FROM other_t" && rec.Data["allow"] == false &&
			strings.Contains(rec.Data["reason"].(string), "DELETE is not allowed") {
			sawDenied = true
		}
		// A statement's result is a record of its own, or, when it ended
		// before the journal flushed the statement, part of it.
		if res, ok := rec.Data["result"].(map[string]any); ok && rec.Type == "statement" {
			rec.Type, rec.Data = "statement_result", res
			types[rec.Type]++
		}
		if rec.Type == "statement_result" && rec.Data["rows"] == float64(1) {
			sawRows = true
		}
	}
	if types["session_start"] != 2 || types["session_end"] != 2 || types["kind:connect"] != 2 || types["kind:statement"] != 3 || types["statement_result"] != 3 {
		t.Errorf("record types for the identity = %v; want 2 sessions with their connect decisions, 3 statements and their results", types)
	}
	if !sawDenied || !sawRows {
		t.Errorf("denied DELETE recorded: %v; a result with rows: %v\n%s", sawDenied, sawRows, out)
	}
	all, _ := f.tollctl("audit", "export", "--dir", copyDir, "--format", "csv")
	for _, want := range []string{"agent_start", "policy_loaded", "agent_stop", "seq,time,type,session,identity,target,data"} {
		if !strings.Contains(all, want) {
			t.Errorf("csv export lacks %s", want)
		}
	}

	// One changed byte anywhere is caught, and the first bad record named.
	segs, _ := filepath.Glob(filepath.Join(copyDir, "seg-*.jsonl"))
	data, _ := os.ReadFile(segs[0])
	i := bytes.Index(data, []byte("DELETE FROM other_t"))
	data[i] = 'd'
	os.WriteFile(segs[0], data, 0o644)
	out, code = f.tollctl("audit", "verify", "--dir", copyDir, "--pubkey", pub)
	if code != 5 || !strings.Contains(out, "FIRST BAD RECORD") {
		t.Errorf("tampered journal: exit %d\n%s; want exit 5 naming the record", code, out)
	}
}

func TestSessionsWatchKillReplay(t *testing.T) {
	f := newPG(t)
	psql := exec.Command("psql", "-X", "-At", f.conninfo(""))
	psql.Env = append(os.Environ(), "PGPASSWORD=")
	testenv.InCgroup(t, psql, f.cg)
	stdin, _ := psql.StdinPipe()
	var psqlOut syncBuffer
	psql.Stdout, psql.Stderr = &psqlOut, &psqlOut
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); psql.Process.Kill(); psql.Wait() })
	io.WriteString(stdin, "SELECT 1;\n")
	var id string
	waitFor(t, "a live session", func() bool {
		for _, s := range f.sessions() {
			if s.State == "open" {
				id = s.ID
				return true
			}
		}
		return false
	})

	watch := exec.Command(filepath.Join(binDir, "tollctl"), "--socket", f.socket, "sessions", "watch", id)
	wout, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(wout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(what string) time.Time {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended before %q", what)
				}
				if strings.Contains(l, what) {
					return time.Now()
				}
			case <-timeout:
				t.Fatalf("watch never showed %q", what)
			}
		}
	}
	expect("session " + id + " started") // history first
	sent := time.Now()
	io.WriteString(stdin, "SELECT 42 AS watched;\n")
	seen := expect("SELECT 42 AS watched")
	t.Logf("watch showed the statement %v after psql sent it", seen.Sub(sent))
	if seen.Sub(sent) > 2*time.Second {
		t.Errorf("watch lagged %v", seen.Sub(sent))
	}

	out, code := f.tollctl("sessions", "kill", id, "--reason", "e2e kill")
	if code != 0 {
		t.Fatalf("kill: exit %d: %s", code, out)
	}
	expect("kill_session")
	expect("session ended")
	if err := watch.Wait(); err != nil {
		t.Errorf("watch after the session ended: %v", err)
	}
	io.WriteString(stdin, "SELECT 2;\n")
	waitFor(t, "psql to report the kill", func() bool {
		return strings.Contains(psqlOut.String(), "terminat") || strings.Contains(psqlOut.String(), "closed")
	})
	if strings.Contains(psqlOut.String(), "terminating connection") && !strings.Contains(psqlOut.String(), "killed by an operator: e2e kill") {
		t.Errorf("the client was not told why: %q", psqlOut.String())
	}
	if out, code := f.tollctl("sessions", "kill", id); code != 4 {
		t.Errorf("killing an ended session: exit %d: %s; want 4", code, out)
	}

	out, code = f.tollctl("sessions", "replay", id, "--speed", "0")
	if code != 0 || !strings.Contains(out, "SELECT 1") || !strings.Contains(out, "SELECT 42 AS watched") || !strings.Contains(out, "kill_session") {
		t.Errorf("replay: exit %d\n%s", code, out)
	}
}

// waitFor polls cond (an external process's state) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAuditDiskFullRefusesStatementsAndLosesNothing(t *testing.T) {
	f := newPG(t)
	f.stop(syscall.SIGTERM)
	// The journal on a small filesystem of its own.
	fs := filepath.Join(f.dir, "small")
	os.Mkdir(fs, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fs).Run() })
	f.extra += "audit: {dir: " + filepath.Join(fs, "audit") + ", durability: strict}\n"
	f.writeConfig()
	f.start()
	psql := func(sql string) (string, error) { return f.run("psql", "-X", "-At", f.conninfo(""), "-c", sql) }
	if out, err := psql("SELECT 1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	// Fill the disk. The journal has blocks reserved ahead (up to 1 MiB),
	// so the statements' records use those up first.
	filler := filepath.Join(fs, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k", "count=64").Run()
	var refused string
	for i := 0; i < 200 && refused == ""; i++ {
		out, err := psql(fmt.Sprintf("SELECT %d, '%s'", i, strings.Repeat("x", 20000)))
		if err != nil {
			refused = out
		}
	}
	if !strings.Contains(refused, "cannot") {
		t.Fatalf("statements were never refused on a full disk; last output %q", refused)
	}
	os.Remove(filler)
	waitFor(t, "statements to be accepted again", func() bool {
		_, err := psql("SELECT 'after'")
		return err == nil
	})
	pub := filepath.Join(t.TempDir(), "audit.pub")
	pem, _ := f.tollctl("audit", "pubkey")
	os.WriteFile(pub, []byte(pem), 0o644)
	f.stop(syscall.SIGTERM)
	out, code := f.tollctl("audit", "verify", "--dir", filepath.Join(fs, "audit"), "--pubkey", pub)
	if code != 0 {
		t.Fatalf("verify after the disk-full episode: exit %d\n%s", code, out)
	}
	exp, _ := f.tollctl("audit", "export", "--dir", filepath.Join(fs, "audit"))
	if !strings.Contains(exp, "SELECT 'after'") || !strings.Contains(exp, `"type":"recovery"`) {
		t.Errorf("the journal lacks the statement after recovery or the recovery record")
	}
}

func TestAuditShippedToPostgres(t *testing.T) {
	sinkDB := pgtest.Start(t)
	f := newPG(t)
	f.stop(syscall.SIGTERM)
	dsn := filepath.Join(f.dir, "sink.dsn")
	os.WriteFile(dsn, []byte(sinkDB.DSN(sinkDB.Super.Name)), 0o600)
	f.extra += "audit:\n  sinks:\n    - {type: postgres, dsn_file: " + dsn + "}\n"
	f.writeConfig()
	f.start()
	if out, err := f.run("psql", "-X", "-At", f.conninfo(""), "-c", "SELECT 'shipped'"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	waitFor(t, "the statement to reach the sink", func() bool {
		r, err := sinkDB.Connect(t).Exec(context.Background(), "SELECT count(*) FROM "+pgsink.DefaultTable+" WHERE data->>'sql' = 'SELECT ''shipped'''").ReadAll()
		return err == nil && len(r) == 1 && len(r[0].Rows) == 1 && string(r[0].Rows[0][0]) == "1"
	})
}

// Every statement of 200 concurrent sessions is journaled, and the journal
// still verifies.
func TestAuditCountsEveryStatementOfConcurrentSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("200 sessions x 500 statements: not with -short")
	}
	testenv.RequirePrivileged(t)
	f := newPGOn(t, pgtest.Start(t, pgtest.WithConf("max_connections = 260")))
	script := filepath.Join(t.TempDir(), "one.sql")
	os.WriteFile(script, []byte("SELECT :client_id + 1;\n"), 0o644)
	cmd := exec.Command("pgbench", "-h", f.host, "-p", f.port, "-U", "x", "-n", "-c", "200", "-j", "2", "-t", "500",
		"-f", script, f.pg.Database)
	cmd.Env = append(os.Environ(), "PGPASSWORD=")
	testenv.InCgroup(t, cmd, f.cg)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "number of transactions actually processed: 100000/100000") {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	pem, _ := f.tollctl("audit", "pubkey")
	pub := filepath.Join(t.TempDir(), "audit.pub")
	os.WriteFile(pub, []byte(pem), 0o644)
	f.stop(syscall.SIGTERM)
	dir := filepath.Join(f.dir, "state", "audit")
	if out, code := f.tollctl("audit", "verify", "--dir", dir, "--pubkey", pub); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	exp, code := f.tollctl("audit", "export", "--dir", dir)
	if code != 0 {
		t.Fatal("export failed")
	}
	var statements, results, sessions, counted int
	sc := bufio.NewScanner(strings.NewReader(exp))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		json.Unmarshal(sc.Bytes(), &rec)
		switch {
		case rec.Type == "statement" && rec.Data["kind"] == "statement":
			statements++
			if rec.Data["result"] != nil { // ended before the journal flushed it
				results++
			}
		case rec.Type == "statement_result":
			results++
		case rec.Type == "session_end":
			sessions++
			counted += int(rec.Data["statements"].(float64))
		}
	}
	if sessions < 200 || statements != counted || results != counted || statements < 100000 {
		t.Errorf("sessions %d, statement records %d, results %d, statements the sessions counted %d; want 200 sessions and every statement (>= 100000) recorded once with its result",
			sessions, statements, results, counted)
	}
}
