// Package reconciletest makes a day of real payouts to reconcile: the processor (app.Run,
// embedded NATS, a real SQLite ledger in t.TempDir()) pays generated requests through the
// sandbox over real HTTP, whose fund-flow bill of the day is served at once
// (wechatpaytest.WithFundFlowDelay(-24h)). For the tests of internal/reconcile and
// cmd/processor.
package reconciletest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// Day is a finished day of payouts: every request final in the ledger, the processor stopped.
type Day struct {
	Srv        *wechatpaytest.Server
	Config     app.Config // the processor's: DataDir, Ledger, WeChatPay
	ConfigFile string     // Config as a processor YAML file (processor reconcile --config)
	Date       string     // the day they were paid, YYYY-MM-DD in China Standard Time
	Paid       []ledger.Paid
	Failed     []string // keys that ended FAIL
}

// Options shape a Day.
type Options struct {
	Count    int     // requests; default 30
	FailRate float64 // share the sandbox fails
	Product  string  // synth.ProductBatches (default) or synth.ProductBills
	Seed     uint64
}

// PaidDay runs the processor against a new sandbox (srvOpts added to the day's) until o.Count
// requests are final, stops it, and returns the day. The run is bounded (a minute to start,
// two to finish).
func PaidDay(t *testing.T, o Options, srvOpts ...wechatpaytest.Option) *Day {
	t.Helper()
	if o.Count == 0 {
		o.Count = 30
	}
	if o.Product == "" {
		o.Product = synth.ProductBatches
	}
	opts := []wechatpaytest.Option{wechatpaytest.WithSpeed(500), wechatpaytest.WithNotFoundLag(50 * time.Millisecond),
		wechatpaytest.WithFundFlowDelay(-24 * time.Hour), wechatpaytest.WithProduct(o.Product)}
	if o.Product == synth.ProductBills {
		opts = append(opts, wechatpaytest.WithBillAutoConfirm(time.Millisecond))
	}
	srv := wechatpaytest.NewServer(t, append(opts, srvOpts...)...)
	d := &Day{Srv: srv}
	d.Config, d.ConfigFile = Config(t, srv, o.Product)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- app.Run(ctx, d.Config, app.Options{Log: log, Ready: func(a app.Addrs) { ready <- a.NATS }})
	}()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
	}
	var url string
	select {
	case url = <-ready:
	case err := <-done:
		t.Fatalf("processor did not start: %v", err)
	case <-time.After(time.Minute):
		cancel()
		t.Fatal("processor not ready after a minute")
	}
	publish(t, url, synth.Options{Count: o.Count, Seed: o.Seed + 1, FailRate: o.FailRate, MchID: wechatpaytest.DefaultMchID,
		AppIDs: []string{"wxa0000000000000001"}, Start: time.Now(), Product: o.Product,
		NameKey: &payout.NameKey{ID: wechatpaytest.DefaultPlatformKeyID, Key: wechatpaytest.PlatformPublicKey()}})
	if err := waitFinal(d.Config.Ledger, o.Count, 2*time.Minute); err != nil {
		stop()
		t.Fatal(err)
	}
	stop()

	db, err := ledger.OpenReadOnly(context.Background(), d.Config.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d.Date = time.Now().In(ledger.ChinaTime).Format(ledger.DateLayout)
	if d.Paid, err = db.PaidOn(context.Background(), d.Date); err != nil {
		t.Fatal(err)
	}
	failed, err := db.PayoutsInState(context.Background(), ledger.PayoutFail, o.Count)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range failed {
		d.Failed = append(d.Failed, p.OutDetailNo)
	}
	if len(d.Paid)+len(d.Failed) != o.Count {
		t.Fatalf("%d paid on %s and %d failed of %d: a day that straddles midnight (China time)? run again", len(d.Paid), d.Date, len(d.Failed), o.Count)
	}
	return d
}

