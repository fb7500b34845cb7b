package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// DrainResult is the drain measurement: the wall time from the processor's start on a backlog
// to every payout final in the ledger, and the floor the sandbox's limits imply.
type DrainResult struct {
	Payouts     int     `json:"payouts"`
	Speed       float64 `json:"speed"`          // sandbox and processor clock factor
	Batches     int     `json:"batches"`        // created at the sandbox
	Queries     int     `json:"queries"`        // batch queries the floor needs: one status + one per page
	Sent        int     `json:"queries_sent"`   // batch queries the processor sent
	Details     int     `json:"details"`        // detail queries the floor needs: one per FAIL (its fail_reason)
	DetailsSent int     `json:"details_sent"`   // detail queries the processor sent
	Creates     int     `json:"creates_sent"`   // creates the processor sent
	RateLimited int     `json:"rate_limited"`   // requests the sandbox refused with 429
	CreateFloor float64 `json:"create_floor_s"` // batches / create QPS
	QueryFloor  float64 `json:"query_floor_s"`  // queries / query QPS
	DetailFloor float64 `json:"detail_floor_s"` // details / detail QPS (its own quota, spent alongside the queries)
	Processing  float64 `json:"processing_s"`   // the sandbox's scaled accept + process time
	Floor       float64 `json:"floor_s"`        // create + max(query, detail) + processing
	Wall        float64 `json:"wall_s"`
	Ratio       float64 `json:"ratio"` // Wall / Floor
}

// drainQPS is the realistic per-endpoint limit of the batch APIs (docs/wechatpay.md §8).
const drainQPS = 50

// drain publishes n payouts to a running processor whose WeChat Pay is the sandbox at
// speed (rate-limited to 50 QPS per endpoint, 100 details per page) and measures until
// every payout is final in the ledger. The processor runs production defaults with every
// duration divided by speed, so it polls as it would against WeChat, on the same fast clock.
func (e *env) drain(ctx context.Context, dataDir string, n int, speed float64, profile string) (DrainResult, error) {
	r := DrainResult{Payouts: n, Speed: speed}
	o := wechatpaytest.DefaultOptions()
	o.Speed, o.RateLimit = speed, drainQPS
	run, err := e.startDrain(ctx, dataDir, payouts(n, 7), o, func(cfg *app.Config) error {
		scaleClock(cfg, speed)
		return nil
	}, profile)
	if err != nil {
		return r, err
	}
	defer run.Close()
	wall, err := run.wait(ctx, n, 10*time.Minute)
	if err != nil {
		return r, err
	}
	r.Wall = wall

	sb, cfg := run.sb, run.cfg
	st, err := sb.Stats(ctx)
	if err != nil {
		return r, err
	}
	batches, err := sb.Batches(ctx)
	if err != nil {
		return r, err
	}
	r.RateLimited = st.RateLimited
	r.Creates = st.Requests[wechatpaytest.EndpointCreateBatch]
	r.Sent = st.Requests[wechatpaytest.EndpointBatchByOutNo]
	r.DetailsSent = st.Requests[wechatpaytest.EndpointDetailByOutNo]
	for _, b := range batches {
		r.Batches++
		r.Queries += 1 + (b.TotalNum+cfg.Pipeline.Poll.PageLimit-1)/cfg.Pipeline.Poll.PageLimit
		r.Details += b.FailNum
	}
	r.CreateFloor = float64(r.Batches) / drainQPS
	r.QueryFloor = float64(r.Queries) / drainQPS
	r.DetailFloor = float64(r.Details) / drainQPS
	r.Processing = (o.AcceptDelay + o.ProcessDelay).Seconds() / speed
	r.Floor = r.CreateFloor + max(r.QueryFloor, r.DetailFloor) + r.Processing
	r.Ratio = r.Wall / r.Floor
	return r, nil
}

// drainRun is a sandbox process and a processor draining into it, with the CPU profile
// on. Close it.
type drainRun struct {
	sb    *sandbox
	cfg   app.Config
	start time.Time // the processor was ready
	undo  []func()  // run last first by Close
}

