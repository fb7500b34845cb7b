package pipeline

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/internal/config/configtest"
	"github.com/paystream/paystream/pkg/batching"
)

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(*Config)
		wantField string // "" for a valid config
		wantMsg   string // a part of the message
	}{
		{"defaults", func(*Config) {}, "", ""},
		{"bills with its rates", func(c *Config) { c.Product, c.RateLimit = ProductBills, BillsRates() }, "", ""},
		{"product", func(c *Config) { c.Product = "cheques" }, "product", "batches (the batch API) or bills (transfer bills)"},
		{"no product", func(c *Config) { c.Product = "" }, "product", ""},
		{"fetch-batch", func(c *Config) { c.Intake.FetchBatch = 0 }, "intake.fetch-batch", "= 0: must be ≥ 1"},
		{"fetch-max-wait", func(c *Config) { c.Intake.FetchMaxWait = 0 }, "intake.fetch-max-wait", "must be positive"},
		{"sweep-every", func(c *Config) { c.Intake.SweepEvery = 0 }, "intake.sweep-every", "must be positive"},
		{"retry-delay", func(c *Config) { c.Intake.RetryDelay = -time.Second }, "intake.retry-delay", "must not be negative"},
		{"retry-delay zero", func(c *Config) { c.Intake.RetryDelay = 0 }, "", ""},
		{"cap-direct above 1000", func(c *Config) { c.Batching.CapDirect = 1001 }, "batching.cap-direct", "= 1001: outside 1..1000 (docs/wechatpay.md §4)"},
		{"cap-direct zero", func(c *Config) { c.Batching.CapDirect = 0 }, "batching.cap-direct", "outside 1..1000"},
		{"cap-partner above 3000", func(c *Config) { c.Batching.CapPartner = 3001 }, "batching.cap-partner", "outside 1..3000 (docs/wechatpay.md §6)"},
		{"cap-bills above 1000", func(c *Config) { c.Batching.CapBills = batching.MaxDetailsBills + 1 }, "batching.cap-bills", "outside 1..1000"},
		{"name-template too long", func(c *Config) { c.Batching.NameTemplate = strings.Repeat("x", 33) }, "batching.name-template", "exceed 32 characters"},
		{"remark-template does not parse", func(c *Config) { c.Batching.RemarkTemplate = "{{.Nope" }, "batching.remark-template", "bad batch name template"},
		{"one template set", func(c *Config) { c.Batching.NameTemplate = "{{.Date}}" }, "", ""},
		{"max-wait negative", func(c *Config) { c.Batching.MaxWait = -time.Second }, "batching.max-wait", "= -1s: must not be negative"},
		{"amounts min", func(c *Config) { c.Amounts.Min = 0 }, "amounts.min", "need 1 ≤ min ≤ max (fen)"},
		{"amounts max", func(c *Config) { c.Amounts.Max = c.Amounts.Min - 1 }, "amounts.max", "need 1 ≤ min ≤ max (fen)"},
		{"retry-min", func(c *Config) { c.Submit.RetryMin = 0 }, "submit.retry-min", "must be positive"},
		{"retry-max", func(c *Config) { c.Submit.RetryMax = c.Submit.RetryMin / 2 }, "submit.retry-max", "must be ≥ retry-min (1s)"},
		{"parked-retry", func(c *Config) { c.Submit.ParkedRetry = 0 }, "submit.parked-retry", "must be positive"},
		{"workers", func(c *Config) { c.Submit.Workers = 0 }, "submit.workers", "= 0: ≥ 1"},
		{"bill-workers", func(c *Config) { c.Submit.BillWorkers = 0 }, "submit.bill-workers", "= 0: ≥ 1"},
		{"page-limit above 100", func(c *Config) { c.Poll.PageLimit = 500 }, "poll.page-limit", "= 500: 20..100 (docs/wechatpay.md §5)"},
		{"page-limit below 20", func(c *Config) { c.Poll.PageLimit = 19 }, "poll.page-limit", "20..100"},
		{"page-limit 20", func(c *Config) { c.Poll.PageLimit = 20 }, "", ""},
		{"interval", func(c *Config) { c.Poll.Interval = 0 }, "poll.interval", "must be positive"},
		{"bill-sweep", func(c *Config) { c.Poll.BillSweep = 0 }, "poll.bill-sweep", "must be positive"},
		{"bill-sweep-max", func(c *Config) { c.Poll.BillSweepMax = c.Poll.BillSweep - time.Second }, "poll.bill-sweep-max", "must be ≥ bill-sweep (10m0s)"},
		{"horizon", func(c *Config) { c.Poll.Horizon = 0 }, "poll.horizon", "must be positive"},
		{"not-found-grace negative", func(c *Config) { c.Poll.NotFoundGrace = -5 * time.Second }, "poll.not-found-grace", "must not be negative"},
		{"rate-limit", func(c *Config) { c.RateLimit.Cancel = 0 }, "rate-limit", "must be positive"},
		{"breaker failures", func(c *Config) { c.Breaker.Failures = 0 }, "breaker.failures", "≥ 1"},
		{"breaker open-timeout", func(c *Config) { c.Breaker.OpenTimeout = 0 }, "breaker.open-timeout", "must be positive"},
		{"bill-scenes", func(c *Config) { c.BillScenes = map[string]SceneConfig{"1000": {}} }, "bill-scenes", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			configtest.WantField(t, err, tt.wantField, tt.wantMsg)
		})
	}
}

// TestNew_validates: a library user of New gets Validate's error, key path and all, before
// anything is wired.
func TestNew_validates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Poll.PageLimit = 500
	_, err := New(cfg, Deps{})
	var ce *config.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("New = %v, want a *config.ConfigError", err)
	}
	if got, want := err.Error(), cfg.Validate().Error(); got != want {
		t.Fatalf("New = %q, want Validate's %q", got, want)
	}
	if got, want := ce.Field, "poll.page-limit"; got != want {
		t.Fatalf("field = %q, want %q", got, want)
	}
}
