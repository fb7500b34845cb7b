// Package pipeline is the processor: intake from the shared JetStream consumer (cross-replica
// claims, then each row written once into the ledger, full batches sealed with their rows),
// sealing the rest into batches, submitting and following them at WeChat Pay, and publishing
// outcome events. Intake acks a request only once its row is committed, and every later stage
// reads its work from the ledger, so any stage can stop at any point (a crash, SIGKILL,
// SIGTERM) and the next start resumes it with the same out_batch_no and the same frozen body.
package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/journal"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// Config tunes every stage. DefaultConfig holds production values; Validate is the one check
// of every setting (New runs it).
type Config struct {
	Intake    IntakeConfig   `yaml:"intake"`
	Batching  BatchingConfig `yaml:"batching"`
	Amounts   AmountConfig   `yaml:"amounts"`
	Submit    SubmitConfig   `yaml:"submit"`
	Poll      PollConfig     `yaml:"poll"`
	RateLimit RateConfig     `yaml:"rate-limit"`
	Breaker   BreakerConfig  `yaml:"breaker"`
	NotifyURL string         `yaml:"notify-url"` // sent in each batch or bill; empty: no callbacks
	// Product is the WeChat Pay product the merchant has, which decides the rail of every
	// new request: ProductBatches (the batch API, direct or partner) or ProductBills
	// (transfer bills; every merchant since 2025-01-15). Batches already sealed are driven
	// to their end whatever it says. The processor's config sets it as wechatpay.product.
	Product string `yaml:"-"`
	// BillScenes is, per transfer_scene_id, what a bill must report (docs/transfer-bills.md);
	// empty: the defaults of payout.DefaultBillScenes. Fixing a refused body changes it, so intake
	// checks requests against it.
	BillScenes map[string]SceneConfig `yaml:"bill-scenes"`
}

// Products (Config.Product).
const (
	ProductBatches = "batches"
	ProductBills   = "bills"
)

// SceneConfig is one transfer scene's report rules: the info_type of every
// transfer_scene_report_infos row it needs (each exactly once), and the
// user_recv_perception values it allows.
type SceneConfig struct {
	ReportInfos []string `yaml:"report-infos"`
	Perceptions []string `yaml:"perceptions"`
}

// BatchingConfig is how payouts are grouped (pkg/batching).
type BatchingConfig struct {
	CapDirect      int           `yaml:"cap-direct"`       // ≤ 1000 (docs/wechatpay.md §4)
	CapPartner     int           `yaml:"cap-partner"`      // ≤ 3000 (docs/wechatpay.md §6)
	CapBills       int           `yaml:"cap-bills"`        // bills sealed together, ≤ 1000
	MaxWait        time.Duration `yaml:"max-wait"`         // seal a group when its oldest payout waited this long
	MaxBatchAmount int64         `yaml:"max-batch-amount"` // fen; 0 = no limit
	NameTemplate   string        `yaml:"name-template"`
	RemarkTemplate string        `yaml:"remark-template"`
}

// AmountConfig bounds a single payout, in fen.
type AmountConfig struct {
	Min int64 `yaml:"min"`
	Max int64 `yaml:"max"`
}

// DefaultConfig returns production defaults: WeChat's documented limits and cadences.
func DefaultConfig() Config {
	lim := payout.DefaultLimits()
	return Config{
		Intake:   IntakeConfig{FetchBatch: 1000, FetchMaxWait: 200 * time.Millisecond, SweepEvery: 30 * time.Second, RetryDelay: 30 * time.Second},
		Batching: BatchingConfig{CapDirect: wechatpay.MaxDetailsDirect, CapPartner: wechatpay.MaxDetailsPartner, CapBills: ledger.MaxDetailsBills, MaxWait: 30 * time.Second},
		Amounts:  AmountConfig{Min: lim.MinAmount, Max: lim.MaxAmount},
		Submit:   SubmitConfig{RetryMin: time.Second, RetryMax: 5 * time.Minute, ParkedRetry: 10 * time.Minute, Workers: 8, BillWorkers: 16},
		Poll: PollConfig{FirstDelay: time.Minute, Interval: time.Minute, NotFoundGrace: 10 * time.Minute,
			PageLimit: wechatpay.MaxQueryLimit, Horizon: 25 * 24 * time.Hour, BillSweep: 10 * time.Minute, BillSweepMax: time.Hour},
		RateLimit: RateConfig{Create: 45, Query: 45, Detail: 45, Cancel: 18}, // under 50 QPS per merchant and API (docs/wechatpay.md §5), with a margin
		Breaker:   BreakerConfig{Failures: 5, OpenTimeout: 30 * time.Second},
		Product:   ProductBatches,
	}
}

