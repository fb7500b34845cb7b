package app

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/internal/config/configtest"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// validConfig is DefaultConfig with the merchant's identity filled in; Validate reads no file.
func validConfig() Config {
	cfg := DefaultConfig()
	cfg.WeChatPay.MchID, cfg.WeChatPay.MerchantSerialNo = "1900000001", "SERIAL"
	cfg.WeChatPay.PrivateKeyFile, cfg.WeChatPay.PublicKeyFile = "key.pem", "pub.pem"
	cfg.WeChatPay.APIv3Key = "0123456789abcdef0123456789abcdef"
	return cfg
}

// TestConfig_Validate_pipeline: a bad pipeline setting is reported by pipeline.Config.Validate
// under its full key path, "pipeline.<key>"; the rules that need two sections stay here.
func TestConfig_Validate_pipeline(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(*Config)
		wantField string // "" for a valid config
		wantMsg   string // a part of the message
	}{
		{"valid", func(*Config) {}, "", ""},
		{"page-limit", func(c *Config) { c.Pipeline.Poll.PageLimit = 500 }, "pipeline.poll.page-limit", "= 500: 20..100 (docs/wechatpay.md §5)"},
		{"cap-direct", func(c *Config) { c.Pipeline.Batching.CapDirect = 1001 }, "pipeline.batching.cap-direct", "= 1001: outside 1..1000 (docs/wechatpay.md §4)"},
		{"cap-bills", func(c *Config) { c.Pipeline.Batching.CapBills = 1001 }, "pipeline.batching.cap-bills", "outside 1..1000"},
		{"workers", func(c *Config) { c.Pipeline.Submit.Workers = 0 }, "pipeline.submit.workers", "≥ 1"},
		{"bill-workers", func(c *Config) { c.Pipeline.Submit.BillWorkers = 0 }, "pipeline.submit.bill-workers", "≥ 1"},
		{"retry-min", func(c *Config) { c.Pipeline.Submit.RetryMin = 0 }, "pipeline.submit.retry-min", "must be positive"},
		{"fetch-batch zero", func(c *Config) { c.Pipeline.Intake.FetchBatch = 0 }, "pipeline.intake.fetch-batch", "must be ≥ 1"},
		{"fetch-batch above max-ack-pending", func(c *Config) { c.Pipeline.Intake.FetchBatch = c.NATS.Topology.MaxAckPending + 1 }, "pipeline.intake.fetch-batch", "must be ≤ nats.topology.max-ack-pending"},
		{"fetch-batch at max-ack-pending", func(c *Config) { c.Pipeline.Intake.FetchBatch = c.NATS.Topology.MaxAckPending }, "", ""},
		{"bill-sweep", func(c *Config) { c.Pipeline.Poll.BillSweep = 0 }, "pipeline.poll.bill-sweep", "must be positive"},
		{"name-template", func(c *Config) { c.Pipeline.Batching.NameTemplate = "{{" }, "pipeline.batching.name-template", "bad batch name template"},
		{"rate-limit", func(c *Config) { c.Pipeline.RateLimit.Create = 0 }, "pipeline.rate-limit", "must be positive"},
		{"wechatpay.product", func(c *Config) { c.WeChatPay.Product = "cheques" }, "wechatpay.product", "= cheques: batches (the batch API) or bills (transfer bills)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			configtest.WantField(t, err, tt.wantField, tt.wantMsg)
		})
	}
}

