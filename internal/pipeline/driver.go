package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/internal/backoff"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// SubmitConfig sets how sealed batches are (re)sent.
type SubmitConfig struct {
	RetryMin    time.Duration `yaml:"retry-min"`    // first backoff after an ambiguous outcome
	RetryMax    time.Duration `yaml:"retry-max"`    // backoff cap
	ParkedRetry time.Duration `yaml:"parked-retry"` // wait after a rejection an operator must fix
	Workers     int           `yaml:"workers"`      // batches handled at once
}

// PollConfig sets how accepted batches are followed (spec §6, §10 rule 7).
type PollConfig struct {
	FirstDelay    time.Duration `yaml:"first-delay"`     // first query after the create (≥ 1 min in production)
	Interval      time.Duration `yaml:"interval"`        // between queries of one batch (≥ 1 min in production)
	NotFoundGrace time.Duration `yaml:"not-found-grace"` // NOT_FOUND this long after a create is "still accepting"
	PageLimit     int           `yaml:"page-limit"`      // details per page, 20..100
	Horizon       time.Duration `yaml:"horizon"`         // warn when a batch is not final this long after acceptance
}

// RateConfig is this replica's share of the merchant's per-API quota, in requests/s. WeChat
// limits each batch API on its own (spec §6: 50 QPS per merchant for each).
type RateConfig struct {
	Create float64 `yaml:"create"` // POST /v3/transfer/batches
	Query  float64 `yaml:"query"`  // batch by out_batch_no, with its detail pages
	Detail float64 `yaml:"detail"` // one detail by out_detail_no: the fail_reason of each FAIL
}

// driver moves every sealed batch to its end: it submits SEALED batches (replaying the
// frozen body under the same out_batch_no until WeChat answers definitively), then polls them
// and pages their details until every member is final. Its work list is the ledger's due
// batches, so a restart resumes exactly where the last run stopped.
type driver struct {
	submit   SubmitConfig
	poll     PollConfig
	db       *ledger.DB
	api      *wechatpay.Client
	create   *throttle
	query    *throttle
	detail   *throttle
	cbCreate *gobreaker.CircuitBreaker[created]
	cbQuery  *gobreaker.CircuitBreaker[*batchPage]
	cbDetail *gobreaker.CircuitBreaker[detail] // single-detail queries, for fail_reason
	wake     <-chan struct{}
	changed  func() // wakes the outcome publisher
	now      func() time.Time
	log      *slog.Logger

	inflight map[string]bool // batches handed to a worker; only the run loop touches it
	overdue  overdueLog      // batches with FAIL rows still lacking a reason past the grace
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

func (d *driver) finish(no string) { delete(d.inflight, no) }

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
	var err error
	if b.State == ledger.BatchSealed {
		err = d.send(ctx, b)
	} else {
		err = d.follow(ctx, b)
	}
	if err != nil && ctx.Err() == nil {
		d.log.Error("batch step failed", "out_batch_no", b.OutBatchNo, "err", err)
	}
}

// backoff is the capped, jittered delay before attempt n+1.
func (d *driver) backoff(attempts int) time.Duration {
	return backoff.Jittered(d.submit.RetryMin, d.submit.RetryMax, attempts)
}

