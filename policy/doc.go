// Package policy judges every connection and statement with the OPA Rego
// policy found in a directory, reloaded on change, with a decision cache.
//
// # The contract
//
// The engine evaluates data.tollgate.decision (Rego v1 syntax) with an
// Input as input and reads the result into a Decision; both JSON shapes
// are public (DESIGN.md, "Policy"):
//
//	input.identity   the workload: name, known, owner, purpose, cgroup,
//	                 systemd_unit, pod.uid, container_id, pid, uid, gid,
//	                 user, exe, netns_cookie, claims
//	input.target     name, protocol, address
//	input.session    id, database, user, application_name, options
//	input.request    kind ("connect" | "statement"), sql, fingerprint,
//	                 commands, tables [{schema, name, access}], functions,
//	                 read_only
//
//	decision         {"allow": bool, "reason": string,
//	                  "approval": {"required", "approvers", "scope", "timeout"},
//	                  "mask": [{"table", "column", "classifier", "method", ...}],
//	                  "record": "full" | "metadata", "cache": bool}
//
// Every decision field is optional and an absent allow is a deny. A field
// of the wrong type, an unknown record or scope, a timeout that is not a
// duration, or a mask rule without a method or without a column or
// classifier makes the whole decision a deny ("policy error: malformed
// decision"): a decision the data path cannot read in full is not half
// applied.
//
// # Failures are denials
//
// Decide never returns an error. Each failure is a deny with a reason for
// the client and the detail in Decision.Error and Options.OnError:
//
//	no policy in force    "no policy loaded: tollgate denies everything until a policy is installed in DIR"
//	decision undefined    "policy gave no decision"
//	evaluation error      "policy error" (conflicting rule values, and with
//	                      Options.StrictBuiltinErrors a failing built-in)
//	malformed decision    "policy error: malformed decision"
//	past Options.Timeout  "policy evaluation timed out"
//	ctx ended             "policy evaluation canceled"
//
// # Files and reload
//
// The policy is every *.rego file under the directory, subdirectories
// included, hidden files and directories and *_test.rego files excepted.
// Its Version is the sha256 of those files' names and contents. Built-ins
// that reach the network or the agent's environment (http.send,
// net.lookup_ip_addr, opa.runtime) are not available: a policy that calls
// them does not compile. Reload (on SIGHUP) or Watch (on file change)
// reads the files again; a policy that does not compile leaves the one in
// force in place and says why (Status, OnReload). A directory with no
// policy file means no policy: everything is denied.
//
// # The decision cache
//
// A statement's decision is cached only when the policy says "cache": true
// in it, promising that the decision depends on nothing but the key: the
// identity's name, known, uid and cgroup; the target's name; the session's
// user and database; the request kind; and the statement's fingerprint.
// Statements that differ only in literals share a fingerprint, so a
// policy that reads input.request.sql, the time, the pid or the
// application name must not say "cache": true. Connect requests and
// statements without a fingerprint are never cached. The cache is a
// bounded LRU (Options.CacheSize), emptied when a new policy is put in
// force; Status reports its hits and misses.
//
// # Tests
//
// Test runs a directory's Rego unit tests (test_* rules) as `opa test`
// does; `tollgate policy test DIR` is its command.
package policy
