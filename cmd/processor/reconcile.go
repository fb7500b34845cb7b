package main

import (
	"context"
	"crypto/sha1" // the bill's hash_type is SHA1 (docs/reconciliation.md §2)
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/reconcile"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

const reconcileUsage = `usage: processor reconcile --date YYYY-MM-DD [--config FILE] [--ledger FILE]... [--json FILE] [--set KEY=VALUE]...

Reconciles one day (China Standard Time) of the ledgers with WeChat Pay's fund-flow bill of the
OPERATION account and, within WeChat's 30-day query window, with WeChat's queries
(docs/reconciliation.md §5): every payout paid that day is debited exactly once for exactly its
amount, every transfer debit is a payout of ours, every return pairs with a failed payout.
The bill is fetched with the config's WeChat Pay client and kept with its SHA1 under
<data-dir>/bills/; bills are ready from about 10:00 the next day. Prints the lines that do not
match and ends with "reconcile: N matched, M missing, K mismatched"; writes the JSON report
(default <data-dir>/bills/reconcile-DATE.json) and records the run in the first ledger.

exit status: 0 reconciled, 1 something missing or mismatched, 2 bad usage, an unreadable
ledger or config, or no bill to be had (not ready yet, or WeChat unreachable)

flags:
`

// billAttempts bounds how many times a bill is applied for and downloaded: a download URL
// serves once and briefly, so a failed download applies again (docs/reconciliation.md §2).
const billAttempts = 3

// errNotReady is a bill WeChat is still generating (STATEMENT_CREATING).
var errNotReady = errors.New("not ready")

// cmdReconcile implements processor reconcile.
func cmdReconcile(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	cli.SetUsage(fs, reconcileUsage)
	date := fs.String("date", "", "the day to reconcile, YYYY-MM-DD in China Standard Time (required)")
	path := fs.String("config", "configs/processor.yaml", "processor configuration file (WeChat Pay client, data-dir, ledger)")
	var files ledgerFlags
	fs.Var(&files, "ledger", "ledger file (repeat for every replica's; default the config's ledger); the run is recorded in the first")
	jsonOut := fs.String("json", "", "write the JSON report here (default <data-dir>/bills/reconcile-DATE.json)")
	var sets setFlag
	fs.Var(&sets, "set", "override a key of the config file, as `KEY=VALUE` (repeatable)")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.Stderr, "processor reconcile: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 || *date == "" {
		return fail("--date is required, and nothing else (see -h)")
	}
	if _, _, err := ledger.DayBounds(*date); err != nil {
		return fail("--date: %v", err)
	}
	cfg, err := app.LoadConfig(*path, e.Getenv, sets...)
	if err != nil {
		return fail("%v", err)
	}
	if len(files) == 0 {
		files = ledgerFlags{cfg.Ledger}
	}
	for _, f := range files { // unreadable is a usage error (2), found before asking WeChat anything
		db, err := ledger.OpenReadOnly(ctx, f)
		if err != nil {
			return fail("%v", err)
		}
		db.Close()
	}
	c, err := cfg.WeChatPay.Client(cfg.Logger(e.Stderr), wechatpay.WithRetries(reconcile.QueryRetries))
	if err != nil {
		return fail("%v", err)
	}
	dir := filepath.Join(cfg.DataDir, "bills")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail("%v", err)
	}
	in := reconcile.Input{Date: *date, Ledgers: files, Query: reconcile.ClientQuery(c)}
	in.Bill, in.BillSHA1, in.BillErr, err = fetchBill(ctx, c, dir, *date)
	switch {
	case errors.Is(err, errNotReady):
		return fail("the fund-flow bill of %s is not ready yet (STATEMENT_CREATING): WeChat Pay makes a day's bills from 09:00 the next day, China Standard Time; ask after 10:00", *date)
	case err != nil:
		return fail("fund-flow bill of %s: %v", *date, err)
	}
	start, _, _ := ledger.DayBounds(*date)
	prevDate := start.AddDate(0, 0, -1).Format(ledger.DateLayout)
	if prev, _, prevErr, err := fetchBill(ctx, c, dir, prevDate); err == nil && prevErr == nil {
		in.Previous = prev
	} else {
		fmt.Fprintf(e.Stderr, "processor reconcile: the bill of %s is not at hand (%v): a payout paid before midnight and seen paid after is reported missing\n", prevDate, errors.Join(err, prevErr))
	}
	r, err := reconcile.Reconcile(ctx, in)
	if err != nil {
		return fail("%v", err)
	}
	if *jsonOut == "" {
		*jsonOut = filepath.Join(dir, "reconcile-"+*date+".json")
	}
	if err := os.WriteFile(*jsonOut, r.JSON(), 0o600); err != nil {
		return fail("write report: %v", err)
	}
	run := ledger.ReconcileRun{Date: r.Date, At: time.Now(), Mode: r.Mode, Bill: r.Bill, BillSHA1: r.BillSHA1, Payouts: r.Payouts,
		Matched: r.Matched, Missing: r.Missing, Mismatched: r.Mismatched, ReportSHA256: r.Digest()}
	if _, err := ledger.RecordReconcile(ctx, files[0], run); err != nil {
		fmt.Fprintf(e.Stderr, "processor reconcile: the run is not recorded in %s: %v\n", files[0], err)
	}
	if err := r.WriteText(e.Stdout); err != nil {
		return fail("%v", err)
	}
	if !r.OK() {
		return 1
	}
	return 0
}

