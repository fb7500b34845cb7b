package wechatpay_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

var chinaTime = time.FixedZone("CST", 8*3600)

// testClock is a settable clock shared by the sandbox and the client.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// flowWorld is a sandbox and a client on one clock that starts at 2025-01-15 12:00 CST.
type flowWorld struct {
	srv *wechatpaytest.Server
	c   *wechatpay.Client
	clk *testClock
}

func newFlowWorld(t *testing.T, opts ...wechatpaytest.Option) *flowWorld {
	t.Helper()
	clk := &testClock{t: time.Date(2025, 1, 15, 12, 0, 0, 0, chinaTime)}
	srv := wechatpaytest.NewServer(t, append([]wechatpaytest.Option{wechatpaytest.WithClock(clk.Now)}, opts...)...)
	c, err := wechatpay.NewClient(srv.ClientConfig(), wechatpay.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return &flowWorld{srv: srv, c: c, clk: clk}
}

// pay creates a direct batch of the given amounts (openids from openIDs when given) and moves
// the clock until the sandbox settled it.
func (w *flowWorld) pay(t *testing.T, outBatchNo string, amounts []wechatpay.Fen, openIDs ...string) {
	t.Helper()
	req := &wechatpay.CreateBatchRequest{
		AppID: wechatpaytest.DefaultAppID, OutBatchNo: outBatchNo, BatchName: "佣金", BatchRemark: "佣金结算",
		TotalNum: len(amounts),
	}
	for i, a := range amounts {
		openID := fmt.Sprintf("o-user%d", i)
		if i < len(openIDs) {
			openID = openIDs[i]
		}
		req.TransferDetailList = append(req.TransferDetailList, wechatpay.TransferDetailInput{
			OpenID: openID, OutDetailNo: fmt.Sprintf("%sD%d", outBatchNo, i), TransferAmount: a, TransferRemark: "佣金",
		})
		req.TotalAmount += a
	}
	if _, err := w.c.CreateTransferBatch(context.Background(), req); err != nil {
		t.Fatalf("create %s: %v", outBatchNo, err)
	}
	w.clk.Add(time.Second) // TestSpeed: accepted after 20 ms, paid 600 ms later
}

// payBill creates a transfer bill the simulated payee confirms, and waits until it is paid.
func (w *flowWorld) payBill(t *testing.T, outBillNo string, amount wechatpay.Fen) {
	t.Helper()
	_, err := w.c.CreateTransferBill(context.Background(), &wechatpay.CreateTransferBillRequest{
		AppID: wechatpaytest.DefaultAppID, OutBillNo: outBillNo, TransferSceneID: "1000", OpenID: "o-bill",
		TransferAmount: amount, TransferRemark: "奖励",
		TransferSceneReportInfos: []wechatpay.TransferSceneReportInfo{{InfoType: "活动名称", InfoContent: "新春"}, {InfoType: "奖励说明", InfoContent: "红包"}},
	})
	if err != nil {
		t.Fatalf("create bill %s: %v", outBillNo, err)
	}
	w.clk.Add(time.Second)
}

// bill applies for and downloads the OPERATION bill of date and parses it.
func (w *flowWorld) bill(t *testing.T, date, tar string) (*wechatpay.FundFlowBill, error) {
	t.Helper()
	ctx := context.Background()
	d, err := w.c.ApplyFundFlowBill(ctx, wechatpay.FundFlowBillQuery{BillDate: date, AccountType: wechatpay.AccountOperation, TarType: tar})
	if err != nil {
		t.Fatalf("apply %s: %v", date, err)
	}
	csv, err := w.c.DownloadBill(ctx, d)
	if err != nil {
		return nil, err
	}
	bill, err := wechatpay.ParseFundFlowBill(csv)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, csv)
	}
	return bill, nil
}

// paymentsOn is the sandbox's own record of the payments of day (CST).
func (w *flowWorld) paymentsOn(date string) []wechatpaytest.Payment {
	var out []wechatpaytest.Payment
	for _, p := range w.srv.Payments() {
		if p.PaidAt.In(chinaTime).Format(wechatpay.BillDateLayout) == date {
			out = append(out, p)
		}
	}
	return out
}

// flowDiff is a bill's debits against the sandbox's payments of the day, matched on
// 业务凭证号 = detail_id (transfer_bill_no for bills): what a reconciliation must see.
type flowDiff struct {
	missing    []string // detail ids paid but not debited
	extra      []string // vouchers debited but never paid
	mismatched []string // detail ids debited with another amount
}

