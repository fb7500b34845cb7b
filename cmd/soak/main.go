// Command soak runs the exactly-once soak (internal/soak; README "Failure model") on both
// WeChat Pay products, one after the other: the batch API (50k payouts), then transfer bills
// (10k payouts: payees who confirm, decline or never confirm, lost callbacks, upstream
// cancels). Each run is a 3-node JetStream cluster, the WeChat Pay sandbox with faults and
// 429s, several processors SIGKILLed and restarted every few seconds, one NATS node
// restart, one ledger lost and restored from its litestream replica, one processor lost with
// its disk and adopted into a fresh ledger (processor adopt), and the producer publishing a
// synthetic workload with re-publishes and invalid lines. Each run then checks the sandbox's own record against every ledger and the events
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
	"errors"
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
	var probe soak.Config
	product, keep, err := parse(args, &probe, stdout, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errVersion):
		cli.WriteVersion(stdout, "soak")
		return 0
	case err != nil:
		if !errors.Is(err, errFlags) {
			fmt.Fprintln(stderr, "soak:", err)
		}
		return 2
	}
	var cfgs []soak.Config
	switch product {
	case productBoth:
		cfgs = []soak.Config{soak.DefaultConfig(), soak.DefaultBillsConfig()}
	case soak.ProductBatches:
		cfgs = []soak.Config{soak.DefaultConfig()}
	case soak.ProductBills:
		cfgs = []soak.Config{soak.DefaultBillsConfig()}
	default:
		fmt.Fprintf(stderr, "soak: -product %q: want %s, %s or %s\n", product, productBoth, soak.ProductBatches, soak.ProductBills)
		return 2
	}
	dir := keep
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "paystream-soak-"); err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
	}
	for i := range cfgs {
		if _, _, err := parse(args, &cfgs[i], io.Discard, io.Discard); err != nil { // the flags given, over this product's defaults
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
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
	if keep == "" {
		os.RemoveAll(dir)
	}
	return 0
}

// errFlags is a usage error parse has already reported.
var errFlags = errors.New("bad flags")

// errVersion is parse's answer to -version.
var errVersion = errors.New("version asked for")

const usage = `usage: soak [-product both|batches|bills] [flags]

Runs the exactly-once soak (internal/soak) on each product asked for and checks the
sandbox's record against every ledger. Exit status: 0 all checks passed, 1 a check failed,
2 bad usage or the harness could not run.

flags:
`

// parse reads args into cfg, over the values cfg already holds (a product's defaults), and
// returns the -product and -keep values. Help (printed on stdout) is flag.ErrHelp, -version
// errVersion, a bad flag (reported on stderr) errFlags.
func parse(args []string, cfg *soak.Config, stdout, stderr io.Writer) (product, keep string, err error) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	cli.SetUsage(fs, usage)
	version := fs.Bool("version", false, "print the version and exit")
	fs.StringVar(&product, "product", productBoth, "WeChat Pay product: both, batches or bills")
	fs.IntVar(&cfg.Payouts, "payouts", cfg.Payouts, "generated requests (1% invalid, 5% re-published); default 50000 on batches, 10000 on bills")
	fs.IntVar(&cfg.Processors, "processors", cfg.Processors, "processor replicas (default 3)")
	fs.DurationVar(&cfg.KillEvery, "kill-every", cfg.KillEvery, "SIGKILL and restart a random processor this often (default 3s)")
	fs.IntVar(&cfg.MinKills, "min-kills", cfg.MinKills, "kill at least this many times (default 5)")
	fs.Float64Var(&cfg.KillUntil, "kill-until", cfg.KillUntil, "keep killing until this share of the payouts is final (default 0.98)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "each run after the build: cluster start to the checks (default 15m on batches, 10m on bills)")
	fs.IntVar(&cfg.Quota, "quota", cfg.Quota, "the sandbox's requests/s per endpoint, 429 beyond (default 50 on batches, 100 on bills)")
	fs.IntVar(&cfg.Share, "share", cfg.Share, "each processor's configured requests/s per endpoint (default 25 on batches, 45 on bills)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the workload, the faults and the kills (default 1)")
	fs.StringVar(&cfg.Bin, "bin", cfg.Bin, "directory with processor, sandbox, producer and nats-server (default: build them)")
	fs.StringVar(&keep, "keep", "", "working directory to use and keep (default: a temporary one, kept only on failure)")
	switch ok, code := cli.Parse(fs, args, cli.Env{Stdout: stdout, Stderr: stderr}); {
	case code == 2:
		return "", "", errFlags
	case !ok:
		return "", "", flag.ErrHelp
	case *version:
		return "", "", errVersion
	}
	if fs.NArg() > 0 {
		return "", "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return product, keep, nil
}

// build compiles the binaries once into dir/bin for every run that has no -bin, after
// checking every config (so that a bad flag costs no build). It returns an exit code.
func build(ctx context.Context, cfgs []soak.Config, dir string, stderr io.Writer) int {
	for _, cfg := range cfgs {
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(stderr, err) // says "soak: bad config: …"
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
