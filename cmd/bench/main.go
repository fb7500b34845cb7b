// Command bench runs the limit benchmarks (make bench; README "Performance"): the intake, ledger growth
// and drain ratios, the drain ratio and queries per bill on the transfer-bills rail, the
// processor's peak memory and the ledger's replication lag under load, printing a table and
// one PASS/FAIL line per target, and writing JSON, benchstat text and CPU profiles under
// bench/results/. A full run takes about 28 minutes, 17 of them the bills drain (100k creates
// at WeChat's 100/s); for a quick look:
//
//	go run ./cmd/bench -only drain-bills -drain-bills 5000
//	go run ./cmd/bench [-only intake,growth,drain,drain-bills,memory,lag] [-intake N] [-prefill N] ...
//
// It exits 1 when a target fails, 2 on a usage or run error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/paystream/paystream/internal/bench"
	"github.com/paystream/paystream/internal/cli"
)

func main() { cli.Main(run) }

// errFailed means the run completed and a target failed.
var errFailed = errors.New("a target failed")

const usage = `usage: bench [-only intake,growth,drain,drain-bills,memory,lag] [flags]

Runs the performance benchmarks (README, "Performance") and prints one PASS/FAIL line per target (about 28
minutes in full). Exit status: 0 every target passed, 1 a target failed, 2 usage or run error.

flags:
`

// run is the whole command line (cli.Run). With bench.ChildEnv set it is the processor
// that the memory benchmark measures (it re-runs this binary): exit 1 when that fails.
func run(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) int {
	if path := getenv(bench.ChildEnv); path != "" {
		if err := bench.RunChild(ctx, path); err != nil {
			fmt.Fprintln(stderr, "bench processor:", err)
			return 1
		}
		return 0
	}
	o := bench.DefaultOptions()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cli.SetUsage(fs, usage)
	version := fs.Bool("version", false, "print the version and exit")
	fs.IntVar(&o.Intake, "intake", o.Intake, "payouts in the intake stream")
	fs.IntVar(&o.Prefill, "prefill", o.Prefill, "payouts already in the ledger for the growth ratio")
	fs.IntVar(&o.Drain, "drain", o.Drain, "payouts drained through the rate-limited sandbox")
	fs.IntVar(&o.DrainBills, "drain-bills", o.DrainBills, "payouts drained through the sandbox on the transfer-bills rail (100/s)")
	fs.Float64Var(&o.Speed, "speed", o.Speed, "sandbox and processor clock factor for the drains")
	fs.IntVar(&o.Backlogs[0], "backlog-small", o.Backlogs[0], "smaller backlog of the memory measurement")
	fs.IntVar(&o.Backlogs[1], "backlog", o.Backlogs[1], "larger backlog of the memory measurement")
	fs.IntVar(&o.Lag, "lag", o.Lag, "backlog the replication lag is measured under")
	fs.StringVar(&o.Results, "results", o.Results, "results directory")
	fs.StringVar(&o.Dir, "tmp", "", "scratch directory (default: the system's)")
	only := fs.String("only", "", "comma-separated subset of intake,growth,drain,drain-bills,memory,lag")
	if ok, code := cli.Parse(fs, args, cli.Env{Stdout: stdout, Stderr: stderr}); !ok {
		return code
	}
	if *version {
		cli.WriteVersion(stdout, "bench")
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	o.Log = stderr
	r, err := bench.Run(ctx, o)
	if r != nil {
		r.WriteText(stdout)
	}
	if err == nil && !r.Pass() {
		err = errFailed
	}
	switch {
	case errors.Is(err, errFailed):
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	return 0
}
