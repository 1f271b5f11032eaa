package main

// tollctl approvals: list, watch, approve and deny the statements that the
// policy holds for a human's approval, on the control socket (the approver
// is the caller's uid) or on a remote agent's TCP control API (--server,
// the approver is the OIDC ID token's user).
//
// Exit codes, as for every command: 0 done; 1 refused (403: your own
// statement, or not among its approvers; 409: no longer pending; 401: the
// token was refused) or any other error; 2 usage (a missing --reason, a bad
// --for or --scope); 3 agent unreachable; 4 no such request.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-dev/tollgate/approval"
	"github.com/tollgate-dev/tollgate/pkg/control"
)

// remote holds the global flags that reach an agent's TCP control API.
type remote struct {
	server, tokenFile, caFile string
}

// registerApprovals adds the approvals commands to root, and the global
// flags --server, --token-file and --ca-file.
func registerApprovals(root *cobra.Command, g *globals) {
	r := &remote{}
	pf := root.PersistentFlags()
	pf.StringVar(&r.server, "server", os.Getenv("TOLLGATE_SERVER"), "a remote agent's TCP control API, https://host:port (approvals only; env TOLLGATE_SERVER)")
	pf.StringVar(&r.tokenFile, "token-file", "", "file holding the OIDC ID token sent to --server (default: env TOLLGATE_TOKEN)")
	pf.StringVar(&r.caFile, "ca-file", "", "PEM CA certificates that sign --server's certificate (default: the system roots)")
	pre := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if pre != nil {
			if err := pre(cmd, args); err != nil {
				return err
			}
		}
		if r.server != "" && !strings.HasPrefix(cmd.CommandPath(), root.Name()+" approvals") {
			return usageError{errors.New("--server reaches only the approvals commands; the others use the control socket (--socket)")}
		}
		return nil
	}
	root.AddCommand(approvalsCmd(g, r))
}

// client is a client of the TCP control API when --server is set, else of
// the control socket.
func (r *remote) client(g *globals) (*control.Client, error) {
	if r.server == "" {
		return g.client(), nil
	}
	if !strings.HasPrefix(r.server, "https://") {
		return nil, usageError{fmt.Errorf("--server %q: want https://host:port (the token never travels in clear)", r.server)}
	}
	var token string
	switch {
	case r.tokenFile != "":
		b, err := os.ReadFile(r.tokenFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--token-file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	default:
		token = strings.TrimSpace(os.Getenv("TOLLGATE_TOKEN"))
	}
	if token == "" {
		return nil, usageError{errors.New("--server needs an OIDC ID token: --token-file PATH or env TOLLGATE_TOKEN")}
	}
	var conf *tls.Config
	if r.caFile != "" {
		pem, err := os.ReadFile(r.caFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("--ca-file: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("--ca-file %s: no PEM certificate in it", r.caFile)}
		}
		conf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return control.NewRemoteClient(r.server, token, conf), nil
}

func approvalsCmd(g *globals, r *remote) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "approvals",
		Aliases: []string{"approval", "ap"},
		Short:   "Statements held for a human's approval: list, watch, approve, deny",
	}

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List pending requests, then the recently decided",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client(g)
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			l, err := c.Approvals(ctx)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if l == nil {
					l = []approval.Request{}
				}
				return printJSON(cmd.OutOrStdout(), l)
			}
			return printApprovals(cmd.OutOrStdout(), l, time.Now())
		},
	}

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one request in full",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.client(g)
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			req, err := c.Approval(ctx, args[0])
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), req)
			}
			return printApproval(cmd.OutOrStdout(), req)
		},
	}

	var reason, scope string
	var window time.Duration
	approve := &cobra.Command{
		Use:   "approve ID [--reason TEXT] [--scope statement|session] [--for DURATION]",
		Short: "Approve a held statement (--scope session: the rest of its session too; --for 1h: its identity on its target for an hour)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case scope != "" && scope != approval.ScopeStatement && scope != approval.ScopeSession:
				return usageError{fmt.Errorf("--scope %q: want statement or session (--for DURATION makes a window)", scope)}
			case window < 0:
				return usageError{fmt.Errorf("--for %s: want a positive duration", window)}
			case window > 0 && scope != "":
				return usageError{errors.New("--for makes a window grant: leave out --scope")}
			}
			c, err := r.client(g)
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			req, err := c.Approve(ctx, args[0], reason, scope, window)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), req)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s approved by %s: %s\n", req.ID, req.DecidedBy, grantText(req))
			return nil
		},
	}
	approve.Flags().StringVar(&reason, "reason", "", "why (journaled, and shown to whoever lists the request)")
	approve.Flags().StringVar(&scope, "scope", "", "statement | session (default: what the policy asked for)")
	approve.Flags().DurationVar(&window, "for", 0, "approve this identity on this target for a while (a window), e.g. 30m")

	var denyReason string
	deny := &cobra.Command{
		Use:   "deny ID --reason TEXT",
		Short: "Deny a held statement: its client gets the reason as the error",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(denyReason) == "" {
				return usageError{errors.New("deny needs --reason TEXT: the client sees it")}
			}
			c, err := r.client(g)
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			req, err := c.Deny(ctx, args[0], denyReason)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), req)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s denied by %s: %s\n", req.ID, req.DecidedBy, req.DecisionReason)
			return nil
		},
	}
	deny.Flags().StringVar(&denyReason, "reason", "", "why (required; the client sees it)")

	watch := &cobra.Command{
		Use:   "watch",
		Short: "Print pending requests, then each new or decided one as it happens (Ctrl-C ends)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := r.client(g)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			err = c.WatchApprovals(ctx, func(req approval.Request) error {
				if g.output == "json" {
					line, err := json.Marshal(req)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(out, "%s\n", line)
					return err
				}
				_, err := fmt.Fprintln(out, eventLine(req))
				return err
			})
			switch {
			case ctx.Err() != nil:
				return nil // interrupted: done
			case errors.Is(err, control.ErrStreamEnded):
				return errors.New("the agent ended the watch (it is shutting down, or this watch fell behind): run it again")
			}
			return err
		},
	}

	cmd.AddCommand(ls, show, approve, deny, watch)
	return cmd
}

