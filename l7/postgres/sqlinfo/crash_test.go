package sqlinfo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// A stack overflow inside libpg_query kills the process it runs in, so these
// tests parse in a child process (this test binary, running TestCrashChild)
// and look at how it ended.

// TestCrashChild is the child side: it parses one generated statement, either
// straight through pg_query ("raw") or through Analyze, and prints the
// outcome.
func TestCrashChild(t *testing.T) {
	kind := os.Getenv("SQLINFO_CRASH_KIND")
	if kind == "" {
		t.Skip("run by the crash tests in a child process")
	}
	n, err := strconv.Atoi(os.Getenv("SQLINFO_CRASH_N"))
	if err != nil || nested[kind] == nil {
		t.Fatalf("bad child arguments %q %q", kind, os.Getenv("SQLINFO_CRASH_N"))
	}
	sql := nested[kind](n)
	if os.Getenv("SQLINFO_CRASH_MODE") == "raw" {
		if _, err = pg_query.Parse(sql); err == nil {
			_, err = pg_query.Fingerprint(sql)
		}
		fmt.Printf("outcome: %v\n", err)
		return
	}
	_, err = NewAnalyzer(Limits{MaxBytes: 64 << 20}, 0).Analyze(sql)
	switch {
	case err == nil:
		fmt.Println("outcome: analyzed")
	case errors.Is(err, ErrTooDeep):
		fmt.Println("outcome: too deep")
	default:
		fmt.Printf("outcome: %v\n", err)
	}
}

// child runs TestCrashChild in a new process whose threads get stacks of
// stackKiB (glibc sizes new threads' stacks by RLIMIT_STACK). It reports
// whether the child died of a signal, and otherwise what it printed.
func child(t *testing.T, mode, kind string, n, stackKiB int) (crashed bool, outcome string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `ulimit -s "$0" && exec "$@"`,
		strconv.Itoa(stackKiB), exe, "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GOTRACEBACK=single",
		"SQLINFO_CRASH_MODE="+mode, "SQLINFO_CRASH_KIND="+kind, "SQLINFO_CRASH_N="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	// The Go runtime reports a signal in C code ("signal arrived during cgo
	// execution") and exits with status 2.
	if err != nil {
		if strings.Contains(string(out), "SIGSEGV") || strings.Contains(string(out), "signal arrived") {
			return true, ""
		}
		t.Fatalf("child %s %s %d: %v\n%s", mode, kind, n, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if o, ok := strings.CutPrefix(line, "outcome: "); ok {
			return false, o
		}
	}
	t.Fatalf("child %s %s %d printed no outcome:\n%s", mode, kind, n, out)
	return false, ""
}

// The hazard the depth cap guards against is real: a long operator chain,
// which no bracket counting would notice, kills the process.
func TestDeepInputCrashesParser(t *testing.T) {
	if crashed, outcome := child(t, "raw", "plus", 100_000, 8<<10); !crashed {
		t.Errorf("libpg_query parsed 100,000 chained operators on an 8 MiB stack (%s): "+
			"the crash the depth cap prevents seems gone; revisit DefaultMaxDepth", outcome)
	}
}

// The cap prevents the crash: the same input, and other ways of nesting
// 100,000 deep, are refused before the parser runs.
func TestDepthCapPreventsCrash(t *testing.T) {
	for _, kind := range []string{"plus", "cast", "paren", "sub", "case", "union", "join"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			crashed, outcome := child(t, "analyze", kind, 100_000, 8<<10)
			if crashed || outcome != "too deep" {
				t.Errorf("Analyze of %s nested 100,000 deep: crashed %v, outcome %q; want refused as too deep", kind, crashed, outcome)
			}
		})
	}
}

// Everything the default cap lets through parses, even with threads' stacks
// at a quarter of glibc's usual 8 MiB.
func TestDefaultDepthParses(t *testing.T) {
	kinds := make([]string, 0, len(nested))
	for kind := range nested {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			crashed, outcome := child(t, "analyze", kind, DefaultMaxDepth, 2<<10)
			if crashed || outcome != "analyzed" {
				t.Errorf("Analyze of %s nested %d deep on a 2 MiB stack: crashed %v, outcome %q; want analyzed",
					kind, DefaultMaxDepth, crashed, outcome)
			}
		})
	}
}

// TestParserCrashDepth finds how deep libpg_query can nest before it crashes,
// and checks the default cap's margin: operator chains on glibc's usual
// 8 MiB stack, and nested sub-selects (the most stack per level) on 2 MiB.
func TestParserCrashDepth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts some 30 processes")
	}
	for _, c := range []struct {
		kind     string
		stackKiB int
		lo, hi   int // the search range: no crash at lo, a crash at hi
		margin   int // how many times DefaultMaxDepth lo must reach
	}{
		{"plus", 8 << 10, DefaultMaxDepth, 100_000, 8},
		{"sub", 2 << 10, DefaultMaxDepth, 3_000, 1},
	} {
		t.Run(c.kind, func(t *testing.T) {
			t.Parallel()
			if crashed, _ := child(t, "raw", c.kind, c.hi, c.stackKiB); !crashed {
				t.Fatalf("no crash at %d", c.hi)
			}
			lo, hi := c.lo, c.hi
			if crashed, _ := child(t, "raw", c.kind, lo, c.stackKiB); crashed {
				t.Fatalf("crash at %d", lo)
			}
			for hi-lo > hi/100 { // to within 1%
				mid := (lo + hi) / 2
				if crashed, _ := child(t, "raw", c.kind, mid, c.stackKiB); crashed {
					hi = mid
				} else {
					lo = mid
				}
			}
			t.Logf("%s on a %d KiB stack: parsed %d deep, crashed %d deep; DefaultMaxDepth %d",
				c.kind, c.stackKiB, lo, hi, DefaultMaxDepth)
			if lo < c.margin*DefaultMaxDepth {
				t.Errorf("%s on a %d KiB stack crashes below %d x DefaultMaxDepth", c.kind, c.stackKiB, c.margin)
			}
		})
	}
}
