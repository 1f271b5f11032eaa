package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tollgate-dev/tollgate/policy"
)

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Work with Rego policies"}
	cmd.AddCommand(&cobra.Command{
		Use:   "test DIR",
		Short: "Run the Rego unit tests (test_ rules) in DIR, as opa test does",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			passed, failed, err := policy.Test(context.Background(), args[0], cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if passed+failed == 0 {
				return fmt.Errorf("no test_ rules in %s", args[0])
			}
			if failed > 0 {
				return exitCode(1)
			}
			return nil
		},
	})
	return cmd
}
