package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

const receiptUsage = `usage: processor receipt <out_detail_no> [--config FILE] [--ledger FILE] [--out FILE] [--poll 2m] [--wait 30m] [--set KEY=VALUE]...

Fetches the electronic receipt (电子回单) of one payout from WeChat Pay (docs/receipts.md): looks the
payout up in the ledger (read-only), refuses unless it is SUCCESS, applies for its receipt (the
detail's on the batch API, the bill's on transfer bills), queries every --poll until it is
generated or --wait has passed, downloads it and checks its SHA256. The PDF is kept as
<data-dir>/receipts/<out_detail_no>.pdf (or --out) with its SHA256 beside it (.sha256,
sha256sum's format); the path is printed. WeChat Pay makes receipts only for successful
transfers sent with the payee's real name, within an age limit.

exit status: 0 receipt kept, 1 no receipt (the payout is unknown or not SUCCESS, WeChat Pay
refused or failed it, it is still being generated, its hash is wrong, or WeChat Pay did not
answer), 2 bad usage, an unreadable ledger or config

flags:
`

// cmdReceipt implements processor receipt.
func cmdReceipt(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("receipt", flag.ContinueOnError)
	cli.SetUsage(fs, receiptUsage)
	path := fs.String("config", "configs/processor.yaml", "processor configuration file (WeChat Pay client, data-dir, ledger)")
	ledgerPath := fs.String("ledger", "", "ledger file to look the payout up in (default the config's ledger)")
	out := fs.String("out", "", "where to keep the PDF (default <data-dir>/receipts/<out_detail_no>.pdf)")
	poll := fs.Duration("poll", wechatpay.DefaultReceiptPoll, "wait between queries while the receipt is generated (WeChat Pay advises 2m or more)")
	wait := fs.Duration("wait", 30*time.Minute, "give up waiting for the receipt after this long")
	var sets setFlag
	fs.Var(&sets, "set", "override a key of the config file, as `KEY=VALUE` (repeatable)")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	var key string
	if fs.NArg() > 0 { // the key may come first: flags after it are parsed too
		key = fs.Arg(0)
		if ok, code := cli.Parse(fs, fs.Args()[1:], e); !ok {
			return code
		}
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(e.Stderr, "processor receipt: "+format+"\n", a...)
		return 2
	}
	failed := func(format string, a ...any) int {
		fmt.Fprintf(e.Stderr, "processor receipt: "+format+"\n", a...)
		return 1
	}
	switch {
	case key == "" || fs.NArg() > 0:
		return usage("one out_detail_no is required, and nothing else (see -h)")
	case *poll <= 0 || *wait <= 0:
		return usage("--poll and --wait must be positive")
	}
	cfg, err := app.LoadConfig(*path, e.Getenv, sets...)
	if err != nil {
		return usage("%v", err)
	}
	if *ledgerPath == "" {
		*ledgerPath = cfg.Ledger
	}
	v, err := lookupPayout(ctx, *ledgerPath, key)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return failed("no payout %s in %s", key, *ledgerPath)
	case err != nil:
		return usage("%v", err)
	}
	ref, err := receiptRef(v)
	if err != nil {
		return failed("%v", err)
	}
	c, err := cfg.WeChatPay.Client(cfg.Logger(e.Stderr))
	if err != nil {
		return usage("%v", err)
	}
	pdf, err := wechatpay.FetchReceipt(ctx, c, ref, wechatpay.PollEvery(*poll, max(1, int(*wait / *poll))))
	var refused *wechatpay.ReceiptRefusal
	switch {
	case errors.As(err, &refused):
		return failed("payout %s: %v", key, err)
	case errors.Is(err, wechatpay.ErrReceiptPending):
		return failed("payout %s: the receipt is still being generated after %v; run this again later (the application stands)", key, *wait)
	case errors.Is(err, wechatpay.ErrReceiptHash):
		return failed("payout %s: the downloaded file is not the receipt WeChat Pay described, nothing kept: %v", key, err)
	case err != nil:
		return failed("payout %s: %v", key, err)
	}
	if *out == "" {
		*out = filepath.Join(cfg.DataDir, "receipts", key+".pdf")
	}
	dir, name := filepath.Dir(*out), filepath.Base(*out)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return failed("%v", err)
	}
	sum := sha256.Sum256(pdf)
	if err := writeFiles(dir, map[string][]byte{name: pdf, name + ".sha256": []byte(hex.EncodeToString(sum[:]) + "  " + name + "\n")}); err != nil {
		return failed("%v", err)
	}
	fmt.Fprintln(e.Stdout, *out)
	return 0
}

// lookupPayout reads one payout from the ledger at path, read-only. ledger.ErrNotFound when the
// ledger never received it.
func lookupPayout(ctx context.Context, path, key string) (ledger.PayoutView, error) {
	db, err := ledger.OpenReadOnly(ctx, path)
	if err != nil {
		return ledger.PayoutView{}, err
	}
	defer db.Close()
	return db.Lookup(ctx, key)
}

// receiptRef names the transfer whose receipt proves payout v, or says why there can be none: the
// payout did not succeed, or its rail has no receipt paystream can ask for.
func receiptRef(v ledger.PayoutView) (wechatpay.ReceiptRef, error) {
	if v.State != ledger.PayoutSuccess {
		why := v.State
		if v.FailReason != "" {
			why += " (" + v.FailReason + ")"
		}
		return wechatpay.ReceiptRef{}, fmt.Errorf("payout %s is %s, not SUCCESS: WeChat Pay makes receipts only for successful transfers", v.OutDetailNo, why)
	}
	switch v.Rail {
	case payout.RailDirect:
		return wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: v.OutBatchNo, OutDetailNo: v.OutDetailNo}, nil
	case payout.RailBills:
		if v.Bill == nil || v.Bill.OutBillNo == "" {
			return wechatpay.ReceiptRef{}, fmt.Errorf("payout %s is SUCCESS on transfer bills but the ledger holds no out_bill_no for it", v.OutDetailNo)
		}
		return wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBill, OutBillNo: v.Bill.OutBillNo}, nil
	}
	return wechatpay.ReceiptRef{}, fmt.Errorf("payout %s is on the %s rail: receipts of partner batches are not supported (docs/receipts.md §7)", v.OutDetailNo, v.Rail)
}
