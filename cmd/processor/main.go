// Command processor consumes payout requests from JetStream, records them in its SQLite
// ledger, pays them through WeChat Pay batch transfers and follows every batch to its end.
//
//	processor run   --config FILE          run the pipeline
//	processor audit --ledger FILE [...]    check ledger invariants
//	processor api   METHOD PATH [...]      an ad-hoc signed APIv3 request
//	processor summary --ledger FILE        batches and payouts by state
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env carries what a subcommand may read from its process, so tests can call run directly.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

const usage = `usage: processor <command> [flags]

commands:
  run     run the payout pipeline (processor run --config configs/processor.yaml)
  audit   check ledger invariants (processor audit --ledger FILE [--ledger FILE...] [--json])
  api     send an ad-hoc signed APIv3 request (processor api [--dry-run] METHOD PATH)
  summary print batches and payouts by state (processor summary --ledger FILE [--wait 3m])
`

// run dispatches a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func(context.Context, []string, env) int{
		"run":     cmdRun,
		"audit":   cmdAudit,
		"api":     cmdAPI,
		"summary": cmdSummary,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "processor: unknown command %q\n%s", args[0], usage)
		return 2
	}
	return cmd(ctx, args[1:], e)
}
