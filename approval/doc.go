// Package approval holds statements that the policy says need a human's
// approval until an approver grants or denies them, and journals every step.
//
// The proxy asks the Broker to Hold a statement; approvers decide through the
// control API (tollctl approvals approve|deny), locally on the unix socket or
// remotely with an OIDC token:
//
//	proxy (session goroutine)        Broker                        approver (tollctl)
//	  Hold(ctx, Ask) ───────────────► journal approval_requested
//	                                  publish pending ───────────► ls / watch
//	                                  Notifier.Notify (webhook)
//	  ... blocked ...                                    ◄──────── Approve(id, who, reason, scope, for)
//	                                  checks: pending, not self,
//	                                  who matches Ask.Approvers
//	                                  journal approval_granted
//	  ◄──────────────── Outcome{Approved}   (session or window grant remembered)
//
//	  Hold(ctx, Ask) covered by a grant ─► journal approval_granted {standing: true}
//	  ◄──────────────── Outcome{Approved} at once, no request
//
// A hold ends in exactly one of: approved, denied (reason required),
// expired (the timeout passed: approval_expired), abandoned (the caller's
// ctx ended, or the broker closed: approval_abandoned). Nothing but an
// approver's decision, or a grant an approver made, approves a statement.
//
// Scopes: a statement grant approves the one held statement; a session
// grant also approves the later asks of the same session until EndSession;
// a window grant approves the asks of the same identity on the same target
// until the window ends. A grant only covers an ask that its approver could
// have approved (the ask's approvers match, and it is not the approver's own).
//
// The Broker never logs: what happened is in the journal, and callers get
// errors they can branch on (ErrNotFound, ErrNotPending, ErrSelfApproval,
// ErrNotAllowed, ErrReasonRequired, ErrBadScope).
package approval
