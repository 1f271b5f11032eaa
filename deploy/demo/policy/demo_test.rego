package tollgate_test

import rego.v1

import data.tollgate

known := {"name": "legacy-report", "known": true}

test_read_allowed_masked if {
	d := tollgate.decision with input as {"identity": known, "request": {"kind": "statement", "read_only": true, "commands": ["SELECT"]}}
	d.allow
	count(d.mask) == 2
}

test_update_needs_approval if {
	d := tollgate.decision with input as {"identity": known, "request": {"kind": "statement", "read_only": false, "commands": ["UPDATE"]}}
	d.allow
	d.approval.required
}

test_delete_denied if {
	d := tollgate.decision with input as {"identity": known, "request": {"kind": "statement", "read_only": false, "commands": ["DELETE"]}}
	not d.allow
	contains(d.reason, "read-only")
}

test_unknown_denied if not tollgate.decision.allow with input as {"identity": {"name": "x", "known": false}, "request": {"kind": "connect"}}
