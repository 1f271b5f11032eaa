package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/control"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// pgResult is one pgbench run.
type pgResult struct {
	tps      float64
	p50, p99 time.Duration
	txs      int64         // transactions of the TPS runs
	cpu      time.Duration // the proxy's CPU time in the TPS runs
	machine  machineUse    // the whole machine's in the TPS runs
	client   time.Duration // pgbench's CPU time in the TPS runs
	server   time.Duration // PostgreSQL's in the TPS runs
	syscalls int64         // the proxy's read and write system calls in the TPS runs
}

// tpsRun is the outcome of one pgbench TPS run.
type tpsRun struct {
	tps float64
	txs int64
	cpu time.Duration // pgbench's CPU time
}

// runPG compares pgbench -S through three paths in one run: straight to
// PostgreSQL, through PgBouncer (session pooling), and through tollgate
// (eBPF redirect + the PostgreSQL engine parsing and judging every statement).
func runPG(seconds, rounds int, baselineBin, perfDir string) error {
	work, err := os.MkdirTemp("", "tollgate-pgbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o755)
	pgPort, bouncerPort := freeTCPPort(), freeTCPPort()
	password := randomHex(12)

	stopPG, err := startPostgres(work, pgPort, password)
	if err != nil {
		return err
	}
	defer stopPG()
	stopBouncer, err := startPgBouncer(work, pgPort, bouncerPort, password)
	if err != nil {
		return err
	}
	defer stopBouncer()

	secret := filepath.Join(work, "bench.password")
	os.WriteFile(secret, []byte(password), 0o600)
	targets := func(addr string) string {
		return fmt.Sprintf(`  - name: bench-db
    protocol: postgres
    address: %s
    upstream: 127.0.0.1:%d
    credentials: {username: bench, password_file: %s}
`, addr, pgPort, secret)
	}
	// The same server behind the plain TCP relay too: the floor of the
	// agent's data path, without the PostgreSQL engine.
	rawTarget := fmt.Sprintf(`  - {name: bench-tcp, protocol: tcp, address: "127.77.0.61:5432", upstream: "127.0.0.1:%d"}
`, pgPort)
	g, err := startGoverned("pg", targets("127.77.0.51:5432")+rawTarget)
	if err != nil {
		return err
	}
	defer g.close()
	// The same agent built with the benchnoaudit tag (its PostgreSQL engine
	// journals no statements), on a cgroup and target of its own.
	noAuditBin, err := buildNoAudit(work)
	if err != nil {
		return err
	}
	gn, err := startGovernedWith("pgnoaudit", noAuditBin, "169.254.77.202", targets("127.77.0.52:5432"))
	if err != nil {
		return err
	}
	defer gn.close()

	paths := []struct {
		name, host, port string
		g                *governed
		pid              int // the proxy's, for its CPU and system calls
	}{
		{"direct", "127.0.0.1", strconv.Itoa(pgPort), g, 0},
		{"pgbouncer", "127.0.0.1", strconv.Itoa(bouncerPort), g, bouncerPID(work)},
		{"tollgate", "127.77.0.51", "5432", g, g.agent.Process.Pid},
		{"noaudit", "127.77.0.52", "5432", gn, gn.agent.Process.Pid},
		// The agent's plain TCP relay to the same server: the floor of its
		// data path, with no PostgreSQL engine.
		{"tcp relay", "127.77.0.61", "5432", g, g.agent.Process.Pid},
	}
	if baselineBin != "" {
		// Another build of the agent (before a change), measured in the
		// same rounds.
		bin, err := filepath.Abs(baselineBin)
		if err != nil {
			return err
		}
		gb, err := startGovernedWith("pgbaseline", bin, "169.254.77.203", targets("127.77.0.53:5432"))
		if err != nil {
			return err
		}
		defer gb.close()
		b := paths[2]
		b.name, b.host, b.g, b.pid = "baseline", "127.77.0.53", gb, gb.agent.Process.Pid
		paths = append(paths, b)
	}
	if err := pgbench(g, work, paths[0].host, paths[0].port, password, "-i", "-s", "10", "-q"); err != nil {
		return err
	}
	if perfDir != "" {
		// The plain TCP relay first: the floor of the agent's data path.
		for _, mode := range []string{"simple", "prepared"} {
			before := sampleProc(paths[2].pid)
			run, err := pgbenchTPS(g, work, paths[4].host, paths[4].port, password, mode, 8, seconds)
			if err != nil {
				return err
			}
			used := sampleProc(paths[2].pid).sub(before)
			fmt.Printf("%-9s tcp relay %.0f TPS, agent CPU/tx %s, read+write/tx %.2f\n",
				mode, run.tps, perTx(used.cpu, run.txs), float64(used.syscalls)/float64(run.txs))
		}
		if perfSystem {
			// The server without a proxy: what a proxy adds to its costs.
			if err := perfAgent(perfDir, "direct", g, work, paths[0].host, paths[0].port, password, postmasterPID(work), seconds); err != nil {
				return err
			}
		}
		if err := perfAgent(perfDir, "tollgate", g, work, paths[2].host, paths[2].port, password, paths[2].pid, seconds); err != nil {
			return err
		}
		if err := perfAgent(perfDir, "pgbouncer", g, work, paths[1].host, paths[1].port, password, paths[1].pid, seconds); err != nil {
			return err
		}
		return perfAgent(perfDir, "noaudit", gn, work, paths[3].host, paths[3].port, password, paths[3].pid, seconds)
	}
	// The example policy (deploy/policies) against allow-all, on the same
	// agent, alternating, twice.
	type policyRun struct {
		tps float64
		txs int64
		cpu time.Duration
	}
	policyTPS := map[string][2]policyRun{}
	for _, mode := range []string{"simple", "prepared"} {
		var r [2]policyRun
		for round := 0; round < 2; round++ {
			for i, file := range []string{"", "deploy/policies/tollgate.rego"} {
				if err := g.setPolicy(file); err != nil {
					return err
				}
				before := sampleProc(paths[2].pid)
				run, err := pgbenchTPS(g, work, paths[2].host, paths[2].port, password, mode, 8, seconds/2)
				if err != nil {
					return fmt.Errorf("policy comparison: %w", err)
				}
				r[i].tps += run.tps / 2
				r[i].txs += run.txs
				r[i].cpu += sampleProc(paths[2].pid).sub(before).cpu
			}
		}
		policyTPS[mode] = r
	}
	if err := g.setPolicy(""); err != nil {
		return err
	}

	fmt.Printf("\npgbench -S (select-only), scale 10, %ds per run, PostgreSQL 15, %s\n", seconds, time.Now().Format(time.RFC3339))
	server := postmaster{postmasterPID(work)}
	fmt.Printf("%-10s %-9s %12s %12s %12s %12s %14s %14s %16s %14s %14s %12s %9s %9s\n", "mode", "path", "TPS c=8", "p50 c=1", "p99 c=1", "TPS vs direct", "proxy CPU/tx", "read+write/tx", "machine CPU/tx", "pgbench CPU/tx", "server CPU/tx", "switches/tx", "irqs/tx", "segs/tx")
	for _, mode := range []string{"simple", "prepared"} {
		res := map[string]pgResult{}
		// Interleave paths, rounds times, so drift in machine load hits
		// each alike; every other round in reverse order, so that no path
		// always follows the same one.
		for round := 0; round < rounds; round++ {
			order := slices.Clone(paths)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				before, mBefore, sBefore := sampleProc(p.pid), sampleMachine(), server.sample()
				run, err := pgbenchTPS(p.g, work, p.host, p.port, password, mode, 8, seconds/2)
				if err != nil {
					return fmt.Errorf("%s %s: %w", p.name, mode, err)
				}
				used, mUsed := sampleProc(p.pid).sub(before), sampleMachine().sub(mBefore)
				r := res[p.name]
				r.machine = r.machine.add(mUsed)
				r.client += run.cpu
				r.server += server.sample() - sBefore
				r.tps += run.tps / float64(rounds)
				r.txs += run.txs
				r.cpu += used.cpu
				r.syscalls += used.syscalls
				res[p.name] = r
			}
		}
		table := append(slices.Clone(paths[:3]), paths[4])
		for _, p := range table {
			p50, p99, err := pgbenchLatency(p.g, work, p.host, p.port, password, mode, seconds/2)
			if err != nil {
				return fmt.Errorf("%s %s latency: %w", p.name, mode, err)
			}
			r := res[p.name]
			r.p50, r.p99 = p50, p99
			res[p.name] = r
		}
		for _, p := range table {
			r := res[p.name]
			cpu, sys := "", ""
			if p.pid != 0 {
				cpu = perTx(r.cpu, r.txs)
			}
			if r.syscalls > 0 {
				sys = fmt.Sprintf("%.2f", float64(r.syscalls)/float64(r.txs))
			}
			switches, irqs, segs := r.machine.eventsPerTx(r.txs)
			fmt.Printf("%-10s %-9s %12.0f %12v %12v %11.2fx %14s %14s %16s %14s %14s %12s %9s %9s\n", mode, p.name, r.tps, r.p50, r.p99, r.tps/res["direct"].tps, cpu, sys, r.machine.perTx(r.txs), perTx(r.client, r.txs), perTx(r.server, r.txs), switches, irqs, segs)
		}
		fmt.Printf("%-10s tollgate/pgbouncer TPS %.2fx; tollgate adds %v p50 over direct at 1 client\n",
			mode, res["tollgate"].tps/res["pgbouncer"].tps, res["tollgate"].p50-res["direct"].p50)
		pt := policyTPS[mode]
		fmt.Printf("%-10s example policy vs allow-all: %.0f vs %.0f TPS, %.2fx (agent CPU/tx %s vs %s)\n",
			mode, pt[1].tps, pt[0].tps, pt[1].tps/pt[0].tps, perTx(pt[1].cpu, pt[1].txs), perTx(pt[0].cpu, pt[0].txs))
		on, off := res["tollgate"], res["noaudit"]
		if b, ok := res["baseline"]; ok {
			t := res["tollgate"]
			fmt.Printf("%-10s this build vs -baseline %s: %.0f vs %.0f TPS, %.2fx (agent CPU/tx %s vs %s; machine %s vs %s)\n",
				mode, filepath.Base(baselineBin), t.tps, b.tps, t.tps/b.tps, perTx(t.cpu, t.txs), perTx(b.cpu, b.txs), t.machine.perTx(t.txs), b.machine.perTx(b.txs))
		}
		fmt.Printf("%-10s audit journal on vs off (benchnoaudit build): %.0f vs %.0f TPS, %.2fx (agent CPU/tx %s vs %s; machine %s vs %s)\n",
			mode, on.tps, off.tps, on.tps/off.tps, perTx(on.cpu, on.txs), perTx(off.cpu, off.txs), on.machine.perTx(on.txs), off.machine.perTx(off.txs))
	}
	return nil
}

