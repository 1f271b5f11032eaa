package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-dev/tollgate/audit"
)

// exitTampered is the exit code of `audit verify` when the journal does not
// verify.
const exitTampered = 5

const (
	defaultAuditDir = "/var/lib/tollgate/audit"
	defaultPubkey   = "/var/lib/tollgate/keys/audit.pub"
)

func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify and export the tamper-evident audit journal"}

	var dir, pubkey string
	verify := &cobra.Command{
		Use:   "verify [--dir DIR] [--pubkey FILE]",
		Short: "Check every record, the hash chain and the signed checkpoints (offline; exit 0 only when all holds)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := audit.ReadPublicKey(pubkey)
			if err != nil {
				return usageError{err}
			}
			rep, err := audit.Verify(dir, pub)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.output == "json" {
				printJSON(out, rep)
			} else {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "journal:\t%s (%d segments)\n", dir, rep.Segments)
				fmt.Fprintf(w, "key:\t%s\n", rep.KeyID)
				fmt.Fprintf(w, "records:\t%d (seq %d..%d)\n", rep.Records, rep.FirstSeq, rep.LastSeq)
				fmt.Fprintf(w, "last hash:\t%s\n", rep.LastHash)
				if rep.PrunedThrough > 0 {
					fmt.Fprintf(w, "pruned:\tseq 1..%d removed by retention (signed)\n", rep.PrunedThrough)
				}
				fmt.Fprintf(w, "checkpoints:\t%d, the last signs seq %d\n", rep.Checkpoints, rep.Checkpointed)
				if rep.Unanchored > 0 {
					fmt.Fprintf(w, "unanchored:\t%d records after the last checkpoint (chained, not yet signed)\n", rep.Unanchored)
				}
				if rep.Problem != nil {
					fmt.Fprintf(w, "FIRST BAD RECORD:\t%s\n", rep.Problem.Error())
				}
				w.Flush()
			}
			if !rep.OK() {
				fmt.Fprintln(cmd.ErrOrStderr(), "tollctl: the audit journal does NOT verify")
				return exitErr(exitTampered)
			}
			fmt.Fprintln(out, "OK: the journal verifies")
			return nil
		},
	}
	verify.Flags().StringVar(&dir, "dir", defaultAuditDir, "journal directory (a copy works: verification is offline)")
	verify.Flags().StringVar(&pubkey, "pubkey", defaultPubkey, "PEM public key (tollctl audit pubkey prints it)")

	pubkeyCmd := &cobra.Command{
		Use:   "pubkey",
		Short: "Print the running agent's journal public key (PEM): all an auditor needs to verify",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cancel := ctx()
			defer cancel()
			pem, err := g.client().AuditPublicKey(c)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(pem)
			return err
		},
	}

	var since, until, identity, target, format string
	var exportDir string
	export := &cobra.Command{
		Use:   "export [--dir DIR] [--since T] [--until T] [--identity NAME] [--target NAME] [--format jsonl|csv]",
		Short: "Print journal records, filtered, for an auditor or a SIEM (offline)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var f audit.Filter
			var err error
			if f.Since, err = parseTime(since); err != nil {
				return usageError{fmt.Errorf("--since: %w", err)}
			}
			if f.Until, err = parseTime(until); err != nil {
				return usageError{fmt.Errorf("--until: %w", err)}
			}
			if format != "jsonl" && format != "csv" {
				return usageError{fmt.Errorf("--format %q: want jsonl or csv", format)}
			}
			r, err := audit.NewReader(exportDir, f)
			if err != nil {
				return err
			}
			defer r.Close()
			return exportRecords(cmd.OutOrStdout(), r, format, identity, target)
		},
	}
	export.Flags().StringVar(&exportDir, "dir", defaultAuditDir, "journal directory")
	export.Flags().StringVar(&since, "since", "", "first time (RFC 3339, or a duration ago like 24h)")
	export.Flags().StringVar(&until, "until", "", "end time, exclusive (RFC 3339, or a duration ago)")
	export.Flags().StringVar(&identity, "identity", "", "only records of this workload identity")
	export.Flags().StringVar(&target, "target", "", "only records of this target")
	export.Flags().StringVar(&format, "format", "jsonl", "jsonl | csv")

	cmd.AddCommand(verify, pubkeyCmd, export)
	return cmd
}

type exitErr int

func (e exitErr) Error() string { return "exit " + strconv.Itoa(int(e)) }

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

// recordNames pulls the identity and target names out of a record's data,
// whichever shape the record type gives them.
func recordNames(data json.RawMessage) (session, identity, target string) {
	var d struct {
		Session  string          `json:"session"`
		Identity json.RawMessage `json:"identity"`
		Target   json.RawMessage `json:"target"`
	}
	json.Unmarshal(data, &d)
	return d.Session, nameOf(d.Identity), nameOf(d.Target)
}

func nameOf(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Name string `json:"name"`
	}
	json.Unmarshal(raw, &o)
	return o.Name
}

func exportRecords(w io.Writer, r *audit.Reader, format, identity, target string) error {
	// statement_result records carry only the session: remember whose
	// sessions are exported.
	sessions := map[string]bool{}
	var cw *csv.Writer
	if format == "csv" {
		cw = csv.NewWriter(w)
		cw.Write([]string{"seq", "time", "type", "session", "identity", "target", "data"})
	}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		sess, id, tg := recordNames(rec.Data)
		if identity != "" || target != "" {
			named := id != "" || tg != ""
			match := (identity == "" || id == identity) && (target == "" || tg == target)
			if named && !match || !named && !sessions[sess] {
				continue
			}
			if sess != "" {
				sessions[sess] = true
			}
		}
		if cw != nil {
			cw.Write([]string{strconv.FormatUint(rec.Seq, 10), rec.Time.UTC().Format(time.RFC3339Nano), rec.Type, sess, id, tg, string(rec.Data)})
			continue
		}
		line, err := rec.MarshalJSON()
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
			return err
		}
	}
	if cw != nil {
		cw.Flush()
		return cw.Error()
	}
	return nil
}
