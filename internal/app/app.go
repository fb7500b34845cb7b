package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/journal"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// NATSURLFile is the file in the data dir that holds the embedded server's client URL.
const NATSURLFile = "nats.url"

// Options are what a caller (cmd/processor or a test) adds to a Config.
type Options struct {
	Log        *slog.Logger
	HTTPClient *http.Client // for WeChat Pay; nil: the client's default
	Version    string       // shown on the status page and in paystream_build_info
	// Ready, if set, is called once the processor consumes, with the addresses it serves on.
	Ready func(Addrs)
	// DumpStacks, if set, writes every goroutine's stack where Log writes (cmd/processor:
	// cli.DumpStacks on standard error); the pipeline calls it when a stage is stuck.
	DumpStacks func()
}

// Addrs are where a running processor can be reached.
type Addrs struct {
	NATS     string // the NATS URL in use (the embedded server's when no URL is configured)
	Callback string // the WeChat Pay callback listener; empty when off
	HTTP     string // the operator's listener (status page, /metrics, /livez, /readyz); empty when off
}

// Run runs one processor replica until ctx is done. Shutdown order: stop intake (the group
// in hand is finished), stop the other stages, close NATS, then the ledger last.
func Run(ctx context.Context, cfg Config, o Options) (err error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	m := metrics.New(o.Version)
	// litestream stops after the ledger is closed (deferred below), so it ships the last commits.
	var lite *replica.Process
	defer func() {
		if lite == nil {
			return
		}
		// Not the run's error: the ledger is closed and whole. A later restore judges the
		// replica against the clean-stop mark, and refuses one that lacks the last commits.
		if err := lite.Stop(); err != nil {
			log.Warn("litestream did not stop cleanly: the replica may lack the last commits", "err", err)
		}
	}()
	restored, err := restoreLedger(ctx, cfg, log)
	if err != nil {
		return err
	}
	// The ledger records its merchant: a file of another merchant never pays
	// (docs/money-rules.md#merchant).
	db, err := ledger.Open(ctx, cfg.Ledger, ledger.WithLogger(log), ledger.WithMerchant(cfg.WeChatPay.MchID),
		ledger.WithCommitObserver(m.LedgerCommitObserver()))
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	log = log.With("instance", db.InstanceID())
	// Abnormal-fund instructions (processor abnormal-fund) live in the same file; their
	// callbacks reach this processor's listener.
	instrs := db.Instructions()
	// An adoption of another instance left half done must be finished first; one of this
	// instance itself (a recovery of its restored copy, below) is resumed.
	adopting, err := db.Adopting(ctx)
	if err != nil {
		return err
	}
	if adopting != "" && adopting != db.InstanceID() {
		return fmt.Errorf("%w: of instance %s; run `processor adopt --instance %s` again to finish it", ErrAdoptionUnfinished, adopting, adopting)
	}
	recoverCopy := adopting != ""

	// The operator's listener comes up first: /livez answers, and /readyz says what is
	// missing, while the replica still waits for JetStream.
	h := &health{db: db, started: time.Now(), static: ops.Runtime{
		Instance: db.InstanceID(), MchID: cfg.WeChatPay.MchID, Product: cfg.WeChatPay.Product, Version: o.Version,
	}}
	m.WatchLedger(db)
	m.WatchReady(func(ctx context.Context) bool { return len(h.notReady(ctx)) == 0 })
	adm := &admin{h: h, mchID: cfg.WeChatPay.MchID, now: time.Now}
	var addrs Addrs
	if cfg.HTTP.Listen != "" {
		var stop func()
		addrs.HTTP, stop, err = serveHTTP("http", cfg.HTTP.Listen, opsHandler(cfg.HTTP, h, m, adm, log), log)
		if err != nil {
			return err
		}
		defer stop()
		log.Info("status page", "url", "http://"+addrs.HTTP+"/")
	}

	url := cfg.NATS.URL
	if url == "" {
		emb, err := broker.StartEmbedded(cfg.DataDir, cfg.NATS.EmbeddedListen)
		if err != nil {
			return err
		}
		defer emb.Shutdown()
		url = emb.URL()
		// Producers on this machine find the embedded server here.
		if err := os.WriteFile(filepath.Join(cfg.DataDir, NATSURLFile), []byte(url+"\n"), 0o600); err != nil {
			return fmt.Errorf("write nats url: %w", err)
		}
		log.Info("embedded JetStream started", "url", url)
	}
	addrs.NATS = url
	nc, err := nats.Connect(url, cfg.NATS.Options("paystream-processor-"+db.InstanceID(), log)...)
	if err != nil {
		return fmt.Errorf("nats connect: %w", err)
	}
	defer nc.Close()
	h.nc.Store(nc)
	// An async publish (a chunk of a journaled batch) whose reply never comes fails after
	// this instead of holding its place among the pending acks until the next reconnect.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	// Claims publish through a context of their own, with no publish timeout (a timer per
	// create, about 2% of intake's CPU): Claim drops its own unanswered creates (claims.New).
	claimsJS, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	topo := cfg.NATS.Topology
	jso, err := ensureTopology(ctx, js, topo, db.InstanceID(), cfg.WeChatPay.MchID, log)
	if err != nil {
		return fmt.Errorf("jetstream topology: %w", err)
	}
	// A restored copy is judged before anything, litestream included, touches it.
	if restored {
		err := checkRestored(ctx, js, jso.instances, db)
		switch {
		case errors.Is(err, ErrRestoredIncomplete):
			log.Warn("the restored ledger may lack its last commits; it is completed from NATS (claims, journaled batches, requests) before any work", "why", err)
			recoverCopy = true
		case err != nil:
			return err
		default:
			log.Warn("the restored ledger is complete: the instance stopped cleanly at the event the copy ends with; resuming")
		}
	}
	if recoverCopy {
		// The process that wrote the copy must be gone for good before the copy acts: it
		// sends nothing once its heartbeat is older than half silent-after.
		if err := awaitSilent(ctx, js, jso.instances, db.InstanceID(), topo.SilentAfter, log); err != nil {
			return err
		}
	}
	if cfg.Replica.URL != "" {
		if lite, err = startReplication(ctx, cfg, js, log); err != nil {
			return err
		}
		h.lite.Store(lite)
	}
	h.consumer.Store(&jso.requests)
	m.WatchConsumer(jso.requests.Info)
	adm.cancel.Store(payout.NewPublisher(js, payout.WithCancelPrefix(strings.TrimSuffix(topo.CancelSubjects, ".>"))))

	copts := []wechatpay.Option{wechatpay.WithObserver(m.WeChatObserver())}
	if o.HTTPClient != nil {
		copts = append(copts, wechatpay.WithHTTPClient(o.HTTPClient))
	}
	api, err := cfg.WeChatPay.Client(log, copts...)
	if err != nil {
		return err
	}

	pubConn, err := nats.Connect(url, cfg.NATS.Options("paystream-events-"+db.InstanceID(), log)...)
	if err != nil {
		return fmt.Errorf("nats connect: %w", err)
	}
	pub, err := wmnats.NewPublisherWithNatsConn(pubConn, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream:         wmnats.JetStreamConfig{TrackMsgId: true},
	}, watermill.NewSlogLogger(log))
	if err != nil {
		pubConn.Close()
		return fmt.Errorf("watermill publisher: %w", err)
	}
	defer pub.Close()

	var live *liveness // set before the pipeline runs
	store := claims.New(claimsJS, jso.claims, db.InstanceID(), claims.WithLogger(log), claims.WithObserver(m.ClaimsObserver()))
	p, err := pipeline.New(cfg.Pipeline, pipeline.Deps{
		Consumer: jso.requests, Conn: nc, Claims: store, DB: db, Instructions: instrs, API: api, Publisher: pub,
		RequestPrefix: strings.TrimSuffix(topo.Subjects, ".>"), DeadLetterSubject: topo.DeadLetterSubject,
		MaxDeadLetterBody: min(payout.MaxMessageSize, int(pubConn.MaxPayload()/2)),
		Merchant:          pipeline.Merchant{MchID: cfg.WeChatPay.MchID, SubMchIDs: cfg.WeChatPay.SubMchIDs},
		ResultsPrefix:     resultsPrefix(topo.ResultsSubjects), HashKey: contentHashKey(cfg.WeChatPay.APIv3Key), Log: log,
		Cancels: jso.cancels, CancelPrefix: strings.TrimSuffix(topo.CancelSubjects, ".>"), Metrics: m,
		Journal: jso.journal, Leased: func() bool { return live != nil && live.leased(topo.SilentAfter) },
		MayClaim:   func() bool { return live != nil && live.mayClaim(topo.SilentAfter) },
		DumpStacks: o.DumpStacks,
	})
	if err != nil {
		return err
	}
	if recoverCopy {
		if err := recoverRestored(ctx, p, js, jso, topo, db, log); err != nil {
			return err
		}
	}
	h.pipe.Store(p)
	m.WatchBreakers(func() []metrics.BreakerState { return p.Runtime().Breakers })

	if cfg.Callback.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle(cfg.Callback.Path, p.CallbackHandler())
		var stop func()
		if addrs.Callback, stop, err = serveHTTP("callback", cfg.Callback.Listen, mux, log); err != nil {
			return err
		}
		defer stop()
	}
	// The heartbeat starts before any work is taken and stops (clean) only after the
	// pipeline has: a retired instance never works, a stopped one has finished.
	journalSince, err := db.JournalSince(ctx)
	if err != nil {
		return err
	}
	live, err = startLiveness(ctx, js, jso.instances, topo, db, instances.Info{Instance: db.InstanceID(), MchID: cfg.WeChatPay.MchID, Version: o.Version,
		Journaled: true, JournalSince: journalSince, ClaimsFirst: true}, h, m, log)
	if err != nil {
		return err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() {
		select {
		case <-live.fenced():
			if e := live.err(); e != nil {
				log.Error("heartbeat fenced: another process owns this instance id now; stopping", "err", e)
				stopRun()
			}
		case <-runCtx.Done():
		}
	}()
	h.running.Store(true)
	if o.Ready != nil {
		o.Ready(addrs)
	}
	log.Info("processor running", "ledger", cfg.Ledger, "consumer", topo.Consumer)
	err = p.Run(runCtx)
	h.running.Store(false)
	log.Info("processor stopped", "err", err)
	stopErr := live.stop(ctx)
	if e := live.err(); e != nil {
		stopErr = fmt.Errorf("heartbeat: %w", e) // Stop reports the same fence
	}
	return errors.Join(err, stopErr)
}