// perfSystem makes perfAgent record every CPU rather than the agent alone.
var perfSystem bool

// perfAgent records the agent with perf during one pgbench TPS run per
// mode and prints where its time went, for work on the hot path.
func perfAgent(dir, name string, g *governed, work, host, port, password string, pid, seconds int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, mode := range []string{"simple", "prepared"} {
		data := filepath.Join(dir, name+"-"+mode+".data")
		scope := []string{"-p", strconv.Itoa(pid)}
		if perfSystem {
			scope = []string{"-a"}
		}
		args := []string{"record", "-F", "4999", "-g"}
		if a := os.Getenv("BENCH_PERF_ARGS"); a != "" {
			args = append(args[:1], strings.Fields(a)...)
		}
		args = append(append(args, "-o", data), scope...)
		rec := exec.Command("perf", args...)
		rec.Stderr = os.Stderr
		if err := rec.Start(); err != nil {
			return fmt.Errorf("perf record: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
		before := sampleProc(pid)
		run, err := pgbenchTPS(g, work, host, port, password, mode, 8, seconds)
		used := sampleProc(pid).sub(before)
		rec.Process.Signal(os.Interrupt)
		rec.Wait()
		if err != nil {
			return err
		}
		fmt.Printf("%-9s %s %.0f TPS, agent CPU/tx %s, read+write/tx %.2f; perf report -i %s\n",
			mode, name, run.tps, perTx(used.cpu, run.txs), float64(used.syscalls)/float64(run.txs), data)
	}
	return nil
}

// perTx is CPU time per transaction.
func perTx(cpu time.Duration, txs int64) string {
	if txs == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fµs", float64(cpu.Microseconds())/float64(txs))
}

// buildNoAudit builds the agent with the benchnoaudit tag into dir: the
// only way to run it without journaling statements. The daemon itself has
// no such mode.
func buildNoAudit(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "tollgate-noaudit")
	cmd := exec.Command(goBin, "build", "-tags", "benchnoaudit", "-o", out, "./cmd/tollgate")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the benchnoaudit agent: %w\n%s", err, b)
	}
	return out, nil
}