// TestLoadConfig: the processor's one loader reads the file over the defaults (${VAR}
// expanded), then the overrides (the last word), then derives and validates; a bad value,
// in the file or in an override, is named by its full key path.
func TestLoadConfig(t *testing.T) {
	const apiv3 = "0123456789abcdef0123456789abcdef"
	// base ends inside the wechatpay block: a case's file may continue it.
	const base = "wechatpay:\n  mchid: \"1900000001\"\n  merchant-serial-no: S\n  private-key-file: k.pem\n" +
		"  wechatpay-public-key-file: p.pem\n  apiv3-key: ${APIV3}\n"
	set := func(kv ...string) []config.Override {
		var out []config.Override
		for i := 0; i < len(kv); i += 2 {
			out = append(out, config.Override{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name      string
		file      string // appended to base
		overrides []config.Override
		wantErr   string // a part of the error; "" for a valid config
		check     func(t *testing.T, c Config)
	}{
		{name: "defaults and ${VAR}", check: func(t *testing.T, c Config) {
			if got, want := c.WeChatPay.APIv3Key, apiv3; got != want {
				t.Fatalf("apiv3-key = %q, want %q (from ${APIV3})", got, want)
			}
			if got, want := c.Ledger, filepath.Join(".paystream", "ledger.db"); got != want {
				t.Fatalf("ledger = %q, want %q", got, want)
			}
			if got, want := c.Pipeline.Product, pipeline.ProductBatches; got != want {
				t.Fatalf("pipeline product = %q, want %q", got, want)
			}
		}},
		{name: "an unset ${VAR}", file: "  backup-base-url: ${NO_SUCH_VAR}\n", wantErr: "NO_SUCH_VAR"},

		// A bad value in the file.
		{name: "file page-limit", file: "pipeline:\n  poll:\n    page-limit: 500\n", wantErr: "config: pipeline.poll.page-limit = 500: 20..100"},
		{name: "file backoff", file: "nats:\n  topology:\n    ack-wait: 30s\n    backoff: [1s, 2s]\n", wantErr: "nats.topology.backoff"},
		{name: "file max-deliver", file: "nats:\n  topology:\n    max-deliver: 20\n", wantErr: "nats.topology.max-deliver"},
		{name: "file max-age", file: "nats:\n  topology:\n    max-age: 24h\n", wantErr: "nats.topology.max-age"},
		{name: "file sub-mchids", file: "  sub-mchids: [\"19x\"]\n", wantErr: "wechatpay.sub-mchids"},
		{name: "file sweep-every", file: "pipeline:\n  intake:\n    sweep-every: 0s\n", wantErr: "pipeline.intake.sweep-every"},
		{name: "file product", file: "  product: transfers\n", wantErr: "wechatpay.product"},
		{name: "file bill-scenes", file: "pipeline:\n  bill-scenes:\n    \"1000\":\n      report-infos: []\n", wantErr: "pipeline.bill-scenes"},
		{name: "file rate-limit", file: "pipeline:\n  rate-limit:\n    cancel: 0\n", wantErr: "pipeline.rate-limit"},
		{name: "file replicas", file: "nats:\n  topology:\n    replicas: 3\n", wantErr: "nats.topology.replicas = 3: 1 with the embedded server"},
		{name: "file negative grace", file: "pipeline:\n  poll:\n    not-found-grace: -5s\n", wantErr: "pipeline.poll.not-found-grace = -5s: must not be negative"},
		{name: "file negative timeout", file: "  timeout: -1s\n", wantErr: "wechatpay.timeout = -1s: must not be negative"},
		{name: "file negative window", file: "nats:\n  topology:\n    duplicate-window: -2m\n", wantErr: "nats.topology.duplicate-window = -2m0s: must not be negative"},
		{name: "file negative max-wait", file: "pipeline:\n  batching:\n    max-wait: -1s\n", wantErr: "pipeline.batching.max-wait = -1s: must not be negative"},
		{name: "file zero interval", file: "pipeline:\n  poll:\n    interval: 0s\n", wantErr: "pipeline.poll.interval = 0s: must be positive"},
		{name: "file zero parked-retry", file: "pipeline:\n  submit:\n    parked-retry: 0s\n", wantErr: "pipeline.submit.parked-retry = 0s: must be positive"},
		{name: "file zero fetch-max-wait", file: "pipeline:\n  intake:\n    fetch-max-wait: 0s\n", wantErr: "pipeline.intake.fetch-max-wait = 0s: must be positive"},
		{name: "file not a duration", file: "pipeline:\n  poll:\n    interval: 1 minute\n", wantErr: `processor.yaml: config: pipeline.poll.interval: cannot use "1 minute" as a duration`},
		{name: "file not an integer", file: "pipeline:\n  submit:\n    workers: eight\n", wantErr: `pipeline.submit.workers: cannot use "eight" as an integer`},

		// A bad override.
		{name: "override page-limit", overrides: set("pipeline.poll.page-limit", "500"), wantErr: "config: pipeline.poll.page-limit = 500: 20..100"},
		{name: "override not a duration", overrides: set("pipeline.poll.interval", "1 minute"), wantErr: `pipeline.poll.interval: cannot use "1 minute" as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (command line)`},
		{name: "override unknown key", overrides: set("pipeline.poll.nope", "1"), wantErr: "pipeline.poll.nope: unknown key (command line)"},
		{name: "override of a derived setting", overrides: set("pipeline.product", "bills"), wantErr: "pipeline.product: unknown key"},
		{name: "override product", overrides: set("wechatpay.product", "cheques"), wantErr: "wechatpay.product = cheques"},

		// The override wins.
		{name: "override beats the file", file: "pipeline:\n  poll:\n    page-limit: 500\n", overrides: set("pipeline.poll.page-limit", "50"),
			check: func(t *testing.T, c Config) {
				if got, want := c.Pipeline.Poll.PageLimit, 50; got != want {
					t.Fatalf("page-limit = %d, want %d", got, want)
				}
			}},
		{name: "the last override wins", overrides: set("log.level", "nonsense", "log.level", "debug"),
			check: func(t *testing.T, c Config) {
				if got, want := c.Log.Level, "debug"; got != want {
					t.Fatalf("log.level = %q, want %q", got, want)
				}
			}},

		// The derived settings see the overrides.
		{name: "override product bills", overrides: set("wechatpay.product", "bills"),
			check: func(t *testing.T, c Config) {
				if got, want := c.Pipeline.Product, pipeline.ProductBills; got != want {
					t.Fatalf("pipeline product = %q, want %q", got, want)
				}
				if got, want := c.Pipeline.RateLimit, pipeline.BillsRates(); got != want {
					t.Fatalf("rate-limit = %+v, want the bills rates %+v", got, want)
				}
			}},
		{name: "override product bills keeps a set rate", overrides: set("wechatpay.product", "bills", "pipeline.rate-limit.create", "7"),
			check: func(t *testing.T, c Config) {
				want := pipeline.DefaultConfig().RateLimit
				want.Create = 7
				if got := c.Pipeline.RateLimit; got != want {
					t.Fatalf("rate-limit = %+v, want %+v (set: not the product's)", got, want)
				}
			}},
		{name: "override data-dir moves the ledger", overrides: set("data-dir", "/var/lib/paystream"),
			check: func(t *testing.T, c Config) {
				if got, want := c.Ledger, filepath.Join("/var/lib/paystream", "ledger.db"); got != want {
					t.Fatalf("ledger = %q, want %q", got, want)
				}
			}},
		{name: "a ledger in the file stays", file: "ledger: /srv/l.db\n", overrides: set("data-dir", "/var/lib/paystream"),
			check: func(t *testing.T, c Config) {
				if got, want := c.Ledger, "/srv/l.db"; got != want {
					t.Fatalf("ledger = %q, want %q", got, want)
				}
			}},
	}
	getenv := func(k string) string {
		if k == "APIV3" {
			return apiv3
		}
		return ""
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "processor.yaml")
			if err := os.WriteFile(path, []byte(base+tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(path, getenv, tt.overrides...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadConfig() = %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig() = %v", err)
			}
			if tt.check != nil {
				tt.check(t, cfg)
			}
		})
	}
}

// TestWeChatPayConfig_client: what the WeChat Pay library refuses in the wechatpay section is
// named by its YAML key, as every other setting is.
func TestWeChatPayConfig_client(t *testing.T) {
	dir := t.TempDir()
	key, err := os.ReadFile(testdata + "merchant_TEST_ONLY_private_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	keyPath, notKey := filepath.Join(dir, "merchant.pem"), filepath.Join(dir, "not-a-key.pem")
	for path, b := range map[string][]byte{keyPath: key, notKey: []byte("not a key\n")} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := WeChatPayConfig{
		BaseURL: "https://api.mch.weixin.qq.com", MchID: wechatpaytest.DefaultMchID, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial,
		PrivateKeyFile: keyPath, PublicKeyFile: testdata + "wechatpay_platform_TEST_ONLY_public_key.pem",
		PublicKeyID: wechatpaytest.DefaultPlatformKeyID, APIv3Key: "TestOnlyAPIv3Key0123456789abcdef",
	}
	tests := []struct {
		name  string
		edit  func(*WeChatPayConfig)
		field string // "": valid
	}{
		{"valid", func(*WeChatPayConfig) {}, ""},
		{"base url", func(w *WeChatPayConfig) { w.BaseURL = "http://[::1" }, "wechatpay.base-url"},
		{"private key not a key", func(w *WeChatPayConfig) { w.PrivateKeyFile = notKey }, "wechatpay.private-key-file"},
		{"public key id", func(w *WeChatPayConfig) { w.PublicKeyID = "NOT_A_KEY_ID" }, "wechatpay.wechatpay-public-key-id"},
		{"apiv3 key", func(w *WeChatPayConfig) { w.APIv3Key = "short" }, "wechatpay.apiv3-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := good
			tt.edit(&w)
			_, err := w.Client(slog.New(slog.DiscardHandler))
			configtest.WantField(t, err, tt.field, "")
		})
	}
}
