package policy

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Test runs the Rego unit tests (rules named test_*) of the .rego files
// under dir, *_test.rego included, as `opa test` would, with the built-ins
// the engine allows. It writes one line per test to w, "PASS name (time)",
// "FAIL name (time)" followed by the failing expression, "ERROR name" with
// the error, or "SKIP name", then a summary "N passed, N failed". A test
// that errs counts as failed. err is for what stops the tests from running
// at all: an unreadable directory, a policy that does not compile, no
// files.
func Test(ctx context.Context, dir string, w io.Writer) (passed, failed int, err error) {
	files, err := readDir(dir, true)
	if err != nil {
		return 0, 0, err
	}
	if len(files) == 0 {
		return 0, 0, fmt.Errorf("test policy: no .rego files in %s", dir)
	}
	mods, err := parseFiles(files)
	if err != nil {
		return 0, 0, fmt.Errorf("test policy: %w", err)
	}
	r := tester.NewRunner().
		SetCompiler(newCompiler().WithEnablePrintStatements(true)).
		SetModules(mods).
		EnableTracing(true).
		CapturePrintOutput(true).
		SetParallel(1)
	ch, err := r.RunTests(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("test policy: %w", err)
	}
	var results []*tester.Result
	for res := range ch {
		results = append(results, res)
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("test policy: %w", err)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		if c := cmp.Compare(a.Location.File, b.Location.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Location.Row, b.Location.Row)
	})
	var buf bytes.Buffer
	for _, res := range results {
		name := res.Package + "." + res.Name
		switch {
		case res.Skip:
			fmt.Fprintf(&buf, "SKIP  %s\n", name)
		case res.Error != nil:
			failed++
			fmt.Fprintf(&buf, "ERROR %s (%v)\n", name, res.Duration)
			fmt.Fprintf(&buf, "      %s\n", indent(res.Error.Error()))
		case res.Fail:
			failed++
			fmt.Fprintf(&buf, "FAIL  %s (%v)\n", name, res.Duration)
			if at := failedAt(res.Trace); at != "" {
				fmt.Fprintf(&buf, "      %s\n", at)
			}
		default:
			passed++
			fmt.Fprintf(&buf, "PASS  %s (%v)\n", name, res.Duration)
		}
		if !res.Pass() && !res.Skip && len(res.Output) > 0 {
			fmt.Fprintf(&buf, "      %s\n", indent(strings.TrimSpace(string(res.Output))))
		}
	}
	fmt.Fprintf(&buf, "%d passed, %d failed\n", passed, failed)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return passed, failed, fmt.Errorf("test policy: %w", err)
	}
	return passed, failed, nil
}

// failedAt names the last expression that failed in a test's trace, as
// "file:row: expr", the way `opa test` points at a failure.
func failedAt(trace []*topdown.Event) string {
	for _, ev := range slices.Backward(trace) {
		if ev.Op != topdown.FailOp || ev.Location == nil || ev.QueryID == 0 {
			continue
		}
		expr, ok := ev.Node.(*ast.Expr)
		if !ok {
			continue
		}
		if _, every := expr.Terms.(*ast.Every); every {
			continue
		}
		return fmt.Sprintf("%s:%d: %s", ev.Location.File, ev.Location.Row, expr)
	}
	return ""
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n      ") }