// BillsRates are rate limits for a merchant on transfer bills: under its 100/s create and query
// limits and 20/s cancel limit (docs/transfer-bills.md), with a margin. The caller divides them
// among replicas.
func BillsRates() RateConfig { return RateConfig{Create: 90, Query: 90, Detail: 90, Cancel: 18} }

// BillScenes turns the configured scene table into validation limits: the defaults of
// payout.DefaultBillScenes when it is empty.
func BillScenes(cfg map[string]SceneConfig) map[string]payout.BillScene {
	if len(cfg) == 0 {
		return payout.DefaultBillScenes()
	}
	out := make(map[string]payout.BillScene, len(cfg))
	for id, c := range cfg {
		out[id] = payout.BillScene{ReportInfos: c.ReportInfos, Perceptions: c.Perceptions}
	}
	return out
}

// Deps are the things the pipeline runs on; the caller owns and closes them.
type Deps struct {
	Consumer jetstream.Consumer // the shared durable pull consumer
	// Conn is Consumer's connection (required with it): intake acks the messages of the
	// payouts it holds through it, by their reply subjects (see ackRef).
	Conn   *nats.Conn
	Claims *claims.Store
	DB     *ledger.DB
	// Instructions is DB's abnormal-fund instruction table (ledger.OpenInstructions): the
	// callback listener applies instruction results to it. Nil: such callbacks are answered
	// 5xx (WeChat retries; the instruction's follow queries it anyway).
	Instructions      *ledger.Instructions
	API               *wechatpay.Client
	Publisher         message.Publisher // watermill, JetStream with message-id tracking
	RequestPrefix     string            // requests arrive on <prefix>.<mchid>; default payout.DefaultSubjectPrefix
	DeadLetterSubject string            // e.g. payouts.deadletter
	MaxDeadLetterBody int               // bytes of a refused request a dead letter keeps, to fit the server's max payload; default payout.MaxMessageSize
	Merchant          Merchant          // whom this processor pays for (required); anything else is dead-lettered
	ResultsPrefix     string            // e.g. payouts.results
	// Cancels is this replica's own durable consumer of upstream cancels (CancelPrefix.<mchid>);
	// nil: cancels are not taken.
	Cancels      jetstream.Consumer
	CancelPrefix string // default payout.CancelPrefix
	HashKey      []byte // keys the content hash of requests
	// Journal receives every sealed batch before its first send (internal/journal), so an
	// adopter can resume it if this ledger's disk is lost; nil: none (tests of one replica).
	Journal *journal.Journal
	// Leased reports whether this instance's heartbeat is recent enough that no adopter can
	// have judged it lost; while it is false the driver sends and queries nothing and intake
	// claims nothing (its groups are not acked). nil: always leased.
	Leased func() bool
	// MayClaim, if set, gates intake's claims instead of Leased: it adds conditions of its own
	// (internal/app: no instance of an older claim protocol alive).
	MayClaim func() bool
	Now      func() time.Time
	Log      *slog.Logger
	// DumpStacks, if set, writes every goroutine's stack where the log goes (cli.DumpStacks
	// on the process's standard error): the pipeline calls it when a stage is stuck, so the
	// log shows where it waits.
	DumpStacks func()
	// Metrics receives the pipeline's counters and histograms; nil: a private
	// metrics.New("") that nobody scrapes. The WeChat Pay client, the claims store and the
	// ledger are observed through their own options (see metrics.Metrics).
	Metrics *metrics.Metrics
}

