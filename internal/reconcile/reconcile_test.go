package reconcile_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/reconcile"
	"github.com/paystream/paystream/internal/reconcile/reconciletest"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// fetch applies for and downloads the OPERATION bill of date from srv, as processor reconcile
// does, and returns the Input parts: the parsed bill, its SHA1, or why it is not believed.
func fetch(t *testing.T, c *wechatpay.Client, date string) (*wechatpay.FundFlowBill, string, error) {
	t.Helper()
	ctx := context.Background()
	d, err := c.ApplyFundFlowBill(ctx, wechatpay.FundFlowBillQuery{BillDate: date, AccountType: wechatpay.AccountOperation, TarType: wechatpay.TarGzip})
	if errors.Is(err, &wechatpay.APIError{Code: "NO_STATEMENT_EXIST"}) {
		return &wechatpay.FundFlowBill{}, "", nil
	}
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	raw, err := c.DownloadBill(ctx, d)
	if errors.Is(err, wechatpay.ErrBillHash) {
		return nil, "", err
	}
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	bill, err := wechatpay.ParseFundFlowBill(raw)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	sum := sha1.Sum(raw)
	return bill, hex.EncodeToString(sum[:]), nil
}

// lines returns the report's lines of result as "key voucher ledger_fen bill_fen" strings;
// the sandbox's numbers of injected debits (EXTRA<date><n>) read "EXTRA".
func lines(r *reconcile.Report, result string) []string {
	var out []string
	for _, l := range r.Lines {
		if l.Result == result {
			v := l.Voucher
			if strings.HasPrefix(v, "EXTRA") {
				v = "EXTRA"
			}
			out = append(out, fmt.Sprintf("%s %s %d %d", l.Key, v, l.LedgerFen, l.BillFen))
		}
	}
	return out
}

