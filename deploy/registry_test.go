package deploy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// fullLedger is a ledger source with something in every gauge.
type fullLedger struct{}

func (fullLedger) Ops(_ context.Context, now time.Time, _ int) (ledger.OpsSnapshot, error) {
	return ledger.OpsSnapshot{At: now, Payouts: map[string]ledger.StateTotal{ledger.PayoutSuccess: {Count: 1, Amount: 100}},
		Batches: []ledger.BatchCount{{Rail: "direct", State: ledger.BatchSealed, Count: 1}},
		Parked:  []ledger.ParkedCount{{Kind: "batch", Code: "NOT_ENOUGH", Count: 1}}, OldestOpen: now.Add(-time.Hour),
		OutboxPending: map[string]int{"outcome": 1}}, nil
}

// TestMetricNames_Registry: metricNames (what the rules and the dashboard may use) is exactly
// what the processor's registry exposes, name and type, so a metric renamed or dropped in
// internal/metrics fails here rather than silencing an alert.
func TestMetricNames_Registry(t *testing.T) {
	m := metrics.New("test")
	m.WatchLedger(fullLedger{})
	m.WatchConsumer(func(context.Context) (*jetstream.ConsumerInfo, error) { return &jetstream.ConsumerInfo{}, nil })
	m.WatchBreakers(func() []metrics.BreakerState { return []metrics.BreakerState{{Name: "b", State: "closed"}} })
	m.WatchReady(func(context.Context) bool { return true })
	m.LedgerCommitObserver()(time.Millisecond)
	m.ClaimsObserver()("claim", time.Millisecond, nil)
	m.WeChatObserver()(wechatpay.Observation{Method: "POST", Endpoint: wechatpay.EndpointName("POST", "/v3/transfer/batches"), Status: 200, Elapsed: time.Millisecond})
	m.BatchesFinished.WithLabelValues("direct", ledger.BatchFinished).Inc()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[dto.MetricType]metricType{dto.MetricType_COUNTER: counter, dto.MetricType_GAUGE: gauge, dto.MetricType_HISTOGRAM: histogram}
	exposed := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "paystream_") {
			continue
		}
		exposed[name] = true
		want, ok := metricNames[name]
		switch {
		case !ok:
			t.Errorf("the registry exposes %s, which metricNames (and deploy/README.md) lack", name)
		case types[f.GetType()] != want:
			t.Errorf("%s is a %v in the registry, metricNames says %v", name, f.GetType(), want)
		}
	}
	for name := range metricNames {
		if !exposed[name] {
			t.Errorf("metricNames lists %s, which the registry does not expose", name)
		}
	}
}
