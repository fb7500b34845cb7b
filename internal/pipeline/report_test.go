package pipeline

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestParkedCode_AgreesWithClassify: the ledger's one definition of "parked" and the client's
// classes agree: every WeChat code that parks is ClassBlocked (PARAM_ERROR parks only after an
// unanswered attempt, RAIL_NOT_CONFIGURED is ours), and every blocked code parks. Each parked
// code also has its own action for the operator.
func TestParkedCode_AgreesWithClassify(t *testing.T) {
	blockedErr := func(code string) error { return &wechatpay.APIError{StatusCode: 403, Code: code} }
	parked := []string{"NOT_ENOUGH", "NO_AUTH", "ACCOUNTERROR", "QUOTA_EXCEED", "SIGN_ERROR", "APPID_MCHID_NOT_MATCH",
		"INVALID_REQUEST", "PARAM_ERROR", codeRailNotConfigured}
	// Every code the client names, and some it does not.
	all := []string{"SYSTEM_ERROR", "FREQUENCY_LIMITED", "FREQUENCY_LIMIT_EXCEED", "RATELIMIT_EXCEEDED", "FREQUENCY_LIMIT",
		"NOT_FOUND", "ALREADY_EXISTS", "NO_SUCH_CODE", "", "TRANSPORT", "TIMEOUT", "BREAKER_OPEN", sendingCode}
	all = append(all, parked...)
	generic := ParkedAction("NO_SUCH_CODE", payout.RailDirect)
	for _, code := range all {
		t.Run(code, func(t *testing.T) {
			class := wechatpay.Classify(blockedErr(code))
			if ledger.ParkedCode(code) {
				if code != "PARAM_ERROR" && code != codeRailNotConfigured && class != wechatpay.ClassBlocked {
					t.Fatalf("ledger parks %s but the client classifies it %s", code, class)
				}
				for _, rail := range []string{payout.RailDirect, payout.RailBills} {
					if ParkedAction(code, rail) == generic {
						t.Fatalf("parked code %s on %s has only the generic action", code, rail)
					}
				}
				return
			}
			if class == wechatpay.ClassBlocked {
				t.Fatalf("the client classifies %s blocked but the ledger does not park it", code)
			}
		})
	}
}

// TestDriver_ReportsFinishedBatch: a batch settled by the driver is logged once as final with
// its sums and counted by rail and state; the rate limiters' waits are observed; Runtime shows
// every breaker closed and nothing in flight.
func TestDriver_ReportsFinishedBatch(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	m := metrics.New("")
	var logs testingutil.LockedBuffer
	p, b := sealedOn(t, srv, DefaultConfig(), Deps{Log: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: m},
		payout.RailDirect, directRequest, []string{"oD0", "fail-ACCOUNT_FROZEN-D1"})
	ctx := context.Background()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !b.Settled {
		p.driver.handle(ctx, b)
		var err error
		if b, err = p.driver.db.Batch(ctx, b.OutBatchNo); err != nil {
			t.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("batch %s still %s after 10 s", b.OutBatchNo, b.State)
		}
	}
	p.driver.finishes.check(ctx, b.OutBatchNo) // as a callback would: no second report
	if got, want := testutil.ToFloat64(m.BatchesFinished.WithLabelValues(payout.RailDirect, ledger.BatchFinished)), 1.0; got != want {
		t.Fatalf("batches finished = %v, want %v", got, want)
	}
	if got, want := strings.Count(logs.String(), `msg="batch final"`), 1; got != want {
		t.Fatalf("%d batch final lines, want %d:\n%s", got, want, logs.String())
	}
	for _, attr := range []string{"rail=direct", "out_batch_no=" + b.OutBatchNo, "state=FINISHED", "success_num=1", "success_amount=100",
		"fail_num=1", "fail_amount=100"} {
		if line := lineWith(logs.String(), `msg="batch final"`); !strings.Contains(line, attr) {
			t.Fatalf("batch final line %q lacks %s", line, attr)
		}
	}
	if got, want := p.progress.finished.Load(), int64(1); got != want {
		t.Fatalf("progress counted %d finished batches, want %d", got, want)
	}
	text := scrapeText(t, m)
	for _, s := range []string{`paystream_rate_limiter_wait_seconds_count{api="create"} 1`, `paystream_rate_limiter_wait_seconds_count{api="detail"} 1`} {
		if !strings.Contains(text, s) {
			t.Fatalf("want %s in the scrape", s)
		}
	}
	r := p.Runtime()
	if got, want := len(r.Breakers), 6; got != want {
		t.Fatalf("%d breakers, want %d", got, want)
	}
	for _, br := range r.Breakers {
		if br.Name == "" || br.State != "closed" {
			t.Fatalf("breaker %+v, want a closed named breaker", br)
		}
	}
	if got, want := r.InFlight, 0; got != want {
		t.Fatalf("in flight %d, want %d", got, want)
	}
}

