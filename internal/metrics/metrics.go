// Package metrics holds the Prometheus metrics of one processor: the counters and histograms
// the pipeline, the WeChat Pay client, the claims store and the ledger feed as they work, and
// gauges computed at scrape time from the ledger, the JetStream consumer, the circuit breakers
// and readiness. The names are a contract with the alert rules and the dashboard in deploy/:
// base units, _total on counters, no per-payout labels.
//
// A Metrics owns its own registry, so tests and several processors in one process never
// collide. Every method is safe for concurrent use.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// Label values known in advance: their series exist (at 0) from the start, so a rate or an
// increase over them is defined before the first event.
var (
	// DeadLetterClasses are the class label values of paystream_intake_dead_lettered_total.
	DeadLetterClasses = []string{"invalid", "conflict", "misrouted"}
	// Endpoints are the endpoint label values of the WeChat Pay metrics (wechatpay.EndpointName).
	Endpoints = []string{
		wechatpay.EndpointBatchCreate, wechatpay.EndpointBatchQuery, wechatpay.EndpointBatchDetailQuery,
		wechatpay.EndpointPartnerBatchCreate, wechatpay.EndpointPartnerBatchQuery, wechatpay.EndpointPartnerDetailQuery,
		wechatpay.EndpointBillCreate, wechatpay.EndpointBillQuery, wechatpay.EndpointBillCancel,
		wechatpay.EndpointFundFlowBill, wechatpay.EndpointBillDownload, wechatpay.EndpointOther,
	}
	// Classes are the class label values of paystream_wechatpay_requests_total: every
	// wechatpay.Class but not_sent (nothing was sent, so nothing is counted).
	Classes = []string{
		wechatpay.ClassOK.String(), wechatpay.ClassAmbiguous.String(), wechatpay.ClassRejected.String(),
		wechatpay.ClassBlocked.String(), wechatpay.ClassNotFound.String(),
	}
	// APIs are the api label values of paystream_rate_limiter_wait_seconds.
	APIs = []string{"create", "query", "detail", "cancel"}
	// OutboxKinds are the kind label values of paystream_outcomes_published_total and
	// paystream_outbox_pending.
	OutboxKinds = []string{"outcome", "notice"}
	// ClaimsOps are the op label values of the claims metrics.
	ClaimsOps = []string{"claim", "owner"}
	// IntakeStages are the stage label values of paystream_intake_stage_seconds_total, in
	// the order a group goes through them.
	IntakeStages = []string{"fetch", "validate", "claim", "commit"}
	// WatchedStages are the stage label values of paystream_stage_busy_seconds: the pipeline
	// stages whose every piece of work ends in seconds (internal/pipeline's watch).
	WatchedStages = []string{"validate", "claim", "commit", "seal"}
)