// jsClusterNotAvailable is JetStream's "temporarily unavailable" (no meta leader yet).
const jsClusterNotAvailable jetstream.ErrorCode = 10008

// ensureTopology creates the topology, retrying every second while JetStream cannot answer
// (no answer, or "temporarily unavailable": a cluster node restarting, a leader election)
// until ctx is done, so a replica that starts during an outage waits for it instead of
// exiting. An answer that refuses the configuration fails at once.
func ensureTopology(ctx context.Context, js jetstream.JetStream, topo broker.Topology, instance, mchID string, log *slog.Logger) (jsObjects, error) {
	var logged time.Time
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var o jsObjects
		var err error
		o.requests, o.claims, err = broker.Ensure(actx, js, topo)
		if err == nil {
			o.cancels, err = broker.EnsureCancels(actx, js, topo, instance, mchID)
		}
		if err == nil {
			o.instances, err = instances.Ensure(actx, js, topo.InstancesBucket, topo.Replicas)
		}
		if err == nil {
			o.journal, err = journal.Ensure(actx, js, topo.BatchesBucket, topo.Replicas, topo.MaxAge)
		}
		cancel()
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return o, nil
		case errors.As(err, &apiErr) && apiErr.ErrorCode != jsClusterNotAvailable:
			return jsObjects{}, err // JetStream answered: a configuration problem, not an outage
		}
		if time.Since(logged) > 10*time.Second {
			log.Warn("jetstream topology not ready; retrying", "err", err)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return jsObjects{}, err
		case <-time.After(time.Second):
		}
	}
}

// jsObjects are the JetStream objects a processor runs on.
type jsObjects struct {
	requests  jetstream.Consumer // the shared consumer of payout requests
	cancels   jetstream.Consumer // this instance's own consumer of cancels
	claims    jetstream.KeyValue
	instances jetstream.KeyValue // heartbeats (internal/instances)
	journal   *journal.Journal   // sealed batches before their first send
}

// resultsPrefix turns "payouts.results.>" into "payouts.results".
func resultsPrefix(subjects string) string {
	return subjects[:len(subjects)-2]
}

// contentHashKey derives the key of the ledger's request content hash from the APIv3 key,
// a secret the processor already holds. v2 hashes payout.Request.AppendContent, which
// covers no name (v1 covered the plaintext name; a v1 row re-published is a conflict).
func contentHashKey(apiv3Key string) []byte {
	m := hmac.New(sha256.New, []byte(apiv3Key))
	m.Write([]byte("paystream ledger content hash v2"))
	return m.Sum(nil)
}
