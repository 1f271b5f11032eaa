package policy

import (
	"context"
	"fmt"
	"testing"
)

// cachePolicy allows reads, caching the decision unless the session's
// application is "nocache"; its reason counts nothing, so a cached and a
// fresh decision look alike but for Cached.
const cachePolicy = `package tollgate

decision := {"allow": true, "cache": input.session.application_name != "nocache", "mask": [{"column": "email", "method": "email"}]}
`

func TestDecisionCache(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": cachePolicy})
	e := newEngine(t, dir, Options{})
	ctx := context.Background()
	app := workload("app", true)
	sel := stmtReq(app, "orders-db", "SELECT", nil, nil, true)

	check := func(step string, in Input, wantCached bool, wantHits, wantMisses uint64) {
		t.Helper()
		d := e.Decide(ctx, in)
		if !d.Allow || d.Cached != wantCached || d.PolicyVersion != e.Version() {
			t.Errorf("%s: Decide = %+v, want allow, cached %v, version %s", step, d, wantCached, e.Version())
		}
		if s := e.Status().Cache; s.Hits != wantHits || s.Misses != wantMisses {
			t.Errorf("%s: cache stats %+v, want hits %d misses %d", step, s, wantHits, wantMisses)
		}
	}
	check("first", sel, false, 0, 1)
	check("again", sel, true, 1, 1)

	other := sel
	other.Request.SQL = "SELECT 2" // same fingerprint, other literals: the policy promised
	check("other literals", other, true, 2, 1)

	for _, tc := range []struct {
		name   string
		change func(*Input)
	}{
		{"identity name", func(in *Input) { w := app; w.Name = "app2"; in.Identity = w }},
		{"identity known", func(in *Input) { w := app; w.Known = false; in.Identity = w }},
		{"identity uid", func(in *Input) { w := app; w.UID = 0; in.Identity = w }},
		{"identity cgroup", func(in *Input) { w := app; w.Cgroup = "/other"; in.Identity = w }},
		{"target", func(in *Input) { in.Target.Name = "other-db" }},
		{"session user", func(in *Input) { in.Session.User = "admin" }},
		{"database", func(in *Input) { in.Session.Database = "postgres" }},
		{"fingerprint", func(in *Input) { in.Request.Fingerprint = "other" }},
	} {
		in := sel
		tc.change(&in)
		s := e.Status().Cache
		check(tc.name+" differs", in, false, s.Hits, s.Misses+1)
	}
	s := e.Status().Cache

	// Fields outside the key share the entry: pid, exe.
	w := app
	w.PID, w.Exe = 1, "/bin/other"
	in := sel
	in.Identity = &w
	check("pid and exe differ", in, true, s.Hits+1, s.Misses)
	in.Identity = mustPrepare(t, &w)
	check("prepared identity", in, true, s.Hits+2, s.Misses)
	s = e.Status().Cache

	// Not cacheable: connect, no fingerprint; no lookup is counted.
	check("connect", connectReq(app, "orders-db"), false, s.Hits, s.Misses)
	check("connect again", connectReq(app, "orders-db"), false, s.Hits, s.Misses)
	nofp := sel
	nofp.Request.Fingerprint = ""
	check("no fingerprint", nofp, false, s.Hits, s.Misses)
	check("no fingerprint again", nofp, false, s.Hits, s.Misses)

	// The policy did not allow caching: looked up, never stored.
	nc := sel
	nc.Session.ApplicationName = "nocache"
	nc.Request.Fingerprint = "nc"
	check("policy says no cache", nc, false, s.Hits, s.Misses+1)
	check("policy says no cache, again", nc, false, s.Hits, s.Misses+2)
	s = e.Status().Cache

	// A cached decision cannot be changed through a returned copy.
	d := e.Decide(ctx, sel)
	d.Mask[0].Method = "changed"
	if d := e.Decide(ctx, sel); d.Mask[0].Method != "email" {
		t.Errorf("cached decision changed through a copy: %+v", d.Mask)
	}
	s.Hits += 2

	// A new policy: nothing of the old one is served.
	writeFiles(t, dir, map[string]string{"p.rego": cachePolicy + "# v2\n"})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := e.Status().Cache.Entries; n != 0 {
		t.Errorf("after reload: %d cache entries, want 0", n)
	}
	check("after reload", sel, false, s.Hits, s.Misses+1)
	check("after reload, again", sel, true, s.Hits+1, s.Misses+1)
}