func diffFlow(bill *wechatpay.FundFlowBill, pays []wechatpaytest.Payment) flowDiff {
	debits := map[string]wechatpay.Fen{}
	for _, r := range bill.Rows {
		if r.Direction == wechatpay.FlowExpense {
			debits[r.VoucherNo] += r.Amount
		}
	}
	var d flowDiff
	for _, p := range pays {
		got, ok := debits[p.DetailID]
		switch {
		case !ok:
			d.missing = append(d.missing, p.DetailID)
		case got != p.Amount:
			d.mismatched = append(d.mismatched, p.DetailID)
		}
		delete(debits, p.DetailID)
	}
	for v := range debits {
		d.extra = append(d.extra, v)
	}
	slices.Sort(d.extra)
	return d
}

func sum(pays []wechatpaytest.Payment) wechatpay.Fen {
	var s wechatpay.Fen
	for _, p := range pays {
		s += p.Amount
	}
	return s
}

func TestFundFlowBill_Day(t *testing.T) {
	w := newFlowWorld(t, wechatpaytest.WithBillAutoConfirm(time.Second))
	w.pay(t, "B1", []wechatpay.Fen{30, 12345, 100000})
	w.payBill(t, "BILL1", 888)
	w.clk.Set(time.Date(2025, 1, 16, 9, 0, 0, 0, chinaTime))
	w.pay(t, "B2", []wechatpay.Fen{500}) // the next day: not in the 15th's bill
	w.clk.Set(time.Date(2025, 1, 16, 10, 0, 1, 0, chinaTime))
	pays := w.paymentsOn("2025-01-15")
	if len(pays) != 4 {
		t.Fatalf("%d payments on the 15th, want 4: %+v", len(pays), pays)
	}
	for _, tar := range []string{"", wechatpay.TarGzip} {
		t.Run("tar "+tar, func(t *testing.T) {
			bill, err := w.bill(t, "2025-01-15", tar)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := bill.Summary, (wechatpay.FundFlowSummary{Total: 4, ExpenseCount: 4, ExpenseAmount: sum(pays)}); got != want {
				t.Fatalf("summary %+v, want %+v", got, want)
			}
			if d := diffFlow(bill, pays); d.missing != nil || d.extra != nil || d.mismatched != nil {
				t.Fatalf("clean day disagrees: %+v", d)
			}
			byVoucher := map[string]wechatpay.FundFlowRow{}
			for _, r := range bill.Rows {
				byVoucher[r.VoucherNo] = r
			}
			for _, p := range pays {
				r := byVoucher[p.DetailID]
				if r.Remark != p.OutDetailNo || !r.Time.Equal(p.PaidAt.Truncate(time.Second)) {
					t.Fatalf("row %+v for payment %+v", r, p)
				}
			}
			if last := bill.Rows[len(bill.Rows)-1]; bill.Rows[0].Balance+bill.Rows[0].Amount-last.Balance != sum(pays) {
				t.Fatalf("balances %d … %d do not move by the day's %d fen", bill.Rows[0].Balance, last.Balance, sum(pays))
			}
		})
	}
}

