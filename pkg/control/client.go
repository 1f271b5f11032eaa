package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/identity"
	"github.com/tollgate-dev/tollgate/policy"
)

// ErrAgentDown is returned when nothing answers on the control socket.
var ErrAgentDown = errors.New("agent is not running (control socket unreachable)")

// ErrBadRequest is returned when the agent refused what was sent.
var ErrBadRequest = errors.New("bad request")

// ErrNotFound is returned for an unknown object (a session id, say).
var ErrNotFound = errors.New("not found")

// ErrUnauthorized is returned when the TCP control API refused the token.
var ErrUnauthorized = errors.New("unauthorized")

// ErrForbidden is returned when the agent refused the caller (an approver
// deciding on their own statement, or not among its approvers).
var ErrForbidden = errors.New("forbidden")

// ErrStreamEnded is returned when the agent ended a watch (it shuts down,
// or the watcher fell too far behind).
var ErrStreamEnded = errors.New("the agent ended the stream")

// APIError is an error reply of the control API. errors.Is matches it to
// ErrNotFound (404), ErrBadRequest (400), ErrUnauthorized (401),
// ErrForbidden (403) and, by Code, to the approval package's errors
// (approval.ErrNotFound, ErrNotPending, ErrSelfApproval, ErrNotAllowed,
// ErrReasonRequired, ErrBadScope).
type APIError struct {
	Status  int    // HTTP status code
	Code    string // one of the Code constants, or ""
	Message string // what the agent said
}

func (e *APIError) Error() string {
	switch e.Status {
	case http.StatusNotFound:
		return "not found: " + e.Message
	case http.StatusBadRequest:
		return "bad request: " + e.Message
	case http.StatusUnauthorized:
		return "unauthorized: " + e.Message
	case http.StatusForbidden, http.StatusConflict:
		return e.Message
	}
	return fmt.Sprintf("control: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap lets errors.Is find the sentinels that the status and code mean.
func (e *APIError) Unwrap() []error {
	var errs []error
	switch e.Status {
	case http.StatusNotFound:
		errs = append(errs, ErrNotFound)
	case http.StatusBadRequest:
		errs = append(errs, ErrBadRequest)
	case http.StatusUnauthorized:
		errs = append(errs, ErrUnauthorized)
	case http.StatusForbidden:
		errs = append(errs, ErrForbidden)
	}
	switch e.Code {
	case CodeNotFound:
		errs = append(errs, approval.ErrNotFound)
	case CodeNotPending:
		errs = append(errs, approval.ErrNotPending)
	case CodeSelfApproval:
		errs = append(errs, approval.ErrSelfApproval)
	case CodeNotAllowed:
		errs = append(errs, approval.ErrNotAllowed)
	case CodeReasonRequired:
		errs = append(errs, approval.ErrReasonRequired)
	case CodeBadScope:
		errs = append(errs, approval.ErrBadScope)
	}
	return errs
}

// Client talks to an agent's control socket, or to its TCP control API.
type Client struct {
	socket string // unix socket path, or the base URL of a remote client
	base   string // URL prefix of every request
	token  string // bearer token (remote)
	err    error  // why this client cannot work
	hc     *http.Client
}

// NewRemoteClient returns a client of the TCP control API at baseURL
// ("https://host:7443") that presents token (an OIDC ID token) and trusts
// the server certificates tlsConf trusts (nil: the system roots). Only the
// approvals and status calls are served there. baseURL must be https: the
// token never travels in clear.
func NewRemoteClient(baseURL, token string, tlsConf *tls.Config) *Client {
	base := strings.TrimRight(baseURL, "/")
	c := &Client{
		socket: base,
		base:   base,
		token:  token,
		hc: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, Proxy: http.ProxyFromEnvironment},
		},
	}
	if u, err := url.Parse(base); err != nil || u.Scheme != "https" || u.Host == "" {
		c.err = fmt.Errorf("%w: server %q: want https://host:port", ErrBadRequest, baseURL)
	}
	return c
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{
		socket: path,
		base:   "http://tollgate",
		hc: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
			},
		},
	}
}

// Status asks for the agent's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.get(ctx, "/v1/status", &s)
}

// Sessions lists live and recent sessions.
func (c *Client) Sessions(ctx context.Context) ([]l7.SessionInfo, error) {
	var s []l7.SessionInfo
	return s, c.get(ctx, "/v1/sessions", &s)
}

// Session returns one session.
func (c *Client) Session(ctx context.Context, id string) (l7.SessionInfo, error) {
	var s l7.SessionInfo
	return s, c.get(ctx, "/v1/sessions/"+id, &s)
}

// Identities lists configured and discovered workload identities.
func (c *Client) Identities(ctx context.Context) ([]identity.InventoryEntry, error) {
	var s []identity.InventoryEntry
	return s, c.get(ctx, "/v1/identities", &s)
}

