package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/config"
)

const runUsage = `usage: processor run [--config FILE] [--set KEY=VALUE]...

Runs the payout pipeline until SIGINT or SIGTERM. Each --set overrides one key of the
config file, named by its path as in the file and typed as there ("5s", "[a, b]"), e.g.
--set pipeline.submit.workers=8 --set log.level=debug; a later --set of a key wins.

flags:
`

// cmdRun runs the pipeline: processor run --config FILE [--set KEY=VALUE]....
func cmdRun(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cli.SetUsage(fs, runUsage)
	path := fs.String("config", "configs/processor.yaml", "processor configuration file")
	var sets setFlag
	fs.Var(&sets, "set", "override a key of the config file, as `KEY=VALUE` (repeatable)")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.Stderr, "processor run: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg, err := app.LoadConfig(*path, e.Getenv, sets...)
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor:", err)
		return 2
	}
	if err := app.Run(ctx, cfg, app.Options{Log: cfg.Logger(e.Stderr), Version: cli.VersionString(),
		DumpStacks: func() { cli.DumpStacks(e.Stderr) }}); err != nil {
		fmt.Fprintln(e.Stderr, "processor:", err)
		return 1
	}
	return 0
}

// setFlag is the repeatable --set KEY=VALUE: the config overrides in the order given, for
// app.LoadConfig, which decodes each value as the file's value of KEY.
type setFlag []config.Override

// errSetSyntax is a --set without "=" or without a key.
var errSetSyntax = errors.New("want KEY=VALUE, e.g. pipeline.poll.interval=10s")

func (s *setFlag) String() string {
	if s == nil {
		return ""
	}
	kv := make([]string, len(*s))
	for i, o := range *s {
		kv[i] = o.Key + "=" + o.Value
	}
	return strings.Join(kv, " ")
}

// Set appends one override; the value is everything after the first "=".
func (s *setFlag) Set(v string) error {
	key, value, ok := strings.Cut(v, "=")
	if !ok || key == "" {
		return errSetSyntax
	}
	*s = append(*s, config.Override{Key: key, Value: value})
	return nil
}
