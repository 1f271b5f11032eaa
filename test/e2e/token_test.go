package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/oidctest"
	"github.com/tollgate-dev/tollgate/test/testenv"
)

const tokenPolicy = `package tollgate

import rego.v1

default decision := {"allow": false, "reason": "no token claims allow this"}

decision := {"allow": true} if {
	input.request.kind == "connect"
	input.identity.claims.repo == "acme/billing"
}

decision := {"allow": true} if input.request.kind == "statement"
`

func TestWorkloadTokensAtConnect(t *testing.T) {
	is := oidctest.Start(t)
	f := newPG(t)
	f.stop(syscall.SIGTERM)
	old := f.extra
	i := strings.LastIndex(f.extra, "}\n") // the end of the target's credentials
	f.extra = f.extra[:i] + fmt.Sprintf(", client_token: {issuer: %q, audience: orders-db}}\n", is.URL) + f.extra[i+2:]
	if f.extra == old {
		t.Fatal("could not add client_token to the target")
	}
	f.writeConfig()
	f.writePolicy(tokenPolicy)
	f.start()

	connect := func(token string) map[string]any {
		t.Helper()
		cmd := testenv.Helper("pgxconnect", fmt.Sprintf("postgres://ci:%s@%s/%s", token, f.target, f.pg.Database))
		testenv.InCgroup(t, cmd, f.cg)
		var got map[string]any
		testenv.RunJSON(t, cmd, &got)
		return got
	}
	good := oidctest.Claims{Audience: []string{"orders-db"}, Subject: "ci-runner", Extra: map[string]any{"repo": "acme/billing"}}
	if got := connect(is.Token(t, good)); got["connected"] != true {
		t.Errorf("valid token: %v", got)
	}
	for _, tc := range []struct {
		name  string
		token string
		want  string
	}{
		{"claims the policy refuses", is.Token(t, oidctest.Claims{Audience: []string{"orders-db"}, Extra: map[string]any{"repo": "evil/fork"}}), "no token claims allow this"},
		{"expired", is.Token(t, oidctest.Claims{Audience: []string{"orders-db"}, Expiry: time.Now().Add(-time.Minute), Extra: good.Extra}), "expired"},
		{"wrong audience", is.Token(t, oidctest.Claims{Audience: []string{"other-db"}, Extra: good.Extra}), "audience"},
		{"wrong issuer", is.Token(t, oidctest.Claims{Audience: []string{"orders-db"}, Issuer: "http://127.0.0.1:1", Extra: good.Extra}), "different provider"},
		{"not a token", "hunter2", "malformed"},
	} {
		got := connect(tc.token)
		if got["code"] != "28000" || !strings.Contains(fmt.Sprint(got["message"]), tc.want) {
			t.Errorf("%s: %v; want FATAL 28000 mentioning %q", tc.name, got, tc.want)
		}
	}
	// The issuer rotates its key; new tokens are accepted (the JWKS is refetched).
	is.Rotate(false)
	if got := connect(is.Token(t, good)); got["connected"] != true {
		t.Errorf("token after key rotation: %v", got)
	}
	// The claims are part of the session's identity.
	for _, s := range f.sessions() {
		if s.State == "closed" && s.Workload.Claims["repo"] == "acme/billing" {
			return
		}
	}
	t.Errorf("no session shows the token's claims: %+v", f.sessions())
}
