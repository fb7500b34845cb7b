package app

import (
	"errors"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/config"
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
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ce *config.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v, want a *config.ConfigError", err)
			}
			if got, want := ce.Field, tt.wantField; got != want {
				t.Fatalf("field = %q, want %q (%v)", got, want, err)
			}
			if got, want := err.Error(), tt.wantMsg; !strings.Contains(got, want) {
				t.Fatalf("Validate() = %q, want it to say %q", got, want)
			}
		})
	}
}
