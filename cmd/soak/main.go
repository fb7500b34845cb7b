// Command soak runs the exactly-once soak of issue #6 (internal/soak): a 3-node JetStream
// cluster, the WeChat Pay sandbox with faults, several processors SIGKILLed and restarted
// every few seconds, one NATS node restart, and the producer publishing a synthetic
// workload with re-publishes and invalid lines. It then checks the sandbox's payment
// record against every ledger, prints every check and "N passed, M failed", and exits 1
// on any failure (2 when the harness itself could not run).
//
//	soak [-payouts 50000] [-processors 3] [-kill-every 3s] [-timeout 15m] [-bin DIR] [-keep DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/soak"
)

func main() {
	cli.Main(func(ctx context.Context, args []string, _ func(string) string, _ io.Reader, stdout, stderr io.Writer) int {
		return run(ctx, args, stdout, stderr)
	})
}

// run parses args, runs the soak and returns the exit code: 0 all checks passed, 1 a check
// failed, 2 bad usage or the harness could not run.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := soak.DefaultConfig()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Payouts, "payouts", cfg.Payouts, "generated requests (1% invalid, 5% re-published)")
	fs.IntVar(&cfg.Processors, "processors", cfg.Processors, "processor replicas")
	fs.DurationVar(&cfg.KillEvery, "kill-every", cfg.KillEvery, "SIGKILL and restart a random processor this often")
	fs.IntVar(&cfg.MinKills, "min-kills", cfg.MinKills, "kill at least this many times")
	fs.Float64Var(&cfg.KillUntil, "kill-until", cfg.KillUntil, "keep killing until this share of the payouts is final")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "the run after the build: cluster start to the checks")
	fs.IntVar(&cfg.Quota, "quota", cfg.Quota, "the sandbox's requests/s per endpoint (429 beyond)")
	fs.IntVar(&cfg.Share, "share", cfg.Share, "each processor's configured requests/s per endpoint")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the workload, the faults and the kills")
	fs.StringVar(&cfg.Bin, "bin", "", "directory with processor, sandbox, producer and nats-server (default: build them)")
	keep := fs.String("keep", "", "working directory to use and keep (default: a temporary one, kept only on failure)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "soak: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Dir = *keep
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "paystream-soak-")
		if err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
		cfg.Dir = dir
	}
	cfg.Log = stderr
	rep, err := soak.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err, "(files in", cfg.Dir+")")
		return 2
	}
	rep.WriteText(stdout)
	if rep.Failed() > 0 {
		fmt.Fprintln(stderr, "soak: failed; logs, ledgers and the sandbox state are in", cfg.Dir)
		return 1
	}
	if *keep == "" {
		os.RemoveAll(cfg.Dir)
	}
	return 0
}
