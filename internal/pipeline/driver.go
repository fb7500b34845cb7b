package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/internal/backoff"
	"github.com/paystream/paystream/internal/journal"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// SubmitConfig sets how sealed batches are (re)sent.
type SubmitConfig struct {
	RetryMin    time.Duration `yaml:"retry-min"`    // first backoff after an ambiguous outcome
	RetryMax    time.Duration `yaml:"retry-max"`    // backoff cap
	ParkedRetry time.Duration `yaml:"parked-retry"` // wait after a rejection an operator must fix
	Workers     int           `yaml:"workers"`      // batches handled at once
	BillWorkers int           `yaml:"bill-workers"` // bills of one batch handled at once (transfer bills)
}

// PollConfig sets how accepted batches are followed (docs/wechatpay.md §5, §11).
type PollConfig struct {
	FirstDelay    time.Duration `yaml:"first-delay"`     // first query after the create (≥ 1 min in production)
	Interval      time.Duration `yaml:"interval"`        // between queries of one batch (≥ 1 min in production)
	NotFoundGrace time.Duration `yaml:"not-found-grace"` // NOT_FOUND this long after a create is "still accepting"
	PageLimit     int           `yaml:"page-limit"`      // details per page, 20..100
	Horizon       time.Duration `yaml:"horizon"`         // warn when a batch is not final this long after acceptance
	// Transfer bills are followed by callbacks; queries sweep for what callbacks missed,
	// spaced by half a bill's age between BillSweep and BillSweepMax (with no notify-url,
	// between Interval and BillSweepMax).
	BillSweep    time.Duration `yaml:"bill-sweep"`
	BillSweepMax time.Duration `yaml:"bill-sweep-max"`
}

// RateConfig is this replica's share of the merchant's per-API quota, in requests/s. WeChat limits
// each API on its own (docs/wechatpay.md §8: 50 QPS per merchant for each batch API;
// docs/transfer-bills.md: 100/s for bill creates and queries, 20/s for cancels).
type RateConfig struct {
	Create float64 `yaml:"create"` // POST /v3/transfer/batches, or a transfer bill create
	Query  float64 `yaml:"query"`  // batch by out_batch_no with its detail pages, or a bill by out_bill_no
	Detail float64 `yaml:"detail"` // one detail by out_detail_no: the fail_reason of each FAIL (batch API)
	Cancel float64 `yaml:"cancel"` // a transfer bill cancel
}

// driver moves every sealed batch to its end: it submits SEALED batches (replaying the
// frozen body under the same out_batch_no until WeChat answers definitively), then polls them
// and pages their details until every member is final. Its work list is the ledger's due
// batches, so a restart resumes exactly where the last run stopped.
type driver struct {
	submit  SubmitConfig
	poll    PollConfig
	db      *ledger.DB
	api     *wechatpay.Client
	create  *throttle
	query   *throttle
	detail  *throttle
	cancel  *throttle
	rails   map[string]rail // by ledger rail name
	wake    <-chan struct{}
	changed func() // wakes the outcome publisher
	now     func() time.Time
	log     *slog.Logger

	inflight map[string]bool // batches handed to a worker; only the run loop touches it
	inFlight atomic.Int64    // len(inflight), for readers on other goroutines (Runtime)
	finishes *finishes       // reports batches that reached their end
	prog     *progress

	journal   *journal.Journal // nil: no journal
	journaled sync.Map         // out_batch_no → true once put by this process
	leased    func() bool      // nil: always
}

func (d *driver) run(ctx context.Context) error {
	work := make(chan ledger.Batch)
	done := make(chan string, d.submit.Workers)
	var wg sync.WaitGroup
	for range d.submit.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				d.handle(ctx, b)
				done <- b.OutBatchNo
			}
		}()
	}
	// On the way out, keep draining done so no worker blocks on it while finishing.
	defer func() {
		close(work)
		go func() { wg.Wait(); close(done) }()
		for range done {
		}
	}()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case no := <-done:
			d.finish(no)
		case <-timer.C:
		}
		next, err := d.dispatch(ctx, work, done)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Error("reading due batches", "err", err)
			next = time.Second
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

func (d *driver) finish(no string) {
	if d.inflight[no] {
		delete(d.inflight, no)
		d.inFlight.Add(-1)
	}
}

