package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/cli"

	"github.com/paystream/paystream/pkg/ledger"
)

// ledgerFlags collects repeated --ledger values.
type ledgerFlags []string

func (l *ledgerFlags) String() string { return strings.Join(*l, ",") }

func (l *ledgerFlags) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// cmdAudit checks ledger invariants read-only (ledger.Audit) and prints a table, or JSON
// with --json (each check with its violations and how many were omitted from the listed
// examples). Give every replica's ledger: a DUPLICATE row is checked against its owner's.
// Exit 0 clean, 1 violations found, 2 a file cannot be read or bad usage.
func cmdAudit(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	var files ledgerFlags
	fs.Var(&files, "ledger", "ledger file to audit (repeat for every replica's: keys must not repeat across files, DUPLICATE rows are checked against their owner's file)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cli.SetUsage(fs, "usage: processor audit --ledger FILE [--ledger FILE...] [--json]\n\nexit status: 0 clean, 1 violations, 2 a file cannot be read or bad usage\n\nflags:\n")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if len(files) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	r, err := ledger.Audit(ctx, files, time.Now())
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor audit:", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = r.WriteText(e.Stdout)
	}
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor audit:", err)
		return 2
	}
	if !r.OK() {
		return 1
	}
	return 0
}
