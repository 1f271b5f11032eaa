// Command tollctl is the SRE's view of a running tollgate agent: status,
// live sessions and, as the agent grows, approvals and the audit journal.
//
// Exit codes: 0 success, 1 error, 2 usage, 3 agent unreachable, 4 not found,
// 5 the audit journal does not verify.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-dev/tollgate/audit"
	"github.com/tollgate-dev/tollgate/l7"
	"github.com/tollgate-dev/tollgate/pkg/control"
	"github.com/tollgate-dev/tollgate/pkg/identity"
)

const (
	exitError    = 1
	exitUsage    = 2
	exitDown     = 3
	exitNotFound = 4
)

type globals struct {
	socket string
	output string
}

func main() {
	g := &globals{}
	root := &cobra.Command{
		Use:           "tollctl",
		Short:         "Inspect and steer a running tollgate agent",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", g.output)}
			}
			return nil
		},
	}
	def := os.Getenv("TOLLGATE_SOCKET")
	if def == "" {
		def = control.DefaultSocket
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", def, "agent control socket (env TOLLGATE_SOCKET)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table | json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(statusCmd(g), sessionsCmd(g), identitiesCmd(g), policyCmd(g), auditCmd(g))
	registerApprovals(root, g)
	err := root.Execute()
	if err == nil {
		return
	}
	var ee exitErr
	if errors.As(err, &ee) { // the command already said why
		os.Exit(int(ee))
	}
	fmt.Fprintln(os.Stderr, "tollctl:", err)
	var ue usageError
	switch {
	case errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)"):
		os.Exit(exitUsage)
	case errors.Is(err, control.ErrAgentDown):
		os.Exit(exitDown)
	case errors.Is(err, control.ErrBadRequest):
		os.Exit(exitUsage)
	case errors.Is(err, control.ErrNotFound):
		os.Exit(exitNotFound)
	}
	os.Exit(exitError)
}

type usageError struct{ error }

func (g *globals) client() *control.Client { return control.NewClient(g.socket) }

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the agent is up, what it governs and how many sessions are open",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cancel := ctx()
			defer cancel()
			st, err := g.client().Status(c)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == "json" {
				return printJSON(out, st)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "agent:\tup (pid %d, version %s, since %s)\n", st.PID, st.Version, st.Started.Format(time.RFC3339))
			fmt.Fprintf(w, "governed cgroup:\t%s\n", st.Cgroup)
			fmt.Fprintf(w, "on agent down:\t%s\n", st.OnAgentDown)
			fmt.Fprintf(w, "pins:\t%s (adopted from a previous run: %v)\n", st.PinDir, st.Adopted)
			fmt.Fprintf(w, "proxy:\t%s\n", strings.Join(st.Listen, ", "))
			fmt.Fprintf(w, "sessions open:\t%d\n", st.SessionsOpen)
			if st.Policy.Version == "" {
				fmt.Fprintf(w, "policy:\tNONE in %s: every connection and statement is denied\n", st.Policy.Dir)
			} else {
				fmt.Fprintf(w, "policy:\t%.12s (%d files in %s, loaded %s)\n", st.Policy.Version, len(st.Policy.Files), st.Policy.Dir, st.Policy.Loaded.Format(time.RFC3339))
			}
			if st.Audit.Error != "" {
				fmt.Fprintf(w, "audit:\tFAILING since %s (%d refused): %s\n", st.Audit.Since.Format(time.RFC3339), st.Audit.Refused, st.Audit.Error)
			} else {
				fmt.Fprintf(w, "audit:\t%s, %s, seq %d (key %s)\n", st.Audit.Dir, st.Audit.Durability, st.Audit.LastSeq, st.Audit.KeyID)
			}
			if st.Policy.LastError != "" {
				fmt.Fprintf(w, "policy error:\t%s (%s)\n", st.Policy.LastError, st.Policy.LastErrorAt.Format(time.RFC3339))
			}
			fmt.Fprintf(w, "kernel:\tredirected %d, established %d, exempt %d, udp denied %d\n",
				st.Kernel.Redirected, st.Kernel.Established, st.Kernel.Exempt, st.Kernel.DeniedUDP)
			fmt.Fprintf(w, "shortcut:\t%d sends socket to socket, %d by TCP\n", st.Kernel.ShortcutSends, st.Kernel.ShortcutTCPSends)
			w.Flush()
			fmt.Fprintln(out)
			w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TARGET\tPROTOCOL\tADDRESS\tUPSTREAM")
			for _, t := range st.Targets {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Name, t.Protocol, t.Address, t.Upstream)
			}
			return w.Flush()
		},
	}
}

func sessionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "Live and recent sessions"}
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List live and recent sessions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cancel := ctx()
			defer cancel()
			ss, err := g.client().Sessions(c)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if ss == nil {
					ss = []l7.SessionInfo{}
				}
				return printJSON(cmd.OutOrStdout(), ss)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tIDENTITY\tTARGET\tDIALLED\tPID\tSTARTED\tSTATE\tSTMTS\tDENIED\tBYTES IN/OUT")
			for _, s := range ss {
				id := s.Identity
				if !s.Known {
					id += " (unknown)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d/%d\n", s.ID, id, s.Target, s.Dst, s.PID,
					s.Started.Format(time.TimeOnly), s.State, s.Statements, s.Denied, s.BytesIn, s.BytesOut)
			}
			return w.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cancel := ctx()
			defer cancel()
			s, err := g.client().Session(c, args[0])
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), s)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			wl := s.Workload
			rows := [][2]string{
				{"id", s.ID}, {"state", s.State}, {"target", s.Target + " (" + s.Protocol + ")"},
				{"dialled", s.Dst.String()}, {"identity", fmt.Sprintf("%s (known: %v)", s.Identity, s.Known)},
				{"owner", wl.Owner}, {"purpose", wl.Purpose}, {"cgroup", wl.Cgroup}, {"systemd unit", wl.SystemdUnit},
				{"pid", fmt.Sprint(s.PID)}, {"user", fmt.Sprintf("%s (uid %d)", wl.User, s.UID)}, {"exe", wl.Exe},
				{"netns cookie", fmt.Sprint(s.NetnsCookie)}, {"started", s.Started.Format(time.RFC3339Nano)},
				{"bytes in/out", fmt.Sprintf("%d/%d", s.BytesIn, s.BytesOut)},
				{"statements", fmt.Sprintf("%d (%d denied)", s.Statements, s.Denied)},
			}
			for _, k := range []string{"database", "user", "upstream_user", "application_name", "tls"} {
				if v, ok := s.Attrs[k]; ok {
					rows = append(rows, [2]string{strings.ReplaceAll(k, "_", " "), v})
				}
			}
			if !s.Ended.IsZero() {
				rows = append(rows, [2]string{"ended", s.Ended.Format(time.RFC3339Nano)})
			}
			for _, r := range rows {
				if r[1] != "" {
					fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
				}
			}
			return w.Flush()
		},
	}
	var reason string
	kill := &cobra.Command{
		Use:   "kill ID [--reason TEXT]",
		Short: "End a live session: its client gets an error, and the kill is audited with who asked",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cancel := ctx()
			defer cancel()
			if err := g.client().KillSession(c, args[0], reason); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "session %s killed\n", args[0])
			return nil
		},
	}
	kill.Flags().StringVar(&reason, "reason", "", "why (journaled)")

	watch := &cobra.Command{
		Use:   "watch ID",
		Short: "Stream a session's statements as they happen, until it ends (like kubectl logs -f)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return streamSession(cmd, g, args[0], true, 0)
		},
	}
	var speed float64
	replay := &cobra.Command{
		Use:   "replay ID [--speed N]",
		Short: "Show a session's statements again, with their original timing (--speed 0: no waiting)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return streamSession(cmd, g, args[0], false, speed)
		},
	}
	replay.Flags().Float64Var(&speed, "speed", 1, "playback speed; 0 prints without waiting")
	cmd.AddCommand(ls, show, kill, watch, replay)
	return cmd
}

