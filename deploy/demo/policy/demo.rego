# The demo's policy: the legacy report may read, nothing else.
package tollgate

import rego.v1

default decision := {"allow": false, "reason": "not allowed by the demo policy"}

decision := {"allow": false, "reason": sprintf("unknown workload %s", [input.identity.name])} if not input.identity.known

decision := {"allow": true} if {
	input.identity.known
	input.request.kind == "connect"
}

decision := {"allow": true, "cache": true} if {
	input.identity.known
	input.request.kind == "statement"
	input.request.read_only
}

decision := {"allow": false, "reason": sprintf("%s is read-only: %s refused", [input.identity.name, concat(", ", input.request.commands)])} if {
	input.identity.known
	input.request.kind == "statement"
	not input.request.read_only
}