// Histogram buckets, in seconds.
var (
	// WeChatBuckets span 5 ms to 30 s: a healthy answer takes tens of milliseconds, a
	// timeout tens of seconds.
	WeChatBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	// LedgerBuckets span 0.1 ms to 1 s: an fsync of the WAL is a millisecond or so.
	LedgerBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	// LagBuckets span 10 ms to 10 min: from a healthy publish to a NATS outage.
	LagBuckets = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	// WaitBuckets span 1 ms to 10 s: most waits are zero, a paused throttle waits to the
	// next whole second.
	WaitBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// ClaimsBuckets span 0.5 ms to 10 s: a pipelined KV create is a round trip, a
	// resolution after a lost connection seconds.
	ClaimsBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// Metrics is one processor's metrics. The exported counters and histograms are for the
// packages that count (the pipeline); the Watch methods add the scrape-time gauges. A nil
// *Metrics is not valid: callers that may have none create one with New("").
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time // the scrape-time clock; tests set it

	// IntakeReceived counts request messages fetched from the shared consumer.
	IntakeReceived prometheus.Counter
	// IntakeCommitted counts requests newly committed to the ledger.
	IntakeCommitted prometheus.Counter
	// IntakeDuplicates counts requests that were redeliveries or are owned by another
	// processor (DUPLICATE).
	IntakeDuplicates prometheus.Counter
	// IntakeHandedBack counts request messages handed back (naked) because another
	// processor claimed their key for the very same message and may not have committed it.
	IntakeHandedBack prometheus.Counter
	// IntakeDeadLettered counts dead-lettered requests by class (DeadLetterClasses).
	IntakeDeadLettered *prometheus.CounterVec
	// IntakeStageSeconds adds up the wall time each intake stage spends on its groups, by
	// stage (IntakeStages): fetch waits for the server to deliver a full group (a short
	// fetch, which means there is no backlog, is not counted), validate decodes and checks
	// it, claim learns its keys' owners, commit writes the ledger and acks. The stages
	// overlap, each on a goroutine of its own, so each rate is the share of the time that
	// stage was busy: the one near 1 under a backlog is what bounds intake.
	IntakeStageSeconds *prometheus.CounterVec
	// StageBusy is how long each watched stage (WatchedStages) has been on its current piece
	// of work, 0 when it waits for work, as the pipeline last looked (every few seconds): a
	// stage on one piece for a minute or more is stuck, holding payouts.
	StageBusy *prometheus.GaugeVec
	// WeChatRequests counts HTTP exchanges with WeChat Pay by endpoint and class; fed by
	// WeChatObserver.
	WeChatRequests *prometheus.CounterVec
	// WeChatDuration observes each exchange's duration by endpoint; fed by WeChatObserver.
	WeChatDuration *prometheus.HistogramVec
	// WeChatThrottled counts HTTP 429 answers by endpoint; fed by WeChatObserver.
	WeChatThrottled *prometheus.CounterVec
	// RateLimiterWait observes how long a call waited for its rate limiter, by api (APIs).
	RateLimiterWait *prometheus.HistogramVec
	// OutcomePublishLag observes, per published outbox row, the time from the row's creation
	// in the ledger to its publish ack.
	OutcomePublishLag prometheus.Histogram
	// OutcomesPublished counts published outbox rows by kind (OutboxKinds).
	OutcomesPublished *prometheus.CounterVec
	// LedgerCommit observes each ledger write transaction; fed by LedgerCommitObserver.
	LedgerCommit prometheus.Histogram
	// ClaimsDuration observes claims store calls by op; fed by ClaimsObserver.
	ClaimsDuration *prometheus.HistogramVec
	// ClaimsErrors counts failed claims store calls by op; fed by ClaimsObserver.
	ClaimsErrors *prometheus.CounterVec
	// BatchesFinished counts batches reaching a final state in this process, by rail and
	// state.
	BatchesFinished *prometheus.CounterVec
	// InstancesSilent is how many other processor instances went silent (no heartbeat for
	// silent-after, no clean stop) as this one last looked: their claims are stranded.
	InstancesSilent prometheus.Gauge
}