func TestDecisionCacheBounded(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": cachePolicy})
	e := newEngine(t, dir, Options{CacheSize: 2})
	ctx := context.Background()
	req := func(fp string) Input {
		in := stmtReq(workload("app", true), "orders-db", "SELECT", nil, nil, true)
		in.Request.Fingerprint = fp
		return in
	}
	for _, fp := range []string{"a", "b", "a", "c"} { // c evicts b, the least recently used
		e.Decide(ctx, req(fp))
	}
	if n := e.Status().Cache.Entries; n != 2 {
		t.Errorf("entries = %d, want 2", n)
	}
	for fp, want := range map[string]bool{"a": true, "c": true} {
		if d := e.Decide(ctx, req(fp)); d.Cached != want {
			t.Errorf("%s: cached %v, want %v", fp, d.Cached, want)
		}
	}
	if d := e.Decide(ctx, req("b")); d.Cached {
		t.Error("b: cached, want evicted")
	}
}

func TestDecisionCacheDisabled(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": cachePolicy})
	e := newEngine(t, dir, Options{CacheSize: -1})
	in := stmtReq(workload("app", true), "orders-db", "SELECT", nil, nil, true)
	for range 2 {
		if d := e.Decide(context.Background(), in); d.Cached || !d.Allow {
			t.Errorf("Decide = %+v, want uncached allow", d)
		}
	}
	if s := e.Status().Cache; s != (CacheStats{}) {
		t.Errorf("cache stats %+v, want zero", s)
	}
}

func TestIdentityKeyOf(t *testing.T) {
	w := workload("app", true)
	want := identityKey{name: "app", known: true, uid: 1001, cgroup: "/system.slice/app.service"}
	type custom struct {
		N      string `json:"name"`
		K      bool   `json:"known"`
		U      int    `json:"uid"`
		Cgroup string
	}
	tests := []struct {
		id     any
		want   identityKey
		wantOK bool
	}{
		{w, want, true},
		{&w, want, true},
		{mustPrepare(t, w), want, true},
		{mustPrepare(t, map[string]any{"name": "app"}), identityKey{}, false},
		{map[string]any{"name": "app", "known": true, "uid": 1001, "cgroup": "/system.slice/app.service"}, want, true},
		{map[string]any{"name": "app", "known": true, "uid": 1001.0, "cgroup": "/system.slice/app.service"}, want, true},
		{map[string]any{"name": "app", "known": true}, identityKey{name: "app", known: true}, true},
		{map[string]any{"name": "app"}, identityKey{}, false},
		{map[string]any{"name": "app", "known": true, "uid": -1}, identityKey{}, false},
		{custom{"app", true, 1001, "/system.slice/app.service"}, want, true},
		{custom{"app", true, -1, ""}, identityKey{}, false},
		{struct{ Name string }{"app"}, identityKey{}, false},
		{nil, identityKey{}, false},
		{(*custom)(nil), identityKey{}, false},
		{"app", identityKey{}, false},
	}
	for i, tc := range tests {
		got, ok := identityKeyOf(tc.id)
		if ok != tc.wantOK || (ok && got != tc.want) {
			t.Errorf("%d: identityKeyOf(%s) = %+v, %v; want %+v, %v", i, fmt.Sprintf("%#v", tc.id), got, ok, tc.want, tc.wantOK)
		}
	}
}