// dispatch hands every due batch that is not already being handled to the workers and
// returns how long to wait before looking again.
func (d *driver) dispatch(ctx context.Context, work chan<- ledger.Batch, done <-chan string) (time.Duration, error) {
	due, err := d.db.DueBatches(ctx, d.now(), 4*d.submit.Workers)
	if err != nil {
		return 0, err
	}
	for _, b := range due {
		if d.inflight[b.OutBatchNo] {
			continue
		}
		d.inflight[b.OutBatchNo] = true
		d.inFlight.Add(1)
		for sent := false; !sent; {
			select {
			case work <- b:
				sent = true
			case no := <-done:
				d.finish(no)
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
	}
	at, ok, err := d.db.NextDue(ctx)
	if err != nil || !ok {
		return time.Minute, err
	}
	if wait := at.Sub(d.now()); wait > 0 {
		return wait, nil
	}
	// What is due now is with a worker (or waits for one): its completion wakes the loop
	// through done, so there is no need to re-read the ledger every few milliseconds.
	return time.Second, nil
}

func (d *driver) handle(ctx context.Context, b ledger.Batch) {
	r, ok := d.rails[b.Rail]
	if !ok {
		// Sealed by a processor configured for another product: never sent from here.
		d.log.Error("batch parked: on a rail this processor does not drive; it waits for one that does", "out_batch_no", b.OutBatchNo,
			"rail", b.Rail, "code", codeRailNotConfigured, "action", ParkedAction(codeRailNotConfigured, b.Rail))
		if err := d.db.Reschedule(context.WithoutCancel(ctx), b.OutBatchNo, d.now().Add(d.submit.ParkedRetry), codeRailNotConfigured, false); err != nil {
			d.log.Error("rescheduling batch", "out_batch_no", b.OutBatchNo, "err", err)
		}
		return
	}
	if d.leased != nil && !d.leased() {
		// An adopter may be judging this instance lost: it must not find a send it could not
		// see coming (docs/replication.md#adoption).
		d.hold(ctx, b, codeHeartbeatStale, "batch held: this instance's heartbeat is stale; nothing is sent until it beats again")
		return
	}
	if b.State == ledger.BatchSealed && b.Rail != ledger.RailBills && b.Body == nil {
		// To send: its frozen body, read once per attempt (DueBatches reads heads).
		body, err := d.db.BatchBody(ctx, b.OutBatchNo)
		if err != nil {
			d.hold(ctx, b, codeLedgerUnreadable, "batch held: its body cannot be read from the ledger", "err", err)
			return
		}
		b.Body = body
	}
	if err := d.journalBatch(ctx, b); err != nil {
		d.hold(ctx, b, codeJournalUnavailable, "batch held: it cannot be journaled, and is never sent unjournaled", "err", err)
		return
	}
	d.prog.steps.Add(1)
	if err := r.step(ctx, b); err != nil && ctx.Err() == nil {
		d.log.Error("batch step failed", "out_batch_no", b.OutBatchNo, "err", err)
	}
	d.finishes.check(ctx, b.OutBatchNo)
}

// Codes of a batch held back by the driver itself (ledger last_error_code).
const (
	codeHeartbeatStale     = "HEARTBEAT_STALE"
	codeJournalUnavailable = "JOURNAL_UNAVAILABLE"
	codeLedgerUnreadable   = "LEDGER_UNREADABLE"
)

// holdRetry is how soon a held batch is looked at again.
const holdRetry = 2 * time.Second

// hold puts b off for holdRetry with code, logging why at WARN.
func (d *driver) hold(ctx context.Context, b ledger.Batch, code, msg string, args ...any) {
	d.log.Warn(msg, append([]any{"out_batch_no", b.OutBatchNo, "code", code}, args...)...)
	if err := d.db.Reschedule(context.WithoutCancel(ctx), b.OutBatchNo, d.now().Add(holdRetry), code, false); err != nil {
		d.log.Error("rescheduling batch", "out_batch_no", b.OutBatchNo, "err", err)
	}
}

// journalBatch puts a batch that may still be sent (SEALED: not yet accepted, or on rail
// bills not yet settled) into the journal, once per process, before its first send.
func (d *driver) journalBatch(ctx context.Context, b ledger.Batch) error {
	if d.journal == nil || b.State != ledger.BatchSealed {
		return nil
	}
	if _, ok := d.journaled.Load(b.OutBatchNo); ok {
		return nil
	}
	full := b // handle read the body; the bills rail journals more (every bill's body)
	if b.Rail == ledger.RailBills {
		var err error
		if full, err = d.db.Batch(ctx, b.OutBatchNo); err != nil {
			return err
		}
	}
	err := d.journal.Put(ctx, journal.Entry{
		Instance: d.db.InstanceID(), OutBatchNo: full.OutBatchNo, Rail: full.Rail, GroupKey: full.GroupKey, MchID: full.MchID,
		TotalAmount: full.TotalAmount, TotalNum: full.TotalNum, SealedAt: full.SealedAt, Body: full.Body, Bills: full.Bills,
	})
	if err != nil {
		return err
	}
	d.journaled.Store(b.OutBatchNo, true)
	return nil
}

// codeRailNotConfigured is the last_error_code of a batch on a rail no processor here drives
// (ledger.ParkedCode knows it).
const codeRailNotConfigured = "RAIL_NOT_CONFIGURED"

// backoff is the capped, jittered delay before attempt n+1.
func (d *driver) backoff(attempts int) time.Duration {
	return backoff.Jittered(d.submit.RetryMin, d.submit.RetryMax, attempts)
}

// errorCode names an outcome for the ledger: the WeChat code, or a transport class.
func errorCode(err error) string {
	var ae *wechatpay.APIError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ae) && ae.Code != "":
		return ae.Code
	case errors.As(err, &ae):
		return fmt.Sprintf("HTTP_%d", ae.StatusCode)
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return "BREAKER_OPEN"
	case errors.Is(err, wechatpay.ErrUnverified):
		return "UNVERIFIED_RESPONSE"
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(err, wechatpay.ErrNotSent):
		return "NOT_SENT"
	}
	return "TRANSPORT"
}

func is429(err error) bool {
	var ae *wechatpay.APIError
	return errors.As(err, &ae) && ae.StatusCode == 429
}