// procUse is what a process used so far: CPU time and read/write system
// calls.
type procUse struct {
	cpu      time.Duration
	syscalls int64
}

func (u procUse) sub(v procUse) procUse {
	return procUse{cpu: u.cpu - v.cpu, syscalls: u.syscalls - v.syscalls}
}

// sampleProc reads pid's CPU time (all threads, in clock ticks of 10ms)
// and its read and write system call counts (read(2) and write(2) and
// their kin: PgBouncer's recv(2) and send(2) are not counted); zero for
// pid 0 or on error.
func sampleProc(pid int) procUse {
	if pid == 0 {
		return procUse{}
	}
	u := procUse{cpu: time.Duration(procTicks(pid, false)) * 10 * time.Millisecond}
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, l := range strings.Split(string(io), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			if k == "syscr" || k == "syscw" {
				n, _ := strconv.ParseInt(v, 10, 64)
				u.syscalls += n
			}
		}
	}
	return u
}

// machineUse is the CPU time the whole machine spent busy (user, nice,
// system, irq, softirq), and the time the hypervisor gave to others
// (steal): with TPS it says whether a path used more CPU or got less.
type machineUse struct {
	busy, steal time.Duration
	switches    int64 // context switches
	irqs        int64 // interrupts, inter-processor ones (wake-ups) included
	segs        int64 // TCP segments sent, pure ACKs included (/proc/net/snmp)
}

