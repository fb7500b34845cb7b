package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

const testdata = "../../testdata/testvectors/"

// testConfig is a fast-paced processor config against srv, with the key file copied to a
// 0600 file (git does not keep file modes).
func testConfig(t *testing.T, srv *wechatpaytest.Server) Config {
	t.Helper()
	dir := t.TempDir()
	key, err := os.ReadFile(testdata + "merchant_TEST_ONLY_private_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "merchant.pem")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Ledger = dir, filepath.Join(dir, "ledger.db")
	cfg.NATS.EmbeddedListen = "127.0.0.1:0"
	cfg.NATS.Topology.DuplicateWindow = time.Minute
	cfg.NATS.Topology.Backoff = nil
	cfg.WeChatPay = WeChatPayConfig{
		BaseURL: srv.URL(), MchID: wechatpaytest.DefaultMchID, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial,
		PrivateKeyFile: keyPath, PublicKeyFile: testdata + "wechatpay_platform_TEST_ONLY_public_key.pem",
		PublicKeyID: wechatpaytest.DefaultPlatformKeyID, APIv3Key: "TestOnlyAPIv3Key0123456789abcdef", Timeout: 2 * time.Second,
		Product: pipeline.ProductBatches,
	}
	p := &cfg.Pipeline
	p.Batching.MaxWait = 200 * time.Millisecond
	p.Submit = pipeline.SubmitConfig{RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, ParkedRetry: 500 * time.Millisecond, Workers: 8, BillWorkers: 16}
	p.Poll.FirstDelay, p.Poll.Interval, p.Poll.NotFoundGrace = 100*time.Millisecond, 200*time.Millisecond, 5*time.Second
	p.RateLimit = pipeline.RateConfig{Create: 50, Query: 50, Detail: 50, Cancel: 20}
	p.Breaker = pipeline.BreakerConfig{Failures: 5, OpenTimeout: 500 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// running is a processor started by startProcessor.
type running struct {
	js   jetstream.JetStream
	done chan error
	stop context.CancelFunc
	once sync.Once
}

// shutdown stops the processor gracefully and waits for it (once; t.Cleanup calls it too).
func (r *running) shutdown(t *testing.T) {
	r.once.Do(func() {
		r.stop()
		if err := <-r.done; err != nil {
			t.Errorf("processor: %v", err)
		}
	})
}

func startProcessor(t *testing.T, cfg Config, logs io.Writer) *running {
	t.Helper()
	return startProcessorWith(t, cfg, logs, nil)
}

// startProcessorWith is startProcessor that also hands the processor's addresses to onReady.
func startProcessorWith(t *testing.T, cfg Config, logs io.Writer, onReady func(Addrs)) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	r := &running{done: make(chan error, 1), stop: cancel}
	go func() {
		r.done <- Run(ctx, cfg, Options{
			Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: testLogLevel()})),
			Ready: func(a Addrs) {
				if onReady != nil {
					onReady(a)
				}
				ready <- a.NATS
			},
		})
	}()
	var url string
	select {
	case url = <-ready:
	case err := <-r.done:
		t.Fatalf("processor did not start: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("processor not ready after a minute")
	}
	t.Cleanup(func() { r.shutdown(t) })
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return r
}

// published is what a test sent: valid keys, which of them the sandbox fails, and invalid lines.
type published struct {
	valid   map[string]bool         // out_detail_no → the sandbox fails it
	records map[string]synth.Record // the valid ones, by out_detail_no
	invalid int
}

