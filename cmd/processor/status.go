package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/pkg/ledger"
)

// defaultStatusURL is the demo config's http.listen (configs/demo-processor.yaml).
const defaultStatusURL = "http://127.0.0.1:8091"

// statusTimeout bounds the request to the running processor.
const statusTimeout = 5 * time.Second

const statusUsage = `usage: processor status [--ledger FILE] [--url URL] [--config FILE] [--json]

The operator's picture of one processor, as on its status page: the ledger (read-only) and the
running processor's runtime part (readiness, breakers, consumer backlog, in flight) from
URL/status.json. Without --ledger or --config, the ledger part is the processor's own view.
When the processor does not answer, its part is reported as unknown and the ledger part is
still printed. Exit 0 when at least one part was read, 1 when neither, 2 on a usage error.
`

// cmdStatus prints a processor's Status as text, or JSON with --json (openids masked).
func cmdStatus(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	cli.SetUsage(fs, statusUsage)
	path := fs.String("ledger", "", "ledger file, read-only (default: the config's ledger)")
	base := fs.String("url", "", "the running processor's HTTP listener (default: http://<http.listen> of --config, else "+defaultStatusURL+")")
	cfgPath := fs.String("config", "", "processor configuration file: the ledger and http.listen defaults")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *cfgPath != "" {
		cfg, err := app.LoadConfig(*cfgPath, e.Getenv)
		if err != nil {
			fmt.Fprintln(e.Stderr, "processor status:", err)
			return 2
		}
		if *path == "" {
			*path = cfg.Ledger
		}
		if *base == "" && cfg.HTTP.Listen != "" {
			*base = listenURL(cfg.HTTP.Listen)
		}
	}
	if *base == "" {
		*base = defaultStatusURL
	}

	var st ops.Status
	remote, remoteErr := fetchStatus(ctx, *base)
	if remoteErr != nil {
		st.RuntimeErr = fmt.Sprintf("processor not reachable at %s: %v", *base, remoteErr)
	} else {
		st.Runtime = remote.Runtime
	}
	switch {
	case *path != "":
		snap, err := readLedger(ctx, *path)
		if err != nil {
			st.LedgerErr = err.Error()
		}
		st.Ledger = snap
	case remoteErr == nil:
		st.Ledger, st.LedgerErr = remote.Ledger, remote.LedgerErr
	default:
		st.LedgerErr = "no ledger given (--ledger or --config) and the processor is not reachable"
	}

	var err error
	if *asJSON {
		err = ops.WriteJSON(e.Stdout, st)
		if st.RuntimeErr != "" {
			fmt.Fprintln(e.Stderr, "processor status:", st.RuntimeErr)
		}
	} else {
		err = ops.WriteText(e.Stdout, st)
	}
	if err != nil {
		fmt.Fprintln(e.Stderr, "processor status:", err)
		return 1
	}
	if st.RuntimeErr != "" && st.LedgerErr != "" {
		return 1
	}
	return 0
}

// listenURL turns an http.listen address into a URL to reach it locally: an unspecified host
// (":8091", "0.0.0.0:8091", "[::]:8091") becomes the loopback address.
func listenURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// fetchStatus reads base/status.json of a running processor.
func fetchStatus(ctx context.Context, base string) (ops.Status, error) {
	var st ops.Status
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/status.json", nil)
	if err != nil {
		return st, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /status.json: %s", res.Status)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("decode /status.json: %w", err)
	}
	return st, nil
}

// readLedger reads a snapshot of the ledger file at path without writing to it.
func readLedger(ctx context.Context, path string) (ledger.OpsSnapshot, error) {
	db, err := ledger.OpenReadOnly(ctx, path)
	if err != nil {
		return ledger.OpsSnapshot{}, fmt.Errorf("ledger %s: %w", path, err)
	}
	defer db.Close()
	snap, err := db.Ops(ctx, time.Now(), ops.PageLimit)
	if err != nil {
		return snap, fmt.Errorf("ledger %s: %w", path, err)
	}
	return snap, nil
}