// send submits a sealed batch: the frozen body, the same out_batch_no, every attempt.
func (d *driver) send(ctx context.Context, b ledger.Batch) error {
	res, err := d.cbCreate.Execute(func() (created, error) {
		if err := d.create.Wait(ctx); err != nil {
			return created{}, fmt.Errorf("%w: %w", wechatpay.ErrNotSent, err)
		}
		return createBatch(ctx, d.api, b.Rail, b.Body)
	})
	now := d.now()
	class := classify(err)
	code := errorCode(err)
	if is429(err) {
		d.create.Slow()
	}
	r := ledger.SubmitResult{ErrorCode: code}
	switch class {
	case wechatpay.ClassOK:
		r.Outcome, r.BatchID, r.BatchStatus = ledger.SubmitAccepted, res.BatchID, res.Status
		r.NextAt = now.Add(d.poll.FirstDelay)
		d.log.Info("batch accepted", "out_batch_no", b.OutBatchNo, "batch_id", res.BatchID, "attempt", b.Attempts+1)
	case wechatpay.ClassRejected:
		r.Outcome = ledger.SubmitRejected
		d.log.Error("batch rejected", "out_batch_no", b.OutBatchNo, "code", code)
	case wechatpay.ClassBlocked:
		if code == wechatpay.ErrInvalidRequest.Code {
			// Also WeChat's "this number exists with other content" (spec §5): if the batch
			// exists under our number, it is ours (the body is frozen) and it was accepted.
			if q, qerr := d.queryBatch(ctx, b, wechatpay.BatchQuery{}); qerr == nil {
				r.Outcome, r.BatchID, r.BatchStatus = ledger.SubmitAccepted, q.Batch.BatchID, q.Batch.BatchStatus
				r.NextAt = now.Add(d.poll.FirstDelay)
				d.log.Warn("create answered INVALID_REQUEST but the batch exists: following it", "out_batch_no", b.OutBatchNo)
				break
			}
		}
		r.Outcome, r.NextAt = ledger.SubmitRetry, now.Add(d.submit.ParkedRetry)
		d.log.Error("batch parked: operator action needed; the same number is retried", "out_batch_no", b.OutBatchNo, "code", code, "retry_at", r.NextAt)
	case wechatpay.ClassNotSent:
		if ctx.Err() != nil {
			return nil
		}
		return d.db.Reschedule(ctx, b.OutBatchNo, now.Add(d.submit.RetryMin), code, false)
	default: // ambiguous, or NOT_FOUND on a create: maybe paid, so the same number again
		r.Outcome, r.NextAt = ledger.SubmitRetry, now.Add(d.backoff(b.Attempts))
		d.log.Warn("batch submit ambiguous; will resend the same body", "out_batch_no", b.OutBatchNo, "code", code, "attempt", b.Attempts+1)
	}
	if err := d.db.RecordSubmit(context.WithoutCancel(ctx), b.OutBatchNo, r); err != nil {
		return err
	}
	if r.Outcome == ledger.SubmitRejected {
		d.changed()
	}
	return nil
}

// follow queries an accepted batch; once FINISHED it pages every detail into the ledger,
// one transaction per page, each FAIL with its fail_reason (see reasonPass). CLOSED fails
// the remaining members with the close reason.
func (d *driver) follow(ctx context.Context, b ledger.Batch) error {
	q, err := d.queryBatch(ctx, b, wechatpay.BatchQuery{})
	now := d.now()
	if err != nil {
		return d.pollFailed(ctx, b, err, now)
	}
	tb := q.Batch
	if tb.BatchStatus == wechatpay.BatchFinished {
		if err := d.pageDetails(ctx, b, tb.TotalNum); err != nil {
			return d.pollFailed(ctx, b, err, d.now())
		}
	}
	if !b.AcceptedAt.IsZero() && now.Sub(b.AcceptedAt) > d.poll.Horizon &&
		tb.BatchStatus != wechatpay.BatchFinished && tb.BatchStatus != wechatpay.BatchClosed {
		d.log.Error("batch not final near the 30-day query horizon", "out_batch_no", b.OutBatchNo, "status", tb.BatchStatus)
	}
	err = d.db.ApplyBatchStatus(context.WithoutCancel(ctx), b.OutBatchNo, ledger.SourceQuery, ledger.BatchStatus{
		BatchID: tb.BatchID, Status: tb.BatchStatus, CloseReason: tb.CloseReason,
		SuccessAmount: int64(tb.SuccessAmount), FailAmount: int64(tb.FailAmount), SuccessNum: tb.SuccessNum, FailNum: tb.FailNum,
	}, now.Add(d.poll.Interval))
	d.changed()
	return err
}

