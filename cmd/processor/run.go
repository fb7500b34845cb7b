package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/paystream/paystream/internal/cli"

	"github.com/paystream/paystream/internal/app"
)

// cmdRun runs the pipeline: processor run --config FILE.
func cmdRun(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cli.SetUsage(fs, "usage: processor run [--config FILE]\n\nRuns the payout pipeline until SIGINT or SIGTERM.\n\nflags:\n")
	path := fs.String("config", "configs/processor.yaml", "processor configuration file")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.Stderr, "processor run: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg, err := loadConfig(*path, e.Getenv)
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor:", err)
		return 2
	}
	if err := app.Run(ctx, cfg, app.Options{Log: cfg.Logger(e.Stderr), Version: cli.VersionString()}); err != nil {
		fmt.Fprintln(e.Stderr, "processor:", err)
		return 1
	}
	return 0
}

func loadConfig(path string, getenv func(string) string) (app.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return app.Config{}, err
	}
	defer f.Close()
	cfg, err := app.ParseConfig(f, getenv)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