func (u machineUse) sub(v machineUse) machineUse {
	return machineUse{busy: u.busy - v.busy, steal: u.steal - v.steal, switches: u.switches - v.switches, irqs: u.irqs - v.irqs, segs: u.segs - v.segs}
}

func (u machineUse) add(v machineUse) machineUse {
	return machineUse{busy: u.busy + v.busy, steal: u.steal + v.steal, switches: u.switches + v.switches, irqs: u.irqs + v.irqs, segs: u.segs + v.segs}
}

// eventsPerTx formats the machine's context switches, interrupts and TCP
// segments per transaction.
func (u machineUse) eventsPerTx(txs int64) (switches, irqs, segs string) {
	if txs == 0 {
		return "", "", ""
	}
	per := func(n int64) string { return fmt.Sprintf("%.2f", float64(n)/float64(txs)) }
	return per(u.switches), per(u.irqs), per(u.segs)
}

// perTx formats the busy time per transaction, and the steal when there
// was any worth a mention.
func (u machineUse) perTx(txs int64) string {
	if txs == 0 || u.busy <= 0 {
		return ""
	}
	s := perTx(u.busy, txs)
	if u.steal*100 >= u.busy {
		s += " (steal " + perTx(u.steal, txs) + ")"
	}
	return s
}

// sampleMachine reads the machine's CPU times from /proc/stat (in clock
// ticks of 10ms); zero on error.
func sampleMachine() machineUse {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineUse{}
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return machineUse{}
	}
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * 10 * time.Millisecond
	}
	u := machineUse{busy: tick(1) + tick(2) + tick(3) + tick(6) + tick(7), steal: tick(8)}
	for _, l := range strings.Split(string(stat), "\n") {
		k, v, _ := strings.Cut(l, " ")
		v, _, _ = strings.Cut(v, " ") // intr: the total, then one count per interrupt
		switch k {
		case "ctxt":
			u.switches, _ = strconv.ParseInt(v, 10, 64)
		case "intr":
			u.irqs, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	u.segs = tcpOutSegs()
	return u
}

// tcpOutSegs reads the host's count of TCP segments sent.
func tcpOutSegs() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "OutSegs" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// postmaster samples the CPU time of a PostgreSQL cluster: the
// postmaster's own, its live children's (PgBouncer keeps its server
// connections) and those of its children that exited (a pgbench run's
// backends end with it).
type postmaster struct{ pid int }

// sample returns the cluster's CPU time so far, once its children stopped
// coming and going (a second at most).
func (p postmaster) sample() time.Duration {
	if p.pid == 0 {
		return 0
	}
	children := p.children()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		time.Sleep(30 * time.Millisecond)
		now := p.children()
		if slices.Equal(now, children) {
			break
		}
		children = now
	}
	total := procTicks(p.pid, true)
	for _, c := range children {
		total += procTicks(c, false)
	}
	return time.Duration(total) * 10 * time.Millisecond
}