// publish sends n generated payouts (valid and invalid, raw, names sealed as pkg/payout
// does) plus the extra lines.
func publish(t *testing.T, js jetstream.JetStream, o synth.Options, extra ...[]byte) published {
	t.Helper()
	if o.NameKey == nil {
		o.NameKey = nameKey()
	}
	ctx := context.Background()
	got := published{valid: map[string]bool{}, records: map[string]synth.Record{}}
	var futures []jetstream.PubAckFuture
	send := func(line []byte, id string) {
		m := nats.NewMsg(payout.Subject(payout.DefaultSubjectPrefix, o.MchID))
		m.Data = line
		if id != "" {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	err := synth.Each(ctx, o, func(r synth.Record) error {
		if r.Valid {
			got.valid[r.Req.OutDetailNo] = r.Fails()
			got.records[r.Req.OutDetailNo] = r
			send(r.Line, r.Req.OutDetailNo)
		} else {
			got.invalid++
			send(r.Line, "")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range extra {
		got.invalid++
		send(line, "")
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish ack timeout")
		}
	}
	return got
}

// nastyLines are requests a producer that skips validation could send.
func nastyLines() [][]byte {
	return [][]byte{
		[]byte(`{"schema":"paystream.payout.v1","out_detail_no":"X1"`),
		[]byte(`{"schema":"paystream.payout.v1","out_detail_no":"X2","mchid":"1900000001","appid":"wxa0000000000000001","openid":"o1","amount":100,"remark":"r","surprise":1}`),
		[]byte(`{"schema":"paystream.payout.v1","out_detail_no":"X3","mchid":"1900000001","appid":"wxa0000000000000001","openid":"o1","amount":1.5,"remark":"r"}`),
		[]byte(`{"schema":"paystream.payout.v1","out_detail_no":"X-4!","mchid":"1900000001","appid":"wxa0000000000000001","openid":"o1","amount":100,"remark":"r"}`),
		append([]byte(`{"schema":"paystream.payout.v1","remark":"`), append(bytes.Repeat([]byte("a"), 1<<20-100), `"}`...)...),
	}
}

// waitFinal waits until n payouts in db are in a final state.
func waitFinal(t *testing.T, db *ledger.DB, n int, limit time.Duration) {
	t.Helper()
	testingutil.PollEvery(t, limit, 200*time.Millisecond, func() (bool, string) {
		s, err := db.Summary(context.Background())
		if err != nil {
			return false, err.Error()
		}
		final := 0
		for _, st := range finalStates {
			final += s.Payouts[st].Count
		}
		return final == n, fmt.Sprintf("%d of %d payouts final: %+v", final, n, s.Payouts)
	})
}

// waitPaidOnce waits (a minute at most) until the ledger at path holds every key of valid
// final (and as many more as unpaid), then fails t for each key of valid the sandbox did not
// pay exactly once (valid: a workload the sandbox fails none of).
func waitPaidOnce(t *testing.T, path string, srv *wechatpaytest.Server, valid map[string]bool, unpaid ...string) {
	t.Helper()
	db, err := ledger.OpenReadOnly(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, len(valid)+len(unpaid), time.Minute)
	paid := srv.Paid()
	for key := range valid {
		if paid[key] != 1 {
			t.Errorf("%s paid %d times, want 1", key, paid[key])
		}
	}
}

// finalStates are the payout states that never change again.
var finalStates = []string{ledger.PayoutSuccess, ledger.PayoutFail, ledger.PayoutRejected, ledger.PayoutDuplicate, ledger.PayoutCancelled}

func TestRun_EndToEnd(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200), wechatpaytest.WithNotFoundLag(100*time.Millisecond))
	srv.FailRate(wechatpaytest.EndpointCreateBatch, wechatpaytest.SystemError, 0.05)
	srv.FailRate(wechatpaytest.EndpointCreateBatch, wechatpaytest.DropAfterCommit, 0.05)
	srv.FailRate(wechatpaytest.EndpointBatchByOutNo, wechatpaytest.SystemError, 0.03)
	cfg := testConfig(t, srv)
	var logs bytes.Buffer
	p := startProcessor(t, cfg, &logs)

	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 5000, 42, 0.01, 0.03, 0.02
	sent := publish(t, p.js, o, nastyLines()...)

	db, err := ledger.OpenReadOnly(context.Background(), cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, len(sent.valid), 3*time.Minute)

	paid := srv.Paid()
	t.Run("every valid payout paid exactly once, failing ones never", func(t *testing.T) {
		for key, fails := range sent.valid {
			want := 1
			if fails {
				want = 0
			}
			if got := paid[key]; got != want {
				t.Errorf("%s paid %d times, want %d", key, got, want)
			}
		}
		if d := srv.DoublePaid(); len(d) > 0 {
			t.Errorf("sandbox reports double payments: %v", d)
		}
	})
	t.Run("ledger states equal the sandbox's", func(t *testing.T) {
		states := map[string]string{}
		for _, st := range finalStates {
			ps, err := db.PayoutsInState(context.Background(), st, len(sent.valid)+1)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				states[p.OutDetailNo] = p.State
			}
		}
		for key, fails := range sent.valid {
			want := ledger.PayoutSuccess
			if fails {
				want = ledger.PayoutFail
			}
			if got := states[key]; got != want {
				t.Errorf("%s: ledger state %q, want %s (paid %d)", key, got, want, paid[key])
			}
		}
	})
	t.Run("every invalid request dead-lettered with its reason", func(t *testing.T) {
		msgs := drain(t, p.js, cfg.NATS.Topology.DeadLetterStream, sent.invalid+10)
		if len(msgs) != sent.invalid {
			t.Fatalf("%d dead letters, want %d", len(msgs), sent.invalid)
		}
		for _, m := range msgs {
			if m.Headers().Get(payout.HeaderReason) == "" {
				t.Errorf("dead letter on %s without a reason", m.Subject())
			}
		}
	})
	t.Run("one outcome event per final payout", func(t *testing.T) {
		testingutil.PollEvery(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
			info, err := p.js.Stream(context.Background(), cfg.NATS.Topology.ResultsStream)
			if err != nil {
				return false, err.Error()
			}
			n := info.CachedInfo().State.Msgs
			return n == uint64(len(sent.valid)), fmt.Sprintf("%d outcome events, want %d", n, len(sent.valid))
		})
	})
	t.Run("audit is clean", func(t *testing.T) { auditClean(t, time.Now(), cfg.Ledger) })
	if t.Failed() {
		t.Logf("processor logs:\n%s", logs.String())
	}
}