// pageDetails reads every detail page of a FINISHED batch from offset 0 and applies each
// page in one transaction. FAIL rows are applied only with their fail_reason, fetched by
// single-detail queries within the query budget; those whose reason cannot be had now are
// left for the next pass (see reasonPass), which keeps the batch unsettled.
func (d *driver) pageDetails(ctx context.Context, b ledger.Batch, total int) error {
	states, err := d.db.MemberStates(ctx, b.OutBatchNo)
	if err != nil {
		return err
	}
	finishedAt := d.now()
	if b.State == ledger.BatchFinished {
		finishedAt = b.StateAt
	}
	p := newReasonPass(states)
	defer d.reportReasons(ctx, b, p, finishedAt)
	for offset := 0; offset < total; {
		q, err := d.queryBatch(ctx, b, wechatpay.BatchQuery{
			NeedQueryDetail: true, Offset: offset, Limit: d.poll.PageLimit, DetailStatus: wechatpay.DetailStatusAll,
		})
		if err != nil {
			return err
		}
		rows := make([]ledger.DetailRow, len(q.Details))
		for i, r := range q.Details {
			rows[i] = ledger.DetailRow{OutDetailNo: r.OutDetailNo, DetailID: r.DetailID, Status: r.DetailStatus}
		}
		if rows = d.withReasons(ctx, b, p, rows); len(rows) > 0 {
			_, err = d.db.ApplyDetailPage(context.WithoutCancel(ctx), b.OutBatchNo, ledger.SourceQuery, offset, rows)
		}
		switch {
		case errors.Is(err, ledger.ErrIllegalTransition), errors.Is(err, ledger.ErrNotMember):
			// The legal rows are applied; the ledger counted the refused ones. A detail that
			// moves backwards or is not ours needs a human, not a retry.
			d.log.Error("detail page rows refused", "out_batch_no", b.OutBatchNo, "offset", offset, "err", err)
		case err != nil:
			return err
		}
		if len(q.Details) < d.poll.PageLimit {
			break
		}
		offset += len(q.Details)
	}
	p.complete = true
	return nil
}

func (d *driver) queryBatch(ctx context.Context, b ledger.Batch, q wechatpay.BatchQuery) (*batchPage, error) {
	res, err := d.cbQuery.Execute(func() (*batchPage, error) {
		if err := d.query.Wait(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", wechatpay.ErrNotSent, err)
		}
		return queryBatch(ctx, d.api, b.Rail, b.OutBatchNo, q)
	})
	if is429(err) {
		d.query.Slow()
	}
	return res, err
}

// pollFailed reschedules a batch whose query failed. NOT_FOUND is not a failure (spec §6):
// within the grace period the batch is still being accepted; after it, an operator is told,
// and the batch keeps being queried under the same number.
func (d *driver) pollFailed(ctx context.Context, b ledger.Batch, err error, now time.Time) error {
	code := errorCode(err)
	switch classify(err) {
	case wechatpay.ClassNotFound:
		if !b.NotFoundSince.IsZero() && now.Sub(b.NotFoundSince) > d.poll.NotFoundGrace {
			d.log.Error("batch still NOT_FOUND after the grace period", "out_batch_no", b.OutBatchNo, "since", b.NotFoundSince)
		}
		return d.db.Reschedule(context.WithoutCancel(ctx), b.OutBatchNo, now.Add(d.poll.Interval), code, true)
	case wechatpay.ClassNotSent:
		if ctx.Err() != nil {
			return nil
		}
		return d.db.Reschedule(ctx, b.OutBatchNo, now.Add(d.submit.RetryMin), code, false)
	}
	d.log.Warn("batch query failed", "out_batch_no", b.OutBatchNo, "code", code)
	return d.db.Reschedule(context.WithoutCancel(ctx), b.OutBatchNo, now.Add(d.backoff(2)), code, false)
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
