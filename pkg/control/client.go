package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

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

// Client talks to an agent's control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{
		socket: path,
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tollgate"+path, nil)
	if err != nil {
		return err
	}
	hc := *c.hc
	hc.Timeout = 0 // a watch lasts as long as the session
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w: %s: %v", ErrAgentDown, c.socket, op.Err)
		}
		return fmt.Errorf("control: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		json.NewDecoder(resp.Body).Decode(&ae)
		return fmt.Errorf("control: %s: %s", resp.Status, ae.Error)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var r audit.Record
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("control: read records: %w", err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
}

// rawBody takes a reply as it is.
type rawBody []byte

func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tollgate"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w: %s: %v", ErrAgentDown, c.socket, op.Err)
		}
		return fmt.Errorf("control: %w", err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control: read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		json.Unmarshal(reply, &ae)
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %s", ErrNotFound, ae.Error)
		}
		if resp.StatusCode == http.StatusBadRequest {
			return fmt.Errorf("%w: %s", ErrBadRequest, ae.Error)
		}
		return fmt.Errorf("control: %s: %s", resp.Status, ae.Error)
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
