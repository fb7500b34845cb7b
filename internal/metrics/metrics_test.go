package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// scrape returns the text exposition of m's handler.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if got, want := rec.Code, http.StatusOK; got != want {
		t.Fatalf("scrape status %d, want %d: %s", got, want, rec.Body)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestNew_ContractNames(t *testing.T) {
	m := New("v1.2.3")
	m.WatchLedger(&fakeLedger{snap: ledger.OpsSnapshot{}})
	m.WatchBreakers(func() []BreakerState { return []BreakerState{{Name: "wechatpay-create", State: "closed"}} })
	m.WatchReady(func(context.Context) bool { return true })
	m.WatchConsumer(func(context.Context) (*jetstream.ConsumerInfo, error) { return &jetstream.ConsumerInfo{}, nil })
	m.LedgerCommitObserver()(time.Millisecond)
	m.ClaimsObserver()("claim", time.Millisecond, nil)
	m.WeChatObserver()(wechatpay.Observation{Endpoint: wechatpay.EndpointBatchCreate, Status: 200, Class: wechatpay.ClassOK, Elapsed: time.Millisecond})
	m.RateLimiterWait.WithLabelValues("create").Observe(0)
	m.OutcomePublishLag.Observe(1)
	m.BatchesFinished.WithLabelValues("direct", "FINISHED").Inc()
	text := scrape(t, m)
	// docs/ops.md's list: the alert rules and the dashboard depend on every one of these.
	for _, name := range []string{
		"paystream_intake_received_total", "paystream_intake_committed_total", "paystream_intake_duplicates_total",
		`paystream_intake_dead_lettered_total{class="invalid"}`, `paystream_intake_dead_lettered_total{class="conflict"}`,
		`paystream_intake_dead_lettered_total{class="misrouted"}`,
		`paystream_intake_stage_seconds_total{stage="fetch"} 0`, `paystream_intake_stage_seconds_total{stage="commit"} 0`,
		`paystream_wechatpay_requests_total{class="ok",endpoint="batch_create"} 1`,
		`paystream_wechatpay_requests_total{class="blocked",endpoint="bill_create"} 0`,
		`paystream_wechatpay_request_duration_seconds_bucket{endpoint="batch_create",le="0.005"} 1`,
		`paystream_wechatpay_throttled_total{endpoint="bill_query"} 0`,
		`paystream_rate_limiter_wait_seconds_count{api="create"} 1`, `paystream_rate_limiter_wait_seconds_count{api="cancel"} 0`,
		"paystream_outcome_publish_lag_seconds_count 1", `paystream_outcomes_published_total{kind="outcome"} 0`,
		`paystream_outcomes_published_total{kind="notice"} 0`, "paystream_ledger_commit_seconds_count 1",
		`paystream_claims_seconds_count{op="claim"} 1`, `paystream_claims_errors_total{op="owner"} 0`,
		`paystream_batches_finished_total{rail="direct",state="FINISHED"} 1`,
		`paystream_breaker_state{breaker="wechatpay-create"} 0`, "paystream_consumer_pending_messages 0",
		"paystream_consumer_ack_pending_messages 0", "paystream_consumer_redelivered_messages 0",
		"paystream_paid_fen 0", "paystream_oldest_open_batch_age_seconds 0", `paystream_outbox_pending{kind="outcome"} 0`,
		"paystream_ledger_up 1", "paystream_ready 1", `paystream_build_info{version="v1.2.3"} 1`,
		"go_goroutines", "process_start_time_seconds",
	} {
		if !strings.Contains(text, "\n"+name) {
			t.Errorf("the scrape has no %s", name)
		}
	}
	if strings.Contains(text, `class="not_sent"`) {
		t.Errorf("not_sent is never a class label")
	}
}