// successLedger writes a ledger at path holding one payout SUCCESS now that no sandbox ever
// paid: a ledger's word the bill must contradict.
func successLedger(t *testing.T, path, key string, amount int64) {
	t.Helper()
	ctx := context.Background()
	db, err := ledger.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := ledger.Payout{OutDetailNo: key, MchID: wechatpaytest.DefaultMchID, AppID: "wxa0000000000000001", OpenID: "o-" + key,
		Remark: "活动奖励", Rail: "direct", GroupKey: wechatpaytest.DefaultMchID + "/direct", Amount: amount,
		ContentHash: make([]byte, 32), StreamSeq: 1}
	res, err := db.InsertPayouts(ctx, []ledger.Payout{p})
	if err != nil {
		t.Fatal(err)
	}
	p.Seq = res[0].Seq
	body := fmt.Sprintf(`{"appid":"wxa0000000000000001","batch_name":"b","batch_remark":"b","out_batch_no":"GHOST1","total_amount":%d,"total_num":1,"transfer_detail_list":[{"openid":"o-%s","out_detail_no":"%s","transfer_amount":%d,"transfer_remark":"活动奖励"}]}`,
		amount, key, key, amount)
	b := ledger.Batch{OutBatchNo: "GHOST1", Rail: "direct", GroupKey: p.GroupKey, MchID: p.MchID, TotalNum: 1, TotalAmount: amount,
		Body: []byte(body), Members: []int64{p.Seq}}
	if err := db.ClaimAndSeal(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSubmit(ctx, "GHOST1", ledger.SubmitResult{Outcome: ledger.SubmitAccepted, BatchID: "WGHOST1", BatchStatus: ledger.BatchProcessing}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ApplyDetailPage(ctx, "GHOST1", ledger.SourceQuery, 0, []ledger.DetailRow{{OutDetailNo: key, DetailID: "GHOSTDETAIL1", Status: ledger.PayoutSuccess}}); err != nil {
		t.Fatal(err)
	}
}

func TestReconcile_Day(t *testing.T) {
	day := reconciletest.PaidDay(t, reconciletest.Options{Count: 40, FailRate: 0.2}, wechatpaytest.WithFundFlowReturns(true))
	if len(day.Paid) == 0 || len(day.Failed) == 0 {
		t.Fatalf("the day has %d paid and %d failed payouts; want both", len(day.Paid), len(day.Failed))
	}
	c, err := wechatpay.NewClient(day.Srv.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	victim := day.Paid[len(day.Paid)/2]
	victimLine := fmt.Sprintf("%s %s %d", victim.OutDetailNo, victim.Voucher, victim.Amount)
	ghostLedger := filepath.Join(t.TempDir(), "ghost.db")
	successLedger(t, ghostLedger, "GHOSTKEY1", 777)

	tests := []struct {
		name                        string
		faults                      []wechatpaytest.BillFault
		ledgers                     []string // besides the processor's
		wantMatched                 int
		wantMissing, wantMismatched []string // lines' "key voucher ledger_fen bill_fen"
		wantBillSHA1                bool
	}{
		{name: "a clean day", wantMatched: len(day.Paid) + len(day.Failed), wantBillSHA1: true},
		{name: "missing debit", faults: []wechatpaytest.BillFault{wechatpaytest.BillMissingRow(victim.OutDetailNo)},
			wantMatched: len(day.Paid) - 1 + len(day.Failed), wantMissing: []string{victimLine + " 0"}, wantBillSHA1: true},
		{name: "extra debit", faults: []wechatpaytest.BillFault{wechatpaytest.BillExtraDebit(time.Now(), 123)},
			wantMatched: len(day.Paid) + len(day.Failed), wantMissing: []string{" EXTRA 0 123"}, wantBillSHA1: true},
		{name: "amount off by one fen", faults: []wechatpaytest.BillFault{wechatpaytest.BillAmountOff(victim.OutDetailNo, 1)},
			wantMatched: len(day.Paid) - 1 + len(day.Failed), wantMismatched: []string{fmt.Sprintf("%s %d", victimLine, victim.Amount+1)}, wantBillSHA1: true},
		{name: "a SUCCESS in a ledger the bill lacks", ledgers: []string{ghostLedger},
			wantMatched: len(day.Paid) + len(day.Failed), wantMissing: []string{"GHOSTKEY1 GHOSTDETAIL1 777 0"}, wantBillSHA1: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			day.Srv.ClearFaults()
			day.Srv.SpoilFundFlow(tc.faults...)
			bill, sum, err := fetch(t, c, day.Date)
			if err != nil {
				t.Fatal(err)
			}
			r, err := reconcile.Reconcile(context.Background(), reconcile.Input{Date: day.Date, Ledgers: append([]string{day.Config.Ledger}, tc.ledgers...),
				Bill: bill, BillSHA1: sum, Query: reconcile.ClientQuery(c)})
			if err != nil {
				t.Fatal(err)
			}
			if r.Mode != ledger.RunThreeWay || (r.BillSHA1 != "") != tc.wantBillSHA1 {
				t.Errorf("mode %s, bill sha1 %q", r.Mode, r.BillSHA1)
			}
			missing := lines(r, reconcile.Missing)
			if got, want := fmt.Sprint(missing), fmt.Sprint(tc.wantMissing); got != want {
				t.Errorf("missing %s, want %s", got, want)
			}
			if got, want := fmt.Sprint(lines(r, reconcile.Mismatched)), fmt.Sprint(tc.wantMismatched); got != want {
				t.Errorf("mismatched %s, want %s", got, want)
			}
			if r.Matched != tc.wantMatched || r.OK() != (tc.wantMissing == nil && tc.wantMismatched == nil) {
				t.Errorf("%s; OK %v; want %d matched", r.Summary(), r.OK(), tc.wantMatched)
			}
			if t.Failed() {
				var b strings.Builder
				r.WriteText(&b)
				t.Log(b.String())
			}
		})
	}

	t.Run("wrong hash", func(t *testing.T) {
		day.Srv.ClearFaults()
		day.Srv.SpoilFundFlow(wechatpaytest.BillWrongHash)
		_, _, billErr := fetch(t, c, day.Date)
		r, err := reconcile.Reconcile(context.Background(), reconcile.Input{Date: day.Date, Ledgers: []string{day.Config.Ledger}, BillErr: billErr})
		if err != nil {
			t.Fatal(err)
		}
		if r.Bill != ledger.RunBillRefused || r.Matched != 0 || r.Missing != len(day.Paid)+1 || r.OK() {
			t.Fatalf("%s, bill %s; want every one of %d payouts and the bill missing", r.Summary(), r.Bill, len(day.Paid))
		}
		keys := map[string]bool{}
		for _, l := range r.Lines {
			keys[l.Key] = true
		}
		for _, p := range day.Paid {
			if !keys[p.OutDetailNo] {
				t.Errorf("%s not reported", p.OutDetailNo)
			}
		}
	})

	t.Run("WeChat's query disagrees", func(t *testing.T) {
		day.Srv.ClearFaults()
		bill, sum, _ := fetch(t, c, day.Date)
		real := reconcile.ClientQuery(c)
		asked := 0
		q := func(ctx context.Context, p ledger.Paid) (reconcile.Remote, error) {
			asked++
			switch p.OutDetailNo {
			case victim.OutDetailNo:
				return reconcile.Remote{State: "FAIL", Voucher: p.Voucher}, nil
			case day.Paid[0].OutDetailNo:
				return reconcile.Remote{}, fmt.Errorf("query: %w", wechatpay.ErrNotFound)
			}
			return real(ctx, p)
		}
		r, err := reconcile.Reconcile(context.Background(), reconcile.Input{Date: day.Date, Ledgers: []string{day.Config.Ledger}, Bill: bill, BillSHA1: sum, Query: q})
		if err != nil {
			t.Fatal(err)
		}
		if asked != len(day.Paid) {
			t.Errorf("asked WeChat about %d payouts, want every paid one: %d", asked, len(day.Paid))
		}
		p0 := day.Paid[0]
		if got, want := fmt.Sprint(lines(r, reconcile.Missing), lines(r, reconcile.Mismatched)),
			fmt.Sprint([]string{fmt.Sprintf("%s %s %d %d", p0.OutDetailNo, p0.Voucher, p0.Amount, p0.Amount)}, []string{fmt.Sprintf("%s %d", victimLine, victim.Amount)}); got != want {
			t.Fatalf("missing, mismatched = %s, want %s", got, want)
		}
	})

	t.Run("beyond the query window the bill alone", func(t *testing.T) {
		day.Srv.ClearFaults()
		bill, sum, _ := fetch(t, c, day.Date)
		q := func(context.Context, ledger.Paid) (reconcile.Remote, error) {
			t.Error("WeChat asked about a day beyond its query window")
			return reconcile.Remote{}, nil
		}
		r, err := reconcile.Reconcile(context.Background(), reconcile.Input{Date: day.Date, Ledgers: []string{day.Config.Ledger}, Bill: bill, BillSHA1: sum,
			Query: q, Now: time.Now().Add(reconcile.QueryWindow + 24*time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Mode != ledger.RunBillOnly || !r.OK() {
			t.Fatalf("mode %s, %s; want a clean bill-only day", r.Mode, r.Summary())
		}
	})
}
