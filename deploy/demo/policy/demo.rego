# The demo's policy: the legacy report may read, with customers' e-mail
# addresses and card numbers masked; an UPDATE waits for a human's approval;
# nothing else is allowed.
package tollgate

import rego.v1

default decision := {"allow": false, "reason": "not allowed by the demo policy"}

mask := [
	{"table": "public.customers", "column": "email", "method": "email"},
	{"table": "public.customers", "column": "card", "method": "last4"},
]

decision := {"allow": false, "reason": sprintf("unknown workload %s", [input.identity.name])} if not input.identity.known

decision := {"allow": true} if {
	input.identity.known
	input.request.kind == "connect"
}

decision := {"allow": true, "cache": true, "mask": mask} if {
	input.identity.known
	input.request.kind == "statement"
	input.request.read_only
}

decision := {
	"allow": true,
	"reason": sprintf("%s changes data", [input.identity.name]),
	"mask": mask,
	"approval": {"required": true, "scope": "statement", "timeout": "5m"},
} if {
	input.identity.known
	input.request.kind == "statement"
	not input.request.read_only
	input.request.commands == ["UPDATE"]
}

decision := {"allow": false, "reason": sprintf("%s is read-only: %s refused", [input.identity.name, concat(", ", input.request.commands)])} if {
	input.identity.known
	input.request.kind == "statement"
	not input.request.read_only
	input.request.commands != ["UPDATE"]
}
