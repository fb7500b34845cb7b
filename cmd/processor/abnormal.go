package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/paystream/paystream/internal/abnormal"
	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

const abnormalUsage = `usage: processor abnormal-fund <list|transfer|resume> [flags]

In-transit abnormal funds (在途异常资金, docs/abnormal-funds.md): WeChat Pay holds money that did
not reach its payee under a receipt; a transfer instruction pays it back to the original payee.

  list      the ledger's instructions; with --receipt ID (repeatable), WeChat's answer for each
            receipt too (WeChat Pay has no API that lists receipts: their ids come from WeChat)
            processor abnormal-fund list [--config FILE] [--ledger FILE] [--receipt ID]...
  transfer  record an instruction for a receipt (its number and body committed before the first
            send), send it, follow it to its final state and print it; run again after a crash,
            it continues the recorded instruction under its number
            processor abnormal-fund transfer --receipt ID --appid A [--appid B]... [--notify-url URL]
                [--config FILE] [--ledger FILE] [--wait 10m] [--poll 5s]
  resume    continue every instruction the ledger holds open, by its number
            processor abnormal-fund resume [--config FILE] [--ledger FILE] [--wait 10m] [--poll 5s]

The ledger may be in use by a running processor. exit status: 0 done (transfer, resume: every
instruction COMPLETED), 1 an instruction rejected, blocked, or not final when --wait ran out
(resume continues it), 2 bad usage, an unreadable config or ledger
`

// cmdAbnormal implements processor abnormal-fund.
func cmdAbnormal(ctx context.Context, args []string, e cli.Env) int {
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, abnormalUsage)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.Stdout, abnormalUsage)
		return 0
	}
	sub := args[0]
	fs := flag.NewFlagSet("abnormal-fund "+sub, flag.ContinueOnError)
	cli.SetUsage(fs, abnormalUsage+"\nflags:\n")
	path := fs.String("config", "configs/processor.yaml", "processor configuration file (WeChat Pay client, ledger)")
	ledgerPath := fs.String("ledger", "", "ledger file (default the config's ledger)")
	var sets setFlag
	fs.Var(&sets, "set", "override a key of the config file, as `KEY=VALUE` (repeatable)")
	var receipts, appids ledgerFlags
	var receipt, notifyURL *string
	var wait, poll *time.Duration
	switch sub {
	case "list":
		fs.Var(&receipts, "receipt", "also query WeChat for this receipt id (repeatable)")
	case "transfer":
		receipt = fs.String("receipt", "", "WeChat's receipt_id of the abnormal fund (required)")
		fs.Var(&appids, "appid", "an app id in which the payee may collect (1 to 5, repeatable)")
		notifyURL = fs.String("notify-url", "", "HTTPS callback for the result (optional)")
	case "resume":
	default:
		fmt.Fprintf(e.Stderr, "processor abnormal-fund: unknown subcommand %q\n%s", sub, abnormalUsage)
		return 2
	}
	if sub != "list" {
		wait = fs.Duration("wait", 10*time.Minute, "follow for at most this long; an instruction still open is left to resume")
		poll = fs.Duration("poll", abnormal.DefaultPoll, "query interval while following")
	}
	if ok, code := cli.Parse(fs, args[1:], e); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.Stderr, "processor abnormal-fund %s: "+format+"\n", append([]any{sub}, a...)...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments %q (see -h)", fs.Args())
	}
	if sub == "transfer" && (*receipt == "" || len(appids) == 0) {
		return fail("--receipt and at least one --appid are required (see -h)")
	}
	if sub != "list" && (*poll <= 0 || *wait <= 0) {
		return fail("--poll and --wait must be positive")
	}
	cfg, err := app.LoadConfig(*path, e.Getenv, sets...)
	if err != nil {
		return fail("%v", err)
	}
	if *ledgerPath == "" {
		*ledgerPath = cfg.Ledger
	}
	log := cfg.Logger(e.Stderr)
	db, err := ledger.OpenInstructions(ctx, *ledgerPath, ledger.WithLogger(log), ledger.WithMerchant(cfg.WeChatPay.MchID))
	if err != nil {
		return fail("%v", err)
	}
	defer db.Close()
	c, err := cfg.WeChatPay.Client(log)
	if err != nil {
		return fail("%v", err)
	}
	if sub == "list" {
		return abnormalList(ctx, db, c, receipts, e)
	}
	opts := []abnormal.Option{abnormal.WithLogger(log), abnormal.WithPoll(*poll)}
	wctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	var ins []ledger.Instruction
	if sub == "transfer" {
		var in ledger.Instruction
		in, err = abnormal.Instruct(wctx, db, c, *receipt, appids, *notifyURL, opts...)
		if errors.Is(err, ledger.ErrInstructionLive) || errors.Is(err, wechatpay.ErrBadInput) {
			return fail("%v", err)
		}
		if in.ID != 0 {
			ins = append(ins, in)
		}
	} else {
		ins, err = abnormal.Resume(wctx, db, c, opts...)
	}
	writeInstructions(e.Stdout, ins)
	if err != nil {
		fmt.Fprintf(e.Stderr, "processor abnormal-fund %s: %v\n", sub, err)
	}
	for _, in := range ins {
		if in.State != ledger.InstrCompleted {
			err = errors.Join(err, fmt.Errorf("instruction %s is %s", in.OutInstructionNo, in.State))
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

// abnormalList prints the ledger's instructions and WeChat's answer for each receipt asked.
func abnormalList(ctx context.Context, db *ledger.Instructions, c *wechatpay.Client, receipts []string, e cli.Env) int {
	all, err := db.All(ctx)
	if err != nil {
		fmt.Fprintf(e.Stderr, "processor abnormal-fund list: %v\n", err)
		return 2
	}
	writeInstructions(e.Stdout, all)
	code := 0
	if len(receipts) > 0 {
		tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "\nRECEIPT\tWECHAT STATE\tAMOUNT (fen)\tINSTRUCTION\tUPDATED\n")
		for _, r := range receipts {
			res, err := abnormal.Query(ctx, c, r)
			if err != nil {
				fmt.Fprintf(tw, "%s\t%v\t\t\t\n", r, err)
				code = 1
				continue
			}
			no := "-"
			if res.Instruction != nil {
				no = res.Instruction.OutInstructionNo
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", res.ReceiptID, res.ReceiptState, res.TransferAmount.Total, no, res.LastUpdateTime)
		}
		tw.Flush()
	}
	return code
}

// writeInstructions prints instructions as a table, one line each, then a count line.
func writeInstructions(w io.Writer, ins []ledger.Instruction) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "RECEIPT\tOUT_INSTRUCTION_NO\tSTATE\tAMOUNT (fen)\tAPPIDS\tATTEMPTS\tLAST ERROR\n")
	for _, in := range ins {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\n", in.ReceiptID, in.OutInstructionNo, in.State, in.Amount,
			strings.Join(in.AppIDs, ","), in.Attempts, in.LastError)
	}
	fmt.Fprintf(tw, "abnormal-fund: %d instructions\n", len(ins))
	tw.Flush()
}