// Pipeline is one processor replica.
type Pipeline struct {
	intake   *intake
	sealer   *sealer
	driver   *driver
	outcomes *outcomes
	cancels  *cancels // nil without Deps.Cancels
	cb       http.Handler
	progress *progress
	watch    *watch
	breakers []breaker // every circuit breaker, for Runtime
	wake     func()    // wakes the driver
}

// BreakerState is one circuit breaker's name and gobreaker state name ("closed",
// "half-open", "open"); metrics.BreakerState, so Runtime feeds metrics.WatchBreakers as is.
type BreakerState = metrics.BreakerState

// Runtime is what a replica is doing now, for the status page and the metrics.
type Runtime struct {
	Breakers []BreakerState // every WeChat Pay breaker, by name
	InFlight int            // batches handed to a driver worker now
	Stuck    []StuckStage   // stages on one piece of work for a minute or more
}

// Runtime reads the breakers, the batches in flight and the stuck stages. It is safe for
// concurrent use, at any time (before Run too) and cheap: a scrape may call it.
func (p *Pipeline) Runtime() Runtime {
	r := Runtime{Breakers: make([]BreakerState, len(p.breakers)), InFlight: int(p.driver.inFlight.Load()),
		Stuck: p.watch.stuck(p.watch.now())}
	for i, b := range p.breakers {
		r.Breakers[i] = BreakerState{Name: b.Name(), State: b.State().String()}
	}
	return r
}