// startDrain publishes the payouts of backlog, starts the sandbox process with o (see
// sandboxArgs), then a processor in dataDir against it (its config adjusted by configure),
// then the CPU profile when profile is not empty. The backlog is published before the
// processor starts, as producers on other machines would have left it: publishing beside
// the processor put the bench's own publisher into the measured process's CPU, and beside
// `make test` a third of a drain's wall time was that publish.
func (e *env) startDrain(ctx context.Context, dataDir string, backlog synth.Options, o wechatpaytest.Options, configure func(*app.Config) error, profile string) (_ *drainRun, err error) {
	d := &drainRun{}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if _, err := e.publish(ctx, backlog); err != nil {
		return nil, err
	}
	if d.sb, err = e.startSandbox(ctx, o, dataDir); err != nil {
		return nil, err
	}
	d.undo = append(d.undo, func() {
		if err := d.sb.Close(); err != nil {
			e.log.Warn("sandbox", "err", err)
		}
	})
	logs, err := os.OpenFile(filepath.Join(dataDir, "processor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	d.undo = append(d.undo, func() { logs.Close() })
	d.cfg = e.processorConfig(dataDir, d.sb.URL())
	if err := configure(&d.cfg); err != nil {
		return nil, err
	}
	p, err := startProcessor(ctx, d.cfg, logs)
	if err != nil {
		return nil, err
	}
	d.undo = append(d.undo, func() { p.Stop() })
	d.start = p.ready
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return nil, err
		}
		d.undo = append(d.undo, func() { f.Close() })
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		d.undo = append(d.undo, pprof.StopCPUProfile)
	}
	return d, nil
}

// wait returns the seconds from the processor's start until n payouts are final in the
// ledger, failing after limit.
func (d *drainRun) wait(ctx context.Context, n int, limit time.Duration) (float64, error) {
	if err := waitFinal(ctx, d.cfg.Ledger, n, limit); err != nil {
		return 0, err
	}
	return time.Since(d.start).Seconds(), nil
}

// Close stops the profile, the processor and the sandbox, in that order.
func (d *drainRun) Close() {
	for i := len(d.undo) - 1; i >= 0; i-- {
		d.undo[i]()
	}
	d.undo = nil
}

// scaleClock divides every duration of the processor's pacing by speed, as the sandbox's
// clock is; the rate limits stay real (the sandbox does not scale its QPS).
func scaleClock(cfg *app.Config, speed float64) {
	s := func(d *time.Duration) { *d = time.Duration(float64(*d) / speed) }
	p := &cfg.Pipeline
	for _, d := range []*time.Duration{
		&p.Batching.MaxWait, &p.Submit.RetryMin, &p.Submit.RetryMax, &p.Submit.ParkedRetry,
		&p.Poll.FirstDelay, &p.Poll.Interval, &p.Poll.NotFoundGrace, &p.Breaker.OpenTimeout,
		&p.Poll.BillSweep, &p.Poll.BillSweepMax, // read on rail bills only
	} {
		s(d)
	}
	p.Poll.PageLimit = wechatpay.MaxQueryLimit
}

// waitFinal polls the ledger (read-only, beside the writer) every 100 ms until n payouts
// are final. It reads the writer's totals by state (ledger.DB.Totals), never the payouts:
// counting them by a scan every 100 ms took a quarter of the process's CPU in a drain of
// 100k payouts, CPU the measured processor shares.
func waitFinal(ctx context.Context, path string, n int, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	db, err := ledger.OpenReadOnly(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	final := 0
	for {
		ts, err := db.Totals(ctx)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("ledger totals: %w", err)
		}
		final = 0
		for st, t := range ts {
			if ledger.PayoutFinal(st) {
				final += t.Count
			}
		}
		if final >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d payouts final after %s", final, n, limit)
		case <-tick.C:
		}
	}
}
