package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/paystream/paystream/pkg/ledger"
)

// Scrape-time reads.
const (
	// ScrapeTimeout bounds each read a scrape makes (the ledger, the consumer, readiness).
	ScrapeTimeout = 2 * time.Second
	// CacheFor is the least time between two reads of the ledger or the consumer: scrapes
	// closer together than this see the same values.
	CacheFor = 2 * time.Second
)

// LedgerSource is what WatchLedger reads: *ledger.DB.
type LedgerSource interface {
	Ops(ctx context.Context, now time.Time, limit int) (ledger.OpsSnapshot, error)
}

// BreakerState is one circuit breaker as the pipeline reports it: its name and gobreaker's
// state name ("closed", "half-open", "open").
type BreakerState struct {
	Name, State string
}

// breakerValue is the gauge value of a gobreaker state name: 0 closed, 1 half-open, 2 open.
var breakerValue = map[string]float64{"closed": 0, "half-open": 1, "open": 2}

// cached keeps the result of a read for CacheFor; it is safe for concurrent use, and
// concurrent scrapes share one read.
type cached[T any] struct {
	mu   sync.Mutex
	read func(ctx context.Context) (T, error)
	now  func() time.Time
	at   time.Time
	v    T
	err  error
}

func (c *cached[T]) get() (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.at.IsZero() || now.Sub(c.at) >= CacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
		c.v, c.err = c.read(ctx)
		cancel()
		c.at = c.now()
	}
	return c.v, c.err
}

var (
	descPayouts      = prometheus.NewDesc("paystream_payouts", "Payouts in the ledger, by state.", []string{"state"}, nil)
	descPayoutsFen   = prometheus.NewDesc("paystream_payouts_amount_fen", "Amount of the payouts in the ledger, by state, in fen.", []string{"state"}, nil)
	descPaidFen      = prometheus.NewDesc("paystream_paid_fen", "Amount of the payouts in state SUCCESS, in fen.", nil, nil)
	descBatches      = prometheus.NewDesc("paystream_batches", "Batches in the ledger, by rail and state.", []string{"rail", "state"}, nil)
	descParked       = prometheus.NewDesc("paystream_parked", "Parked batches and bills (waiting for an operator), by kind and code; only codes with a count appear.", []string{"kind", "code"}, nil)
	descOldestOpen   = prometheus.NewDesc("paystream_oldest_open_batch_age_seconds", "Age of the oldest non-settled batch since it was sealed; 0 when none.", nil, nil)
	descOutbox       = prometheus.NewDesc("paystream_outbox_pending", "Outbox rows written but not yet published, by kind.", []string{"kind"}, nil)
	descLedgerUp     = prometheus.NewDesc("paystream_ledger_up", "1 if the last read of the ledger for metrics worked, else 0.", nil, nil)
	descPending      = prometheus.NewDesc("paystream_consumer_pending_messages", "Messages of the shared requests consumer not yet delivered.", nil, nil)
	descAckPending   = prometheus.NewDesc("paystream_consumer_ack_pending_messages", "Messages of the shared requests consumer delivered and not yet acked.", nil, nil)
	descRedelivered  = prometheus.NewDesc("paystream_consumer_redelivered_messages", "Messages of the shared requests consumer delivered more than once and not yet acked.", nil, nil)
	descBreakerState = prometheus.NewDesc("paystream_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"breaker"}, nil)
)

// ledgerCollector emits the ledger gauges from a cached OpsSnapshot.
type ledgerCollector struct {
	snap cached[ledger.OpsSnapshot]
	now  func() time.Time
}

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPayouts, descPayoutsFen, descPaidFen, descBatches, descParked, descOldestOpen, descOutbox, descLedgerUp} {
		ch <- d
	}
}

