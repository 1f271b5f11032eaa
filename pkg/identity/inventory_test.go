package identity

import (
	"reflect"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/config"
)

func TestInventory(t *testing.T) {
	inv := NewInventory([]config.Identity{
		{Name: "billing", Owner: "team-billing", Purpose: "export"},
		{Name: "orphan"},
	})
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	inv.Seen(Workload{Name: "billing", Known: true, Cgroup: "/system.slice/billing.service"}, "orders-db", t0)
	inv.Seen(Workload{Name: "billing", Known: true, Cgroup: "/system.slice/billing.service"}, "audit-db", t0.Add(time.Minute))
	inv.Seen(Workload{Name: "cron.service", Cgroup: "/system.slice/cron.service"}, "orders-db", t0)
	inv.Statements("billing", 2, 1)
	inv.Statements("cron.service", 0, 1)

	got := inv.List()
	want := []InventoryEntry{
		{Name: "billing", Known: true, Configured: true, Owner: "team-billing", Purpose: "export",
			Cgroups: []string{"/system.slice/billing.service"}, Targets: []string{"audit-db", "orders-db"},
			LastSeen: t0.Add(time.Minute), Sessions: 2, Allowed: 2, Denied: 1},
		{Name: "orphan", Known: true, Configured: true, Problems: []string{"no owner", "no purpose"}, Cgroups: []string{}, Targets: []string{}},
		{Name: "cron.service", Cgroups: []string{"/system.slice/cron.service"}, Targets: []string{"orders-db"}, LastSeen: t0, Sessions: 1, Denied: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %+v\nwant %+v", got, want)
	}
	if m := inv.Missing(); !reflect.DeepEqual(m, []string{"orphan: no owner", "orphan: no purpose"}) {
		t.Errorf("Missing = %q", m)
	}

	// A reload keeps what was seen; a removed identity is no longer configured.
	inv.SetIdentities([]config.Identity{{Name: "orphan", Owner: "o", Purpose: "p"}})
	for _, e := range inv.List() {
		if e.Name == "billing" && (e.Configured || e.Sessions != 2) {
			t.Errorf("after reload billing = %+v; want seen, not configured", e)
		}
	}
}
