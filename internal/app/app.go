package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"github.com/paystream/paystream/internal/pipeline"
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
	// Ready, if set, is called once the processor consumes, with the NATS URL in use (the
	// embedded server's when no URL is configured) and the callback address (if any).
	Ready func(natsURL, callbackAddr string)
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
	// The ledger records its merchant: a file of another merchant never pays (rule 6).
	db, err := ledger.Open(ctx, cfg.Ledger, ledger.WithLogger(log), ledger.WithMerchant(cfg.WeChatPay.MchID))
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	log = log.With("instance", db.InstanceID())

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
	nc, err := nats.Connect(url, cfg.NATS.Options("paystream-processor-"+db.InstanceID(), log)...)
	if err != nil {
		return fmt.Errorf("nats connect: %w", err)
	}
	defer nc.Close()
	// An async publish (a claim) whose reply never comes fails after this instead of holding
	// its place among the pending acks until the next reconnect; Claim then resolves the key.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	topo := cfg.NATS.Topology
	jso, err := ensureTopology(ctx, js, topo, db.InstanceID(), cfg.WeChatPay.MchID, log)
	if err != nil {
		return fmt.Errorf("jetstream topology: %w", err)
	}

	wcfg, err := cfg.WeChatPay.clientConfig()
	if err != nil {
		return err
	}
	copts := []wechatpay.Option{wechatpay.WithLogger(log), wechatpay.WithTimeout(cfg.WeChatPay.Timeout)}
	if o.HTTPClient != nil {
		copts = append(copts, wechatpay.WithHTTPClient(o.HTTPClient))
	}
	api, err := wechatpay.NewClient(wcfg, copts...)
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

	p, err := pipeline.New(cfg.Pipeline, pipeline.Deps{
		Consumer: jso.requests, Claims: claims.New(js, jso.claims, db.InstanceID(), claims.WithLogger(log)), DB: db, API: api, Publisher: pub,
		RequestPrefix: strings.TrimSuffix(topo.Subjects, ".>"), DeadLetterSubject: topo.DeadLetterSubject,
		MaxDeadLetterBody: min(payout.MaxMessageSize, int(pubConn.MaxPayload()/2)),
		Merchant:          pipeline.Merchant{MchID: cfg.WeChatPay.MchID, SubMchIDs: cfg.WeChatPay.SubMchIDs},
		ResultsPrefix:     resultsPrefix(topo.ResultsSubjects), HashKey: contentHashKey(cfg.WeChatPay.APIv3Key), Log: log,
		Cancels: jso.cancels, CancelPrefix: strings.TrimSuffix(topo.CancelSubjects, ".>"),
	})
	if err != nil {
		return err
	}

	var cbAddr string
	if cfg.Callback.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Callback.Listen)
		if err != nil {
			return fmt.Errorf("callback listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle(cfg.Callback.Path, p.CallbackHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		cbAddr = ln.Addr().String()
	}
	if o.Ready != nil {
		o.Ready(url, cbAddr)
	}
	log.Info("processor running", "ledger", cfg.Ledger, "consumer", topo.Consumer)
	err = p.Run(ctx)
	log.Info("processor stopped", "err", err)
	return err
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
	requests jetstream.Consumer // the shared consumer of payout requests
	cancels  jetstream.Consumer // this instance's own consumer of cancels
	claims   jetstream.KeyValue
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
