package bench

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// env is one benchmark environment: an embedded JetStream server with the processor's
// topology, a client connection, the TEST-ONLY keys written where a processor config can
// name them, and the sandbox binary its measurements start. Close it.
type env struct {
	dir        string
	sandboxBin string
	nats       *broker.Embedded
	nc         *nats.Conn
	js         jetstream.JetStream
	topo       broker.Topology
	keys       keyFiles
	log        *slog.Logger
}

// keyFiles are the sandbox's TEST-ONLY keys as files (the merchant key 0600).
type keyFiles struct {
	merchant, platform string
}

// newEnv starts JetStream under dir and creates the processor's topology; sandboxBin is
// cmd/sandbox's binary (buildSandbox), log takes its progress lines.
func newEnv(ctx context.Context, dir, sandboxBin string, log *slog.Logger) (*env, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	emb, err := broker.StartEmbedded(filepath.Join(dir, "nats"), "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, sandboxBin: sandboxBin, nats: emb, topo: broker.DefaultTopology(), log: log}
	// Benchmarks re-publish only a message whose publish failed (publisher), within
	// publishAckTimeout + publishRetryFor of the first; a day-long window only costs memory.
	e.topo.DuplicateWindow = 2 * (publishAckTimeout + publishRetryFor)
	if e.nc, err = nats.Connect(emb.URL()); err != nil {
		e.Close()
		return nil, fmt.Errorf("nats connect: %w", err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.Close()
		return nil, err
	}
	if _, _, err := broker.Ensure(ctx, e.js, e.topo); err != nil {
		e.Close()
		return nil, err
	}
	if e.keys, err = writeKeys(dir); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close stops the connection and the server.
func (e *env) Close() {
	if e.nc != nil {
		e.nc.Close()
	}
	e.nats.Shutdown()
}

// writeKeys writes the sandbox's merchant private key and platform public key as PEM files.
func writeKeys(dir string) (keyFiles, error) {
	k := keyFiles{merchant: filepath.Join(dir, "merchant.pem"), platform: filepath.Join(dir, "platform.pem")}
	priv, err := x509.MarshalPKCS8PrivateKey(wechatpaytest.MerchantPrivateKey())
	if err != nil {
		return k, err
	}
	pub, err := x509.MarshalPKIXPublicKey(wechatpaytest.PlatformPublicKey())
	if err != nil {
		return k, err
	}
	if err := os.WriteFile(k.merchant, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return k, err
	}
	return k, os.WriteFile(k.platform, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

// processorConfig is a production-paced processor config in dataDir, on this env's
// JetStream, against the sandbox at baseURL.
func (e *env) processorConfig(dataDir, baseURL string) app.Config {
	cfg := app.DefaultConfig()
	cfg.DataDir, cfg.Ledger = dataDir, filepath.Join(dataDir, "ledger.db")
	cfg.NATS.URL = e.nats.URL()
	cfg.NATS.Topology = e.topo
	cfg.WeChatPay = app.WeChatPayConfig{
		BaseURL: baseURL, MchID: wechatpaytest.DefaultMchID, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial,
		PrivateKeyFile: e.keys.merchant, PublicKeyFile: e.keys.platform, PublicKeyID: wechatpaytest.DefaultPlatformKeyID,
		APIv3Key: wechatpaytest.DefaultAPIv3Key, Timeout: 15 * time.Second,
		Product: pipeline.ProductBatches,
	}
	cfg.Log.Level = "warn"
	return cfg
}

// payouts returns the synth options of n valid payouts for seed (no invalid lines: both
// sides of a ratio see exactly the same valid messages; 2% carry a name, sealed with the
// sandbox's TEST-ONLY WeChat Pay public key as a producer would).
// benchMchID is the merchant every benchmark payout is for.
var benchMchID = synth.DefaultOptions().MchID

func payouts(n int, seed uint64) synth.Options {
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate = n, seed, 0, 0.01
	o.NameKey = &payout.NameKey{ID: wechatpaytest.DefaultPlatformKeyID, Key: wechatpaytest.PlatformPublicKey()}
	return o
}

// publish sends the payouts of o to the stream (Nats-Msg-Id = out_detail_no: the raw
// benchmark claims the id as the key) through a publisher (at most publishWindow
// unacknowledged, each failed publish retried with its Nats-Msg-Id) and waits for every ack.
// It returns the stream's last sequence; an error if any payout was not acknowledged.
func (e *env) publish(ctx context.Context, o synth.Options) (uint64, error) {
	p, err := newPublisher(ctx, e.nc, publishWindow, publishAckTimeout, publishRetryFor)
	if err != nil {
		return 0, err
	}
	subject := payout.Subject(payout.DefaultSubjectPrefix, o.MchID)
	err = synth.Each(ctx, o, func(r synth.Record) error {
		m := nats.NewMsg(subject)
		m.Data = r.Line
		m.Header.Set(jetstream.MsgIDHeader, r.Req.OutDetailNo)
		return p.publish(m)
	})
	st, werr := p.wait()
	if err := errors.Join(err, werr); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	if st.Retries > 0 {
		e.log.Warn("publish retried", "payouts", o.Count, "retries", st.Retries, "duplicates", st.Duplicates)
	}
	s, err := e.js.Stream(ctx, e.topo.Stream)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.LastSeq, nil
}

// waitAcked polls the consumer until every message up to lastSeq is acked and returns when
// that was first seen. It polls every farPoll while more than nearAcks messages are
// unacked and some are undelivered, then every nearPoll: the polls (a JetStream API request
// and its JSON answer each) cost the measured process CPU, and a processor measured from its
// start would otherwise pay for over a thousand of them per round that the raw loops, which
// wait only at their end, do not.
func (e *env) waitAcked(ctx context.Context, consumer string, lastSeq uint64, limit time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		every := farPoll
		c, err := e.js.Consumer(ctx, e.topo.Stream, consumer)
		if err == nil {
			info := c.CachedInfo()
			if info.AckFloor.Stream >= lastSeq && info.NumAckPending == 0 {
				return time.Now(), nil
			}
			if info.NumPending == 0 || info.AckFloor.Stream+nearAcks >= lastSeq {
				every = nearPoll
			}
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return time.Time{}, fmt.Errorf("consumer %s: %w", consumer, err)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("consumer %s: not every message acked after %s", consumer, limit)
		case <-time.After(every):
		}
	}
}

// waitAcked's polling: every farPoll while more than nearAcks messages are unacked (a third
// of a second of intake; no intake acks them within one farPoll) and some are undelivered,
// then every nearPoll, which bounds the error of the end time. Once every message is
// delivered the end is near even when the ack floor lags far behind: the processor acks the
// payouts it holds for a batch only when they are committed, which may be the last commit.
const (
	farPoll  = 50 * time.Millisecond
	nearPoll = 2 * time.Millisecond
	nearAcks = 10_000
)

// processor is app.Run in a goroutine.
type processor struct {
	ready time.Time
	addrs app.Addrs
	stop  context.CancelFunc
	done  chan error
}

// startSandbox runs the sandbox child with o (see sandboxArgs), logging to
// dataDir/sandbox.log; the caller closes it.
func (e *env) startSandbox(ctx context.Context, o wechatpaytest.Options, dataDir string) (*sandbox, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	return startSandbox(ctx, e.sandboxBin, o, filepath.Join(dataDir, "sandbox.log"))
}

// startProcessor runs the processor with cfg and returns once it consumes.
func startProcessor(ctx context.Context, cfg app.Config, logs io.Writer) (*processor, error) {
	ctx, cancel := context.WithCancel(ctx)
	p := &processor{stop: cancel, done: make(chan error, 1)}
	ready := make(chan app.Addrs, 1)
	go func() {
		p.done <- app.Run(ctx, cfg, app.Options{
			Log:   cfg.Logger(logs),
			Ready: func(a app.Addrs) { ready <- a },
		})
	}()
	select {
	case p.addrs = <-ready:
		p.ready = time.Now()
		return p, nil
	case err := <-p.done:
		cancel()
		return nil, fmt.Errorf("processor did not start: %w", err)
	}
}

// Stop stops the processor and waits for it.
func (p *processor) Stop() error {
	p.stop()
	return <-p.done
}