// auditClean audits the ledger files together as of now and fails t on any violation.
func auditClean(t *testing.T, now time.Time, paths ...string) {
	t.Helper()
	r, err := ledger.Audit(context.Background(), paths, now)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		var b strings.Builder
		r.WriteText(&b)
		t.Fatalf("audit:\n%s", b.String())
	}
}

// TestRun_WeChatOutage: WeChat answers SYSTEM_ERROR to everything for a while. The breaker
// opens (and says so), sealed batches wait under their numbers, and after recovery every
// payout is paid exactly once, each batch under the one number it was sealed with.
func TestRun_WeChatOutage(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	srv.FailRate(wechatpaytest.AnyEndpoint, wechatpaytest.SystemError, 1)
	cfg := testConfig(t, srv)
	logs := testingutil.NewLogWatch("to=open")
	p := startProcessor(t, cfg, logs)

	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate = 2000, 7, 0
	sent := publish(t, p.js, o)
	select {
	case <-logs.Seen():
	case <-time.After(time.Minute):
		t.Fatalf("the breaker did not open; logs:\n%s", logs.String())
	}
	db, err := ledger.OpenReadOnly(context.Background(), cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The outage goes on until every payout is sealed, so batches wait through it.
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		s, err := db.Summary(context.Background())
		if err != nil {
			return false, err.Error()
		}
		n := s.Payouts[ledger.PayoutSealed].Count
		return n == len(sent.valid), fmt.Sprintf("%d of %d sealed", n, len(sent.valid))
	})
	if got := len(srv.Batches()); got != 0 {
		t.Fatalf("%d batches created during a total outage", got)
	}
	srv.ClearFaults()

	waitFinal(t, db, len(sent.valid), 2*time.Minute)
	paid := srv.Paid()
	for key, fails := range sent.valid {
		if want := map[bool]int{false: 1, true: 0}[fails]; paid[key] != want {
			t.Errorf("%s paid %d times, want %d", key, paid[key], want)
		}
	}
	s, err := db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ledgerBatches := 0
	for _, n := range s.Batches {
		ledgerBatches += n
	}
	for _, b := range srv.Batches() {
		if _, err := db.Batch(context.Background(), b.OutBatchNo); err != nil {
			t.Errorf("sandbox batch %s is not a sealed ledger batch: %v", b.OutBatchNo, err)
		}
	}
	if got := len(srv.Batches()); got != ledgerBatches {
		t.Errorf("sandbox has %d batches, ledger sealed %d: a batch was renumbered", got, ledgerBatches)
	}
	if t.Failed() {
		t.Logf("processor logs:\n%s", logs.String())
	}
}

// drain reads every message of a stream (at most max) with an ephemeral consumer.
func drain(t *testing.T, js jetstream.JetStream, stream string, max int) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < max {
		b, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			out = append(out, m)
			n++
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	return out
}

// testLogLevel is WARN, or what PAYSTREAM_TEST_LOG says (debug, info) when debugging a test.
func testLogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("PAYSTREAM_TEST_LOG"))); err != nil {
		return slog.LevelWarn
	}
	return l
}
