package ops_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/pkg/ledger"
)

// Fixture values. fullOpenID must never appear in anything served or printed.
const (
	fullOpenID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
	adminToken = "s3cret-admin-token-0123"
	parkedNo   = "BP1000000000000000000002"
	stuckNo    = "BP1000000000000000000003"
	workingNo  = "BP1000000000000000000001"
	billKey    = "D1"
	failedKey  = "D2"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeLedger serves a fixed snapshot and payouts, as *ledger.DB would.
type fakeLedger struct {
	snap  ledger.OpsSnapshot
	views map[string]ledger.PayoutView
}

func (f *fakeLedger) Ops(_ context.Context, now time.Time, _ int) (ledger.OpsSnapshot, error) {
	s := f.snap
	s.At = now
	return s, nil
}

func (f *fakeLedger) Lookup(_ context.Context, key string) (ledger.PayoutView, error) {
	v, ok := f.views[key]
	if !ok {
		return v, fmt.Errorf("lookup %s: %w", key, ledger.ErrNotFound)
	}
	return v, nil
}

// newLedger returns a ledger with a working, a parked and a stuck batch (in the ledger's own
// order: oldest first, parked not first, so the page must order them), a failed payout and a
// payout on the bills rail waiting for its payee.
func newLedger() *fakeLedger {
	working := ledger.OpenBatch{OutBatchNo: workingNo, Rail: "direct", State: ledger.BatchProcessing, BatchID: "1030000071100999991182020050700019480001",
		Attempts: 1, TotalNum: 2, OpenMembers: 2, TotalAmount: 30000, SealedAt: t0.Add(-time.Hour), NextAt: t0.Add(time.Minute)}
	parked := ledger.OpenBatch{OutBatchNo: parkedNo, Rail: "direct", State: ledger.BatchSealed, LastErrorCode: "NOT_ENOUGH",
		LastErrorMessage: "资金不足", Parked: true, Attempts: 3, TotalNum: 1, OpenMembers: 1, TotalAmount: 12345,
		SealedAt: t0.Add(-30 * time.Minute), NextAt: t0.Add(10 * time.Minute)}
	stuck := ledger.OpenBatch{OutBatchNo: stuckNo, Rail: "direct", State: ledger.BatchAccepted, Attempts: 2, TotalNum: 1, OpenMembers: 1,
		TotalAmount: 100, SealedAt: t0.Add(-20 * time.Minute), NextAt: t0.Add(-15 * time.Minute)}
	failed := ledger.PayoutBrief{OutDetailNo: failedKey, Rail: "direct", State: ledger.PayoutFail, FailReason: "ACCOUNT_FROZEN",
		OutBatchNo: "BP1000000000000000000000", OpenID: fullOpenID, Amount: 500, UpdatedAt: t0.Add(-5 * time.Minute)}
	bill := ledger.PayoutBrief{OutDetailNo: billKey, Rail: ledger.RailBills, State: ledger.PayoutWaitUserConfirm,
		OutBatchNo: "BP1000000000000000000004", OpenID: fullOpenID, Amount: 88, UpdatedAt: t0.Add(-time.Minute)}
	return &fakeLedger{
		snap: ledger.OpsSnapshot{
			Instance: "P1",
			Payouts: map[string]ledger.StateTotal{ledger.PayoutSuccess: {Count: 7, Amount: 70007},
				ledger.PayoutFail: {Count: 1, Amount: 500}, ledger.PayoutSealed: {Count: 4, Amount: 42445}},
			Batches: []ledger.BatchCount{{Rail: "direct", State: ledger.BatchFinished, Count: 3},
				{Rail: "direct", State: ledger.BatchSealed, Count: 1}},
			Open:                []ledger.OpenBatch{working, parked, stuck},
			OpenTotal:           3,
			OldestOpen:          working.SealedAt,
			Parked:              []ledger.ParkedCount{{Kind: "batch", Code: "NOT_ENOUGH", Count: 1}},
			RecentFailures:      []ledger.PayoutBrief{failed},
			Received1m:          12,
			Paid1m:              ledger.StateTotal{Count: 3, Amount: 30003},
			OutboxPending:       map[string]int{"outcome": 2, "notice": 0},
			OldestUnpublishedAt: t0.Add(-3 * time.Second),
		},
		views: map[string]ledger.PayoutView{
			failedKey: {PayoutBrief: failed, MchID: "1900000109", AppID: "wxa", ReceivedAt: t0.Add(-time.Hour),
				Outcome: &ledger.OutcomeBrief{State: ledger.PayoutFail, CreatedAt: t0.Add(-5 * time.Minute)}},
			billKey: {PayoutBrief: bill, MchID: "1900000109", AppID: "wxa", ReceivedAt: t0.Add(-2 * time.Minute), StreamSeq: 41,
				Bill: &ledger.BillBrief{OutBillNo: "BL1", TransferBillNo: "1330000071100999991182020050700019480001", Attempts: 1,
					ExpireAt: t0.Add(23 * time.Hour)},
				History: []ledger.EventBrief{{At: t0.Add(-2 * time.Minute), Source: "intake", Kind: "received", ToState: ledger.PayoutReceived},
					{At: t0.Add(-time.Minute), Source: "wechatpay", Kind: "bill", FromState: ledger.PayoutSealed, ToState: ledger.PayoutWaitUserConfirm}}},
		},
	}
}

// fakeAdmin records the actions asked of it.
type fakeAdmin struct {
	mu      sync.Mutex
	retries []string
	cancels []string
	err     error
}

func (a *fakeAdmin) RetryBatch(_ context.Context, no string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.retries = append(a.retries, no)
	return a.err
}

func (a *fakeAdmin) CancelPayout(_ context.Context, key, reason string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cancels = append(a.cancels, key+":"+reason)
	return a.err
}

func (a *fakeAdmin) calls() (retries, cancels []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.retries...), append([]string(nil), a.cancels...)
}

