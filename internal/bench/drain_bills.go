package bench

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// BillDrainResult is the drain measurement on the transfer-bills rail: the wall time from
// the processor's start on a published backlog to every payout final in the ledger, the
// floor the 100/s bill create limit implies, and how many queries the sweep spent per bill
// with callbacks on.
type BillDrainResult struct {
	Payouts        int     `json:"payouts"`
	Speed          float64 `json:"speed"`            // sandbox and processor clock factor
	Bills          int     `json:"bills"`            // bills the sandbox holds: one create each is what the floor needs
	Creates        int     `json:"creates_sent"`     // creates the processor sent (replays included)
	Queries        int     `json:"queries_sent"`     // bill queries the sandbox received
	QueriesPerBill float64 `json:"queries_per_bill"` // Queries / Bills
	Notified       int     `json:"callbacks"`        // callbacks the processor acknowledged
	NotifyLost     int     `json:"callbacks_lost"`   // callbacks the sandbox dropped (Options.NotifyLoss)
	RateLimited    int     `json:"rate_limited"`     // requests the sandbox refused with 429
	CreateFloor    float64 `json:"create_floor_s"`   // bills / create QPS
	Processing     float64 `json:"processing_s"`     // the sandbox's scaled accept + confirm + process time
	Floor          float64 `json:"floor_s"`          // create + processing
	FirstCreate    float64 `json:"first_create_s"`   // the sandbox's first bill, after the processor's start
	LastCreate     float64 `json:"last_create_s"`    // its last bill
	LastSettled    float64 `json:"last_settled_s"`   // the last bill final at the sandbox
	Wall           float64 `json:"wall_s"`
	Ratio          float64 `json:"ratio"` // Wall / Floor
}

// Transfer bills limits and pacing of the bills drain.
const (
	// billQPS is WeChat's per-merchant limit of bill creates and of bill queries, each on
	// its own (docs/transfer-bills.md); the sandbox enforces it in fixed one-second windows.
	billQPS = 100
	// billRate is what the processor is given for creates and queries. Its throttle has
	// burst 1, so it never starts more than billRate+1 requests in a one-second window:
	// under WeChat's limit, as an operator running one replica at the real limit would set
	// it. One more request of margin absorbs the jitter between a request leaving the
	// throttle and reaching the sandbox's fixed windows (each 429 slows the throttle down
	// for seconds). The floor is computed at billQPS, so the 2% left unused counts against
	// the ratio.
	billRate = billQPS - 2
	// billNotifyLoss is the share of callbacks the sandbox never delivers: the sweep must
	// find those bills by query.
	billNotifyLoss = 0.02
	// billConfirm is when the simulated payee confirms (or declines), after the create, at
	// speed 1.
	billConfirm = time.Minute
)

// drainBills is drain on the transfer-bills rail: n payouts for a merchant with product
// bills, against the sandbox at speed holding the real 100/s bill limits (its QPS is not
// scaled), payees confirming billConfirm after each create and WeChat answering the create
// WAIT_USER_CONFIRM at once. Callbacks are on (a listener and notify_url) with
// billNotifyLoss of them lost; the processor's sweep runs at its production spacing (10 min
// first, then half the bill's age, up to 1 h) divided by speed, like every other duration,
// so a bill is queried only when its callback has not come long after it should have.
func (e *env) drainBills(ctx context.Context, dataDir string, n int, speed float64, profile string) (BillDrainResult, error) {
	r := BillDrainResult{Payouts: n, Speed: speed}
	o := wechatpaytest.DefaultOptions()
	o.Speed, o.Product, o.BillRateLimit = speed, wechatpaytest.ProductBills, billQPS
	o.BillAcceptDelay, o.BillAutoConfirm, o.NotifyLoss = 0, billConfirm, billNotifyLoss
	run, err := e.startDrain(ctx, dataDir, billPayouts(n, 8), o, func(cfg *app.Config) error { return billsConfig(cfg, speed) }, profile)
	if err != nil {
		return r, err
	}
	defer run.Close()
	// At the limit the creates alone take n/billQPS seconds; the rest is a generous margin.
	limit := 10*time.Minute + 3*time.Duration(n/billQPS)*time.Second
	wall, err := run.wait(ctx, n, limit)
	if err != nil {
		return r, err
	}
	r.Wall = wall

	st, err := run.sb.Stats(ctx)
	if err != nil {
		return r, err
	}
	bills, err := run.sb.Bills(ctx)
	if err != nil {
		return r, err
	}
	r.Bills = len(bills)
	for i, b := range bills {
		c, s := b.Created.Sub(run.start).Seconds(), b.Settled.Sub(run.start).Seconds()
		if i == 0 || c < r.FirstCreate {
			r.FirstCreate = c
		}
		r.LastCreate, r.LastSettled = max(r.LastCreate, c), max(r.LastSettled, s)
	}
	r.Creates = st.Requests[wechatpaytest.EndpointCreateBill]
	r.Queries = st.Requests[wechatpaytest.EndpointBillByOutNo] + st.Requests[wechatpaytest.EndpointBillByNo]
	r.Notified, r.NotifyLost, r.RateLimited = st.Notified, st.NotifyLost, st.RateLimited
	if r.Bills == 0 {
		return r, fmt.Errorf("%d payouts final, but the sandbox holds no bill", n)
	}
	r.QueriesPerBill = float64(r.Queries) / float64(r.Bills)
	r.CreateFloor = float64(r.Bills) / billQPS
	r.Processing = (o.BillAcceptDelay + o.BillAutoConfirm + o.ProcessDelay).Seconds() / speed
	r.Floor = r.CreateFloor + r.Processing
	r.Ratio = r.Wall / r.Floor
	return r, nil
}

// billsConfig makes cfg a processor for a merchant on transfer bills with its pacing divided
// by speed, callbacks on (a listener on a free loopback port, named in every bill's
// notify_url) and rate limits at billRate.
func billsConfig(cfg *app.Config, speed float64) error {
	scaleClock(cfg, speed)
	cfg.WeChatPay.Product, cfg.Pipeline.Product = pipeline.ProductBills, pipeline.ProductBills
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	cfg.Callback.Listen, cfg.Pipeline.NotifyURL = addr, "http://"+addr+cfg.Callback.Path
	cfg.Pipeline.RateLimit = pipeline.RateConfig{Create: billRate, Query: billRate, Detail: billRate, Cancel: 18} // cancel: under its 20/s; unused here
	return cfg.Validate()
}

// freeAddr returns a loopback address nothing listens on: the callback listener's, fixed
// before the processor starts because its URL goes into every bill.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// billPayouts is payouts for the bills product: every payee acts (confirms, or declines as
// synth's default share does), none lets the bill expire, which would take the sandbox's
// scaled 24 h.
func billPayouts(n int, seed uint64) synth.Options {
	o := payouts(n, seed)
	o.Product, o.NoConfirmRate = synth.ProductBills, 0
	return o
}