// printResult prints the result of statement seq.
func printResult(out io.Writer, ts string, seq any, d map[string]any) {
	res := fmt.Sprintf("%v rows", integer(d["rows"]))
	if st, ok := d["sqlstate"].(string); ok {
		res = "SQLSTATE " + st
	}
	us, _ := d["duration_us"].(float64)
	fmt.Fprintf(out, "%s     -> #%v %s in %v\n", ts, integer(seq), res, time.Duration(us)*time.Microsecond)
}

// integer returns a JSON number as an integer: %v writes a float64 over a
// million as 1.234567e+06.
func integer(v any) any {
	if f, ok := v.(float64); ok && f == float64(int64(f)) {
		return int64(f)
	}
	return v
}

// streamSession prints a session's journal records: one line per decision
// and per result (or the records as JSON lines with -o json).
func streamSession(cmd *cobra.Command, g *globals, id string, follow bool, speed float64) error {
	c := context.Background()
	out := cmd.OutOrStdout()
	var last time.Time
	seen := 0
	err := g.client().SessionRecords(c, id, follow, func(r audit.Record) error {
		seen++
		if !follow && speed > 0 && !last.IsZero() {
			time.Sleep(time.Duration(float64(r.Time.Sub(last)) / speed))
		}
		last = r.Time
		if g.output == "json" {
			line, err := r.MarshalJSON()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "%s\n", line)
			return err
		}
		var d map[string]any
		json.Unmarshal(r.Data, &d)
		ts := r.Time.Local().Format("15:04:05.000")
		switch r.Type {
		case "session_start":
			fmt.Fprintf(out, "%s  session %s started: %v -> %v\n", ts, id, nameField(d["identity"]), nameField(d["target"]))
		case "statement":
			verdict := "ALLOW"
			if d["allow"] != true {
				verdict = "DENY "
			}
			text := fmt.Sprint(d["sql"])
			if d["kind"] == "connect" {
				text = "(connect)"
			} else if d["sql"] == nil {
				text = "(text not recorded)"
			}
			fmt.Fprintf(out, "%s  #%d %s %s", ts, r.Seq, verdict, text)
			if reason, ok := d["reason"].(string); ok && d["allow"] != true {
				fmt.Fprintf(out, "  -- %s", reason)
			}
			fmt.Fprintln(out)
			// A statement that ended before the journal flushed it holds
			// its result.
			if res, ok := d["result"].(map[string]any); ok {
				printResult(out, ts, r.Seq, res)
			}
		case "statement_result":
			printResult(out, ts, d["statement_seq"], d)
		case "control_action":
			fmt.Fprintf(out, "%s  %v by uid %v: %v\n", ts, d["action"], nameField(d["peer"]), d["reason"])
		case "masking":
			cols := append(strings.Fields(joinList(d["columns"])), strings.Fields(joinList(d["classifiers"]))...)
			if len(cols) == 0 {
				fmt.Fprintf(out, "%s     -> #%v masking applied: no masked column in the result\n", ts, integer(d["statement_seq"]))
				break
			}
			fmt.Fprintf(out, "%s     -> #%v masked %v values (%s)\n", ts, integer(d["statement_seq"]), integer(d["values"]), strings.Join(cols, ", "))
		case "approval_requested":
			fmt.Fprintf(out, "%s  approval %v requested: %v  -- %v\n", ts, d["request"], d["sql"], d["reason"])
		case "approval_granted", "approval_denied", "approval_expired", "approval_abandoned":
			what := strings.TrimPrefix(r.Type, "approval_")
			line := fmt.Sprintf("%s  approval %v %s", ts, d["request"], what)
			if by, ok := d["by"].(string); ok && by != "" {
				line += " by " + by
			}
			if g, ok := d["grant"].(string); ok && g != "" && what == "granted" {
				line += " (" + g + ")"
			}
			if reason, ok := d["decision_reason"].(string); ok && reason != "" {
				line += ": " + reason
			}
			fmt.Fprintln(out, line)
		case "session_end":
			fmt.Fprintf(out, "%s  session ended: %v statements (%v denied), %v/%v bytes\n", ts, d["statements"], d["denied"], d["bytes_in"], d["bytes_out"])
		}
		return nil
	})
	if err == nil && seen == 0 {
		return fmt.Errorf("%w: no journal records for session %s", control.ErrNotFound, id)
	}
	return err
}