// Config writes the key files (TEST-ONLY keys) in a new directory and returns a fast
// processor config against srv for product (synth.ProductBatches or ProductBills), its data
// dir and ledger in that directory, and the path of the same config as a YAML file, for the
// processor's subcommands.
func Config(t *testing.T, srv *wechatpaytest.Server, product string) (app.Config, string) {
	t.Helper()
	dir := t.TempDir()
	priv, err := x509.MarshalPKCS8PrivateKey(wechatpaytest.MerchantPrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(wechatpaytest.PlatformPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile := filepath.Join(dir, "merchant.pem"), filepath.Join(dir, "wechatpay_public_key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{keyFile, "PRIVATE KEY", priv}, {pubFile, "PUBLIC KEY", pub}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const apiv3 = "TestOnlyAPIv3Key0123456789abcdef"
	cfg := app.DefaultConfig()
	cfg.DataDir, cfg.Ledger = dir, filepath.Join(dir, "ledger.db")
	cfg.NATS.EmbeddedListen = "127.0.0.1:0"
	cfg.NATS.Topology.DuplicateWindow = time.Minute
	cfg.NATS.Topology.Backoff = nil
	cfg.WeChatPay = app.WeChatPayConfig{
		BaseURL: srv.URL(), MchID: wechatpaytest.DefaultMchID, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial,
		PrivateKeyFile: keyFile, PublicKeyFile: pubFile, PublicKeyID: wechatpaytest.DefaultPlatformKeyID, APIv3Key: apiv3,
		Timeout: 2 * time.Second, Product: product,
	}
	p := &cfg.Pipeline
	p.Product = product // what app.LoadConfig derives from wechatpay.product
	p.Batching.MaxWait = 100 * time.Millisecond
	p.Submit = pipeline.SubmitConfig{RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, ParkedRetry: 500 * time.Millisecond, Workers: 4, BillWorkers: 8}
	p.Poll.FirstDelay, p.Poll.Interval, p.Poll.NotFoundGrace = 50*time.Millisecond, 100*time.Millisecond, 5*time.Second
	p.RateLimit = pipeline.RateConfig{Create: 100, Query: 100, Detail: 100, Cancel: 20}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "processor.yaml")
	yaml := fmt.Sprintf(`data-dir: %q
ledger: %q
wechatpay:
  base-url: %q
  backup-base-url: ""
  mchid: %q
  product: %s
  merchant-serial-no: %q
  private-key-file: %q
  wechatpay-public-key-file: %q
  wechatpay-public-key-id: %q
  apiv3-key: %q
  timeout: 5s
`, cfg.DataDir, cfg.Ledger, srv.URL(), wechatpaytest.DefaultMchID, product, wechatpaytest.DefaultMerchantSerial,
		keyFile, pubFile, wechatpaytest.DefaultPlatformKeyID, apiv3)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, file
}

// publish sends the valid requests o generates to the processor's NATS at url and waits for
// every ack.
func publish(t *testing.T, url string, o synth.Options) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var futures []jetstream.PubAckFuture
	err = synth.Each(context.Background(), o, func(r synth.Record) error {
		if !r.Valid {
			return nil
		}
		m := nats.NewMsg(payout.Subject(payout.DefaultSubjectPrefix, o.MchID))
		m.Data = r.Line
		m.Header.Set(jetstream.MsgIDHeader, r.Req.OutDetailNo)
		f, err := js.PublishMsgAsync(m)
		futures = append(futures, f)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish: no ack in 30 s")
		}
	}
}

// waitFinal polls the ledger at path (read-only) until n payouts are final, for at most limit.
func waitFinal(path string, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for time.Now().Before(deadline) {
		<-tick.C
		db, err := ledger.OpenReadOnly(context.Background(), path)
		if err != nil {
			last = err.Error()
			continue
		}
		s, err := db.Summary(context.Background())
		db.Close()
		if err != nil {
			last = err.Error()
			continue
		}
		final := 0
		for _, st := range []string{ledger.PayoutSuccess, ledger.PayoutFail, ledger.PayoutRejected, ledger.PayoutDuplicate, ledger.PayoutCancelled} {
			final += s.Payouts[st].Count
		}
		if final == n {
			return nil
		}
		last = fmt.Sprintf("%d of %d payouts final: %+v", final, n, s.Payouts)
	}
	return fmt.Errorf("not final after %s: %s", limit, last)
}