func testRuntime(context.Context) ops.Runtime {
	return ops.Runtime{Instance: "P1", MchID: "1900000109", Product: "batch", Version: "v1.2.3",
		NATSURL: "nats://alice:hunter2@127.0.0.1:4222", Started: t0.Add(-2 * time.Hour),
		Breakers: []ops.Breaker{{Name: "direct/create", State: "open"}, {Name: "direct/query", State: "closed"}},
		InFlight: 2, ConsumerPending: 17, ConsumerAckPending: 3}
}

// config is a handler config over the fixture; admin nil makes it read-only.
func config(admin ops.Admin) ops.Config {
	cfg := ops.Config{Ledger: newLedger(), Runtime: testRuntime, Now: func() time.Time { return t0 }, Log: slog.New(slog.DiscardHandler),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "paystream_ready 1\n") })}
	if admin != nil {
		cfg.Admin, cfg.AdminToken = admin, adminToken
	}
	return cfg
}

// client is a browser-like client: cookies kept, redirects not followed.
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches path and returns status and body.
func get(t *testing.T, c *http.Client, base, path string) (int, string) {
	t.Helper()
	res, err := c.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// post sends a form with optional headers (key, value pairs) and returns the response, body
// read.
func post(t *testing.T, c *http.Client, base, path string, form url.Values, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login logs c in with the admin token and returns the CSRF token the page then carries.
func login(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	res, _ := post(t, c, base, "/admin/login", url.Values{"token": {adminToken}})
	if got, want := res.StatusCode, http.StatusSeeOther; got != want {
		t.Fatalf("login: status %d, want %d", got, want)
	}
	_, body := get(t, c, base, "/")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field on the page after login:\n%s", body)
	}
	return m[1]
}

func serve(t *testing.T, cfg ops.Config) string {
	t.Helper()
	srv := httptest.NewServer(ops.Handler(cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}
