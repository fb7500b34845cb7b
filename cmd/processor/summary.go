package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/paystream/paystream/internal/cli"

	"github.com/paystream/paystream/pkg/ledger"
)

const summaryUsage = `usage: processor summary --ledger FILE [--wait DURATION] [--expect N]

Prints batches and payouts by state from a ledger (opened read-only). With --wait it polls
until every payout and batch is final and exits 1 if some are still open at the deadline.

flags:
`

// cmdSummary prints batches and payouts by state from a ledger, optionally waiting until
// every payout in it is final: processor summary --ledger FILE [--wait 3m].
func cmdSummary(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("summary", flag.ContinueOnError)
	cli.SetUsage(fs, summaryUsage)
	path := fs.String("ledger", "", "ledger file (read-only)")
	wait := fs.Duration("wait", 0, "wait up to this long for every payout and batch to be final (0: don't wait)")
	expect := fs.Int("expect", 0, "with --wait: also wait until at least this many payouts are in the ledger")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if *path == "" || fs.NArg() > 0 || *wait < 0 {
		fs.Usage()
		return 2
	}
	db, err := ledger.OpenReadOnly(ctx, *path)
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor summary:", err)
		return 2
	}
	defer db.Close()
	deadline := time.Now().Add(*wait)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := db.Summary(ctx)
		if err != nil {
			fmt.Fprintln(e.Stderr, "processor summary:", err)
			return 2
		}
		open, total := openCount(s)
		if *wait == 0 || (open == 0 && total >= *expect) {
			writeSummary(e.Stdout, s)
			return 0
		}
		if time.Now().After(deadline) {
			writeSummary(e.Stdout, s)
			fmt.Fprintf(e.Stderr, "processor summary: %d payouts or batches still open after %s\n", open, *wait)
			return 1
		}
		select {
		case <-ctx.Done():
			return 1
		case <-tick.C:
		}
	}
}

// openCount returns how many payouts and batches are not final, and how many payouts exist.
func openCount(s ledger.Summary) (open, payouts int) {
	for st, t := range s.Payouts {
		payouts += t.Count
		if !ledger.PayoutFinal(st) {
			open += t.Count
		}
	}
	for st, n := range s.Batches {
		if !ledger.BatchFinal(st) {
			open += n
		}
	}
	return open, payouts
}

func writeSummary(w io.Writer, s ledger.Summary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batches\tstate\t")
	for _, st := range sortedKeys(s.Batches) {
		fmt.Fprintf(tw, "%d\t%s\t\n", s.Batches[st], st)
	}
	fmt.Fprintln(tw, "\t\t")
	fmt.Fprintln(tw, "payouts\tamount (yuan)\tstate\t")
	var n int
	var amount int64
	for _, st := range sortedKeys(s.Payouts) {
		t := s.Payouts[st]
		n, amount = n+t.Count, amount+t.Amount
		fmt.Fprintf(tw, "%d\t%s\t%s\t\n", t.Count, yuan(t.Amount), st)
	}
	fmt.Fprintf(tw, "%d\t%s\t%s\t\n", n, yuan(amount), "total")
	if s.Conflicts > 0 {
		fmt.Fprintf(tw, "%d\t\tconflicts\t\n", s.Conflicts)
	}
	if len(s.Bills) > 0 {
		fmt.Fprintln(tw, "\t\t\t")
		fmt.Fprintln(tw, "bills\tamount (yuan)\ttransfer bills by state\t")
		for _, st := range sortedKeys(s.Bills) {
			t := s.Bills[st]
			fmt.Fprintf(tw, "%d\t%s\t%s\t\n", t.Count, yuan(t.Amount), st)
		}
	}
	if len(s.FailReasons) > 0 {
		fmt.Fprintln(tw, "\t\t\t")
		fmt.Fprintln(tw, "failed\tamount (yuan)\tby reason\t")
		for _, reason := range sortedKeys(s.FailReasons) {
			t := s.FailReasons[reason]
			if reason == "" {
				reason = "(none)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t\n", t.Count, yuan(t.Amount), reason)
		}
	}
	tw.Flush()
}

func yuan(fen int64) string { return fmt.Sprintf("%d.%02d", fen/100, fen%100) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
