package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/paystream/paystream/internal/cli"

	"github.com/paystream/paystream/internal/synth"
)

const genUsage = `usage: producer gen --count N --seed S [flags]

Writes N synthetic payout requests as JSON lines, deterministic for a seed: several groups
(appids and scenes), amounts mostly 0.30–200 yuan, some of 2000 yuan or more with a Chinese
user_name, some openids "fail-<FAIL_REASON>-<id>" that the sandbox fails with that reason,
and a share of invalid lines of many kinds.

With --product bills the requests are transfer bills: scene 1000 or 1005 with exactly the
report rows that scene requires (transfer_scene_report_infos), sometimes a
user_recv_perception, and payees the sandbox simulates by openid: "noconfirm-<id>" never
confirms (the bill closes as FAIL OVERDUE_CLOSE), "decline-<id>" declines (FAIL),
"fail-<REASON>-<id>" fails; the others confirm. --product batches (the default) writes the
same lines for a seed as it always has.
`

// cmdGen implements "producer gen".
func cmdGen(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	cli.SetUsage(fs, genUsage+"\nflags:\n")
	o := synth.DefaultOptions()
	fs.IntVar(&o.Count, "count", o.Count, "number of lines")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
	fs.Float64Var(&o.InvalidRate, "invalid-rate", o.InvalidRate, "share of invalid lines")
	fs.Float64Var(&o.FailRate, "fail-rate", o.FailRate, "share of openids the sandbox fails")
	fs.Float64Var(&o.NamedRate, "named-rate", o.NamedRate, "share of payouts of 2000 yuan or more, with user_name")
	fs.StringVar(&o.Product, "product", o.Product, "WeChat Pay product: batches or bills")
	fs.Float64Var(&o.NoConfirmRate, "noconfirm-rate", o.NoConfirmRate, "bills: share of payees who never confirm")
	fs.Float64Var(&o.DeclineRate, "decline-rate", o.DeclineRate, "bills: share of payees who decline")
	fs.StringVar(&o.MchID, "mchid", o.MchID, "merchant id")
	appids := fs.String("appid", strings.Join(o.AppIDs, ","), "comma-separated appids")
	outPath := fs.String("out", "", "output file (default stdout)")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	o.AppIDs = strings.Split(*appids, ",")
	for _, r := range []float64{o.InvalidRate, o.FailRate, o.NamedRate, o.NoConfirmRate, o.DeclineRate} {
		if r < 0 || r > 1 || o.Count < 0 || fs.NArg() > 0 {
			fs.Usage()
			return 2
		}
	}
	if o.Product != synth.ProductBatches && o.Product != synth.ProductBills {
		fmt.Fprintf(e.Stderr, "producer: --product %q: want batches or bills\n", o.Product)
		return 2
	}
	out := e.Stdout
	if *outPath != "" {
		f, err := os.Create(*outPath)
		if err != nil {
			fmt.Fprintln(e.Stderr, "producer:", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	if err := synth.Generate(ctx, o, out); err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	return 0
}
