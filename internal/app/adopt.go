package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/paystream/paystream/internal/backoff"
	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// ErrAdoptionUnfinished: the ledger is marked by an adoption that has not moved every claim
// yet (ledger.DB.BeginAdoption); Run refuses it until `processor adopt` is run again.
var ErrAdoptionUnfinished = errors.New("an adoption is unfinished")

// AdoptOptions says whom to adopt and how.
type AdoptOptions struct {
	Instance   string       // the lost instance
	Plan       bool         // say what would be done; change nothing
	Log        *slog.Logger // default slog.Default()
	HTTPClient *http.Client // for the WeChat Pay client's key id only; nil: default
	// Runs bounds how many times the adoption runs when a run fails on NATS in a way that
	// passes (transientNATS: nobody answered while a node restarted or a stream elected its
	// leader, a request timed out, a listing read short of the leader). Each run resumes
	// where the last one stopped, as when an operator runs it again; any other failure ends
	// it at once. ≤ 1: one run.
	Runs int
	// Pause is the wait between runs; 0: DefaultAdoptPause.
	Pause time.Duration
}

// DefaultAdoptPause is AdoptOptions.Pause's default: about how long a NATS node takes to
// restart and its streams to elect their leaders.
const DefaultAdoptPause = 5 * time.Second

// Adopt makes this config's ledger take over the payouts of the lost instance o.Instance
// (docs/replication.md#adoption): it retires the instance (fenced: it refuses an instance
// that is alive, and of two adopters one wins), records its payouts here (pipeline.Adopt),
// moves their claims to this instance and ends the adoption. The processor of this ledger
// must not be running (the ledger's lock refuses it); start it afterwards to pay and follow
// what was adopted. Run again after a failure, Adopt resumes where it stopped; it does so
// itself, up to o.Runs times, after a failure on NATS that passes.
func Adopt(ctx context.Context, cfg Config, o AdoptOptions) (pipeline.Adoption, error) {
	log := cmp.Or(o.Log, slog.Default())
	pause := cmp.Or(o.Pause, DefaultAdoptPause)
	for run := 1; ; run++ {
		a, err := adoptOnce(ctx, cfg, o, log)
		if err == nil || run >= o.Runs || !transientNATS(err) || ctx.Err() != nil {
			return a, err
		}
		log.Warn("adoption failed on NATS; it runs again and resumes where it stopped", "run", run, "runs", o.Runs, "pause", pause, "err", err)
		select {
		case <-ctx.Done():
			return a, err
		case <-time.After(pause):
		}
	}
}

