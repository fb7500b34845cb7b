package reconcile_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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

// pay is a payout a test ledger holds: paid (SUCCESS) or failed (FAIL) at a time, under
// WeChat's number voucher.
type pay struct {
	key     string
	amount  int64
	voucher string
	state   string
	at      time.Time
}

// paidLedger writes a ledger at path holding ps, each in a batch of its own moved to its state
// at its time: a ledger's word, which no sandbox backs.
func paidLedger(t *testing.T, path string, ps ...pay) {
	t.Helper()
	ctx := context.Background()
	var now time.Time
	db, err := ledger.Open(ctx, path, ledger.WithNow(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, x := range ps {
		now = x.at
		no := fmt.Sprintf("TB%d", i)
		p := ledger.Payout{OutDetailNo: x.key, MchID: wechatpaytest.DefaultMchID, AppID: "wxa0000000000000001", OpenID: "o-" + x.key,
			Remark: "活动奖励", Rail: "direct", GroupKey: wechatpaytest.DefaultMchID + "/direct", Amount: x.amount,
			ContentHash: make([]byte, 32), StreamSeq: uint64(i + 1)}
		res, err := db.InsertPayouts(ctx, []ledger.Payout{p})
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"appid":"wxa0000000000000001","batch_name":"b","batch_remark":"b","out_batch_no":"%s","total_amount":%d,"total_num":1,"transfer_detail_list":[{"openid":"o-%s","out_detail_no":"%s","transfer_amount":%d,"transfer_remark":"活动奖励"}]}`,
			no, x.amount, x.key, x.key, x.amount)
		b := ledger.Batch{OutBatchNo: no, Rail: "direct", GroupKey: p.GroupKey, MchID: p.MchID, TotalNum: 1, TotalAmount: x.amount,
			Body: []byte(body), Members: []int64{res[0].Seq}}
		if err := db.ClaimAndSeal(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordSubmit(ctx, no, ledger.SubmitResult{Outcome: ledger.SubmitAccepted, BatchID: "W" + no, BatchStatus: ledger.BatchProcessing}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ApplyDetailPage(ctx, no, ledger.SourceQuery, 0, []ledger.DetailRow{{OutDetailNo: x.key, DetailID: x.voucher, Status: x.state, FailReason: "ACCOUNT_FROZEN"}}); err != nil {
			t.Fatal(err)
		}
	}
}

// row is a merchant-transfer row of a bill.
func row(voucher, remark string, amount int64, income bool) wechatpay.FundFlowRow {
	dir := wechatpay.FlowExpense
	if income {
		dir = wechatpay.FlowIncome
	}
	return wechatpay.FundFlowRow{BusinessName: reconcile.BusinessTransfer, BusinessType: "转账", Direction: dir,
		Amount: wechatpay.Fen(amount), Remark: remark, VoucherNo: voucher}
}

// TestReconcile_Midnight: payouts paid around midnight, and failed ones whose funds came back,
// against hand-made bills of the day and the day before.
func TestReconcile_Midnight(t *testing.T) {
	day := time.Date(2026, 3, 2, 0, 0, 0, 0, ledger.ChinaTime)
	path := filepath.Join(t.TempDir(), "ledger.db")
	paidLedger(t, path,
		pay{"A", 100, "VA", ledger.PayoutSuccess, day.Add(30 * time.Second)},              // paid on the 1st at 23:59:59, seen after midnight
		pay{"B", 200, "VB", ledger.PayoutSuccess, day.Add(24*time.Hour + 10*time.Second)}, // paid on the 2nd, seen on the 3rd
		pay{"C", 300, "VC", ledger.PayoutFail, day.Add(time.Hour)},                        // debited and returned on the 2nd
		pay{"D", 400, "VD", ledger.PayoutFail, day.Add(-time.Hour)},                       // debited on the 1st, returned on the 2nd
		pay{"E", 500, "VE", ledger.PayoutSuccess, day.Add(2 * time.Hour)},                 // paid on the 2nd
		pay{"F", 600, "VF", ledger.PayoutSuccess, day.Add(-2 * time.Hour)},                // paid on the 1st
	)
	prev := []wechatpay.FundFlowRow{row("VA", "A", 100, false), row("VD", "D", 400, false), row("VF", "F", 600, false)}
	today := []wechatpay.FundFlowRow{row("VB", "B", 200, false), row("VC", "C", 300, false), row("VC", "C", 300, true),
		row("VD", "D", 400, true), row("VE", "E", 500, false)}
	tests := []struct {
		name                      string
		prev, today               []wechatpay.FundFlowRow
		noPrev                    bool
		wantMatched               int
		wantMissing, wantMismatch []string // keys; "" for a row of no payout of ours
	}{
		{name: "all agree", prev: prev, today: today, wantMatched: 5},
		{name: "without the day before, the payout seen after midnight is missing", today: today, noPrev: true, wantMatched: 4, wantMissing: []string{"A"}},
		{name: "debited on both days", prev: prev, today: append(today[:len(today):len(today)], row("VA", "A", 100, false)), wantMatched: 4, wantMismatch: []string{"A"}},
		{name: "a return for a payout paid", prev: prev, today: append(today[:len(today):len(today)], row("VE", "E", 500, true)), wantMatched: 4, wantMismatch: []string{"E"}},
		{name: "a failed payout debited, never returned", prev: prev, today: slices.Delete(slices.Clone(today), 2, 3), wantMatched: 4, wantMissing: []string{"C"}},
		{name: "a second debit of a payout paid the day before", prev: prev, today: append(today[:len(today):len(today)], row("VF", "F", 600, false)), wantMatched: 5, wantMismatch: []string{"F"}},
		{name: "a return for no payout of ours", prev: prev, today: append(today[:len(today):len(today)], row("VX", "", 50, true)), wantMatched: 5, wantMissing: []string{""}},
		{name: "a debit found by its remark only", prev: prev, today: append(slices.Delete(slices.Clone(today), 4, 5), row("WRONG", "E", 500, false)), wantMatched: 4, wantMissing: []string{"E", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := reconcile.Input{Date: "2026-03-02", Ledgers: []string{path}, Bill: &wechatpay.FundFlowBill{Rows: tc.today}, BillSHA1: strings.Repeat("a", 40),
				Now: day.Add(40 * 24 * time.Hour)}
			if !tc.noPrev {
				in.Previous = &wechatpay.FundFlowBill{Rows: tc.prev}
			}
			r, err := reconcile.Reconcile(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			keys := func(result string) []string {
				var ks []string
				for _, l := range r.Lines {
					if l.Result == result {
						ks = append(ks, l.Key)
					}
				}
				return ks
			}
			if got, want := fmt.Sprintf("%q|%q", keys(reconcile.Missing), keys(reconcile.Mismatched)), fmt.Sprintf("%q|%q", tc.wantMissing, tc.wantMismatch); got != want {
				var b strings.Builder
				r.WriteText(&b)
				t.Fatalf("missing|mismatched keys %q, want %q\n%s", got, want, b.String())
			}
			if r.OK() != (tc.wantMissing == nil && tc.wantMismatch == nil) || r.Matched != tc.wantMatched {
				t.Fatalf("OK %v: %s; want %d matched", r.OK(), r.Summary(), tc.wantMatched)
			}
		})
	}
}

func TestReconcile_Day(t *testing.T) {
	day := reconciletest.PaidDay(t, reconciletest.Options{Count: 40, FailRate: 0.2}, wechatpaytest.WithFundFlowReturns(true))
	if len(day.Paid) == 0 || len(day.Failed) == 0 {
		t.Fatalf("the day has %d paid and %d failed payouts; want both", len(day.Paid), len(day.Failed))
	}
	c, err := wechatpay.NewClient(day.Srv.ClientConfig(), wechatpay.WithRetries(reconcile.QueryRetries), wechatpay.WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	victim := day.Paid[len(day.Paid)/2]
	victimLine := fmt.Sprintf("%s %s %d", victim.OutDetailNo, victim.Voucher, victim.Amount)
	ghostLedger := filepath.Join(t.TempDir(), "ghost.db")
	paidLedger(t, ghostLedger, pay{"GHOSTKEY1", 777, "GHOSTDETAIL1", ledger.PayoutSuccess, time.Now()})

	tests := []struct {
		name                        string
		faults                      []wechatpaytest.BillFault
		ledgers                     []string // besides the processor's
		queryErrors                 int      // batch queries answered SYSTEM_ERROR first
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
		{name: "WeChat's queries answer SYSTEM_ERROR at first", queryErrors: 3, wantMatched: len(day.Paid) + len(day.Failed), wantBillSHA1: true},
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
			if tc.queryErrors > 0 {
				day.Srv.FailNext(wechatpaytest.EndpointBatchByOutNo, wechatpaytest.SystemError, tc.queryErrors)
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

// TestReconcile_AbnormalFunds: an abnormal-fund instruction of the ledger still open is
// reported (JSON and text), without changing the day's verdict.
func TestReconcile_AbnormalFunds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	paidLedger(t, path)
	ins, err := ledger.OpenInstructions(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"out_instruction_no":"I1","appid":["wxa0000000000000001"],"transfer_mode":"TRANSFER_TO_ORIGINAL_RECEIVE_USER"}`)
	if _, _, err := ins.Record(ctx, ledger.NewInstruction{ReceiptID: "R1", OutInstructionNo: "I1", AppIDs: []string{"wxa0000000000000001"}, Body: body}); err != nil {
		t.Fatal(err)
	}
	if err := ins.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := reconcile.Reconcile(ctx, reconcile.Input{Date: "2026-03-02", Ledgers: []string{path}, Bill: &wechatpay.FundFlowBill{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Abnormal) != 1 || r.Abnormal[0].ReceiptID != "R1" || r.Abnormal[0].OutInstructionNo != "I1" || !r.OK() {
		t.Fatalf("abnormal funds %+v, ok %v; want R1/I1 reported and the day clean", r.Abnormal, r.OK())
	}
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "receipt R1 instruction I1") {
		t.Errorf("the text does not name the open instruction:\n%s", text.String())
	}
}