// TestDriver_InFlight: a batch handed to a worker is in flight until its step ends.
func TestDriver_InFlight(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	srv.FailNext(wechatpaytest.EndpointCreateBatch, wechatpaytest.Latency(time.Hour), 1)
	p, b := sealedBatch(t, srv, 1)
	cfg := p.driver.submit
	cfg.Workers = 1
	p.driver.submit = cfg
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.driver.run(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for p.Runtime().InFlight != 1 { // a bounded poll of the worker's state
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("batch %s never in flight", b.OutBatchNo)
		}
	}
	cancel()
	<-done
}

// fakePublisher is a watermill publisher that acks every message at once.
type fakePublisher struct{}

func (fakePublisher) Publish(string, ...*message.Message) error { return nil }
func (fakePublisher) Close() error                              { return nil }

// TestOutcomes_Metrics: each published outcome is counted by kind with its lag from the row's
// creation, and the paid ones reach the progress line.
func TestOutcomes_Metrics(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	m := metrics.New("")
	p, b := sealedOn(t, srv, DefaultConfig(), Deps{Log: slog.New(slog.DiscardHandler), Metrics: m},
		payout.RailDirect, directRequest, []string{"oD0", "oD1", "fail-ACCOUNT_FROZEN-D2"})
	followUntil(t, p, b.OutBatchNo, settled)
	p.outcomes.pub = fakePublisher{}
	if err := p.outcomes.drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := testutil.ToFloat64(m.OutcomesPublished.WithLabelValues("outcome")), 3.0; got != want {
		t.Fatalf("outcomes published = %v, want %v", got, want)
	}
	if got, want := testutil.CollectAndCount(m.OutcomePublishLag), 1; got != want {
		t.Fatalf("%d lag series, want %d", got, want)
	}
	if text := scrapeText(t, m); !strings.Contains(text, "paystream_outcome_publish_lag_seconds_count 3") {
		t.Fatalf("want 3 lags observed")
	}
	if got, want := [3]int64{p.progress.paid.Load(), p.progress.paidFen.Load(), p.progress.failed.Load()}, [3]int64{2, 200, 1}; got != want {
		t.Fatalf("progress paid, fen, failed = %v, want %v", got, want)
	}
}

// TestProgress_Report: a line per interval in which something happened, nothing when idle but
// one idle line every idleEvery.
func TestProgress_Report(t *testing.T) {
	var logs testingutil.LockedBuffer
	p := &progress{log: slog.New(slog.NewTextHandler(&logs, nil)), every: 30 * time.Second, idleEvery: 10 * time.Minute,
		inFlight: func() int { return 0 }}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p.lastLine = t0
	ctx := context.Background()
	tests := []struct {
		name   string
		at     time.Duration
		before func()
		want   string // the line's message and attributes; "" for none
	}{
		{"idle interval: nothing", 30 * time.Second, nil, ""},
		{"work", time.Minute, func() { p.received.Add(5); p.committed.Add(4); p.paid.Add(2); p.paidFen.Add(300) },
			`msg=progress in_flight=0 received=5 committed=4 dead_lettered=0 paid=2 paid_fen=300`},
		{"counters start again", 90 * time.Second, nil, ""},
		{"still idle", 10 * time.Minute, nil, ""},
		{"idle line", 11 * time.Minute, nil, `msg="idle: nothing received or paid"`},
		{"not again soon", 15 * time.Minute, nil, ""},
		{"a batch in flight is work", 16 * time.Minute, func() { p.inFlight = func() int { return 1 } }, `msg=progress in_flight=1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(logs.String())
			if tt.before != nil {
				tt.before()
			}
			p.report(ctx, t0.Add(tt.at))
			got := strings.TrimSpace(logs.String()[before:])
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Fatalf("logged %q, want %q", got, tt.want)
			}
		})
	}
}

// lineWith returns the first line of text containing s.
func lineWith(text, s string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// scrapeText returns m's text exposition, as a scrape gets it.
func scrapeText(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