// transientNATS reports whether err is a NATS failure that passes on its own: whatever
// payout.Transient calls so (nobody answered while a node restarted or a stream had no
// leader yet, a request timed out or its reply was lost; a claim move is a publish, so its
// no-stream-response counts), the connection dropped, JetStream answered 503, or a listing
// read short of what the stream's leader held (broker.ErrShortRead).
func transientNATS(err error) bool {
	if payout.Transient(err) {
		return true
	}
	for _, target := range []error{nats.ErrConnectionClosed, nats.ErrDisconnected, nats.ErrConnectionReconnecting,
		jetstream.ErrNoHeartbeat, broker.ErrShortRead} {
		if errors.Is(err, target) {
			return true
		}
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.Code == http.StatusServiceUnavailable
}

// adoptOnce is one run of Adopt.
func adoptOnce(ctx context.Context, cfg Config, o AdoptOptions, log *slog.Logger) (pipeline.Adoption, error) {
	if cfg.NATS.URL == "" {
		return pipeline.Adoption{}, errors.New("adopt needs the NATS cluster the lost instance used (nats.url); the embedded server holds only its own processor's claims")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return pipeline.Adoption{}, fmt.Errorf("data dir: %w", err)
	}
	db, err := openForAdopt(ctx, cfg, o.Plan, log)
	if err != nil {
		return pipeline.Adoption{}, err
	}
	defer db.Close()
	self := db.InstanceID()
	if self == o.Instance {
		return pipeline.Adoption{}, fmt.Errorf("%s is this ledger's own instance", self)
	}
	log = log.With("instance", self, "adopting", o.Instance)

	nc, err := nats.Connect(cfg.NATS.URL, cfg.NATS.Options("paystream-adopt-"+self, log)...)
	if err != nil {
		return pipeline.Adoption{}, fmt.Errorf("nats connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return pipeline.Adoption{}, err
	}
	topo := cfg.NATS.Topology
	jso, err := ensureTopology(ctx, js, topo, self, cfg.WeChatPay.MchID, log)
	if err != nil {
		return pipeline.Adoption{}, fmt.Errorf("jetstream topology: %w", err)
	}
	if err := retire(ctx, js, jso.instances, o.Instance, self, topo.SilentAfter, o.Plan); err != nil {
		return pipeline.Adoption{}, err
	}
	src, err := adoptSource(ctx, js, jso, topo, o.Instance)
	if err != nil {
		return pipeline.Adoption{}, err
	}
	var copts []wechatpay.Option
	if o.HTTPClient != nil {
		copts = append(copts, wechatpay.WithHTTPClient(o.HTTPClient))
	}
	api, err := cfg.WeChatPay.Client(log, copts...)
	if err != nil {
		return pipeline.Adoption{}, err
	}
	p, err := pipeline.New(cfg.Pipeline, pipeline.Deps{
		DB: db, API: api, RequestPrefix: strings.TrimSuffix(topo.Subjects, ".>"),
		Merchant: pipeline.Merchant{MchID: cfg.WeChatPay.MchID, SubMchIDs: cfg.WeChatPay.SubMchIDs},
		HashKey:  contentHashKey(cfg.WeChatPay.APIv3Key), Log: log, ResultsPrefix: resultsPrefix(topo.ResultsSubjects),
	})
	if err != nil {
		return pipeline.Adoption{}, err
	}
	a, err := p.Adopt(ctx, src, o.Plan)
	if err != nil || o.Plan {
		return a, err
	}
	if err := transferClaims(ctx, js, jso.claims, a.Transfer, self); err != nil {
		return a, fmt.Errorf("%w (run adopt again)", err)
	}
	if err := db.EndAdoption(ctx); err != nil {
		return a, err
	}
	log.Warn("adopted a lost instance", "held", a.Held, "batches", len(a.Batches), "in_batches", a.InBatches,
		"to_pay", a.ToPay, "reclaimed", a.Reclaimed, "left", len(a.Left))
	return a, nil
}

// transferWorkers is how many claim moves an adoption keeps in flight. Each is a KV update, a
// round trip through the claims stream's leader and its replicas: tens of thousands moved one
// by one took the better part of a minute, long enough for one of them to meet a slow moment
// of the cluster and fail the whole run.
const transferWorkers = 32

// transferTries bounds the tries of one claim move that fails on NATS in a way that passes
// (transientNATS) before the run fails. Trying again is safe: a move is revision-checked, and
// one that landed with its reply lost is read back as done (claims.Transfer).
const transferTries = 5

// transferClaims moves every claim of held to self, transferWorkers at a time, each tried
// again (after a jittered wait) while it fails on NATS in a way that passes. It returns the
// first error that ends a move; the moves in flight then stop, and a run again resumes.
func transferClaims(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, held []claims.Held, self string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(transferWorkers)
	for _, h := range held {
		if gctx.Err() != nil {
			break // a move failed (g.Wait says why) or ctx ended
		}
		g.Go(func() error {
			for try := 0; ; try++ {
				err := claims.Transfer(gctx, js, kv, h, self)
				if err == nil || try+1 >= transferTries || !transientNATS(err) {
					return err
				}
				select {
				case <-gctx.Done():
					return err
				case <-time.After(backoff.Jittered(200*time.Millisecond, 5*time.Second, try)):
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err() // ended before every move was started: not done
}

// openForAdopt opens the adopter's ledger: the writer (its lock refuses a running
// processor), or read-only for a plan when the file exists.
func openForAdopt(ctx context.Context, cfg Config, plan bool, log *slog.Logger) (*ledger.DB, error) {
	if _, err := os.Stat(cfg.Ledger); plan && err == nil {
		db, err := ledger.OpenReadOnly(ctx, cfg.Ledger)
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		return db, nil
	}
	db, err := ledger.Open(ctx, cfg.Ledger, ledger.WithLogger(log), ledger.WithMerchant(cfg.WeChatPay.MchID))
	if err != nil {
		return nil, fmt.Errorf("ledger (is its processor running? stop it first): %w", err)
	}
	return db, nil
}

// retire fences the lost instance: it is retired by self, unless it already was (an
// adoption run again). An alive instance is refused. A plan only checks.
func retire(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance, self string, silentAfter time.Duration, plan bool) error {
	if plan {
		r, err := instances.Get(ctx, js, kv, instance)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if st := instances.Classify([]instances.Record{r}, time.Now(), silentAfter)[0]; st.State == instances.Alive {
			return fmt.Errorf("instance %s seen at %s: %w", instance, r.SeenAt.Format(time.RFC3339), instances.ErrAlive)
		}
		return nil
	}
	err := instances.Retire(ctx, js, kv, instance, self, time.Now(), silentAfter)
	if errors.Is(err, instances.ErrRetired) {
		r, gerr := instances.Get(ctx, js, kv, instance)
		if gerr == nil && r.RetiredBy == self {
			return nil // this ledger's own unfinished adoption
		}
	}
	return err
}

// adoptSource gathers what NATS holds of instance: what its heartbeat promised of its
// journal, the claims it holds, the batches it journaled, and the request and results streams.
func adoptSource(ctx context.Context, js jetstream.JetStream, jso jsObjects, topo broker.Topology, instance string) (pipeline.AdoptSource, error) {
	src := pipeline.AdoptSource{Instance: instance}
	rec, err := instances.Get(ctx, js, jso.instances, instance)
	switch {
	case err == nil:
		src.Journaled, src.JournalSince = rec.Journaled, rec.JournalSince
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return src, err
	}
	if src.Held, err = claims.OwnedBy(ctx, js, jso.claims, instance); err != nil {
		return src, err
	}
	if src.Journal, err = jso.journal.Batches(ctx, instance); err != nil {
		return src, err
	}
	if src.Requests, err = js.Stream(ctx, topo.Stream); err != nil {
		return src, fmt.Errorf("request stream: %w", err)
	}
	if src.Results, err = js.Stream(ctx, topo.ResultsStream); err != nil {
		return src, fmt.Errorf("results stream: %w", err)
	}
	return src, nil
}
