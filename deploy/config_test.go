package deploy_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

const vectors = "../testdata/testvectors/"

// fakeEnv is the environment the shipped configs expand: the sandbox's merchant identity.
func fakeEnv(k string) string {
	return map[string]string{
		"WECHATPAY_MCHID":         wechatpaytest.DefaultMchID,
		"WECHATPAY_SERIAL_NO":     wechatpaytest.DefaultMerchantSerial,
		"WECHATPAY_PUBLIC_KEY_ID": wechatpaytest.DefaultPlatformKeyID,
		"WECHATPAY_APIV3_KEY":     wechatpaytest.DefaultAPIv3Key,
		"PAYSTREAM_ADMIN_TOKEN":   "0123456789abcdef0123",
	}[k]
}

// loadConfig reads path as the processor does, with overrides as from `run --set`.
func loadConfig(t *testing.T, path string, overrides ...config.Override) app.Config {
	t.Helper()
	cfg, err := app.LoadConfig(path, fakeEnv, overrides...)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg
}

// TestProcessorYAML_StartsAsShipped runs configs/processor.yaml until the processor
// consumes. Only what belongs to the host is moved into a temporary directory (data dir,
// ledger, key files, listen ports) and WeChat Pay is the sandbox; the topology, the
// pipeline and the embedded server are as shipped. An embedded (single-node) server refuses
// streams with more than one replica, so this fails if the shipped config asks for 3.
func TestProcessorYAML_StartsAsShipped(t *testing.T) {
	cfg := loadConfig(t, "../configs/processor.yaml")
	if cfg.NATS.URL != "" {
		t.Fatalf("nats.url = %q; the shipped config runs an embedded server", cfg.NATS.URL)
	}
	srv := wechatpaytest.NewServer(t)
	dir := t.TempDir()
	key, err := os.ReadFile(vectors + "merchant_TEST_ONLY_private_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Ledger = dir, filepath.Join(dir, "ledger.db")
	cfg.WeChatPay.PrivateKeyFile = filepath.Join(dir, "apiclient_key.pem")
	if err := os.WriteFile(cfg.WeChatPay.PrivateKeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.WeChatPay.PublicKeyFile = vectors + "wechatpay_platform_TEST_ONLY_public_key.pem"
	cfg.WeChatPay.BaseURL, cfg.WeChatPay.BackupBaseURL = srv.URL(), ""
	cfg.NATS.EmbeddedListen = "127.0.0.1:0"
	if cfg.HTTP.Listen != "" {
		cfg.HTTP.Listen = "127.0.0.1:0"
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- app.Run(ctx, cfg, app.Options{Log: slog.New(slog.DiscardHandler), Ready: func(app.Addrs) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("configs/processor.yaml does not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("configs/processor.yaml: not consuming after 60s")
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("shutdown: %v", err)
	}
}
