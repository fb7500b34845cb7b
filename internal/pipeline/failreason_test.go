package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/testingutil"

	"golang.org/x/time/rate"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// partnerRequest holds the batch-level fields of partner test payouts (docs/wechatpay.md §6).
var partnerRequest = payout.Request{MchID: wechatpaytest.DefaultMchID, SubMchID: "1900000109", SpAppID: wechatpaytest.DefaultAppID,
	AuthorizationType: wechatpay.AuthorizationFund, TransferPurpose: wechatpay.PurposeCommission}

// followUntil runs driver passes over batch no, as the run loop would but without waiting
// for next_at, until done accepts the ledger's batch; it fails the test after 10 s.
func followUntil(t *testing.T, p *Pipeline, no string, done func(ledger.Batch) bool) ledger.Batch {
	t.Helper()
	ctx := context.Background()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		b, err := p.driver.db.Batch(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		if done(b) {
			return b
		}
		if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
			t.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("batch %s still %s (settled %v) after 10 s", no, b.State, b.Settled)
		}
	}
}

func settled(b ledger.Batch) bool { return b.Settled }

// mustPayouts fails unless each payout key has the wanted state and fail_reason.
func mustPayouts(t *testing.T, db *ledger.DB, want map[string][2]string) {
	t.Helper()
	for key, w := range want {
		py, err := db.Payout(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if got := [2]string{py.State, py.FailReason}; got != w {
			t.Fatalf("payout %s = %q, want %q (state, fail_reason)", key, got, w)
		}
	}
}

// mustOutcomes fails unless the pending outcomes are exactly want: out_detail_no → state,
// fail_reason.
func mustOutcomes(t *testing.T, db *ledger.DB, want map[string][2]string) {
	t.Helper()
	out, err := db.PendingOutcomes(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{}
	for _, o := range out {
		got[o.OutDetailNo] = [2]string{o.State, o.FailReason}
	}
	if len(got) != len(out) || len(got) != len(want) {
		t.Fatalf("pending outcomes %v, want %v", got, want)
	}
	for key, w := range want {
		if got[key] != w {
			t.Fatalf("outcome of %s = %q, want %q (state, fail_reason); all: %v", key, got[key], w, got)
		}
	}
}

// TestDriver_FailReasons: the sandbox fails members with the reasons their openids name.
// On both rails, every FAIL ends in the ledger and in its outcome with WeChat's fail_reason
// (fetched by one detail query per FAIL, none for a SUCCESS), a reason we do not know
// included, as it comes.
func TestDriver_FailReasons(t *testing.T) {
	openIDs := []string{"oD0", "fail-ACCOUNT_FROZEN-D1", "fail-TRANSFER_QUOTA_EXCEED-D2", "fail-A_REASON_NOBODY_KNOWS-D3"}
	want := map[string][2]string{
		"D0": {ledger.PayoutSuccess, ""},
		"D1": {ledger.PayoutFail, "ACCOUNT_FROZEN"},
		"D2": {ledger.PayoutFail, "TRANSFER_QUOTA_EXCEED"},
		"D3": {ledger.PayoutFail, "A_REASON_NOBODY_KNOWS"},
	}
	tests := []struct {
		name     string
		req      payout.Request
		endpoint string // the single-detail query of the rail
	}{
		{"direct", directRequest, wechatpaytest.EndpointDetailByOutNo},
		{"partner", partnerRequest, wechatpaytest.EndpointPartnerDetailOut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := wechatpaytest.NewServer(t)
			p, b := sealedBatchOf(t, srv, DefaultConfig(), slog.New(slog.DiscardHandler), tt.req, openIDs)
			if got, want := b.Rail, tt.req.Rail(); got != want {
				t.Fatalf("rail %s, want %s", got, want)
			}
			if err := p.driver.rails[b.Rail].step(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			followUntil(t, p, b.OutBatchNo, settled)
			mustPayouts(t, p.driver.db, want)
			mustOutcomes(t, p.driver.db, want)
			if got, want := srv.Stats().Requests[tt.endpoint], 3; got != want {
				t.Fatalf("%d detail queries, want %d (one per FAIL)", got, want)
			}
		})
	}
}

// pageGate is an http.RoundTripper that holds every single-detail query until the
// batch query of the detail page at offset ahead has been sent (or 5 s have passed), and
// records which of the two let it go.
type pageGate struct {
	ahead    string        // the offset query parameter of the page to wait for
	sent     chan struct{} // closed when that page's query is sent
	once     sync.Once
	mu       sync.Mutex
	released []string // "page" or "timeout", one per detail query
}

func (g *pageGate) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.Contains(r.URL.Path, "/details/out-detail-no/"):
		why := "page"
		select {
		case <-g.sent:
		case <-time.After(5 * time.Second):
			why = "timeout"
		}
		g.mu.Lock()
		g.released = append(g.released, why)
		g.mu.Unlock()
	case r.URL.Query().Get("need_query_detail") == "true" && r.URL.Query().Get("offset") == g.ahead:
		g.once.Do(func() { close(g.sent) })
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestDriver_PagesAhead: the next detail page is queried while this page's fail reasons are
// fetched, not after. The client holds the fail-reason query of page one's FAIL until page
// two's query has been sent: a driver that pages only after the reasons of the page before
// would wait out the gate's 5 s instead. Every payout still ends with its state and reason.
func TestDriver_PagesAhead(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	cfg := DefaultConfig()
	cfg.Poll.PageLimit = 20
	openIDs := make([]string, 45) // three pages: 20, 20, 5
	want := map[string][2]string{}
	for i := range openIDs {
		openIDs[i] = fmt.Sprintf("o%d", i)
		want[fmt.Sprintf("D%d", i)] = [2]string{ledger.PayoutSuccess, ""}
	}
	openIDs[3], want["D3"] = "fail-ACCOUNT_FROZEN-D3", [2]string{ledger.PayoutFail, "ACCOUNT_FROZEN"}
	p, b := sealedBatchOf(t, srv, cfg, slog.New(slog.DiscardHandler), directRequest, openIDs)
	gate := &pageGate{ahead: "20", sent: make(chan struct{})}
	api, err := wechatpay.NewClient(srv.ClientConfig(), wechatpay.WithHTTPClient(&http.Client{Transport: gate}))
	if err != nil {
		t.Fatal(err)
	}
	p.driver.api = api
	if err := p.driver.rails[b.Rail].step(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	followUntil(t, p, b.OutBatchNo, settled)
	mustPayouts(t, p.driver.db, want)
	gate.mu.Lock()
	defer gate.mu.Unlock()
	if len(gate.released) != 1 || gate.released[0] != "page" {
		t.Fatalf("fail-reason queries released by %v, want [page]: the next page was not queried while the reason was fetched", gate.released)
	}
}

// TestDriver_FailReasonDeferred: while the detail query fails (SYSTEM_ERROR, then 429), a
// FAIL is not applied and no outcome is written for it; the batch stays unsettled, an
// operator is told by out_detail_no (never the openid) once the grace is over, and a 429
// slows the detail throttle. A later pass applies each FAIL with its reason, without
// querying a detail the ledger already has as FAIL.
func TestDriver_FailReasonDeferred(t *testing.T) {
	ctx := context.Background()
	srv := wechatpaytest.NewServer(t)
	cfg := DefaultConfig()
	cfg.Poll.NotFoundGrace = 0 // overdue as soon as the batch is finished
	var logs testingutil.LockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	p, b := sealedBatchOf(t, srv, cfg, log, directRequest, []string{"oD0", "fail-ACCOUNT_FROZEN-D1", "fail-NAME_NOT_CORRECT-D2"})
	detailQueries := func() int { return srv.Stats().Requests[wechatpaytest.EndpointDetailByOutNo] }
	if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
		t.Fatal(err)
	}

	// Pass 1: every detail query answers SYSTEM_ERROR.
	srv.FailRate(wechatpaytest.EndpointDetailByOutNo, wechatpaytest.SystemError, 1)
	b = followUntil(t, p, b.OutBatchNo, func(b ledger.Batch) bool { return b.State == ledger.BatchFinished })
	if b.Settled {
		t.Fatal("batch settled with FAIL members lacking their reason")
	}
	mustPayouts(t, p.driver.db, map[string][2]string{
		"D0": {ledger.PayoutSuccess, ""}, "D1": {ledger.PayoutSealed, ""}, "D2": {ledger.PayoutSealed, ""}})
	mustOutcomes(t, p.driver.db, map[string][2]string{"D0": {ledger.PayoutSuccess, ""}})
	if got, want := detailQueries(), 2; got != want {
		t.Fatalf("%d detail queries in the first paging pass, want %d", got, want)
	}
	text := logs.String()
	if !strings.Contains(text, "level=ERROR") || !strings.Contains(text, "FAIL details without a reason") ||
		!strings.Contains(text, "out_detail_nos=\"[D1 D2]\"") {
		t.Fatalf("no ERROR line naming D1 and D2 in the log:\n%s", text)
	}

	// Pass 2: D1's reason comes; D2's query answers 429, which slows the throttle. The
	// throttle's clock stands still a tenth of a second into a second, so the 429 is early
	// in the window it was sent in (a late one is jitter, which pauses without slowing:
	// TestThrottle). A clock that read a tenth into each wall-clock second failed under load:
	// when a second ended between the send and its answer, the 429 came in a window after its
	// own, which is no reason to slow.
	frozen, clock := time.Now().Truncate(time.Second).Add(100*time.Millisecond), p.driver.detail.now
	p.driver.detail.now = func() time.Time { return frozen }
	srv.ClearFaults()
	srv.Fail(wechatpaytest.EndpointDetailByOutNo, wechatpaytest.Latency(time.Millisecond), wechatpaytest.FrequencyLimited)
	if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
		t.Fatal(err)
	}
	mustPayouts(t, p.driver.db, map[string][2]string{"D1": {ledger.PayoutFail, "ACCOUNT_FROZEN"}, "D2": {ledger.PayoutSealed, ""}})
	mustOutcomes(t, p.driver.db, map[string][2]string{
		"D0": {ledger.PayoutSuccess, ""}, "D1": {ledger.PayoutFail, "ACCOUNT_FROZEN"}})
	if got, max := p.driver.detail.Limit(), rate.Limit(cfg.RateLimit.Detail); got >= max {
		t.Fatalf("query rate %v after a 429, want below %v", got, max)
	}
	p.driver.detail.now = clock

	// Pass 3: only D2 is queried; everything is final with its reason.
	before := detailQueries()
	b, err := p.driver.db.Batch(ctx, b.OutBatchNo)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got, want := detailQueries()-before, 1; got != want {
		t.Fatalf("%d detail queries in the last pass, want %d (D1 is FAIL in the ledger already)", got, want)
	}
	if b, err = p.driver.db.Batch(ctx, b.OutBatchNo); err != nil || !b.Settled {
		t.Fatalf("batch %+v, %v; want settled", b, err)
	}
	mustOutcomes(t, p.driver.db, map[string][2]string{
		"D0": {ledger.PayoutSuccess, ""}, "D1": {ledger.PayoutFail, "ACCOUNT_FROZEN"}, "D2": {ledger.PayoutFail, "NAME_NOT_CORRECT"}})
	text = logs.String()
	if !strings.Contains(text, "fail reasons complete after the grace period") {
		t.Fatalf("no recovery line in the log:\n%s", text)
	}
	if strings.Contains(text, wechatpaytest.FailOpenIDPrefix) {
		t.Fatalf("an openid reached the log:\n%s", text)
	}
}