// fetchBill applies for the OPERATION fund-flow bill of date, downloads it (gzip, its SHA1
// checked by DownloadBill), keeps the file and its SHA1 in dir (fundflow-DATE.csv and .sha1,
// sha1sum's format) and parses it. bill is empty when WeChat has none (NO_STATEMENT_EXIST).
// billErr is why the file is not believed: a hash mismatch, a malformed file (bill nil), or a
// summary that disagrees with the rows (bill set). err means no bill was had: errNotReady, or
// WeChat not answering after billAttempts.
func fetchBill(ctx context.Context, c *wechatpay.Client, dir, date string) (bill *wechatpay.FundFlowBill, sum string, billErr, err error) {
	var raw []byte
	for attempt := 1; ; attempt++ {
		var d *wechatpay.BillDownload
		d, err = c.ApplyFundFlowBill(ctx, wechatpay.FundFlowBillQuery{BillDate: date, AccountType: wechatpay.AccountOperation, TarType: wechatpay.TarGzip})
		switch {
		case errors.Is(err, &wechatpay.APIError{Code: "STATEMENT_CREATING"}):
			return nil, "", nil, errNotReady
		case errors.Is(err, &wechatpay.APIError{Code: "NO_STATEMENT_EXIST"}):
			return &wechatpay.FundFlowBill{}, "", nil, nil
		case err == nil:
			raw, err = c.DownloadBill(ctx, d)
		}
		if errors.Is(err, wechatpay.ErrBillHash) {
			return nil, "", err, nil
		}
		if err == nil {
			break
		}
		if attempt == billAttempts || ctx.Err() != nil {
			return nil, "", nil, err
		}
	}
	h := sha1.Sum(raw)
	sum = hex.EncodeToString(h[:])
	name := "fundflow-" + date + ".csv"
	if err := writeFiles(dir, map[string][]byte{name: raw, name + ".sha1": []byte(sum + "  " + name + "\n")}); err != nil {
		return nil, "", nil, err
	}
	bill, billErr = wechatpay.ParseFundFlowBill(raw)
	return bill, sum, billErr, nil
}

// writeFiles writes each file in dir (mode 0600) through a temporary file renamed into place,
// so a kept bill is never half written.
func writeFiles(dir string, files map[string][]byte) error {
	for name, b := range files {
		tmp, err := os.CreateTemp(dir, name+".tmp*")
		if err != nil {
			return err
		}
		_, err = tmp.Write(b)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("keep %s: %w", name, err)
		}
	}
	return nil
}
