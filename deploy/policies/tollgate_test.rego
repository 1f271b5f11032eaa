# Unit tests of tollgate.rego: `tollgate policy test deploy/policies`.
package tollgate_test

import data.tollgate

billing := {"name": "billing-export", "known": true, "owner": "team-billing", "uid": 1001, "cgroup": "/system.slice/billing-export.service"}

reporting := {"name": "reporting-cron", "known": true, "owner": "team-finance", "uid": 1002, "cgroup": "/system.slice/reporting.service"}

stranger := {"name": "session-3.scope", "known": false, "uid": 1000, "cgroup": "/user.slice/user-1000.slice/session-3.scope"}

orders := {"name": "orders-db", "protocol": "postgres", "address": "10.20.0.5:5432"}

session := {"id": "s1", "database": "orders", "user": "app", "application_name": "psql"}

connect(identity, target) := {
	"identity": identity, "target": target, "session": session,
	"request": {"kind": "connect", "sql": "", "fingerprint": "", "commands": [], "tables": [], "functions": [], "read_only": false},
}

statement(identity, target, command, tables, functions, read_only) := {
	"identity": identity, "target": target, "session": session,
	"request": {
		"kind": "statement", "sql": "-", "fingerprint": "0123456789abcdef",
		"commands": [command], "tables": tables, "functions": functions, "read_only": read_only,
	},
}

customers(access) := [{"schema": "public", "name": "customers", "access": access}]

test_known_workload_connects if {
	d := tollgate.decision with input as connect(billing, orders)
	d.allow == true
}

test_unknown_workload_denied_by_name if {
	d := tollgate.decision with input as connect(stranger, orders)
	d.allow == false
	d.reason == `unknown workload "session-3.scope": no identity in the tollgate config matches it`
}

test_unknown_workload_statement_denied if {
	d := tollgate.decision with input as statement(stranger, orders, "SELECT", customers("select"), [], true)
	d.allow == false
	contains(d.reason, "unknown workload")
}

test_identity_without_known_is_unknown if {
	id := object.remove(billing, ["known"])
	d := tollgate.decision with input as connect(id, orders)
	d.allow == false
}

test_replication_connection_denied if {
	i := json.patch(connect(billing, orders), [{"op": "add", "path": "/session/options", "value": {"replication": "database"}}])
	d := tollgate.decision with input as i
	d.allow == false
	d.reason == "replication connections are not allowed through tollgate"
}

test_read_allowed_with_masks if {
	d := tollgate.decision with input as statement(reporting, orders, "SELECT", customers("select"), ["lower"], true)
	d.allow == true
	not d.approval
	{"table": "public.customers", "column": "email", "method": "email"} in d.mask
	{"table": "public.customers", "column": "card", "method": "last4"} in d.mask
	d.cache == true
}

test_ddl_denied if {
	d := tollgate.decision with input as statement(billing, orders, "DROP TABLE", customers("ddl"), [], false)
	d.allow == false
	d.reason == "DDL is not allowed through tollgate (DROP TABLE): use the migration pipeline"
}

test_ddl_without_table_denied if {
	d := tollgate.decision with input as statement(billing, orders, "CREATE EXTENSION", [], [], false)
	d.allow == false
	startswith(d.reason, "DDL is not allowed")
}

test_forbidden_function_denied if {
	d := tollgate.decision with input as statement(billing, orders, "SELECT", [], ["pg_catalog.pg_read_file"], false)
	d.allow == false
	d.reason == "function pg_read_file is not allowed through tollgate"
}

test_unparsed_statement_denied if {
	i := json.patch(statement(billing, orders, "SELECT", [], [], true), [{"op": "replace", "path": "/request/commands", "value": []}])
	d := tollgate.decision with input as i
	d.allow == false
	d.reason == "statement could not be read"
}

test_write_by_reader_denied if {
	d := tollgate.decision with input as statement(reporting, orders, "UPDATE", customers("update"), [], false)
	d.allow == false
	d.reason == `workload "reporting-cron" may only read on target "orders-db"`
}

test_write_on_listed_target_needs_approval if {
	d := tollgate.decision with input as statement(billing, orders, "INSERT", customers("insert"), [], false)
	d.allow == true
	d.approval == {"required": true, "approvers": ["group:dba"], "scope": "statement", "timeout": "10m"}
	d.record == "full"
}

test_write_on_prod_target_needs_approval if {
	prod := {"name": "payments-prod", "protocol": "postgres", "address": "10.20.0.9:5432"}
	d := tollgate.decision with input as statement(billing, prod, "DELETE", customers("delete"), [], false)
	d.allow == true
	d.approval.required == true
}

test_write_on_staging_allowed_without_approval if {
	staging := {"name": "billing-staging", "protocol": "postgres", "address": "10.20.0.7:5432"}
	d := tollgate.decision with input as statement(billing, staging, "INSERT", customers("insert"), [], false)
	d.allow == true
	not d.approval
}

test_writer_on_other_target_denied if {
	other := {"name": "analytics-prod", "protocol": "postgres", "address": "10.30.0.1:5432"}
	d := tollgate.decision with input as statement(billing, other, "INSERT", [], [], false)
	d.allow == false
}

test_unknown_request_kind_denied if {
	i := json.patch(connect(billing, orders), [{"op": "replace", "path": "/request/kind", "value": "copy"}])
	d := tollgate.decision with input as i
	d.allow == false
}
