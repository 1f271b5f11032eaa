// Package tokens verifies the workload tokens (OIDC JWTs) a connection may
// carry, such as a JWT sent as the PostgreSQL password, against configured
// issuers: discovery, JWKS caching and rotation, expiry and audience are
// go-oidc's.
package tokens

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// ErrInvalid wraps every reason a token is refused.
var ErrInvalid = errors.New("workload token refused")

// Verifier checks tokens of one issuer for one audience.
type Verifier struct {
	issuer, audience string
	client           *http.Client
	now              func() time.Time

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // set once discovery succeeded
}

// Options tune a Verifier.
type Options struct {
	// HTTPClient fetches the discovery document and keys. Default: a client
	// with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock tokens are checked against. Default: time.Now.
	Now func() time.Time
}

// NewVerifier returns a verifier for tokens issued by issuer for audience.
// Discovery happens on first use and is retried until it succeeds, so an
// issuer that is down at start does not stop the agent; until then every
// token is refused.
func NewVerifier(issuer, audience string, opts Options) *Verifier {
	v := &Verifier{issuer: issuer, audience: audience, client: opts.HTTPClient, now: opts.Now}
	if v.client == nil {
		v.client = &http.Client{Timeout: 10 * time.Second}
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v
}

func (v *Verifier) get(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, nil
	}
	// The provider's key set keeps using this context (and its client) for
	// key refreshes on rotation, so it must outlive this call.
	pctx := oidc.ClientContext(context.WithoutCancel(ctx), v.client)
	p, err := oidc.NewProvider(pctx, v.issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: issuer %s unreachable: %v", ErrInvalid, v.issuer, err)
	}
	// The provider's verifier accepts the algorithms the issuer announces
	// and refetches its JWKS when a token names a key it has not seen.
	v.verifier = p.Verifier(&oidc.Config{ClientID: v.audience, Now: v.now})
	return v.verifier, nil
}

// Verify checks raw and returns its claims. Errors wrap ErrInvalid and say
// why in words a client may see (expired, wrong audience, wrong issuer, bad
// signature); they never include the token.
func (v *Verifier) Verify(ctx context.Context, raw string) (map[string]any, error) {
	ver, err := v.get(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := ver.Verify(ctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		switch {
		case errors.As(err, &exp):
			return nil, fmt.Errorf("%w: token expired at %s", ErrInvalid, exp.Expiry.UTC().Format(time.RFC3339))
		default:
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	claims := map[string]any{}
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrInvalid, err)
	}
	return claims, nil
}
