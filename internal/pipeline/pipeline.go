// Package pipeline is the processor: intake from the shared JetStream consumer into the
// ledger, cross-replica claims, sealing batches, submitting and following them at WeChat Pay,
// and publishing outcome events. Every stage reads its work from the ledger, so any stage
// can stop at any point (a crash, SIGKILL, SIGTERM) and the next start resumes it with the
// same out_batch_no and the same frozen body.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// Config tunes every stage. DefaultConfig holds production values.
type Config struct {
	Intake    IntakeConfig   `yaml:"intake"`
	Batching  BatchingConfig `yaml:"batching"`
	Amounts   AmountConfig   `yaml:"amounts"`
	Submit    SubmitConfig   `yaml:"submit"`
	Poll      PollConfig     `yaml:"poll"`
	RateLimit RateConfig     `yaml:"rate-limit"`
	Breaker   BreakerConfig  `yaml:"breaker"`
	NotifyURL string         `yaml:"notify-url"` // sent in each batch; empty: no callbacks
}

// BatchingConfig is how payouts are grouped (pkg/batching).
type BatchingConfig struct {
	CapDirect      int           `yaml:"cap-direct"`       // ≤ 1000 (spec §5)
	CapPartner     int           `yaml:"cap-partner"`      // ≤ 3000 (spec §7)
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
		Batching: BatchingConfig{CapDirect: wechatpay.MaxDetailsDirect, CapPartner: wechatpay.MaxDetailsPartner, MaxWait: 30 * time.Second},
		Amounts:  AmountConfig{Min: lim.MinAmount, Max: lim.MaxAmount},
		Submit:   SubmitConfig{RetryMin: time.Second, RetryMax: 5 * time.Minute, ParkedRetry: 10 * time.Minute, Workers: 8},
		Poll: PollConfig{FirstDelay: time.Minute, Interval: time.Minute, NotFoundGrace: 10 * time.Minute,
			PageLimit: wechatpay.MaxQueryLimit, Horizon: 25 * 24 * time.Hour},
		RateLimit: RateConfig{Create: 45, Query: 45, Detail: 45}, // under 50 QPS per merchant and API (spec §6), with a margin
		Breaker:   BreakerConfig{Failures: 5, OpenTimeout: 30 * time.Second},
	}
}

// Deps are the things the pipeline runs on; the caller owns and closes them.
type Deps struct {
	Consumer          jetstream.Consumer // the shared durable pull consumer
	Claims            *claims.Store
	DB                *ledger.DB
	API               *wechatpay.Client
	Publisher         message.Publisher // watermill, JetStream with message-id tracking
	RequestPrefix     string            // requests arrive on <prefix>.<mchid>; default payout.DefaultSubjectPrefix
	DeadLetterSubject string            // e.g. payouts.deadletter
	MaxDeadLetterBody int               // bytes of a refused request a dead letter keeps, to fit the server's max payload; default payout.MaxMessageSize
	Merchant          Merchant          // whom this processor pays for (required); anything else is dead-lettered
	ResultsPrefix     string            // e.g. payouts.results
	HashKey           []byte            // keys the content hash of requests
	Now               func() time.Time
	Log               *slog.Logger
}

// Pipeline is one processor replica.
type Pipeline struct {
	intake   *intake
	sealer   *sealer
	driver   *driver
	outcomes *outcomes
	cb       http.Handler
}

// New checks cfg and wires the stages.
func New(cfg Config, d Deps) (*Pipeline, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if cfg.Poll.PageLimit < wechatpay.MinQueryLimit || cfg.Poll.PageLimit > wechatpay.MaxQueryLimit {
		return nil, fmt.Errorf("poll page limit %d outside %d..%d (spec §6)", cfg.Poll.PageLimit, wechatpay.MinQueryLimit, wechatpay.MaxQueryLimit)
	}
	if cfg.Submit.Workers < 1 || cfg.Intake.FetchBatch < 1 || cfg.Submit.RetryMin <= 0 || cfg.Intake.SweepEvery <= 0 || cfg.Intake.RetryDelay < 0 {
		return nil, errors.New("submit workers, fetch batch, retry-min and sweep-every must be positive, retry-delay not negative")
	}
	if d.Merchant.MchID == "" {
		return nil, errors.New("the merchant to pay for is required")
	}
	if d.RequestPrefix == "" {
		d.RequestPrefix = payout.DefaultSubjectPrefix
	}
	if d.MaxDeadLetterBody < 1 {
		d.MaxDeadLetterBody = payout.MaxMessageSize
	}
	names := batching.Names{NameTemplate: cfg.Batching.NameTemplate, RemarkTemplate: cfg.Batching.RemarkTemplate}
	if names.NameTemplate == "" && names.RemarkTemplate == "" {
		names = batching.DefaultNames
	}
	if err := names.Validate(); err != nil {
		return nil, fmt.Errorf("batch name templates: %w", err)
	}
	b, err := batching.New(batching.Config{
		InstanceID: d.DB.InstanceID(), CapDirect: cfg.Batching.CapDirect, CapPartner: cfg.Batching.CapPartner,
		MaxWait: cfg.Batching.MaxWait, MaxBatchAmount: cfg.Batching.MaxBatchAmount,
	})
	if err != nil {
		return nil, err
	}
	lim := payout.DefaultLimits()
	lim.MinAmount, lim.MaxAmount = cfg.Amounts.Min, cfg.Amounts.Max
	lim.EncryptedNamesOnly = true // rule 5: a plaintext name must not even travel

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
	p := &Pipeline{
		intake: &intake{
			cfg: cfg.Intake, cons: d.Consumer, db: d.DB, claims: d.Claims, limits: lim, merchant: d.Merchant,
			prefix: d.RequestPrefix, serial: d.API.Serial(), hashKey: d.HashKey, claimed: claimed, pending: pending, log: d.Log,
			dead: &deadLetters{pub: d.Publisher, subject: d.DeadLetterSubject, maxBody: d.MaxDeadLetterBody, log: d.Log},
		},
		sealer: &sealer{
			b: b, db: d.DB, in: claimed, sealed: poke(wakeDriver), pending: pending, now: d.Now, log: d.Log,
			open: map[int64]ledger.Payout{},
		},
		driver: &driver{
			submit: cfg.Submit, poll: cfg.Poll, db: d.DB, api: d.API,
			create: newThrottle(cfg.RateLimit.Create, d.Now), query: newThrottle(cfg.RateLimit.Query, d.Now),
			detail: newThrottle(cfg.RateLimit.Detail, d.Now),
			wake:   wakeDriver, changed: poke(wakeOutcomes), now: d.Now, log: d.Log, inflight: map[string]bool{},
		},
		outcomes: &outcomes{db: d.DB, pub: d.Publisher, prefix: d.ResultsPrefix, wake: wakeOutcomes, every: time.Second, log: d.Log},
		cb:       callbackHandler(d.API, d.DB, poke(wakeDriver)),
	}
	batches := newBatchRail(p.driver, names, cfg.NotifyURL, cfg.Breaker)
	rails := map[string]rail{payout.RailDirect: batches, payout.RailPartner: batches}
	p.sealer.rails, p.driver.rails = rails, rails
	return p, nil
}

// CallbackHandler serves WeChat Pay batch notifications; mount it at the notify_url path.
func (p *Pipeline) CallbackHandler() http.Handler { return p.cb }

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
	for _, stage := range []func(context.Context) error{p.intake.run, p.sealer.run, p.driver.run, p.outcomes.run} {
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
