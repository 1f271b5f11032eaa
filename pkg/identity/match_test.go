package identity

import (
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

func TestCgroupPattern(t *testing.T) {
	for _, tt := range []struct {
		pattern, path string
		want          bool
	}{
		{"/system.slice/billing-export.service", "/system.slice/billing-export.service", true},
		{"/system.slice/billing-export.service", "/system.slice/billing-export.service/worker", false},
		{"/system.slice/billing-export.service", "/system.slice/billing-export.services", false},
		{"/system.slice/billing-export.service", "", false},
		{"system.slice/billing-export.service", "/system.slice/billing-export.service", true},
		{"/system.slice/", "/system.slice", true},
		{"/system.slice/a/../billing-export.service", "/system.slice/billing-export.service", true},

		{"/system.slice/*", "/system.slice/billing-export.service", true},
		{"/system.slice/*", "/system.slice", false},
		{"/system.slice/*", "/system.slice/billing-export.service/worker", false},
		{"/system.slice/*", "/system.slicex/billing-export.service", false},
		{"/system.slice/*", "/user.slice/session-3.scope", false},
		{"/*", "/", false},
		{"/*", "/init.scope", true},
		{"/*", "/system.slice/billing-export.service", false},

		{"/system.slice/**", "/system.slice", true},
		{"/system.slice/**", "/system.slice/billing-export.service", true},
		{"/system.slice/**", "/system.slice/billing-export.service/worker", true},
		{"/system.slice/**", "/system.slicex", false},
		{"/system.slice/**", "/system.slicex/billing-export.service", false},
		{"/system.slice/**", "/", false},
		{"/system.slice/**", "", false},
		{"/**", "/", true},
		{"/**", "/user.slice/user-1000.slice/session-3.scope", true},
		{"/**", "", false},
		// Only a trailing "/*" or "/**" is a wildcard; elsewhere "*" is a name.
		{"/user.slice/*/*", "/user.slice/user-1000.slice/session-3.scope", false},
		{"/user.slice/*/*", "/user.slice/*/session-3.scope", true},
		{"/kubepods.slice/**", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234abcd_5678_4abc_9def_0123456789ab.slice", true},
	} {
		if got := compilePattern(tt.pattern).matches(tt.path); got != tt.want {
			t.Errorf("pattern %q matches %q = %v; want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func uidp(u uint32) *uint32 { return &u }

func TestIdentityMatch(t *testing.T) {
	ids := []config.Identity{
		{Name: "nothing-set", Owner: "nobody"},
		{Name: "billing-export", Owner: "team-billing", Purpose: "Nightly invoice export",
			Match: config.IdentityMatch{Cgroup: "/system.slice/billing-export.service"}},
		{Name: "reporting-as-1001", Owner: "team-data",
			Match: config.IdentityMatch{SystemdUnit: "reporting.service", UID: uidp(1001)}},
		{Name: "reporting", Owner: "team-data",
			Match: config.IdentityMatch{Cgroup: "/system.slice/**", SystemdUnit: "reporting.service"}},
		{Name: "root-in-user-sessions", Owner: "sre",
			Match: config.IdentityMatch{Cgroup: "/user.slice/user-1000.slice/*", UID: uidp(0)}},
		{Name: "billing-export-shadow", Owner: "never-reached",
			Match: config.IdentityMatch{SystemdUnit: "billing-export.service"}},
	}
	ms := make([]matcher, len(ids))
	for i, id := range ids {
		ms[i] = compileMatcher(id)
	}
	for _, tt := range []struct {
		w    Workload
		want string // "" when none matches
	}{
		{Workload{Cgroup: "/system.slice/billing-export.service", SystemdUnit: "billing-export.service", UID: 1001}, "billing-export"},
		{Workload{Cgroup: "/system.slice/reporting.service", SystemdUnit: "reporting.service", UID: 1001}, "reporting-as-1001"},
		{Workload{Cgroup: "/system.slice/reporting.service", SystemdUnit: "reporting.service", UID: 1002}, "reporting"},
		{Workload{Cgroup: "", SystemdUnit: "", UID: 1001}, ""},
		{Workload{Cgroup: "/user.slice/user-1000.slice/session-3.scope", SystemdUnit: "session-3.scope", UID: 0}, "root-in-user-sessions"},
		{Workload{Cgroup: "/user.slice/user-1000.slice/session-3.scope", SystemdUnit: "session-3.scope", UID: 1000}, ""},
		{Workload{Cgroup: "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", SystemdUnit: "user@1000.service", UID: 0}, ""},
	} {
		got := ""
		for i := range ms {
			if ms[i].matches(&tt.w) {
				got = ms[i].name
				break
			}
		}
		if got != tt.want {
			t.Errorf("identity of %+v = %q; want %q", tt.w, got, tt.want)
		}
	}
}
