// Package oidctest runs a real OIDC issuer in-process for tests: a discovery
// document, a JWKS endpoint and tokens signed with keys it can rotate.
package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is an OIDC issuer on 127.0.0.1.
type Issuer struct {
	URL string

	srv *httptest.Server

	mu      sync.Mutex
	keys    []jose.JSONWebKey // published; keys[0] signs
	nextKid int
	// JWKSFetches counts key set downloads.
	JWKSFetches int
}

// Start runs an issuer until the test ends.
func Start(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.URL,
			"jwks_uri":                              is.URL + "/jwks",
			"authorization_endpoint":                is.URL + "/auth",
			"token_endpoint":                        is.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		is.JWKSFetches++
		var pub []jose.JSONWebKey
		for _, k := range is.keys {
			pub = append(pub, k.Public())
		}
		is.mu.Unlock()
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: pub})
	})
	is.srv = httptest.NewServer(mux)
	is.URL = is.srv.URL
	t.Cleanup(is.srv.Close)
	is.Rotate(false)
	return is
}

// Rotate makes a new signing key. With keepOld the old key stays published
// (a graceful rotation); without, it disappears from the JWKS.
func (is *Issuer) Rotate(keepOld bool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.nextKid++
	k := jose.JSONWebKey{Key: key, KeyID: fmt.Sprintf("key-%d", is.nextKid), Algorithm: "ES256", Use: "sig"}
	if keepOld {
		is.keys = append([]jose.JSONWebKey{k}, is.keys...)
	} else {
		is.keys = []jose.JSONWebKey{k}
	}
}

// Claims of a token to issue; zero fields get defaults.
type Claims struct {
	Issuer   string
	Subject  string
	Audience []string
	Expiry   time.Time
	Extra    map[string]any
}

// Token signs a token with the current key.
func (is *Issuer) Token(t testing.TB, c Claims) string {
	t.Helper()
	is.mu.Lock()
	key := is.keys[0]
	is.mu.Unlock()
	return sign(t, key, is.URL, c)
}

// ForeignToken signs a token with a key the issuer never published.
func (is *Issuer) ForeignToken(t testing.TB, c Claims) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return sign(t, jose.JSONWebKey{Key: k, KeyID: "key-1", Algorithm: "ES256"}, is.URL, c)
}

func sign(t testing.TB, key jose.JSONWebKey, issuer string, c Claims) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer == "" {
		c.Issuer = issuer
	}
	if c.Subject == "" {
		c.Subject = "workload"
	}
	if c.Expiry.IsZero() {
		c.Expiry = time.Now().Add(time.Hour)
	}
	std := jwt.Claims{
		Issuer:   c.Issuer,
		Subject:  c.Subject,
		Audience: jwt.Audience(c.Audience),
		Expiry:   jwt.NewNumericDate(c.Expiry),
		IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)),
	}
	raw, err := jwt.Signed(signer).Claims(std).Claims(c.Extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