// New checks cfg with cfg.Validate (a bad setting is a *config.ConfigError naming its key
// relative to the section, "poll.page-limit") and d, and wires the stages.
func New(cfg Config, d Deps) (*Pipeline, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New("")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Consumer != nil && d.Conn == nil {
		return nil, errors.New("pipeline: Deps.Conn is required with Deps.Consumer")
	}
	if d.Merchant.MchID == "" {
		return nil, errors.New("the merchant to pay for is required")
	}
	if d.RequestPrefix == "" {
		d.RequestPrefix = payout.DefaultSubjectPrefix
	}
	if d.CancelPrefix == "" {
		d.CancelPrefix = payout.CancelPrefix
	}
	if d.MaxDeadLetterBody < 1 {
		d.MaxDeadLetterBody = payout.MaxMessageSize
	}
	names := cfg.Batching.names()
	bcfg := batching.Config{
		InstanceID: d.DB.InstanceID(), CapDirect: cfg.Batching.CapDirect, CapPartner: cfg.Batching.CapPartner, CapBills: cfg.Batching.CapBills,
		MaxWait: cfg.Batching.MaxWait, MaxBatchAmount: cfg.Batching.MaxBatchAmount,
	}
	b, err := batching.New(bcfg)
	if err != nil {
		return nil, err
	}
	hold, err := newHolding(bcfg)
	if err != nil {
		return nil, err
	}
	lim := payout.DefaultLimits()
	lim.MinAmount, lim.MaxAmount = cfg.Amounts.Min, cfg.Amounts.Max
	lim.EncryptedNamesOnly = true // a plaintext name must not even travel (docs/money-rules.md#secrets)
	lim.BillScenes = BillScenes(cfg.BillScenes)

	wakeDriver := make(chan struct{}, 1)
	wakeOutcomes := make(chan struct{}, 1)
	poke := func(c chan struct{}) func() {
		return func() {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
	claimed := make(chan []ledger.Payout, 4)
	pending := newPendingSet()
	prog := &progress{cons: d.Consumer, log: d.Log, every: progressEvery, idleEvery: idleEvery}
	fin := &finishes{db: d.DB, m: d.Metrics, prog: prog, log: d.Log, seen: map[string]bool{}}
	// The watch keeps wall time (d.Now may be a test's clock): a stage is stuck in real time.
	w := &watch{after: stuckAfter, every: stuckAfter / 12, now: time.Now, log: d.Log, dump: d.DumpStacks, gauge: d.Metrics.StageBusy}
	p := &Pipeline{progress: prog, watch: w, wake: poke(wakeDriver),
		intake: &intake{
			cfg: cfg.Intake, cons: d.Consumer, nc: d.Conn, db: d.DB, claims: d.Claims, limits: lim, product: cfg.Product, merchant: d.Merchant,
			prefix: d.RequestPrefix, serial: d.API.Serial(), hashKey: d.HashKey, claimed: claimed, pending: pending, log: d.Log,
			dead: &deadLetters{pub: d.Publisher, subject: d.DeadLetterSubject, maxBody: d.MaxDeadLetterBody, log: d.Log},
			m:    d.Metrics, stage: newStageClocks(d.Metrics), prog: prog, leased: d.Leased, sealed: poke(wakeDriver), hold: hold, watch: w,
		},
		sealer: &sealer{
			b: b, db: d.DB, in: claimed, sealed: poke(wakeDriver), pending: pending, now: d.Now, log: d.Log, watch: w,
			open: map[int64]ledger.Payout{},
		},
		driver: &driver{
			submit: cfg.Submit, poll: cfg.Poll, db: d.DB, api: d.API,
			create: newThrottle(cfg.RateLimit.Create, d.Now), query: newThrottle(cfg.RateLimit.Query, d.Now),
			detail: newThrottle(cfg.RateLimit.Detail, d.Now), cancel: newThrottle(cfg.RateLimit.Cancel, d.Now),
			wake: wakeDriver, changed: poke(wakeOutcomes), now: d.Now, log: d.Log, inflight: map[string]bool{},
			finishes: fin, prog: prog, journal: d.Journal, leased: d.Leased,
		},
		outcomes: &outcomes{db: d.DB, pub: d.Publisher, prefix: d.ResultsPrefix, wake: wakeOutcomes, every: time.Second, log: d.Log,
			now: d.Now, m: d.Metrics, prog: prog},
		cb: callbackHandler(d.API, d.DB, d.Instructions, poke(wakeDriver), fin.check),
	}
	if d.MayClaim != nil {
		p.intake.leased = d.MayClaim
	}
	prog.inFlight = func() int { return int(p.driver.inFlight.Load()) }
	for api, t := range map[string]*throttle{"create": p.driver.create, "query": p.driver.query, "detail": p.driver.detail, "cancel": p.driver.cancel} {
		t.waited = d.Metrics.RateLimiterWait.WithLabelValues(api)
	}
	// Every rail is driven, whatever the product: batches sealed before a product change
	// are followed to their end.
	batches := newBatchRail(p.driver, names, cfg.NotifyURL, cfg.Breaker)
	rails := map[string]rail{payout.RailDirect: batches, payout.RailPartner: batches,
		payout.RailBills: newBillRail(p.driver, cfg.NotifyURL, cfg.Breaker)}
	p.intake.rails, p.sealer.rails, p.driver.rails = rails, rails, rails
	bills := rails[payout.RailBills].(*billRail)
	p.breakers = []breaker{batches.cbCreate, batches.cbQuery, batches.cbDetail, bills.cbCreate, bills.cbQuery, bills.cbCancel}
	if d.Cancels != nil {
		p.cancels = &cancels{
			cons: d.Cancels, requests: d.Consumer, db: d.DB, claims: d.Claims, mchID: d.Merchant.MchID, prefix: d.CancelPrefix, pub: d.Publisher,
			results: d.ResultsPrefix, retry: max(cfg.Intake.RetryDelay, time.Second), recorded: poke(wakeDriver), now: d.Now, log: d.Log,
		}
	}
	return p, nil
}

// CallbackHandler serves WeChat Pay batch notifications; mount it at the notify_url path.
func (p *Pipeline) CallbackHandler() http.Handler { return p.cb }

// Wake makes the driver read its due batches now, after an operator made one due
// (ledger.DB.RetryNow).
func (p *Pipeline) Wake() { p.wake() }

// Run runs every stage until ctx is done (graceful: intake stops fetching and finishes the
// group in hand; sealed batches resume on the next start) or a stage fails for good.
func (p *Pipeline) Run(ctx context.Context) error {
	// Batch what was claimed but not sealed (a ledger of an earlier version); intake then
	// sweeps what was committed but not claimed before it takes new requests.
	if err := p.sealer.resume(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	stages := []func(context.Context) error{p.intake.run, p.sealer.run, p.driver.run, p.outcomes.run, p.progress.run, p.watch.run}
	if p.cancels != nil {
		stages = append(stages, p.cancels.run)
	}
	for _, stage := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stage(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