// joinList joins a JSON array of strings with spaces.
func joinList(v any) string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return strings.Join(out, " ")
}

func nameField(v any) any {
	if m, ok := v.(map[string]any); ok {
		if n, ok := m["name"]; ok {
			return n
		}
		if u, ok := m["uid"]; ok {
			return u
		}
	}
	return v
}

func identitiesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "identities", Short: "Configured and discovered workload identities"}
	cmd.AddCommand(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List identities with owner, purpose, cgroups, targets and what they did",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cancel := ctx()
			defer cancel()
			ids, err := g.client().Identities(c)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if ids == nil {
					ids = []identity.InventoryEntry{}
				}
				return printJSON(cmd.OutOrStdout(), ids)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKNOWN\tOWNER\tPURPOSE\tCGROUPS\tTARGETS\tLAST SEEN\tSESSIONS\tALLOWED\tDENIED")
			for _, e := range ids {
				seen := "never"
				if !e.LastSeen.IsZero() {
					seen = e.LastSeen.Format(time.RFC3339)
				}
				owner := e.Owner
				if len(e.Problems) > 0 {
					owner += " (" + strings.Join(e.Problems, ", ") + ")"
				}
				fmt.Fprintf(w, "%s\t%v\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", e.Name, e.Known, dash(owner), dash(e.Purpose),
					dash(strings.Join(e.Cgroups, ",")), dash(strings.Join(e.Targets, ",")), seen, e.Sessions, e.Allowed, e.Denied)
			}
			return w.Flush()
		},
	})
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func policyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Ask the running agent's policy"}
	var input string
	eval := &cobra.Command{
		Use:   "eval --input FILE",
		Short: "Print the decision the running agent would make on a policy input (JSON; - for stdin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var data []byte
			var err error
			if input == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(input)
			}
			if err != nil {
				return usageError{err}
			}
			c, cancel := ctx()
			defer cancel()
			d, err := g.client().EvalPolicy(c, data)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), d)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			verdict := "DENY"
			switch {
			case d.NeedsApproval():
				verdict = "HOLD for approval by " + strings.Join(d.Approval.Approvers, ", ")
			case d.Allow:
				verdict = "ALLOW"
			}
			fmt.Fprintf(w, "decision:\t%s\n", verdict)
			if d.Reason != "" {
				fmt.Fprintf(w, "reason:\t%s\n", d.Reason)
			}
			for _, m := range d.Mask {
				what := m.Classifier
				if m.Table != "" {
					what = m.Table + "." + m.Column
				}
				fmt.Fprintf(w, "mask:\t%s (%s)\n", what, m.Method)
			}
			if d.Record != "" {
				fmt.Fprintf(w, "record:\t%s\n", d.Record)
			}
			fmt.Fprintf(w, "policy version:\t%.12s\n", d.PolicyVersion)
			if d.Error != "" {
				fmt.Fprintf(w, "policy error:\t%s\n", d.Error)
			}
			return w.Flush()
		},
	}
	eval.Flags().StringVar(&input, "input", "", "policy input JSON file (DESIGN.md input), - for stdin")
	eval.MarkFlagRequired("input")
	cmd.AddCommand(eval)
	return cmd
}
