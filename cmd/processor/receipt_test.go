package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/reconcile/reconciletest"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// runReceipt runs processor receipt with args.
func runReceipt(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"receipt"}, args...), func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// checkKept checks that path holds a receipt naming key, with its SHA256 beside it.
func checkKept(t *testing.T, path, key string) {
	t.Helper()
	pdf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(pdf, []byte("%PDF-1.4")) || !bytes.Contains(pdf, []byte(key)) {
		t.Fatalf("%s is not the receipt of %s:\n%s", path, key, pdf)
	}
	sum, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(pdf)
	if got, want := string(sum), hex.EncodeToString(h[:])+"  "+filepath.Base(path)+"\n"; got != want {
		t.Errorf(".sha256 = %q, want %q", got, want)
	}
}

func TestCmdReceipt(t *testing.T) {
	// The generator sends no real names: the sandbox makes receipts without them here.
	day := reconciletest.PaidDay(t, reconciletest.Options{Count: 20, FailRate: 0.3, Seed: 7}, wechatpaytest.WithReceiptWithoutName(true))
	if len(day.Paid) == 0 || len(day.Failed) == 0 {
		t.Fatalf("%d paid, %d failed: the day needs both", len(day.Paid), len(day.Failed))
	}
	paid, failed := day.Paid[0].OutDetailNo, day.Failed[0]
	conf := []string{"--config", day.ConfigFile, "--poll", "20ms", "--wait", "20s"}

	t.Run("a SUCCESS payout's receipt is kept", func(t *testing.T) {
		code, out, errOut := runReceipt(t, append([]string{paid}, conf...)...)
		want := filepath.Join(day.Config.DataDir, "receipts", paid+".pdf")
		if code != 0 || strings.TrimSpace(out) != want {
			t.Fatalf("exit %d, stdout %q, want 0 and %s\nstderr: %s", code, out, want, errOut)
		}
		checkKept(t, want, paid)
	})
	t.Run("--out, the key after the flags, fetched again", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "proof.pdf")
		code, out, errOut := runReceipt(t, append(conf, "--out", dst, paid)...)
		if code != 0 || strings.TrimSpace(out) != dst {
			t.Fatalf("exit %d, stdout %q\nstderr: %s", code, out, errOut)
		}
		checkKept(t, dst, paid)
	})
	t.Run("a FAIL payout is refused before asking WeChat Pay", func(t *testing.T) {
		before := day.Srv.Stats().Requests[wechatpaytest.EndpointApplyDetailReceipt]
		code, _, errOut := runReceipt(t, append([]string{failed}, conf...)...)
		if code != 1 || !strings.Contains(errOut, failed+" is FAIL") || !strings.Contains(errOut, "not SUCCESS") {
			t.Fatalf("exit %d, stderr %q; want 1 and a clear refusal", code, errOut)
		}
		if after := day.Srv.Stats().Requests[wechatpaytest.EndpointApplyDetailReceipt]; after != before {
			t.Errorf("%d applications sent for a failed payout", after-before)
		}
		if _, err := os.Stat(filepath.Join(day.Config.DataDir, "receipts", failed+".pdf")); !os.IsNotExist(err) {
			t.Errorf("a file was kept for a failed payout: %v", err)
		}
	})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unknown payout", append([]string{"NOSUCHPAYOUT"}, conf...), 1, "no payout NOSUCHPAYOUT"},
		{"no key", conf, 2, "one out_detail_no is required"},
		{"two keys", append([]string{paid, "extra"}, conf...), 2, "one out_detail_no is required"},
		{"unreadable ledger", append([]string{paid, "--ledger", filepath.Join(t.TempDir(), "nope", "x.db")}, conf...), 2, "x.db"},
		{"bad --poll", append(append([]string{paid}, conf...), "--poll", "0s"), 2, "--poll"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runReceipt(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.wantCode, tc.wantErr)
			}
		})
	}
}

// TestReceiptRef: the ledger's view of a payout names the transfer to ask a receipt for, or why
// there is none. (reconciletest.PaidDay cannot make a day on transfer bills; the bill rail's
// apply, poll and download are tested in pkg/wechatpay against the sandbox.)
func TestReceiptRef(t *testing.T) {
	success := func(rail string) ledger.PayoutView {
		return ledger.PayoutView{PayoutBrief: ledger.PayoutBrief{OutDetailNo: "K1", Rail: rail, State: ledger.PayoutSuccess, OutBatchNo: "B1"}}
	}
	bill := success(payout.RailBills)
	bill.Bill = &ledger.BillBrief{OutBillNo: "K1"}
	failed := success(payout.RailDirect)
	failed.State, failed.FailReason = ledger.PayoutFail, "ACCOUNT_FROZEN"
	tests := []struct {
		name    string
		v       ledger.PayoutView
		want    wechatpay.ReceiptRef
		wantErr string
	}{
		{name: "batch detail", v: success(payout.RailDirect), want: wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: "B1", OutDetailNo: "K1"}},
		{name: "transfer bill", v: bill, want: wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBill, OutBillNo: "K1"}},
		{name: "bill with no out_bill_no", v: success(payout.RailBills), wantErr: "no out_bill_no"},
		{name: "partner batch", v: success(payout.RailPartner), wantErr: "partner batches are not supported"},
		{name: "failed payout", v: failed, wantErr: "K1 is FAIL (ACCOUNT_FROZEN), not SUCCESS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := receiptRef(tc.v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCmdReceipt_noName(t *testing.T) {
	day := reconciletest.PaidDay(t, reconciletest.Options{Count: 4, Seed: 5})
	key := day.Paid[0].OutDetailNo
	code, _, errOut := runReceipt(t, key, "--config", day.ConfigFile, "--poll", "20ms")
	if code != 1 || !strings.Contains(errOut, "real name") || !strings.Contains(errOut, "PARAM_ERROR") {
		t.Fatalf("exit %d, stderr %q; want 1 and the real-name precondition with WeChat's code", code, errOut)
	}
}
