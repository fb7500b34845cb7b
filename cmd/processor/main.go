// Command processor consumes payout requests from JetStream, records them in its SQLite
// ledger, pays them through WeChat Pay batch transfers and follows every batch to its end.
//
//	processor run   --config FILE [--set KEY=VALUE]...   run the pipeline
//	processor audit --ledger FILE [...]    check ledger invariants
//	processor api   METHOD PATH [...]      an ad-hoc signed APIv3 request
//	processor summary --ledger FILE        batches and payouts by state
//	processor status [--ledger FILE]       the status page's picture in a terminal
//	processor reconcile --date YYYY-MM-DD  a day of the ledgers against WeChat Pay's fund-flow bill
//	processor receipt OUT_DETAIL_NO        fetch a payout's electronic receipt (PDF)
//	processor adopt --instance ID          take over a lost instance's payouts
//	processor abnormal-fund list|transfer|resume  in-transit abnormal funds paid back to their payees
package main

import (
	"context"
	"io"

	"github.com/paystream/paystream/internal/cli"
)

func main() { cli.Main(run) }

const usage = `usage: processor <command> [flags]

commands:
  run     run the payout pipeline (processor run --config configs/processor.yaml [--set KEY=VALUE]...)
  audit   check ledger invariants (processor audit --ledger FILE [--ledger FILE...] [--json])
  api     send an ad-hoc signed APIv3 request (processor api [--dry-run] METHOD PATH)
  summary print batches and payouts by state (processor summary --ledger FILE [--wait 3m])
  status  the status page in a terminal (processor status [--ledger FILE] [--url http://127.0.0.1:8091] [--config FILE] [--json])
  adopt   take over a lost instance's payouts (processor adopt --instance ID [--plan] [--config FILE])
  reconcile  a day of the ledgers against WeChat Pay's fund-flow bill (processor reconcile --date YYYY-MM-DD [--config FILE] [--ledger FILE]... [--json FILE])
  receipt a payout's electronic receipt, kept as a PDF (processor receipt OUT_DETAIL_NO [--config FILE] [--ledger FILE] [--out FILE])
  abnormal-fund  in-transit abnormal funds (processor abnormal-fund list|transfer|resume [flags]; -h for each)
`

// commands are the subcommands of processor.
var commands = map[string]cli.Command{
	"run":           cmdRun,
	"audit":         cmdAudit,
	"api":           cmdAPI,
	"summary":       cmdSummary,
	"status":        cmdStatus,
	"adopt":         cmdAdopt,
	"reconcile":     cmdReconcile,
	"receipt":       cmdReceipt,
	"abnormal-fund": cmdAbnormal,
}

// run dispatches a subcommand and returns the process exit code: 0 success, 1 failure,
// 2 usage error.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "processor", usage, commands, args, cli.Env{Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}
