// Command tollgate is the host agent: it puts governed workloads'
// connections to protected targets through its L7 proxy.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	_ "github.com/tollgate-dev/tollgate/l7/postgres"
	_ "github.com/tollgate-dev/tollgate/l7/tcp"
	"github.com/tollgate-dev/tollgate/pkg/agent"
)

func main() {
	root := &cobra.Command{
		Use:           "tollgate",
		Short:         "Govern what machine identities do to the systems they reach",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), doctorCmd(), versionCmd(), policyCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		os.Exit(1)
	}
}

// exitCode is an error that only carries a process exit status; its
// message has already been printed.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func runCmd() *cobra.Command {
	var cfgPath, logLevel, cpuProfile string
	var jsonLogs bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, jsonLogs)
			if err != nil {
				return err
			}
			defer log.Sync()
			a, err := agent.New(cfgPath, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						if err := a.Reload(); err != nil {
							log.Error("reload failed; previous config stays in force", zap.Error(err))
						}
					}
				}
			}()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			log.Info("tollgate starting", zap.String("version", agent.Version), zap.String("config", cfgPath))
			err = a.Run(ctx)
			log.Info("tollgate stopped", zap.Error(err))
			return err
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/tollgate/tollgate.yaml", "config file")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug | info | warn | error")
	cmd.Flags().BoolVar(&jsonLogs, "log-json", false, "log JSON lines instead of console text")
	cmd.Flags().StringVar(&cpuProfile, "cpu-profile", os.Getenv("TOLLGATE_CPU_PROFILE"), "write a CPU profile of the whole run to this file (env TOLLGATE_CPU_PROFILE)")
	return cmd
}

func newLogger(level string, jsonLogs bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	if !jsonLogs {
		cfg.Encoding = "console"
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.DisableStacktrace = true
	return cfg.Build()
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "tollgate", agent.Version) },
	}
}