func TestWeChatObserver(t *testing.T) {
	m := New("")
	obs := m.WeChatObserver()
	for _, o := range []wechatpay.Observation{
		{Endpoint: wechatpay.EndpointBillCreate, Status: 429, Class: wechatpay.ClassAmbiguous, Code: "FREQUENCY_LIMITED", Elapsed: 20 * time.Millisecond},
		{Endpoint: wechatpay.EndpointBillCreate, Status: 403, Class: wechatpay.ClassBlocked, Code: "NOT_ENOUGH", Elapsed: 20 * time.Millisecond},
		{Endpoint: wechatpay.EndpointBillCreate, Status: 0, Class: wechatpay.ClassAmbiguous, Elapsed: 10 * time.Second},
		{Endpoint: wechatpay.EndpointBillCreate, Class: wechatpay.ClassNotSent},
	} {
		obs(o)
	}
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"ambiguous", testutil.ToFloat64(m.WeChatRequests.WithLabelValues("bill_create", "ambiguous")), 2},
		{"blocked", testutil.ToFloat64(m.WeChatRequests.WithLabelValues("bill_create", "blocked")), 1},
		{"throttled", testutil.ToFloat64(m.WeChatThrottled.WithLabelValues("bill_create")), 1},
		{"not_sent is not counted", float64(testutil.CollectAndCount(m.WeChatDuration)), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	if text := scrape(t, m); !strings.Contains(text, `paystream_wechatpay_request_duration_seconds_count{endpoint="bill_create"} 3`) {
		t.Fatalf("want 3 durations of bill_create (not_sent left out):\n%s", grep(text, "duration_seconds_count"))
	}
}

func TestClaimsObserver(t *testing.T) {
	m := New("")
	obs := m.ClaimsObserver()
	obs("claim", time.Millisecond, nil)
	obs("claim", time.Second, errors.New("bucket gone"))
	obs("claim", time.Second, context.Canceled) // shutdown, not a store failure
	obs("owner", time.Millisecond, nil)
	if got, want := testutil.ToFloat64(m.ClaimsErrors.WithLabelValues("claim")), 1.0; got != want {
		t.Fatalf("claim errors = %v, want %v", got, want)
	}
	if got, want := testutil.ToFloat64(m.ClaimsErrors.WithLabelValues("owner")), 0.0; got != want {
		t.Fatalf("owner errors = %v, want %v", got, want)
	}
	if text := scrape(t, m); !strings.Contains(text, `paystream_claims_seconds_count{op="claim"} 3`) {
		t.Fatalf("want 3 claim durations:\n%s", grep(text, "paystream_claims_seconds_count"))
	}
}

// fakeLedger is a LedgerSource answering snap or err, counting its reads.
type fakeLedger struct {
	snap  ledger.OpsSnapshot
	err   error
	reads atomic.Int32
}

func (f *fakeLedger) Ops(ctx context.Context, now time.Time, limit int) (ledger.OpsSnapshot, error) {
	f.reads.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		return ledger.OpsSnapshot{}, errors.New("a scrape read must have a deadline")
	}
	return f.snap, f.err
}

