package tokens

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/oidctest"
)

func TestVerify(t *testing.T) {
	is := oidctest.Start(t)
	other := oidctest.Start(t)
	v := NewVerifier(is.URL, "orders-db", Options{})
	ctx := context.Background()

	claims, err := v.Verify(ctx, is.Token(t, oidctest.Claims{Audience: []string{"orders-db"}, Subject: "ci-runner",
		Extra: map[string]any{"groups": []string{"deployers"}, "repo": "acme/billing"}}))
	if err != nil {
		t.Fatal(err)
	}
	if claims["sub"] != "ci-runner" || claims["repo"] != "acme/billing" {
		t.Errorf("claims = %v", claims)
	}

	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", is.Token(t, oidctest.Claims{Audience: []string{"orders-db"}, Expiry: time.Now().Add(-time.Minute)}), "expired"},
		{"wrong audience", is.Token(t, oidctest.Claims{Audience: []string{"other-db"}}), "audience"},
		{"wrong issuer", is.Token(t, oidctest.Claims{Audience: []string{"orders-db"}, Issuer: other.URL}), "different provider"},
		{"another issuer's token", other.Token(t, oidctest.Claims{Audience: []string{"orders-db"}}), "signature"},
		{"unknown key", is.ForeignToken(t, oidctest.Claims{Audience: []string{"orders-db"}}), "signature"},
		{"not a token", "hunter2", "malformed"},
	} {
		_, err := v.Verify(ctx, tc.token)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want ErrInvalid mentioning %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), tc.token) {
			t.Errorf("%s: the error quotes the token", tc.name)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	is := oidctest.Start(t)
	v := NewVerifier(is.URL, "db", Options{})
	ctx := context.Background()
	if _, err := v.Verify(ctx, is.Token(t, oidctest.Claims{Audience: []string{"db"}})); err != nil {
		t.Fatal(err)
	}
	is.Rotate(false) // the old key is gone from the JWKS
	if _, err := v.Verify(ctx, is.Token(t, oidctest.Claims{Audience: []string{"db"}})); err != nil {
		t.Errorf("token signed with the rotated key: %v", err)
	}
	if is.JWKSFetches < 2 {
		t.Errorf("JWKS fetched %d times; want a refetch on the new key id", is.JWKSFetches)
	}
}

func TestIssuerDownAtStart(t *testing.T) {
	v := NewVerifier("http://127.0.0.1:1", "db", Options{})
	if _, err := v.Verify(context.Background(), "x.y.z"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("err = %v; want the issuer reported unreachable", err)
	}
}
