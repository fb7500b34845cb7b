package pipeline

import (
	"fmt"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// Validate is the one check of the pipeline's settings: New calls it, and so does the
// processor's configuration (internal/app), so a bad value gets the same message either way.
// It returns nil or the first bad setting as a *config.ConfigError whose Field is the key
// path relative to the pipeline section ("poll.page-limit", "batching.cap-direct"); the
// caller that embeds the section names it in full with config.Within("pipeline", err).
// Product is not a key of the section (the processor's file sets it as wechatpay.product):
// it is reported as "product". Rules that need another section (intake.fetch-batch ≤ the
// consumer's max-ack-pending) are the caller's. Every duration must also not be negative
// (config.NegativeDuration).
func (c Config) Validate() error {
	if err := CheckProduct(c.Product); err != nil {
		return config.Errorf("product", c.Product, "%w", err)
	}
	for _, s := range []struct {
		key string
		err error
	}{
		{"intake", c.Intake.Validate()},
		{"batching", c.Batching.Validate()},
		{"amounts", c.Amounts.Validate()},
		{"submit", c.Submit.Validate()},
		{"poll", c.Poll.Validate()},
		{"breaker", c.Breaker.Validate()},
	} {
		if s.err != nil {
			return config.Within(s.key, s.err)
		}
	}
	// The four rates are one setting, this replica's share of the merchant's limits, so they
	// are named together.
	if r := c.RateLimit; r.Create <= 0 || r.Query <= 0 || r.Detail <= 0 || r.Cancel <= 0 {
		return config.Errorf("rate-limit", r, "create, query, detail and cancel must be positive (requests/s: this replica's share of the merchant's per-API limit)")
	}
	if err := payout.ValidateBillScenes(BillScenes(c.BillScenes)); err != nil {
		return config.Errorf("bill-scenes", nil, "%w", err)
	}
	// Every duration is a wait, a period or an age: none may be negative.
	return config.NegativeDuration(c)
}

// CheckProduct is the one rule for a product name (Config.Product, the processor's
// wechatpay.product): ProductBatches or ProductBills. It returns nil or an error stating the
// choices, to follow the setting's name and value.
func CheckProduct(product string) error {
	if product != ProductBatches && product != ProductBills {
		return fmt.Errorf("%s (the batch API) or %s (transfer bills)", ProductBatches, ProductBills)
	}
	return nil
}

// Validate checks the intake section: keys relative to it ("fetch-batch"), as Config.Validate.
// The upper bound of fetch-batch (the consumer's max-ack-pending) is the caller's to check.
// Zero is no cadence for fetch-max-wait: a fetch that never waits.
func (c IntakeConfig) Validate() error {
	switch {
	case c.FetchBatch < 1:
		return config.Errorf("fetch-batch", c.FetchBatch, "must be ≥ 1 (and ≤ the consumer's max-ack-pending)")
	case c.FetchMaxWait <= 0:
		return config.Errorf("fetch-max-wait", c.FetchMaxWait, "must be positive")
	case c.SweepEvery <= 0:
		return config.Errorf("sweep-every", c.SweepEvery, "must be positive")
	case c.RetryDelay < 0:
		return config.Errorf("retry-delay", c.RetryDelay, "must not be negative")
	}
	return nil
}

// Validate checks the batching section: keys relative to it ("cap-direct"), as
// Config.Validate. Each cap is checked by batching.CheckCap, the rule batching.New applies
// too; unlike batching.New, zero is not "the maximum" here (the defaults are explicit). Each
// name template must render within 32 characters for the widest batch
// (batching.Names.Validate); with both empty, batching.DefaultNames are checked.
func (c BatchingConfig) Validate() error {
	for _, cp := range []struct {
		key, rail string
		n         int
	}{
		{"cap-direct", payout.RailDirect, c.CapDirect},
		{"cap-partner", payout.RailPartner, c.CapPartner},
		{"cap-bills", payout.RailBills, c.CapBills},
	} {
		if err := batching.CheckCap(cp.rail, cp.n); err != nil {
			return config.Errorf(cp.key, cp.n, "%w", err)
		}
	}
	n := c.names()
	if err := (batching.Names{NameTemplate: n.NameTemplate}).Validate(); err != nil {
		return config.Errorf("name-template", n.NameTemplate, "%w", err)
	}
	if err := (batching.Names{RemarkTemplate: n.RemarkTemplate}).Validate(); err != nil {
		return config.Errorf("remark-template", n.RemarkTemplate, "%w", err)
	}
	return nil
}

// names are the templates batches are named with: batching.DefaultNames when neither is set.
func (c BatchingConfig) names() batching.Names {
	n := batching.Names{NameTemplate: c.NameTemplate, RemarkTemplate: c.RemarkTemplate}
	if n.NameTemplate == "" && n.RemarkTemplate == "" {
		return batching.DefaultNames
	}
	return n
}

// Validate checks the amount bounds, in fen: 1 ≤ min ≤ max. Keys are relative to the
// section ("min"), as Config.Validate.
func (c AmountConfig) Validate() error {
	switch {
	case c.Min < 1:
		return config.Errorf("min", c.Min, "need 1 ≤ min ≤ max (fen)")
	case c.Max < c.Min:
		return config.Errorf("max", c.Max, "need 1 ≤ min ≤ max (fen)")
	}
	return nil
}

// Validate checks the submit section: keys relative to it ("workers"), as Config.Validate.
// Zero is no cadence for parked-retry: a parked batch re-sent to WeChat in a loop.
func (c SubmitConfig) Validate() error {
	switch {
	case c.RetryMin <= 0:
		return config.Errorf("retry-min", c.RetryMin, "must be positive (need 0 < retry-min ≤ retry-max)")
	case c.RetryMax < c.RetryMin:
		return config.Errorf("retry-max", c.RetryMax, "must be ≥ retry-min (%v)", c.RetryMin)
	case c.ParkedRetry <= 0:
		return config.Errorf("parked-retry", c.ParkedRetry, "must be positive")
	case c.Workers < 1:
		return config.Errorf("workers", c.Workers, "≥ 1")
	case c.BillWorkers < 1:
		return config.Errorf("bill-workers", c.BillWorkers, "≥ 1")
	}
	return nil
}

// Validate checks the poll section: keys relative to it ("page-limit"), as Config.Validate.
// Zero is no cadence for interval: a batch queried again at once.
func (c PollConfig) Validate() error {
	switch {
	case c.PageLimit < wechatpay.MinQueryLimit || c.PageLimit > wechatpay.MaxQueryLimit:
		return config.Errorf("page-limit", c.PageLimit, "%d..%d (docs/wechatpay.md §5)", wechatpay.MinQueryLimit, wechatpay.MaxQueryLimit)
	case c.Interval <= 0:
		return config.Errorf("interval", c.Interval, "must be positive (≥ 1m against the real API)")
	case c.BillSweep <= 0:
		return config.Errorf("bill-sweep", c.BillSweep, "must be positive")
	case c.BillSweepMax < c.BillSweep:
		return config.Errorf("bill-sweep-max", c.BillSweepMax, "must be ≥ bill-sweep (%v)", c.BillSweep)
	case c.Horizon <= 0:
		return config.Errorf("horizon", c.Horizon, "must be positive")
	}
	return nil
}

// Validate checks the breaker section: keys relative to it ("failures"), as Config.Validate.
func (c BreakerConfig) Validate() error {
	switch {
	case c.Failures < 1:
		return config.Errorf("failures", c.Failures, "≥ 1")
	case c.OpenTimeout <= 0:
		return config.Errorf("open-timeout", c.OpenTimeout, "must be positive")
	}
	return nil
}
