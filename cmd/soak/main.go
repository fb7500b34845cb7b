// Command soak runs the exactly-once soak of issue #6 (internal/soak) on both WeChat Pay
// products, one after the other: the batch API (50k payouts), then transfer bills (10k
// payouts, issue 13: payees who confirm, decline or never confirm, lost callbacks, upstream
// cancels). Each run is a 3-node JetStream cluster, the WeChat Pay sandbox with faults and
// 429s, several processors SIGKILLed and restarted every few seconds, one NATS node
// restart, and the producer publishing a synthetic workload with re-publishes and invalid
// lines. Each run then checks the sandbox's own record against every ledger and the events
// upstream got. It prints each run's checks, then "total: N passed, M failed", and exits 1
// on any failure (2 when the harness itself could not run).
//
//	soak [-product both|batches|bills] [-payouts N] [-processors 3] [-kill-every 3s] [-timeout D] [-bin DIR] [-keep DIR]
//
// Each product has its own defaults (soak.DefaultConfig, soak.DefaultBillsConfig); a flag
// given on the command line applies to every product run.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/soak"
)

func main() {
	cli.Main(func(ctx context.Context, args []string, _ func(string) string, _ io.Reader, stdout, stderr io.Writer) int {
		return run(ctx, args, stdout, stderr)
	})
}

// productBoth is the -product value that runs every product.
const productBoth = "both"

// run parses args, runs the soak of each product asked for and returns the exit code: 0
// all checks passed, 1 a check failed, 2 bad usage or the harness could not run.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var flags soak.Config // set only through fs; applied over each product's defaults
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	product := fs.String("product", productBoth, "WeChat Pay product: both, batches or bills")
	fs.IntVar(&flags.Payouts, "payouts", 0, "generated requests (1% invalid, 5% re-published); default 50000 on batches, 10000 on bills")
	fs.IntVar(&flags.Processors, "processors", 0, "processor replicas (default 3)")
	fs.DurationVar(&flags.KillEvery, "kill-every", 0, "SIGKILL and restart a random processor this often (default 3s)")
	fs.IntVar(&flags.MinKills, "min-kills", 0, "kill at least this many times (default 5)")
	fs.Float64Var(&flags.KillUntil, "kill-until", 0, "keep killing until this share of the payouts is final (default 0.98)")
	fs.DurationVar(&flags.Timeout, "timeout", 0, "each run after the build: cluster start to the checks (default 15m on batches, 10m on bills)")
	fs.IntVar(&flags.Quota, "quota", 0, "the sandbox's requests/s per endpoint, 429 beyond (default 50 on batches, 100 on bills)")
	fs.IntVar(&flags.Share, "share", 0, "each processor's configured requests/s per endpoint (default 25 on batches, 45 on bills)")
	fs.Uint64Var(&flags.Seed, "seed", 0, "seed of the workload, the faults and the kills (default 1)")
	fs.StringVar(&flags.Bin, "bin", "", "directory with processor, sandbox, producer and nats-server (default: build them)")
	keep := fs.String("keep", "", "working directory to use and keep (default: a temporary one, kept only on failure)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "soak: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var cfgs []soak.Config
	switch *product {
	case productBoth:
		cfgs = []soak.Config{soak.DefaultConfig(), soak.DefaultBillsConfig()}
	case soak.ProductBatches:
		cfgs = []soak.Config{soak.DefaultConfig()}
	case soak.ProductBills:
		cfgs = []soak.Config{soak.DefaultBillsConfig()}
	default:
		fmt.Fprintf(stderr, "soak: -product %q: want %s, %s or %s\n", *product, productBoth, soak.ProductBatches, soak.ProductBills)
		return 2
	}
	dir := *keep
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "paystream-soak-"); err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
	}
	for i := range cfgs {
		set(&cfgs[i], fs, flags)
		cfgs[i].Dir, cfgs[i].Log = filepath.Join(dir, cfgs[i].Product), stderr
	}
	if code := build(ctx, cfgs, dir, stderr); code != 0 {
		return code
	}
	passed, failed := 0, 0
	for _, cfg := range cfgs {
		rep, err := soak.Run(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "soak:", cfg.Product+":", err, "(files in", cfg.Dir+")")
			return 2
		}
		rep.WriteText(stdout)
		fmt.Fprintln(stdout)
		passed, failed = passed+len(rep.Checks)-rep.Failed(), failed+rep.Failed()
	}
	fmt.Fprintf(stdout, "total: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		fmt.Fprintln(stderr, "soak: failed; logs, ledgers and the sandbox state are in", dir)
		return 1
	}
	if *keep == "" {
		os.RemoveAll(dir)
	}
	return 0
}

// set copies the flags given on the command line from flags into cfg.
func set(cfg *soak.Config, fs *flag.FlagSet, flags soak.Config) {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "payouts":
			cfg.Payouts = flags.Payouts
		case "processors":
			cfg.Processors = flags.Processors
		case "kill-every":
			cfg.KillEvery = flags.KillEvery
		case "min-kills":
			cfg.MinKills = flags.MinKills
		case "kill-until":
			cfg.KillUntil = flags.KillUntil
		case "timeout":
			cfg.Timeout = flags.Timeout
		case "quota":
			cfg.Quota = flags.Quota
		case "share":
			cfg.Share = flags.Share
		case "seed":
			cfg.Seed = flags.Seed
		case "bin":
			cfg.Bin = flags.Bin
		}
	})
}

// build compiles the binaries once into dir/bin for every run that has no -bin, after
// checking every config (so that a bad flag costs no build). It returns an exit code.
func build(ctx context.Context, cfgs []soak.Config, dir string, stderr io.Writer) int {
	for _, cfg := range cfgs {
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
	}
	if cfgs[0].Bin != "" {
		return 0
	}
	bin := filepath.Join(dir, "bin")
	fmt.Fprintf(stderr, "soak: building %v into %s\n", soak.Binaries, bin)
	if err := soak.Build(ctx, bin); err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 2
	}
	for i := range cfgs {
		cfgs[i].Bin = bin
	}
	return 0
}