func TestFundFlowBill_NotAvailable(t *testing.T) {
	day2 := time.Date(2025, 1, 16, 10, 0, 1, 0, chinaTime)
	tests := []struct {
		name    string
		now     time.Time
		q       wechatpay.FundFlowBillQuery
		wantErr error
	}{
		{"today", time.Date(2025, 1, 15, 23, 0, 0, 0, chinaTime), wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountOperation}, &wechatpay.APIError{Code: "STATEMENT_CREATING"}},
		{"next morning before ten", time.Date(2025, 1, 16, 9, 59, 59, 0, chinaTime), wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountOperation}, &wechatpay.APIError{Code: "STATEMENT_CREATING"}},
		{"future", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-01-17", AccountType: wechatpay.AccountOperation}, wechatpay.ErrParamError},
		{"basic account has no flows", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountBasic}, &wechatpay.APIError{Code: "NO_STATEMENT_EXIST"}},
		{"a day without payments", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-01-14", AccountType: wechatpay.AccountOperation}, &wechatpay.APIError{Code: "NO_STATEMENT_EXIST"}},
		{"older than three months", time.Date(2025, 5, 1, 12, 0, 0, 0, chinaTime), wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountOperation}, wechatpay.ErrInvalidRequest},
		{"no account type", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-01-15"}, wechatpay.ErrBadInput},
		{"bad date", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-1-15", AccountType: wechatpay.AccountOperation}, wechatpay.ErrBadInput},
		{"bad tar type", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountOperation, TarType: "ZIP"}, wechatpay.ErrBadInput},
		{"ready", day2, wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountOperation}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newFlowWorld(t)
			w.pay(t, "B1", []wechatpay.Fen{100})
			w.clk.Set(tt.now)
			_, err := w.c.ApplyFundFlowBill(context.Background(), tt.q)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestFundFlowBill_Faults(t *testing.T) {
	tests := []struct {
		name    string
		fault   wechatpaytest.BillFault
		wantErr error
		check   func(t *testing.T, d flowDiff, bill *wechatpay.FundFlowBill, pays []wechatpaytest.Payment)
	}{
		{name: "wrong hash", fault: wechatpaytest.BillWrongHash, wantErr: wechatpay.ErrBillHash},
		{name: "missing row", fault: wechatpaytest.BillMissingRow("B1D1"), check: func(t *testing.T, d flowDiff, _ *wechatpay.FundFlowBill, pays []wechatpaytest.Payment) {
			if d.extra != nil || d.mismatched != nil || len(d.missing) != 1 || d.missing[0] != pays[1].DetailID {
				t.Fatalf("diff %+v, want only %s missing", d, pays[1].DetailID)
			}
		}},
		{name: "extra debit", fault: wechatpaytest.BillExtraDebit(time.Date(2025, 1, 15, 15, 0, 0, 0, chinaTime), 777), check: func(t *testing.T, d flowDiff, bill *wechatpay.FundFlowBill, _ []wechatpaytest.Payment) {
			if d.missing != nil || d.mismatched != nil || len(d.extra) != 1 {
				t.Fatalf("diff %+v, want one extra debit", d)
			}
			if got := bill.Summary.ExpenseAmount; got != 100+200+777 {
				t.Fatalf("debited %d fen, want the payments' 300 and 777 never asked for", got)
			}
		}},
		{name: "amount off by one fen", fault: wechatpaytest.BillAmountOff("B1D0", 1), check: func(t *testing.T, d flowDiff, bill *wechatpay.FundFlowBill, pays []wechatpaytest.Payment) {
			if d.missing != nil || d.extra != nil || len(d.mismatched) != 1 || d.mismatched[0] != pays[0].DetailID {
				t.Fatalf("diff %+v, want only %s mismatched", d, pays[0].DetailID)
			}
			if got := bill.Summary.ExpenseAmount; got != 301 {
				t.Fatalf("debited %d fen, want 301", got)
			}
		}},
		{name: "extra debit on another day", fault: wechatpaytest.BillExtraDebit(time.Date(2025, 1, 14, 15, 0, 0, 0, chinaTime), 777), check: func(t *testing.T, d flowDiff, _ *wechatpay.FundFlowBill, _ []wechatpaytest.Payment) {
			if d.missing != nil || d.extra != nil || d.mismatched != nil {
				t.Fatalf("diff %+v, want none on the 15th", d)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newFlowWorld(t)
			w.pay(t, "B1", []wechatpay.Fen{100, 200})
			w.srv.SpoilFundFlow(tt.fault)
			w.clk.Set(time.Date(2025, 1, 16, 11, 0, 0, 0, chinaTime))
			pays := w.paymentsOn("2025-01-15")
			for _, tar := range []string{"", wechatpay.TarGzip} {
				bill, err := w.bill(t, "2025-01-15", tar)
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("tar %q: err = %v, want %v", tar, err, tt.wantErr)
				}
				if tt.check != nil {
					tt.check(t, diffFlow(bill, pays), bill, pays)
				}
			}
			if got := w.srv.Stats().Faults[tt.fault.String()]; tt.name != "extra debit on another day" && got != 2 {
				t.Fatalf("fault %s counted %d times, want 2 (one per bill)", tt.fault, got)
			}
			w.srv.ClearFaults()
			bill, err := w.bill(t, "2025-01-15", "")
			if err != nil {
				t.Fatal(err)
			}
			if d := diffFlow(bill, pays); d.missing != nil || d.extra != nil || d.mismatched != nil {
				t.Fatalf("after ClearFaults: %+v", d)
			}
		})
	}
}

func TestFundFlowBill_Returns(t *testing.T) {
	w := newFlowWorld(t, wechatpaytest.WithFundFlowReturns(true))
	w.pay(t, "B1", []wechatpay.Fen{100, 250}, "o-ok", "fail-ACCOUNT_FROZEN-u1")
	w.clk.Set(time.Date(2025, 1, 16, 11, 0, 0, 0, chinaTime))
	pays := w.paymentsOn("2025-01-15")
	bill, err := w.bill(t, "2025-01-15", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bill.Summary, (wechatpay.FundFlowSummary{Total: 3, IncomeCount: 1, IncomeAmount: 250, ExpenseCount: 2, ExpenseAmount: 350}); got != want {
		t.Fatalf("summary %+v, want %+v", got, want)
	}
	if net := bill.Summary.ExpenseAmount - bill.Summary.IncomeAmount; net != sum(pays) {
		t.Fatalf("net debit %d, want the payments' %d", net, sum(pays))
	}
	var back wechatpay.FundFlowRow
	for _, r := range bill.Rows {
		if r.Direction == wechatpay.FlowIncome {
			back = r
		}
	}
	if back.Remark != "B1D1" || back.BusinessType != wechatpaytest.FundFlowTypeReturn {
		t.Fatalf("return row %+v, want B1D1's funds back", back)
	}
}

func TestDownloadBill_Refused(t *testing.T) {
	var foreignHits atomic.Int32
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreignHits.Add(1)
		w.Write([]byte("stolen"))
	}))
	t.Cleanup(foreign.Close)
	w := newFlowWorld(t)
	w.pay(t, "B1", []wechatpay.Fen{100})
	w.clk.Set(time.Date(2025, 1, 16, 11, 0, 0, 0, chinaTime))
	ctx := context.Background()
	d, err := w.c.ApplyFundFlowBill(ctx, wechatpay.FundFlowBillQuery{BillDate: "2025-01-15", AccountType: wechatpay.AccountOperation})
	if err != nil {
		t.Fatal(err)
	}
	onHost := func(base string) *wechatpay.BillDownload {
		c := *d
		_, rest, _ := strings.Cut(d.DownloadURL, "/v3/")
		c.DownloadURL = base + "/v3/" + rest
		return &c
	}
	sandboxHTTPS := strings.Replace(w.srv.URL(), "http://", "https://", 1)
	for _, tt := range []struct {
		name    string
		d       *wechatpay.BillDownload
		wantErr error
	}{
		{"another host", onHost(foreign.URL), wechatpay.ErrForeignDownload},
		{"another scheme", onHost(sandboxHTTPS), wechatpay.ErrForeignDownload},
		{"user info", onHost(strings.Replace(w.srv.URL(), "http://", "http://u:p@", 1)), wechatpay.ErrBadInput},
		{"another hash type", &wechatpay.BillDownload{HashType: "MD5", HashValue: d.HashValue, DownloadURL: d.DownloadURL}, wechatpay.ErrBadInput},
		{"no hash", &wechatpay.BillDownload{HashType: wechatpay.HashSHA1, DownloadURL: d.DownloadURL}, wechatpay.ErrBadInput},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := w.c.DownloadBill(ctx, tt.d)
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, wechatpay.ErrNotSent) {
				t.Fatalf("err = %v, want %v and not sent", err, tt.wantErr)
			}
		})
	}
	t.Run("redirect to another host", func(t *testing.T) {
		redirect := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			http.Redirect(rw, r, foreign.URL+r.URL.RequestURI(), http.StatusFound)
		}))
		t.Cleanup(redirect.Close)
		cfg := w.srv.ClientConfig()
		cfg.BaseURL = redirect.URL
		c, err := wechatpay.NewClient(cfg, wechatpay.WithClock(w.clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.DownloadBill(ctx, onHost(redirect.URL))
		var ae *wechatpay.APIError
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusFound {
			t.Fatalf("err = %v, want the 302 as an error", err)
		}
	})
	if n := foreignHits.Load(); n != 0 {
		t.Fatalf("the foreign host got %d requests", n)
	}
	t.Run("expired", func(t *testing.T) {
		w.clk.Add(wechatpaytest.BillURLValidity)
		if _, err := w.c.DownloadBill(ctx, d); !errors.Is(err, wechatpay.ErrInvalidRequest) {
			t.Fatalf("err = %v, want INVALID_REQUEST", err)
		}
	})
}
