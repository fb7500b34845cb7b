package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/paystream/paystream/internal/browsertest"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestRun_Operate runs a processor with its operator listener against a sandbox merchant
// whose balance is too low: the batch parks on NOT_ENOUGH, and an operator sees it on every
// surface (readyz, metrics, status.json, the page in a real browser) and, after topping up,
// retries it from the page, under the same number, to its end.
func TestRun_Operate(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithBalance(1), wechatpaytest.WithSpeed(60)) // 1 fen: too little for any batch
	cfg := testConfig(t, srv)
	cfg.HTTP = HTTPConfig{Listen: "127.0.0.1:0", AdminToken: "operate-test-admin-token"}
	cfg.Pipeline.Submit.ParkedRetry = time.Hour // only the operator's retry sends it again
	cfg.Pipeline.Intake.FetchBatch = 10         // full fetches, which the fetch stage's clock counts
	addrs := make(chan Addrs, 1)
	r := startProcessorWith(t, cfg, io.Discard, func(a Addrs) { addrs <- a })
	base := "http://" + (<-addrs).HTTP
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate, o.AppIDs = 40, 11, 0, 0, 0, o.AppIDs[:1] // one group: one batch
	sent := publish(t, r.js, o)

	// Every payout is sealed, and every batch parked (the requests fall in a few groups).
	var parked []ledger.OpenBatch
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		var s ops.Status
		if err := getJSON(base+"/status.json", &s); err != nil {
			return false, err.Error()
		}
		parked = parked[:0]
		for _, b := range s.Ledger.Open {
			if b.Parked && b.LastErrorCode == "NOT_ENOUGH" {
				parked = append(parked, b)
			}
		}
		return s.Ledger.Payouts[ledger.PayoutSealed].Count == len(sent.valid) && len(parked) == s.Ledger.OpenTotal,
			fmt.Sprintf("payouts %v, open batches %+v", s.Ledger.Payouts, s.Ledger.Open)
	})
	for _, b := range parked {
		if b.LastErrorMessage == "" || b.Attempts != 1 {
			t.Errorf("parked batch without WeChat's message, or sent again before the operator acted: %+v", b)
		}
	}

	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d %q: an open-for-business replica with a parked batch is ready", code, body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`paystream_parked{code="NOT_ENOUGH",kind="batch"} %d`, len(parked)),
		`paystream_wechatpay_requests_total{class="blocked",endpoint="batch_create"}`,
		`paystream_ready 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if committed := metricValue(metrics, "paystream_intake_committed_total"); committed < 1 {
		t.Errorf("paystream_intake_committed_total = %v after a publish", committed)
	}
	for _, stage := range []string{"fetch", "validate", "claim", "commit"} {
		if busy := metricValue(metrics, `paystream_intake_stage_seconds_total{stage="`+stage+`"}`); busy <= 0 {
			t.Errorf("intake's %s stage counted %v s for 40 payouts in groups of 10", stage, busy)
		}
	}

	first := parked[0]
	var key string
	for k := range sent.valid {
		if v, err := lookup(cfg.Ledger, k); err == nil && v.OutBatchNo == first.OutBatchNo {
			key = k
			break
		}
	}
	browser := browsertest.New(t)
	ctx, cancel := context.WithTimeout(browser, 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#open tr.parked"))); err != nil {
		t.Fatal(err)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#open tr.parked")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{first.OutBatchNo, "NOT_ENOUGH", first.LastErrorMessage, "top up the merchant's operating account"} {
		if !strings.Contains(row, want) {
			t.Errorf("the parked row %q lacks %q", row, want)
		}
	}
	browsertest.Screenshot(t, ctx, filepath.Join(dir, "status.png"))

	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Submit(chromedp.CSS("#lookup")),
		chromedp.WaitVisible(chromedp.CSS("#payout")),
	); err != nil {
		t.Fatal(err)
	}
	page, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#payout")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page, first.OutBatchNo) || !strings.Contains(page, "SEALED") {
		t.Errorf("the lookup of %s does not show it SEALED in batch %s: %q", key, first.OutBatchNo, page)
	}
	if openid := sent.records[key].Req.OpenID; strings.Contains(page, openid) {
		t.Errorf("the lookup shows the full openid %s", openid)
	}
	browsertest.Screenshot(t, ctx, filepath.Join(dir, "payout.png"))

	// The operator tops up and retries the first batch from the page, the others with the
	// token (a script): the same numbers are sent again and paid.
	srv.TopUp(wechatpay.Fen(1_000_000_000))
	form := `form[action="/admin/batches/` + first.OutBatchNo + `/retry"]`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), cfg.HTTP.AdminToken),
		chromedp.Submit(chromedp.CSS(`form[action="/admin/login"]`)),
		chromedp.WaitVisible(chromedp.CSS(form)),
		chromedp.Submit(chromedp.CSS(form)),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	); err != nil {
		t.Fatal(err)
	}
	for _, b := range parked[1:] {
		req, err := http.NewRequest(http.MethodPost, base+"/admin/batches/"+b.OutBatchNo+"/retry", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+cfg.HTTP.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("retry %s with the token: %s", b.OutBatchNo, resp.Status)
		}
	}
	db, err := ledger.OpenReadOnly(context.Background(), cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, len(sent.valid), time.Minute)
	for _, p := range parked {
		b, err := db.Batch(context.Background(), p.OutBatchNo)
		if err != nil {
			t.Fatal(err)
		}
		if !ledger.BatchFinal(b.State) || b.BatchID == "" || b.Attempts != 2 {
			t.Errorf("batch %s after the retry: %s %q, %d attempts (want 2: parked, then the operator's)", b.OutBatchNo, b.State, b.BatchID, b.Attempts)
		}
	}
	sum, err := db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var sealed int
	for _, n := range sum.Batches {
		sealed += n
	}
	if got := len(srv.Batches()); got != sealed || sealed != len(parked) {
		t.Errorf("the sandbox holds %d batches, the ledger sealed %d, %d were parked: a retry must reuse the number", got, sealed, len(parked))
	}
}

// lookup reads one payout from the ledger file at path.
func lookup(path, key string) (ledger.PayoutView, error) {
	db, err := ledger.OpenReadOnly(context.Background(), path)
	if err != nil {
		return ledger.PayoutView{}, err
	}
	defer db.Close()
	return db.Lookup(context.Background(), key)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// metricValue is the value of an unlabelled sample in a Prometheus text exposition; -1 when
// absent.
func metricValue(exposition, name string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// TestRun_OperateCancelBill: on transfer bills, an operator cancels a bill its payee has not
// confirmed from the status page's endpoint (with the token, as a script would): the cancel
// goes the way an upstream cancel goes, the bill ends CANCELLED at WeChat and in the ledger,
// and a cancel of an unknown key is refused at the door.
func TestRun_OperateCancelBill(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(60), func(o *wechatpaytest.Options) {
		o.Product = "bills"
		o.BillAcceptDelay = 0
		o.BillAutoConfirm = time.Hour // nobody confirms during the test
		o.BillConfirmTimeout = 24 * time.Hour
	})
	cfg := billsConfig(t, srv)
	cfg.HTTP = HTTPConfig{Listen: "127.0.0.1:0", AdminToken: "operate-test-admin-token"}
	addrs := make(chan Addrs, 1)
	r := startProcessorWith(t, cfg, io.Discard, func(a Addrs) { addrs <- a })
	base := "http://" + (<-addrs).HTTP
	o := synth.DefaultOptions()
	o.Product = synth.ProductBills
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate, o.NoConfirmRate, o.DeclineRate = 5, 12, 0, 0, 0, 0, 0
	sent := publish(t, r.js, o)
	var key string
	for k := range sent.valid {
		key = k
		break
	}
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		v, err := lookup(cfg.Ledger, key)
		return err == nil && v.State == ledger.PayoutWaitUserConfirm, fmt.Sprintf("%+v %v", v.PayoutBrief, err)
	})

	post := func(path string) int {
		req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader("reason=operator"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+cfg.HTTP.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/admin/payouts/" + key + "/cancel"); code != http.StatusOK {
		t.Fatalf("cancel %s: HTTP %d", key, code)
	}
	if code := post("/admin/payouts/BAD-KEY!/cancel"); code != http.StatusBadRequest {
		t.Errorf("cancel of an invalid key: HTTP %d, want 400", code)
	}
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		v, err := lookup(cfg.Ledger, key)
		return err == nil && v.State == ledger.PayoutCancelled, fmt.Sprintf("%+v %v", v.PayoutBrief, err)
	})
	state := "no such bill"
	for _, b := range srv.Bills() {
		if b.OutBillNo == key {
			state = b.State
		}
	}
	if state != wechatpay.BillCancelled {
		t.Errorf("the sandbox's bill %s: %s, want CANCELLED", key, state)
	}
}