// printApprovals prints requests as a table.
func printApprovals(out io.Writer, l []approval.Request, now time.Time) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tIDENTITY\tUID\tTARGET\tSESSION\tAGE\tEXPIRES IN\tBY\tSQL")
	for _, req := range l {
		expires, by := "-", "-"
		if req.State == approval.StatePending {
			expires = req.Expires.Sub(now).Round(time.Second).String()
		}
		if req.DecidedBy != "" {
			by = req.DecidedBy
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", req.ID, req.State, dash(req.Identity), req.UID, dash(req.Target),
			dash(req.Session), now.Sub(req.Created).Round(time.Second), expires, by, oneLine(req.SQL, 60))
	}
	return w.Flush()
}

// printApproval prints one request in full.
func printApproval(out io.Writer, req approval.Request) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	user := ""
	if req.User != "" {
		user = " (" + req.User + ")"
	}
	rows := [][2]string{
		{"id", req.ID}, {"state", string(req.State)}, {"identity", req.Identity},
		{"sent by", fmt.Sprintf("uid %d%s, pid %d", req.UID, user, req.PID)}, {"origin", req.Origin},
		{"target", req.Target}, {"session", req.Session}, {"sql", req.SQL}, {"policy reason", req.Reason},
		{"approvers", strings.Join(req.Approvers, ", ")}, {"scope asked", req.Scope},
		{"created", req.Created.Local().Format(time.RFC3339)}, {"expires", req.Expires.Local().Format(time.RFC3339)},
	}
	if req.DecidedBy != "" || !req.DecidedAt.IsZero() {
		rows = append(rows, [2]string{"decided", fmt.Sprintf("%s at %s", req.State, req.DecidedAt.Local().Format(time.RFC3339))})
		if req.DecidedBy != "" {
			rows = append(rows, [2]string{"by", fmt.Sprintf("%s (%s)", req.DecidedBy, req.DecidedVia)})
		}
		rows = append(rows, [2]string{"reason", req.DecisionReason})
	}
	if req.Grant != "" {
		rows = append(rows, [2]string{"grant", grantText(req)})
	}
	for _, row := range rows {
		if row[1] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1])
		}
	}
	return w.Flush()
}

// grantText says what an approval covers.
func grantText(req approval.Request) string {
	var s string
	switch req.Grant {
	case approval.ScopeSession:
		s = fmt.Sprintf("this statement and the rest of session %s", req.Session)
	case approval.ScopeWindow:
		s = fmt.Sprintf("%s on %s until %s", req.Identity, req.Target, req.GrantUntil.Local().Format(time.RFC3339))
	default:
		s = "this statement"
	}
	if req.GrantOf != "" {
		s += " (by the grant of " + req.GrantOf + ")"
	}
	return s
}

// eventLine is one line of `approvals watch`.
func eventLine(req approval.Request) string {
	ts := time.Now().Local().Format("15:04:05")
	switch req.State {
	case approval.StatePending:
		approvers := "anyone"
		if len(req.Approvers) > 0 {
			approvers = strings.Join(req.Approvers, ",")
		}
		return fmt.Sprintf("%s  %s  pending    %s (uid %d) on %s, session %s: %s  [approvers %s; expires %s]",
			ts, req.ID, req.Identity, req.UID, req.Target, req.Session, oneLine(req.SQL, 120), approvers,
			req.Expires.Local().Format("15:04:05"))
	case approval.StateApproved:
		return fmt.Sprintf("%s  %s  approved   by %s: %s%s", ts, req.ID, req.DecidedBy, grantText(req), because(req.DecisionReason))
	case approval.StateDenied:
		return fmt.Sprintf("%s  %s  denied     by %s%s", ts, req.ID, req.DecidedBy, because(req.DecisionReason))
	}
	return fmt.Sprintf("%s  %s  %-9s  %s", ts, req.ID, req.State, req.DecisionReason)
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return " -- " + reason
}

// oneLine squeezes whitespace and cuts s to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