func TestWatchLedger(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	src := &fakeLedger{snap: ledger.OpsSnapshot{
		Payouts: map[string]ledger.StateTotal{
			ledger.PayoutSuccess: {Count: 3, Amount: 600}, ledger.PayoutFail: {Count: 1, Amount: 50},
		},
		Batches: []ledger.BatchCount{{Rail: "direct", State: "FINISHED", Count: 2}, {Rail: "bills", State: "SEALED", Count: 1}},
		Parked: []ledger.ParkedCount{{Kind: "batch", Code: "NOT_ENOUGH", Count: 1}, {Kind: "bill", Code: "NO_AUTH", Count: 0},
			{Kind: "bill", Code: "NOT_ENOUGH", Count: 4}},
		OldestOpen:    now.Add(-90 * time.Second),
		OutboxPending: map[string]int{"outcome": 7},
	}}
	m := New("")
	m.now = func() time.Time { return now }
	m.WatchLedger(src)
	text := scrape(t, m)
	for _, line := range []string{
		`paystream_payouts{state="SUCCESS"} 3`, `paystream_payouts{state="FAIL"} 1`,
		`paystream_payouts_amount_fen{state="SUCCESS"} 600`, `paystream_payouts_amount_fen{state="FAIL"} 50`,
		"paystream_paid_fen 600",
		`paystream_batches{rail="direct",state="FINISHED"} 2`, `paystream_batches{rail="bills",state="SEALED"} 1`,
		`paystream_parked{code="NOT_ENOUGH",kind="batch"} 1`, `paystream_parked{code="NOT_ENOUGH",kind="bill"} 4`,
		"paystream_oldest_open_batch_age_seconds 90",
		`paystream_outbox_pending{kind="outcome"} 7`, `paystream_outbox_pending{kind="notice"} 0`,
		"paystream_ledger_up 1",
	} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("the scrape has no %q:\n%s", line, grep(text, "paystream_"))
		}
	}
	if strings.Contains(text, `code="NO_AUTH"`) {
		t.Errorf("a parked code with count 0 appears")
	}

	// Within CacheFor a scrape reuses the read; after it, the ledger is read again.
	scrape(t, m)
	if got, want := src.reads.Load(), int32(1); got != want {
		t.Fatalf("reads = %d after two scrapes within %v, want %d", got, CacheFor, want)
	}
	now = now.Add(CacheFor)
	src.err = errors.New("disk I/O error")
	text = scrape(t, m)
	if got, want := src.reads.Load(), int32(2); got != want {
		t.Fatalf("reads = %d after %v, want %d", got, CacheFor, want)
	}
	if !strings.Contains(text, "\npaystream_ledger_up 0\n") {
		t.Fatalf("a failed read must say paystream_ledger_up 0:\n%s", grep(text, "paystream_ledger"))
	}
	if strings.Contains(text, "paystream_paid_fen") || strings.Contains(text, "paystream_parked{") {
		t.Fatalf("a failed read must not present stale ledger values:\n%s", grep(text, "paystream_"))
	}
}

func TestWatchBreakersAndReady(t *testing.T) {
	m := New("")
	states := []BreakerState{{Name: "a", State: "closed"}, {Name: "b", State: "half-open"}, {Name: "c", State: "open"}, {Name: "d", State: "weird"}}
	m.WatchBreakers(func() []BreakerState { return states })
	var ready atomic.Bool
	m.WatchReady(func(ctx context.Context) bool {
		_, ok := ctx.Deadline()
		return ok && ready.Load()
	})
	text := scrape(t, m)
	for _, line := range []string{`paystream_breaker_state{breaker="a"} 0`, `paystream_breaker_state{breaker="b"} 1`,
		`paystream_breaker_state{breaker="c"} 2`, "paystream_ready 0"} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("the scrape has no %q", line)
		}
	}
	if strings.Contains(text, `breaker="d"`) {
		t.Errorf("an unknown state must be left out")
	}
	ready.Store(true)
	if text := scrape(t, m); !strings.Contains(text, "\npaystream_ready 1\n") {
		t.Fatalf("want paystream_ready 1:\n%s", grep(text, "paystream_ready"))
	}
}

func TestWatchConsumer(t *testing.T) {
	js := natstest.Connect(t, natstest.Run(t))
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REQ", Subjects: []string{"req.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "proc", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := js.Publish(ctx, "req.1", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	b, err := cons.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for range b.Messages() { // delivered, never acked
	}
	m := New("")
	m.WatchConsumer(cons.Info)
	text := scrape(t, m)
	for _, line := range []string{"paystream_consumer_pending_messages 3", "paystream_consumer_ack_pending_messages 2",
		"paystream_consumer_redelivered_messages 0"} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("the scrape has no %q:\n%s", line, grep(text, "paystream_consumer"))
		}
	}

	// A consumer that cannot be read leaves the gauges out.
	m2 := New("")
	m2.WatchConsumer(func(context.Context) (*jetstream.ConsumerInfo, error) { return nil, jetstream.ErrConsumerNotFound })
	if text := scrape(t, m2); strings.Contains(text, "paystream_consumer_") {
		t.Fatalf("want no consumer gauges when the consumer cannot be read:\n%s", grep(text, "paystream_consumer"))
	}
}

// grep returns the lines of text containing s, for failure messages.
func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