// EvalPolicy asks the agent what its policy decides on in.
func (c *Client) EvalPolicy(ctx context.Context, in json.RawMessage) (policy.Decision, error) {
	var d policy.Decision
	return d, c.do(ctx, http.MethodPost, "/v1/policy/eval", in, &d)
}

// AuditPublicKey fetches the PEM public key that verifies the journal.
func (c *Client) AuditPublicKey(ctx context.Context) ([]byte, error) {
	var raw rawBody
	err := c.do(ctx, http.MethodGet, "/v1/audit/pubkey", nil, &raw)
	return raw, err
}

// KillSession ends a live session; the agent journals who asked.
func (c *Client) KillSession(ctx context.Context, id, reason string) error {
	body, _ := json.Marshal(map[string]string{"reason": reason})
	var out map[string]string
	return c.do(ctx, http.MethodPost, "/v1/sessions/"+id+"/kill", body, &out)
}

// SessionRecords streams the journal records of a session to fn; with
// follow it keeps streaming as they are written, until the session ends.
func (c *Client) SessionRecords(ctx context.Context, id string, follow bool, fn func(audit.Record) error) error {
	path := "/v1/sessions/" + id + "/records"
	if follow {
		path += "?follow=1"
	}
	err := c.stream(ctx, path, func(dec *json.Decoder) error {
		var r audit.Record
		if err := dec.Decode(&r); err != nil {
			return err
		}
		return fn(r)
	})
	if errors.Is(err, ErrStreamEnded) {
		return nil
	}
	return err
}

// Approvals lists the pending approval requests, then the recently decided.
func (c *Client) Approvals(ctx context.Context) ([]approval.Request, error) {
	var l []approval.Request
	return l, c.get(ctx, "/v1/approvals", &l)
}

// Approval returns one approval request.
func (c *Client) Approval(ctx context.Context, id string) (approval.Request, error) {
	var r approval.Request
	return r, c.get(ctx, "/v1/approvals/"+url.PathEscape(id), &r)
}

// Approve approves a pending request as the caller (the peer's uid on the
// socket, the token's user remotely). scope "" is what the policy asked
// for; window > 0 makes a window grant for that long. It returns the
// request as decided.
func (c *Client) Approve(ctx context.Context, id, reason, scope string, window time.Duration) (approval.Request, error) {
	body := ApproveBody{Reason: reason, Scope: scope}
	if window > 0 {
		body.For = window.String()
	}
	raw, _ := json.Marshal(body)
	var r approval.Request
	return r, c.do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/approve", raw, &r)
}

// Deny denies a pending request as the caller; reason is required and the
// held statement's client sees it.
func (c *Client) Deny(ctx context.Context, id, reason string) (approval.Request, error) {
	raw, _ := json.Marshal(DenyBody{Reason: reason})
	var r approval.Request
	return r, c.do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/deny", raw, &r)
}

// WatchApprovals hands fn the pending requests, then each new or changed
// request as it happens, until ctx ends (it returns ctx's error), fn fails,
// or the agent ends the stream (ErrStreamEnded).
func (c *Client) WatchApprovals(ctx context.Context, fn func(approval.Request) error) error {
	return c.stream(ctx, "/v1/approvals?watch=1", func(dec *json.Decoder) error {
		var r approval.Request
		if err := dec.Decode(&r); err != nil {
			return err
		}
		return fn(r)
	})
}

// stream GETs path and calls next until it fails; at the end of the body it
// returns ErrStreamEnded, and ctx's error once ctx ended.
func (c *Client) stream(ctx context.Context, path string, next func(*json.Decoder) error) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		reply, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return replyError(resp.StatusCode, reply)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		err := next(dec)
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, io.EOF):
			return ErrStreamEnded
		}
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("control: read stream: %w", err)
		}
		return err
	}
}

// rawBody takes a reply as it is.
type rawBody []byte

func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	resp, err := c.send(ctx, method, path, body, c.hc.Timeout)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control: read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return replyError(resp.StatusCode, reply)
	}
	if raw, ok := out.(*rawBody); ok {
		*raw = reply
		return nil
	}
	if err := json.Unmarshal(reply, out); err != nil {
		return fmt.Errorf("control: decode reply: %w", err)
	}
	return nil
}

// send makes one request; timeout 0 lets it last as long as ctx (streams).
func (c *Client) send(ctx context.Context, method, path string, body []byte, timeout time.Duration) (*http.Response, error) {
	if c.err != nil {
		return nil, c.err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.hc
	if timeout != hc.Timeout {
		copied := *hc
		copied.Timeout = timeout
		hc = &copied
	}
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w: %s: %v", ErrAgentDown, c.socket, op.Err)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("control: %s: %w", c.socket, err)
	}
	return resp, nil
}

// replyError turns an error reply into an *APIError.
func replyError(status int, reply []byte) error {
	var ae apiError
	if json.Unmarshal(reply, &ae) != nil || ae.Error == "" {
		ae.Error = strings.TrimSpace(string(reply))
	}
	return &APIError{Status: status, Code: ae.Code, Message: ae.Error}
}
