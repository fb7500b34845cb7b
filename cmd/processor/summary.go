package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"sync"
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
	start := time.Now()
	deadline := start.Add(*wait)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var (
		mu          sync.Mutex // guards first and last: the progress line reads them
		first, last *progress
	)
	stop := func() {}
	if *wait > 0 {
		stop = cli.StartProgress(e.Stderr, 250*time.Millisecond, func() string {
			mu.Lock()
			defer mu.Unlock()
			return last.line(first, *expect, time.Since(start))
		})
	}
	defer stop()
	for {
		s, err := db.Summary(ctx)
		if err != nil {
			stop()
			fmt.Fprintln(e.Stderr, "processor summary:", err)
			return 2
		}
		p := progressOf(s)
		mu.Lock()
		if first == nil {
			first = &p
		}
		last = &p
		mu.Unlock()
		open := p.payouts - p.final + p.openBatches
		if *wait == 0 || (open == 0 && p.payouts >= *expect) {
			stop()
			writeSummary(e.Stdout, s)
			return 0
		}
		if time.Now().After(deadline) {
			stop()
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

// progress is how far a ledger is: payouts in it, those final, and batches not final.
type progress struct{ payouts, final, openBatches int }

func progressOf(s ledger.Summary) progress {
	var p progress
	for st, t := range s.Payouts {
		p.payouts += t.Count
		if ledger.PayoutFinal(st) {
			p.final += t.Count
		}
	}
	for st, n := range s.Batches {
		if !ledger.BatchFinal(st) {
			p.openBatches += n
		}
	}
	return p
}

// line is summary --wait's progress line on a terminal, p's progress since first (either
// nil before the first read): "final 12000/100000 payouts (4100/s), 7 batches open, 31s".
func (p *progress) line(first *progress, expect int, elapsed time.Duration) string {
	if p == nil || first == nil {
		return "reading the ledger"
	}
	return fmt.Sprintf("final %d/%d payouts (%d/s), %d batches open, %s", p.final, max(p.payouts, expect),
		cli.PerSecond(int64(p.final-first.final), elapsed), p.openBatches, elapsed.Round(time.Second))
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