// Collect emits paystream_ledger_up, and the other ledger gauges only when the read worked:
// stale values are never presented as current.
func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.snap.get()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descLedgerUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descLedgerUp, prometheus.GaugeValue, 1)
	for st, t := range s.Payouts {
		ch <- prometheus.MustNewConstMetric(descPayouts, prometheus.GaugeValue, float64(t.Count), st)
		ch <- prometheus.MustNewConstMetric(descPayoutsFen, prometheus.GaugeValue, float64(t.Amount), st)
	}
	ch <- prometheus.MustNewConstMetric(descPaidFen, prometheus.GaugeValue, float64(s.Payouts[ledger.PayoutSuccess].Amount))
	for _, b := range s.Batches {
		ch <- prometheus.MustNewConstMetric(descBatches, prometheus.GaugeValue, float64(b.Count), b.Rail, b.State)
	}
	for _, p := range s.Parked {
		if p.Count > 0 {
			ch <- prometheus.MustNewConstMetric(descParked, prometheus.GaugeValue, float64(p.Count), p.Kind, p.Code)
		}
	}
	age := 0.0
	if !s.OldestOpen.IsZero() {
		age = max(0, c.now().Sub(s.OldestOpen).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descOldestOpen, prometheus.GaugeValue, age)
	for _, k := range OutboxKinds {
		ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(s.OutboxPending[k]), k)
	}
}

// WatchLedger adds the ledger gauges, read from src at scrape time (at most once per
// CacheFor, each read bounded by ScrapeTimeout): paystream_payouts{state},
// paystream_payouts_amount_fen{state}, paystream_paid_fen, paystream_batches{rail,state},
// paystream_parked{kind,code}, paystream_oldest_open_batch_age_seconds,
// paystream_outbox_pending{kind} and paystream_ledger_up. When a read fails only
// paystream_ledger_up (0) is emitted. Call it at most once: a second call panics.
func (m *Metrics) WatchLedger(src LedgerSource) {
	c := &ledgerCollector{now: m.now}
	c.snap = cached[ledger.OpsSnapshot]{now: m.now, read: func(ctx context.Context) (ledger.OpsSnapshot, error) {
		return src.Ops(ctx, m.now(), 1) // the counts only: no list is shown
	}}
	m.reg.MustRegister(c)
}

// consumerCollector emits the consumer gauges from a cached ConsumerInfo.
type consumerCollector struct {
	info cached[*jetstream.ConsumerInfo]
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPending
	ch <- descAckPending
	ch <- descRedelivered
}

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ci, err := c.info.get()
	if err != nil || ci == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(ci.NumPending))
	ch <- prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(ci.NumAckPending))
	ch <- prometheus.MustNewConstMetric(descRedelivered, prometheus.GaugeValue, float64(ci.NumRedelivered))
}

// WatchConsumer adds paystream_consumer_pending_messages, _ack_pending_messages and
// _redelivered_messages from info (e.g. the shared requests consumer's Info), read at scrape
// time at most once per CacheFor, bounded by ScrapeTimeout. When info fails the three are
// absent. Call it at most once: a second call panics.
func (m *Metrics) WatchConsumer(info func(ctx context.Context) (*jetstream.ConsumerInfo, error)) {
	m.reg.MustRegister(&consumerCollector{info: cached[*jetstream.ConsumerInfo]{now: m.now, read: info}})
}

// breakerCollector emits paystream_breaker_state from a func.
type breakerCollector func() []BreakerState

func (c breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descBreakerState }

func (c breakerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range c() {
		if v, ok := breakerValue[b.State]; ok {
			ch <- prometheus.MustNewConstMetric(descBreakerState, prometheus.GaugeValue, v, b.Name)
		}
	}
}

// WatchBreakers adds paystream_breaker_state{breaker} (0 closed, 1 half-open, 2 open) from
// breakers, called at every scrape; it must be fast and safe for concurrent use (the
// pipeline's Runtime is). A state with another name is left out. Call it at most once.
func (m *Metrics) WatchBreakers(breakers func() []BreakerState) {
	m.reg.MustRegister(breakerCollector(breakers))
}

// WatchReady adds paystream_ready: 1 when ready(ctx) reports true (what /readyz answers 200
// for), else 0; called at every scrape with a ScrapeTimeout context. Call it at most once.
func (m *Metrics) WatchReady(ready func(ctx context.Context) bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "paystream_ready", Help: "1 when the processor is ready (/readyz answers 200), else 0.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
		defer cancel()
		if ready(ctx) {
			return 1
		}
		return 0
	}))
}
