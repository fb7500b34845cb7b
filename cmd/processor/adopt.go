package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/pipeline"
)

const adoptUsage = `usage: processor adopt --instance ID [--plan] [--config FILE] [--set KEY=VALUE]...

Takes over the payouts of a lost processor instance (its ledger's disk is gone) into the
ledger of this config: every batch it journaled is resumed under its own number and body,
every payout it held but never sent is paid here, nothing that may have been paid is paid
again. The instance must be silent or stopped (it is retired first, so it can never work
again); this config's processor must not be running. Then start it: processor run.
--plan lists the instance's claims and what adoption would do with each, changing nothing.
A run that fails on NATS in a way that passes (no responders while a node restarts, a lost
reply, a listing read short of its stream's leader) is run again after --pause, up to --runs
runs; any other failure ends it at once. Run it again later: it resumes where it stopped.

flags:
`

// cmdAdopt adopts a lost instance: processor adopt --instance ID [--plan].
func cmdAdopt(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("adopt", flag.ContinueOnError)
	cli.SetUsage(fs, adoptUsage)
	path := fs.String("config", "configs/processor.yaml", "processor configuration file (the adopter's)")
	instance := fs.String("instance", "", "the lost instance's id (processor status lists the silent ones)")
	plan := fs.Bool("plan", false, "list what adoption would do; change nothing")
	runs := fs.Int("runs", 6, "runs at most, when a run fails on NATS in a way that passes (a node restarting); each resumes where the last stopped")
	pause := fs.Duration("pause", app.DefaultAdoptPause, "wait between runs")
	var sets setFlag
	fs.Var(&sets, "set", "override a key of the config file, as `KEY=VALUE` (repeatable)")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if fs.NArg() > 0 || *instance == "" {
		fmt.Fprintln(e.Stderr, "processor adopt: --instance is required, and nothing else")
		return 2
	}
	cfg, err := app.LoadConfig(*path, e.Getenv, sets...)
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor:", err)
		return 2
	}
	a, err := app.Adopt(ctx, cfg, app.AdoptOptions{Instance: *instance, Plan: *plan, Log: cfg.Logger(e.Stderr), Runs: *runs, Pause: *pause})
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor adopt:", err)
		if errors.Is(err, instances.ErrAlive) {
			fmt.Fprintln(e.Stderr, "processor adopt: an alive instance is never adopted; stop it, or wait until it is silent")
		}
		return 1
	}
	writeAdoption(e.Stdout, a, *plan)
	return 0
}

// writeAdoption prints what adoption found, key by key, and the totals.
func writeAdoption(w io.Writer, a pipeline.Adoption, plan bool) {
	verb := "adopted"
	if plan {
		verb = "would adopt"
	}
	left := make(map[string]string, len(a.Left))
	for _, l := range a.Left {
		left[l.Key] = l.Reason
	}
	for _, h := range a.Transfer {
		if b := a.BatchOf[h.Key]; b != "" {
			fmt.Fprintf(w, "%s\tresume in batch %s\n", h.Key, b)
		} else {
			fmt.Fprintf(w, "%s\tpay here\n", h.Key)
		}
	}
	for _, l := range a.Left {
		fmt.Fprintf(w, "%s\tLEFT: %s\n", l.Key, l.Reason)
	}
	fmt.Fprintf(w, "adopt: instance %s held %d claims; %s: %d batches resumed (%d payouts), %d payouts to pay here (%d reclaimed from DUPLICATE), %d left\n",
		a.Instance, a.Held, verb, len(a.Batches), a.InBatches, a.ToPay, a.Reclaimed, len(a.Left))
}