func (p postmaster) children() []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.pid, p.pid))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		pids = append(pids, n)
	}
	return pids
}

// procTicks is pid's user and system time in clock ticks (10ms), with that
// of its exited children if reaped.
func procTicks(pid int, reaped bool) int64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := strings.LastIndexByte(string(stat), ')')
	if err != nil || i < 0 {
		return 0
	}
	// The fields after the command name (which may hold spaces); utime,
	// stime, cutime and cstime are f[11:15].
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return 0
	}
	n := 2
	if reaped {
		n = 4
	}
	var ticks int64
	for _, v := range f[11 : 11+n] {
		t, _ := strconv.ParseInt(v, 10, 64)
		ticks += t
	}
	return ticks
}

// postmasterPID reads the cluster's postmaster.pid.
func postmasterPID(work string) int {
	b, _ := os.ReadFile(filepath.Join(work, "pg", "postmaster.pid"))
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// bouncerPID reads PgBouncer's pid file.
func bouncerPID(work string) int {
	b, _ := os.ReadFile(filepath.Join(work, "pgbouncer", "pgbouncer.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func pgbenchCmd(g *governed, work, host, port, password string, args ...string) (*exec.Cmd, func(), error) {
	cmd, done, err := g.command("pgbench", append([]string{"-h", host, "-p", port, "-U", "bench"}, append(args, "bench")...)...)
	if err != nil {
		return nil, nil, err
	}
	cmd.Dir = work
	// No TLS on any path: PostgreSQL and PgBouncer here have none, so the
	// client's TLS to the agent would only measure crypto.
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable")
	return cmd, done, nil
}

func pgbench(g *governed, work, host, port, password string, args ...string) error {
	cmd, done, err := pgbenchCmd(g, work, host, port, password, args...)
	if err != nil {
		return err
	}
	defer done()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench %v: %w\n%s", args, err, out)
	}
	return nil
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	txsRE = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)
)

func pgbenchTPS(g *governed, work, host, port, password, mode string, clients, seconds int) (tpsRun, error) {
	cmd, done, err := pgbenchCmd(g, work, host, port, password, "-S", "-n", "-M", mode, "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(seconds))
	if err != nil {
		return tpsRun{}, err
	}
	defer done()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return tpsRun{}, fmt.Errorf("%w\n%s", err, out)
	}
	m, n := tpsRE.FindSubmatch(out), txsRE.FindSubmatch(out)
	if m == nil || n == nil {
		return tpsRun{}, fmt.Errorf("no tps in pgbench output:\n%s", out)
	}
	var r tpsRun
	r.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	r.txs, _ = strconv.ParseInt(string(n[1]), 10, 64)
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

// pgbenchLatency runs one client with a per-transaction log and returns the
// median and 99th percentile latency.
func pgbenchLatency(g *governed, work, host, port, password, mode string, seconds int) (time.Duration, time.Duration, error) {
	prefix := filepath.Join(work, "lat-"+randomHex(4))
	cmd, done, err := pgbenchCmd(g, work, host, port, password, "-S", "-n", "-M", mode, "-c", "1", "-T", strconv.Itoa(seconds), "-l", "--log-prefix", prefix)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("%w\n%s", err, out)
	}
	logs, _ := filepath.Glob(prefix + ".*")
	var lat []time.Duration
	for _, l := range logs {
		f, err := os.Open(l)
		if err != nil {
			return 0, 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// client_id transaction_no time script_no time_epoch time_us
			fields := strings.Fields(sc.Text())
			if len(fields) >= 3 {
				us, _ := strconv.Atoi(fields[2])
				lat = append(lat, time.Duration(us)*time.Microsecond)
			}
		}
		f.Close()
	}
	if len(lat) == 0 {
		return 0, 0, fmt.Errorf("no latencies logged")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

// startPostgres makes a throwaway cluster on 127.0.0.1:port with a role
// "bench" (SCRAM password) owning a database "bench".
func startPostgres(work string, port int, password string) (func(), error) {
	data := filepath.Join(work, "pg")
	os.Mkdir(data, 0o700)
	if err := exec.Command("chown", "postgres:postgres", data).Run(); err != nil {
		return nil, err
	}
	asPG := func(args ...string) error {
		out, err := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %w\n%s", args, err, out)
		}
		return nil
	}
	if err := asPG(pgBin+"/initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"); err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=100 -c shared_buffers=256MB", port, data)
	if err := asPG(pgBin+"/pg_ctl", "-D", data, "-l", filepath.Join(data, "log"), "-w", "-o", opts, "start"); err != nil {
		return nil, err
	}
	stop := func() { asPG(pgBin+"/pg_ctl", "-D", data, "-m", "immediate", "stop") }
	sql := fmt.Sprintf("CREATE ROLE bench LOGIN PASSWORD '%s'; CREATE DATABASE bench OWNER bench;", password)
	for _, stmt := range strings.SplitAfter(sql, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if out, err := exec.Command("psql", "-X", "-q", "-h", data, "-p", strconv.Itoa(port), "-U", "postgres", "-c", stmt).CombinedOutput(); err != nil {
			stop()
			return nil, fmt.Errorf("%s: %w\n%s", stmt, err, out)
		}
	}
	return stop, nil
}

// startPgBouncer runs PgBouncer in session pooling mode in front of the
// cluster, logging in with the same password the agent injects.
func startPgBouncer(work string, pgPort, port int, password string) (func(), error) {
	dir := filepath.Join(work, "pgbouncer")
	os.Mkdir(dir, 0o755)
	ini := fmt.Sprintf(`[databases]
bench = host=127.0.0.1 port=%d dbname=bench user=bench password=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = session
default_pool_size = 20
max_client_conn = 200
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
`, pgPort, password, port, dir, dir)
	iniPath := filepath.Join(dir, "pgbouncer.ini")
	os.WriteFile(iniPath, []byte(ini), 0o600)
	exec.Command("chown", "-R", "postgres:postgres", dir).Run()
	cmd := exec.Command("runuser", "-u", "postgres", "--", "/usr/sbin/pgbouncer", "-q", iniPath)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
		exec.Command("pkill", "-F", filepath.Join(dir, "pgbouncer.pid")).Run()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("pgbouncer did not start: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeTCPPort() int {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setPolicy puts the Rego file at path (or an allow-all policy when path is
// empty) in force on the running agent and waits until it is loaded.
func (g *governed) setPolicy(path string) error {
	rego := []byte("package tollgate\n\ndecision := {\"allow\": true, \"cache\": true}\n")
	if path != "" {
		var err error
		if rego, err = os.ReadFile(path); err != nil {
			return err
		}
	}
	dst := filepath.Join(g.work, "policy", "allow.rego")
	if cur, err := os.ReadFile(dst); err == nil && string(cur) == string(rego) {
		return nil
	}
	cc := control.NewClient(filepath.Join(g.work, "ctl.sock"))
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	before, err := cc.Status(ctx)
	if err != nil {
		return err
	}
	tmp := filepath.Join(g.work, "policy.tmp")
	os.WriteFile(tmp, rego, 0o644)
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	for {
		st, err := cc.Status(ctx)
		if err != nil {
			return err
		}
		if st.Policy.Version != before.Policy.Version {
			if st.Policy.LastError != "" {
				return fmt.Errorf("policy %s: %s", path, st.Policy.LastError)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
