package control

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/pkg/tokens"
)

// ApprovalBackend is what the approvals routes ask the agent: the
// approval.Broker's methods, plus ctx. It is an optional capability of a
// Backend (the agent implements it): without it, the approvals routes answer
// 501 and ListenTCP refuses to start.
type ApprovalBackend interface {
	Approvals() []approval.Request
	Approval(id string) (approval.Request, bool)
	ApproveRequest(ctx context.Context, id string, who approval.Approver, reason, scope string, window time.Duration) error
	DenyRequest(ctx context.Context, id string, who approval.Approver, reason string) error
	WatchApprovals(ctx context.Context) <-chan approval.Request
}

// Error codes of error replies (apiError.Code, APIError.Code).
const (
	CodeNotFound       = "not_found"
	CodeNotPending     = "not_pending"
	CodeSelfApproval   = "self_approval"
	CodeNotAllowed     = "not_allowed"
	CodeReasonRequired = "reason_required"
	CodeBadScope       = "bad_scope"
	CodeBadRequest     = "bad_request"
	CodeUnauthorized   = "unauthorized"
	CodeUnsupported    = "unsupported"
	CodeInternal       = "internal"
)

// ApproveBody is the body of POST /v1/approvals/{id}/approve. Every field is
// optional: Scope "" is the scope the policy asked for, For (a Go duration,
// "1h") makes a window grant.
type ApproveBody struct {
	Reason string `json:"reason"`
	Scope  string `json:"scope"`
	For    string `json:"for"`
}

// DenyBody is the body of POST /v1/approvals/{id}/deny: Reason is required
// and the held statement's client sees it.
type DenyBody struct {
	Reason string `json:"reason"`
}

// approverFunc says who is asking, or why nobody may.
type approverFunc func(r *http.Request) (approval.Approver, error)