// New returns Metrics on a fresh registry holding the Go and process collectors,
// paystream_build_info{version} = 1 and every counter and histogram of the package at zero.
// An empty version is reported as "unknown".
func New(version string) *Metrics {
	if version == "" {
		version = "unknown"
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		now: time.Now,
		IntakeReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_intake_received_total", Help: "Request messages fetched from the shared consumer."}),
		IntakeCommitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_intake_committed_total", Help: "Requests newly committed to the ledger."}),
		IntakeDuplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_intake_duplicates_total", Help: "Requests that were redeliveries or owned by another processor (DUPLICATE)."}),
		IntakeHandedBack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paystream_intake_handed_back_total", Help: "Request messages handed back: another processor claimed their key for the same message."}),
		IntakeDeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_intake_dead_lettered_total", Help: "Requests dead-lettered, by class."}, []string{"class"}),
		IntakeStageSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_intake_stage_seconds_total",
			Help: "Wall time intake's stages spent on groups, by stage; the stages overlap, so each rate is that stage's busy share."},
			[]string{"stage"}),
		StageBusy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "paystream_stage_busy_seconds",
			Help: "How long each watched pipeline stage has been on its current piece of work (0: waiting for work); a minute or more is stuck."},
			[]string{"stage"}),
		WeChatRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_wechatpay_requests_total", Help: "HTTP exchanges with WeChat Pay, by endpoint and outcome class."},
			[]string{"endpoint", "class"}),
		WeChatDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "paystream_wechatpay_request_duration_seconds", Help: "Duration of one HTTP exchange with WeChat Pay, by endpoint.",
			Buckets: WeChatBuckets}, []string{"endpoint"}),
		WeChatThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_wechatpay_throttled_total", Help: "HTTP 429 answers from WeChat Pay, by endpoint."}, []string{"endpoint"}),
		RateLimiterWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "paystream_rate_limiter_wait_seconds", Help: "Time a WeChat Pay call waited for its rate limiter, by api.",
			Buckets: WaitBuckets}, []string{"api"}),
		OutcomePublishLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paystream_outcome_publish_lag_seconds", Help: "From an outbox row's creation in the ledger to its publish ack.",
			Buckets: LagBuckets}),
		OutcomesPublished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_outcomes_published_total", Help: "Outbox rows published, by kind."}, []string{"kind"}),
		LedgerCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paystream_ledger_commit_seconds", Help: "Duration of each ledger write transaction (lock wait excluded).",
			Buckets: LedgerBuckets}),
		ClaimsDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "paystream_claims_seconds", Help: "Duration of claims store calls, by op.", Buckets: ClaimsBuckets}, []string{"op"}),
		ClaimsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_claims_errors_total", Help: "Failed claims store calls, by op."}, []string{"op"}),
		BatchesFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paystream_batches_finished_total", Help: "Batches reaching a final state in this process, by rail and state."},
			[]string{"rail", "state"}),
		InstancesSilent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "paystream_instances_silent", Help: "Other processor instances not seen for silent-after without a clean stop: their claims are stranded."}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "paystream_build_info", Help: "Always 1; the version label is the build.",
		ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build,
		m.IntakeReceived, m.IntakeCommitted, m.IntakeDuplicates, m.IntakeHandedBack, m.IntakeDeadLettered, m.IntakeStageSeconds, m.StageBusy, m.WeChatRequests, m.WeChatDuration,
		m.WeChatThrottled, m.RateLimiterWait, m.OutcomePublishLag, m.OutcomesPublished, m.LedgerCommit, m.ClaimsDuration,
		m.ClaimsErrors, m.BatchesFinished, m.InstancesSilent)
	for _, c := range DeadLetterClasses {
		m.IntakeDeadLettered.WithLabelValues(c)
	}
	for _, st := range IntakeStages {
		m.IntakeStageSeconds.WithLabelValues(st)
	}
	for _, st := range WatchedStages {
		m.StageBusy.WithLabelValues(st)
	}
	for _, e := range Endpoints {
		m.WeChatThrottled.WithLabelValues(e)
		for _, c := range Classes {
			m.WeChatRequests.WithLabelValues(e, c)
		}
	}
	for _, a := range APIs {
		m.RateLimiterWait.WithLabelValues(a)
	}
	for _, k := range OutboxKinds {
		m.OutcomesPublished.WithLabelValues(k)
	}
	for _, op := range ClaimsOps {
		m.ClaimsErrors.WithLabelValues(op)
	}
	return m
}

// Registry is the registry every metric of m is in; register more collectors on it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves m's registry in the Prometheus exposition formats (promhttp). A scrape runs
// the Watch collectors, each bounded by ScrapeTimeout.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// WeChatObserver returns the function to give wechatpay.WithObserver: it counts every
// exchange by endpoint and class (not_sent is never counted), observes its duration, and
// counts HTTP 429 answers.
func (m *Metrics) WeChatObserver() func(wechatpay.Observation) {
	return func(o wechatpay.Observation) {
		if o.Class == wechatpay.ClassNotSent {
			return
		}
		m.WeChatRequests.WithLabelValues(o.Endpoint, o.Class.String()).Inc()
		m.WeChatDuration.WithLabelValues(o.Endpoint).Observe(o.Elapsed.Seconds())
		if o.Status == http.StatusTooManyRequests {
			m.WeChatThrottled.WithLabelValues(o.Endpoint).Inc()
		}
	}
}

// ClaimsObserver returns the function to give claims.WithObserver: it observes each call's
// duration by op and counts the failed ones. A call that ended because its context did is
// not a failure of the store and is not counted as an error.
func (m *Metrics) ClaimsObserver() func(op string, d time.Duration, err error) {
	return func(op string, d time.Duration, err error) {
		m.ClaimsDuration.WithLabelValues(op).Observe(d.Seconds())
		if err != nil && !errors.Is(err, context.Canceled) {
			m.ClaimsErrors.WithLabelValues(op).Inc()
		}
	}
}

// LedgerCommitObserver returns the function to give ledger.WithCommitObserver: it observes
// each write transaction's duration.
func (m *Metrics) LedgerCommitObserver() func(time.Duration) {
	return func(d time.Duration) { m.LedgerCommit.Observe(d.Seconds()) }
}
