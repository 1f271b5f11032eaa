package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/control"
)

// maskPolicy allows everything and masks two of the six columns.
const maskPolicy = `package tollgate

decision := {"allow": true, "cache": true, "mask": [
	{"table": "public.people", "column": "email", "method": "email"},
	{"table": "public.people", "column": "card", "method": "last4"},
]}
`

// runMask compares reading rows rows of six columns straight from
// PostgreSQL, through tollgate without masking, and through tollgate masking
// two columns, interleaved; then the agent's peak memory after a small and a
// large result.
func runMask(rows int) error {
	work, err := os.MkdirTemp("", "tollgate-maskbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o755)
	pgPort := freeTCPPort()
	password := randomHex(12)
	stopPG, err := startPostgres(work, pgPort, password)
	if err != nil {
		return err
	}
	defer stopPG()
	secret := filepath.Join(work, "bench.password")
	os.WriteFile(secret, []byte(password), 0o600)
	g, err := startGoverned("mask", fmt.Sprintf(`  - name: bench-db
    protocol: postgres
    address: 127.77.0.52:5432
    upstream: 127.0.0.1:%d
    credentials: {username: bench, password_file: %s}
`, pgPort, secret))
	if err != nil {
		return err
	}
	defer g.close()
	policyFile := filepath.Join(work, "mask.rego")
	os.WriteFile(policyFile, []byte(maskPolicy), 0o644)

	setup := fmt.Sprintf(`CREATE TABLE people AS SELECT i AS id, 'Person ' || i AS name,
		'person' || i || '@example.com' AS email, '4111 1111 1111 ' || lpad((i %% 10000)::text, 4, '0') AS card,
		'City ' || (i %% 100) AS city, (i * 7) %% 1000 AS score FROM generate_series(1, %d) i;
		CREATE TABLE people_small AS SELECT * FROM people LIMIT %d`, rows, rows/10)
	create := exec.Command("psql", "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(pgPort), "-U", "bench", "-d", "bench", "-c", setup)
	create.Env = append(os.Environ(), "PGPASSWORD="+password)
	if out, err := create.CombinedOutput(); err != nil {
		return fmt.Errorf("create table: %w\n%s", err, out)
	}

	read := func(host, port, table string) (time.Duration, error) {
		// FETCH_COUNT makes psql stream the result through a cursor,
		// so the client's memory stays small too.
		cmd, done, err := g.command("psql", "-X", "-At", "-v", "FETCH_COUNT=20000", "-h", host, "-p", port, "-U", "bench", "-d", "bench",
			"-o", "/dev/null", "-c", "SELECT * FROM "+table)
		if err != nil {
			return 0, err
		}
		defer done()
		cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			return 0, fmt.Errorf("psql: %v %s", err, out)
		}
		return time.Since(start), nil
	}
	type path struct{ name, host, port, policy string }
	paths := []path{
		{"direct", "127.0.0.1", strconv.Itoa(pgPort), ""},
		{"tollgate", "127.77.0.52", "5432", ""},
		{"tollgate masked", "127.77.0.52", "5432", policyFile},
	}
	best := map[string]time.Duration{}
	for round := 0; round < 3; round++ {
		for _, p := range paths {
			if err := g.setPolicy(p.policy); err != nil {
				return err
			}
			d, err := read(p.host, p.port, "people")
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			if b, ok := best[p.name]; !ok || d < b {
				best[p.name] = d
			}
		}
	}
	fmt.Printf("\nmasking: SELECT * of %d rows x 6 columns (2 masked), psql FETCH_COUNT=20000, best of 3, %s\n", rows, time.Now().Format(time.RFC3339))
	fmt.Printf("%-16s %12s %12s %10s\n", "path", "time", "rows/s", "vs direct")
	for _, p := range paths {
		d := best[p.name]
		fmt.Printf("%-16s %12v %12.0f %9.2fx\n", p.name, d.Round(time.Millisecond), float64(rows)/d.Seconds(), best["direct"].Seconds()/d.Seconds())
	}
	fmt.Printf("masked vs unmasked throughput: %.2fx\n", best["tollgate"].Seconds()/best["tollgate masked"].Seconds())

	// Memory: the agent's peak after a result a tenth the size, then after
	// the full one again (masked both times).
	if err := g.setPolicy(policyFile); err != nil {
		return err
	}
	g2, err := restartGoverned(g)
	if err != nil {
		return err
	}
	g = g2
	if _, err := read("127.77.0.52", "5432", "people_small"); err != nil {
		return err
	}
	small, err := peakKiB(g.agent.Process.Pid)
	if err != nil {
		return err
	}
	if _, err := read("127.77.0.52", "5432", "people"); err != nil {
		return err
	}
	large, err := peakKiB(g.agent.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("agent peak memory (VmHWM): %d KiB after %d rows, %d KiB after %d rows (%.2fx for 10x the rows)\n",
		small, rows/10, large, rows, float64(large)/float64(small))
	return nil
}

// restartGoverned restarts the agent of g, so that its peak memory counts
// from now.
func restartGoverned(g *governed) (*governed, error) {
	g.agent.Process.Signal(os.Interrupt)
	g.agent.Wait()
	cmd := exec.Command(g.agent.Path, g.agent.Args[1:]...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g.agent = cmd
	if err := waitUp(control.NewClient(filepath.Join(g.work, "ctl.sock"))); err != nil {
		return nil, err
	}
	return g, nil
}

// peakKiB is a process's peak resident memory.
func peakKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no VmHWM for %d", pid)
}