// handleApprovals registers the approvals routes on mux.
func handleApprovals(mux *http.ServeMux, b Backend, who approverFunc) {
	ab, ok := b.(ApprovalBackend)
	if !ok {
		unsupported := func(w http.ResponseWriter, r *http.Request) {
			writeCodedError(w, http.StatusNotImplemented, CodeUnsupported, "this agent serves no approvals")
		}
		mux.HandleFunc("GET /v1/approvals", unsupported)
		mux.HandleFunc("GET /v1/approvals/{id}", unsupported)
		mux.HandleFunc("POST /v1/approvals/{id}/{action}", unsupported)
		return
	}
	mux.HandleFunc("GET /v1/approvals", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "1" {
			watchApprovals(w, r, ab)
			return
		}
		l := ab.Approvals()
		if l == nil {
			l = []approval.Request{}
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("GET /v1/approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, ok := ab.Approval(r.PathValue("id"))
		if !ok {
			writeCodedError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no approval request %q", r.PathValue("id")))
			return
		}
		writeJSON(w, http.StatusOK, req)
	})
	mux.HandleFunc("POST /v1/approvals/{id}/approve", func(w http.ResponseWriter, r *http.Request) {
		var body ApproveBody
		if !decodeBody(w, r, &body) {
			return
		}
		var window time.Duration
		if body.For != "" {
			d, err := time.ParseDuration(body.For)
			if err != nil || d <= 0 {
				writeCodedError(w, http.StatusBadRequest, CodeBadScope, fmt.Sprintf("for %q: want a positive duration such as 30m or 2h", body.For))
				return
			}
			window = d
		}
		decide(w, r, ab, who, func(a approval.Approver) error {
			return ab.ApproveRequest(r.Context(), r.PathValue("id"), a, body.Reason, body.Scope, window)
		})
	})
	mux.HandleFunc("POST /v1/approvals/{id}/deny", func(w http.ResponseWriter, r *http.Request) {
		var body DenyBody
		if !decodeBody(w, r, &body) {
			return
		}
		decide(w, r, ab, who, func(a approval.Approver) error {
			return ab.DenyRequest(r.Context(), r.PathValue("id"), a, body.Reason)
		})
	})
}

// decodeBody reads a small JSON body strictly; an empty body is {}.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeCodedError(w, http.StatusBadRequest, CodeBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// decide runs an approve or deny on behalf of the caller and answers with
// the request as it now stands.
func decide(w http.ResponseWriter, r *http.Request, ab ApprovalBackend, who approverFunc, do func(approval.Approver) error) {
	a, err := who(r)
	if err != nil {
		writeCodedError(w, http.StatusForbidden, CodeNotAllowed, err.Error())
		return
	}
	if err := do(a); err != nil {
		code, name := approvalErrorCode(err)
		writeCodedError(w, code, name, err.Error())
		return
	}
	req, _ := ab.Approval(r.PathValue("id"))
	writeJSON(w, http.StatusOK, req)
}

// approvalErrorCode maps the broker's errors to an HTTP status and a code.
func approvalErrorCode(err error) (int, string) {
	switch {
	case errors.Is(err, approval.ErrNotFound):
		return http.StatusNotFound, CodeNotFound
	case errors.Is(err, approval.ErrNotPending):
		return http.StatusConflict, CodeNotPending
	case errors.Is(err, approval.ErrSelfApproval):
		return http.StatusForbidden, CodeSelfApproval
	case errors.Is(err, approval.ErrNotAllowed):
		return http.StatusForbidden, CodeNotAllowed
	case errors.Is(err, approval.ErrReasonRequired):
		return http.StatusBadRequest, CodeReasonRequired
	case errors.Is(err, approval.ErrBadScope):
		return http.StatusBadRequest, CodeBadScope
	}
	return http.StatusInternalServerError, CodeInternal
}

// watchApprovals streams JSON lines: the pending requests, then every new
// or changed request, until the caller goes, the agent shuts down or the
// broker drops a watcher that fell behind.
func watchApprovals(w http.ResponseWriter, r *http.Request, ab ApprovalBackend) {
	ctx := r.Context()
	ch := ab.WatchApprovals(ctx) // before the list: nothing falls between
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	flush := func() {
		if fl != nil {
			fl.Flush()
		}
	}
	enc := json.NewEncoder(w)
	sent := map[string]approval.State{}
	for _, req := range ab.Approvals() {
		if req.State == approval.StatePending {
			if enc.Encode(req) != nil {
				return
			}
			sent[req.ID] = req.State
		}
	}
	flush()
	for {
		select {
		case <-ctx.Done():
			return
		case req, ok := <-ch:
			if !ok {
				return
			}
			if st, seen := sent[req.ID]; seen && st == req.State {
				continue // listed above already
			}
			delete(sent, req.ID)
			if enc.Encode(req) != nil {
				return
			}
			flush()
		}
	}
}

func writeCodedError(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate"`)
	}
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

// TokenVerifier checks the bearer token of a TCP control API request and
// says which approver it names.
type TokenVerifier interface {
	Approver(ctx context.Context, token string) (approval.Approver, error)
}

// OIDCOptions configure NewOIDCVerifier.
type OIDCOptions struct {
	// Issuer is the OIDC issuer URL; Audience the client id the ID tokens
	// must be issued for. Both required.
	Issuer, Audience string
	// GroupsClaim names the claim that lists the approver's groups (an
	// array of strings, or one string). Default "groups".
	GroupsClaim string
	// UsernameClaim names the claim that is the approver's name; when the
	// token lacks it, email, then sub. Default "preferred_username".
	UsernameClaim string
	// HTTPClient fetches discovery and keys; Now is the clock for expiry.
	HTTPClient *http.Client
	Now        func() time.Time
}

// OIDCVerifier is a TokenVerifier for OIDC ID tokens, verified with go-oidc
// (signature through the issuer's JWKS, issuer, audience, expiry).
type OIDCVerifier struct {
	v             *tokens.Verifier
	groups, uname string
}

var _ TokenVerifier = (*OIDCVerifier)(nil)

// NewOIDCVerifier returns a verifier of ID tokens from o.Issuer for
// o.Audience. Discovery happens on first use and is retried until it works.
func NewOIDCVerifier(o OIDCOptions) *OIDCVerifier {
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	if o.UsernameClaim == "" {
		o.UsernameClaim = "preferred_username"
	}
	return &OIDCVerifier{
		v:      tokens.NewVerifier(o.Issuer, o.Audience, tokens.Options{HTTPClient: o.HTTPClient, Now: o.Now}),
		groups: o.GroupsClaim,
		uname:  o.UsernameClaim,
	}
}

// Approver verifies token and returns the approver it names (Via "oidc").
// Errors never quote the token.
func (o *OIDCVerifier) Approver(ctx context.Context, token string) (approval.Approver, error) {
	claims, err := o.v.Verify(ctx, token)
	if err != nil {
		return approval.Approver{}, fmt.Errorf("token refused: %s", strings.TrimPrefix(err.Error(), tokens.ErrInvalid.Error()+": "))
	}
	a := approval.Approver{Via: approval.ViaOIDC}
	for _, c := range []string{o.uname, "email", "sub"} {
		if s, ok := claims[c].(string); ok && s != "" {
			a.Name = s
			break
		}
	}
	if a.Name == "" {
		return approval.Approver{}, fmt.Errorf("token refused: it names no user (%s, email or sub)", o.uname)
	}
	switch g := claims[o.groups].(type) {
	case string:
		a.Groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				a.Groups = append(a.Groups, s)
			}
		}
	}
	return a, nil
}

