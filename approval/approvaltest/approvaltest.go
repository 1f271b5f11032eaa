// Package approvaltest holds statements on a real approval.Broker for the
// tests of the packages that serve and drive approvals.
package approvaltest

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/approval"
)

// WaitLimit bounds every wait here.
const WaitLimit = 10 * time.Second

// Hold asks b to hold ask from a goroutine and returns the request once
// events (from b.Watch) reports it pending, and the channel its outcome
// arrives on.
func Hold(t testing.TB, b *approval.Broker, events <-chan approval.Request, ask approval.Ask) (approval.Request, <-chan approval.Outcome) {
	t.Helper()
	out := make(chan approval.Outcome, 1)
	go func() { out <- b.Hold(context.Background(), ask) }()
	deadline := time.After(WaitLimit)
	for {
		select {
		case r := <-events:
			if r.State == approval.StatePending {
				return r, out
			}
		case <-deadline:
			t.Fatal("no pending request")
		}
	}
}

// Outcome waits for the outcome of a Hold.
func Outcome(t testing.TB, ch <-chan approval.Outcome) approval.Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(WaitLimit):
		t.Fatal("Hold did not return")
	}
	return approval.Outcome{}
}
