# tollgate's example policy. tollgate evaluates data.tollgate.decision for
# every connection ("connect") and every SQL statement ("statement"); the
# input and the decision are described by `go doc ./policy` and DESIGN.md.
#
#   - unknown workloads (no identity in tollgate.yaml matches them): denied
#   - known workloads: may connect, and read (read_only statements)
#   - DDL: denied, whoever asks
#   - functions that reach the server's files or other sessions: denied
#   - writes: only by the workloads in `writers`, on their targets; on
#     targets whose name contains "prod" or that `approval_targets` lists,
#     each write waits for a DBA's approval
#   - customers' e-mail addresses and card numbers are masked in results
#
# Test it with `tollgate policy test deploy/policies`.
package tollgate

# Anything no rule below decides is denied.
default decision := {"allow": false, "reason": "denied: no rule of the policy allows this request"}

# Targets where every write waits for approval, besides those whose name
# contains "prod".
approval_targets := {"orders-db"}

# Who may change data, and where.
writers := {"billing-export": {"orders-db", "billing-staging", "payments-prod"}}

# Who approves held writes, and for how long a write waits.
approval := {"required": true, "approvers": ["group:dba"], "scope": "statement", "timeout": "10m"}

# Values masked in every result, whoever reads them.
mask := [
	{"table": "public.customers", "column": "email", "method": "email"},
	{"table": "public.customers", "column": "card", "method": "last4"},
]

# Functions nobody calls through tollgate: they read the server's files,
# signal other sessions or reach other servers.
forbidden_functions := {
	"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file",
	"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
	"lo_import", "lo_export", "dblink", "dblink_exec", "dblink_connect",
}

# The first rule that applies decides. Every decision here depends only on
# the identity, target, session user and database and the statement's
# shape (never on its literals), so statement decisions may be cached.
decision := deny(sprintf("unknown workload %q: no identity in the tollgate config matches it", [workload])) if {
	not known
} else := deny("replication connections are not allowed through tollgate") if {
	input.request.kind == "connect"
	replication
} else := {"allow": true} if {
	input.request.kind == "connect"
} else := deny("statement could not be read") if {
	input.request.kind == "statement"
	not parsed
} else := deny(sprintf("DDL is not allowed through tollgate (%s): use the migration pipeline", [input.request.commands[0]])) if {
	input.request.kind == "statement"
	ddl
} else := deny(sprintf("function %s is not allowed through tollgate", [concat(", ", sort(forbidden_calls))])) if {
	input.request.kind == "statement"
	count(forbidden_calls) > 0
} else := {"allow": true, "mask": mask, "cache": true} if {
	input.request.kind == "statement"
	input.request.read_only == true
} else := {"allow": true, "approval": approval, "mask": mask, "record": "full", "cache": true} if {
	input.request.kind == "statement"
	writer
	needs_approval
} else := {"allow": true, "mask": mask, "record": "full", "cache": true} if {
	input.request.kind == "statement"
	writer
} else := deny(sprintf("workload %q may only read on target %q", [workload, input.target.name])) if {
	input.request.kind == "statement"
}

deny(reason) := {"allow": false, "reason": reason, "cache": true}

# The SQL parser read the statement: it has a command tag.
parsed if is_string(input.request.commands[0])

# Only a literal true makes a workload known.
known if input.identity.known == true

workload := n if {
	n := input.identity.name
	is_string(n)
} else := "(unnamed)"

replication if {
	r := lower(input.session.options.replication)
	r != "false"
	r != "off"
	r != "no"
	r != "0"
}

ddl_prefixes := ["CREATE ", "ALTER ", "DROP ", "COMMENT", "GRANT", "REVOKE", "SECURITY LABEL", "REINDEX"]

# A statement is DDL when one of its commands is, or it defines a table.
ddl if {
	some c in input.request.commands
	some p in ddl_prefixes
	startswith(c, p)
}

ddl if {
	some t in input.request.tables
	t.access == "ddl"
}

forbidden_calls contains name if {
	some f in input.request.functions
	name := trim_prefix(f, "pg_catalog.")
	name in forbidden_functions
}

writer if input.target.name in writers[input.identity.name]

needs_approval if contains(input.target.name, "prod")

needs_approval if input.target.name in approval_targets