type approverKey struct{}

// ListenTCP serves the approvals routes and GET /v1/status on addr, over TLS
// with tlsConf (at least TLS 1.2), to callers whose every request carries
// "Authorization: Bearer <OIDC ID token>" that v accepts; the token names the
// approver. A missing or refused token is answered 401; any other route 404.
// b must implement ApprovalBackend.
func ListenTCP(addr string, tlsConf *tls.Config, v TokenVerifier, b Backend) (*Server, error) {
	if _, ok := b.(ApprovalBackend); !ok {
		return nil, errors.New("control: the backend serves no approvals")
	}
	if v == nil {
		return nil, errors.New("control: the TCP control API needs a token verifier")
	}
	if tlsConf == nil || len(tlsConf.Certificates) == 0 && tlsConf.GetCertificate == nil && tlsConf.GetConfigForClient == nil {
		return nil, errors.New("control: the TCP control API needs a TLS certificate")
	}
	conf := tlsConf.Clone()
	conf.MinVersion = max(conf.MinVersion, tls.VersionTLS12)
	if len(conf.NextProtos) == 0 {
		conf.NextProtos = []string{"http/1.1"}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, b.Status()) })
	handleApprovals(mux, b, func(r *http.Request) (approval.Approver, error) {
		a, ok := r.Context().Value(approverKey{}).(approval.Approver)
		if !ok {
			return approval.Approver{}, errors.New("no verified token")
		}
		return a, nil
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeCodedError(w, http.StatusNotFound, CodeNotFound, r.URL.Path+" is not served on the TCP control API: only status and approvals are; use the unix socket")
	})
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, token, _ := strings.Cut(h, " ")
		if h == "" || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			writeCodedError(w, http.StatusUnauthorized, CodeUnauthorized, "missing bearer token: send \"Authorization: Bearer <OIDC ID token>\" (tollctl --token-file or TOLLGATE_TOKEN)")
			return
		}
		a, err := v.Approver(r.Context(), strings.TrimSpace(token))
		if err != nil {
			writeCodedError(w, http.StatusUnauthorized, CodeUnauthorized, err.Error())
			return
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), approverKey{}, a)))
	})
	return newServer(b, tls.NewListener(ln, conf), auth), nil
}

// ServerTLSConfig loads a PEM certificate and key for ListenTCP.
func ServerTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("control: TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
