package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// batchRail pays a batch with the batch API (docs/wechatpay.md §4 direct, §6 partner): one create
// of the whole batch under its out_batch_no, then batch queries until it is FINISHED or CLOSED,
// then detail pages (and single-detail queries for each FAIL's reason) until every member is final.
// One value serves both the direct and the partner rail: they differ only in endpoints and body
// shape, both chosen by the batch's rail.
type batchRail struct {
	*driver
	names     batching.Names
	notifyURL string
	cbCreate  *gobreaker.CircuitBreaker[created]
	cbQuery   *gobreaker.CircuitBreaker[*batchPage]
	cbDetail  *gobreaker.CircuitBreaker[detail] // single-detail queries, for fail_reason
	overdue   overdueLog                        // batches with FAIL rows still lacking a reason past the grace
}

func newBatchRail(d *driver, names batching.Names, notifyURL string, cfg BreakerConfig) *batchRail {
	return &batchRail{
		driver: d, names: names, notifyURL: notifyURL,
		cbCreate: newBreaker[created]("wechatpay-create", cfg, d.log),
		cbQuery:  newBreaker[*batchPage]("wechatpay-query", cfg, d.log),
		cbDetail: newBreaker[detail]("wechatpay-query-detail", cfg, d.log),
	}
}

// step submits a SEALED batch and follows any other.
func (d *batchRail) step(ctx context.Context, b ledger.Batch) error {
	if b.State == ledger.BatchSealed {
		return d.send(ctx, b)
	}
	return d.follow(ctx, b)
}

// bodies builds the frozen create request for b's rail. The batch-level fields come from the
// group key (every member shares them); totals are computed from the members; user_name is
// the ciphertext stored at intake. The group key is parsed once per batch.
func (d *batchRail) bodies(b batching.Batch, members []ledger.Payout) ([]byte, [][]byte, error) {
	k, err := batching.ParseKey(b.Group)
	if err != nil {
		return nil, nil, err
	}
	name, remark, err := d.names.RenderKey(k, b, d.now())
	if err != nil {
		return nil, nil, err
	}
	if k.BatchName != "" {
		name = batching.TrimChars(k.BatchName, 32)
	}
	if k.BatchRemark != "" {
		remark = batching.TrimChars(k.BatchRemark, 32)
	}
	total, num := wechatpay.Fen(b.TotalAmount()), b.TotalNum()
	var req any
	switch k.Rail {
	case payout.RailDirect:
		r := wechatpay.CreateBatchRequest{
			AppID: k.AppID, BatchName: name, BatchRemark: remark, NotifyURL: d.notifyURL, OutBatchNo: b.OutBatchNo,
			TotalAmount: total, TotalNum: num, TransferSceneID: k.SceneID,
			TransferDetailList: make([]wechatpay.TransferDetailInput, len(members)),
		}
		for i, p := range members {
			r.TransferDetailList[i] = wechatpay.TransferDetailInput{
				OpenID: p.OpenID, OutDetailNo: p.OutDetailNo, TransferAmount: wechatpay.Fen(p.Amount),
				TransferRemark: p.Remark, UserName: p.UserNameCipher,
			}
		}
		req = r
	case payout.RailPartner:
		r := wechatpay.PartnerCreateBatchRequest{
			AuthorizationType: k.AuthorizationType, BatchName: name, BatchRemark: remark, OutBatchNo: b.OutBatchNo,
			SpAppID: k.SpAppID, SubAppID: k.SubAppID, SubMchID: k.SubMchID, TotalAmount: total, TotalNum: num,
			TransferPurpose: k.TransferPurpose, TransferScene: k.TransferScene,
			TransferDetailList: make([]wechatpay.PartnerTransferDetailInput, len(members)),
		}
		for i, p := range members {
			r.TransferDetailList[i] = wechatpay.PartnerTransferDetailInput{
				OpenID: p.OpenID, OutDetailNo: p.OutDetailNo, TransferAmount: wechatpay.Fen(p.Amount),
				TransferRemark: p.Remark, UserName: p.UserNameCipher,
			}
		}
		req = r
	default:
		return nil, nil, fmt.Errorf("the batch API has no rail %q", k.Rail)
	}
	body, err := json.Marshal(req)
	return body, nil, err
}

// send submits a sealed batch: the frozen body, the same out_batch_no, every attempt.
func (d *batchRail) send(ctx context.Context, b ledger.Batch) error {
	res, err := throttled(ctx, d.cbCreate, d.create, func() (created, error) {
		return createBatch(ctx, d.api, b.Rail, b.Body)
	})
	now, code := d.now(), errorCode(err)
	r := ledger.SubmitResult{ErrorCode: code, ErrorMessage: errorMessage(err)}
	switch createAnswer(err, b.Attempts == 0) {
	case createAccepted:
		r.Outcome, r.BatchID, r.BatchStatus = ledger.SubmitAccepted, res.BatchID, res.Status
		r.NextAt = now.Add(d.poll.FirstDelay)
		d.log.Info("batch accepted", "out_batch_no", b.OutBatchNo, "batch_id", res.BatchID, "attempt", b.Attempts+1)
	case createRejected:
		r.Outcome = ledger.SubmitRejected
		d.log.Error("batch rejected: nothing was paid", "out_batch_no", b.OutBatchNo, "code", code)
	case createProbe:
		if q, qerr := d.queryBatch(ctx, b, wechatpay.BatchQuery{}); qerr == nil {
			r.Outcome, r.BatchID, r.BatchStatus = ledger.SubmitAccepted, q.Batch.BatchID, q.Batch.BatchStatus
			r.NextAt = now.Add(d.poll.FirstDelay)
			d.log.Warn("create refused but the batch exists: following it", "out_batch_no", b.OutBatchNo, "code", code)
			break
		}
		fallthrough
	case createParked:
		r.Outcome, r.NextAt = ledger.SubmitRetry, now.Add(d.submit.ParkedRetry)
		d.log.Error("batch parked: operator action needed; the same number is retried", "out_batch_no", b.OutBatchNo, "code", code,
			"message", errorMessage(err), "retry_at", r.NextAt, "action", ParkedAction(code, b.Rail))
	case createNotSent:
		if ctx.Err() != nil {
			return nil
		}
		return d.db.Reschedule(ctx, b.OutBatchNo, now.Add(d.submit.RetryMin), code, false)
	default: // maybe paid, so the same number again
		r.Outcome, r.NextAt = ledger.SubmitRetry, now.Add(d.backoff(b.Attempts))
		d.log.Warn("batch submit ambiguous; will resend the same body", "out_batch_no", b.OutBatchNo, "code", code, "attempt", b.Attempts+1,
			"err", err)
	}
	if err := d.db.RecordSubmit(context.WithoutCancel(ctx), b.OutBatchNo, r); err != nil {
		return err
	}
	if r.Outcome == ledger.SubmitRejected {
		d.changed()
	}
	return nil
}

// follow queries an accepted batch and stores its status; once FINISHED it pages every
// detail into the ledger, one transaction per page, each FAIL with its fail_reason (see
// reasonPass). CLOSED fails the remaining members with the close reason.
func (d *batchRail) follow(ctx context.Context, b ledger.Batch) error {
	q, err := d.queryBatch(ctx, b, wechatpay.BatchQuery{})
	now := d.now()
	if err != nil {
		return d.pollFailed(ctx, b, err, now)
	}
	tb := q.Batch
	if !b.AcceptedAt.IsZero() && now.Sub(b.AcceptedAt) > d.poll.Horizon &&
		tb.BatchStatus != wechatpay.BatchFinished && tb.BatchStatus != wechatpay.BatchClosed {
		d.log.Error("batch not final near the 30-day query horizon", "out_batch_no", b.OutBatchNo, "status", tb.BatchStatus)
	}
	// The status (with WeChat's sums) before the pages: the last page settles the batch, and
	// a batch must never settle with sums it has not stored (a create replay's answer may
	// already say FINISHED, without sums).
	err = d.db.ApplyBatchStatus(context.WithoutCancel(ctx), b.OutBatchNo, ledger.SourceQuery, ledger.BatchStatus{
		BatchID: tb.BatchID, Status: tb.BatchStatus, CloseReason: tb.CloseReason,
		SuccessAmount: int64(tb.SuccessAmount), FailAmount: int64(tb.FailAmount), SuccessNum: tb.SuccessNum, FailNum: tb.FailNum,
	}, now.Add(d.poll.Interval))
	d.changed()
	if err != nil || tb.BatchStatus != wechatpay.BatchFinished {
		return err
	}
	if err := d.pageDetails(ctx, b, tb.TotalNum); err != nil {
		return d.pollFailed(ctx, b, err, d.now())
	}
	d.changed()
	// Paging (with its fail-reason queries) can outlast the poll interval: the next poll of a
	// batch not yet settled is an interval after the pages, not after the status.
	return d.db.Reschedule(context.WithoutCancel(ctx), b.OutBatchNo, d.now().Add(d.poll.Interval), "", false)
}

// pageDetails reads every detail page of a FINISHED batch from offset 0 and applies each
// page in one transaction. FAIL rows are applied only with their fail_reason, fetched by
// single-detail queries within the query budget; those whose reason cannot be had now are
// left for the next pass (see reasonPass), which keeps the batch unsettled.
//
// The next page is queried while this one's fail reasons are fetched and its rows committed:
// the page queries and the detail queries have budgets of their own, and one worker doing
// the three in turn left both budgets idle whenever answers or commits were slow (beside
// `make test`, 5–30 page queries a second of 45 while intake ran).
func (d *batchRail) pageDetails(ctx context.Context, b ledger.Batch, total int) error {
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
	var next <-chan pageAnswer // the page queried ahead, until it is taken
	defer func() {
		if next != nil {
			<-next // no query outlives the pass
		}
	}()
	if total > 0 {
		next = d.queryPage(ctx, b, 0)
	}
	for offset := 0; offset < total; {
		a := <-next
		next = nil
		if a.err != nil {
			return a.err
		}
		q := a.page
		more := len(q.Details) >= d.poll.PageLimit && offset+len(q.Details) < total
		if more {
			next = d.queryPage(ctx, b, offset+len(q.Details))
		}
		rows := make([]ledger.DetailRow, len(q.Details))
		for i, r := range q.Details {
			rows[i] = ledger.DetailRow{OutDetailNo: r.OutDetailNo, DetailID: r.DetailID, Status: r.DetailStatus}
		}
		var err error
		if rows = d.withReasons(ctx, b, p, rows); len(rows) > 0 {
			_, err = d.db.ApplyDetailPage(context.WithoutCancel(ctx), b.OutBatchNo, ledger.SourceQuery, offset, rows)
		}
		switch {
		case errors.Is(err, ledger.ErrIllegalTransition), errors.Is(err, ledger.ErrNotMember):
			// The legal rows are applied; the ledger counted the refused ones. A detail that
			// moves backwards or is not ours needs a human, not a retry.
			d.log.Error("detail page rows refused", "out_batch_no", b.OutBatchNo, "offset", offset, "err", err)
		case err != nil:
			return err // a page queried ahead is dropped: the next pass pages from offset 0 again
		}
		if !more {
			break
		}
		offset += len(q.Details)
	}
	p.complete = true
	return nil
}

// pageAnswer is one detail page, or why it could not be had.
type pageAnswer struct {
	page *batchPage
	err  error
}

// queryPage queries the detail page of b at offset on a goroutine of its own; the answer
// arrives on the returned channel, whose buffer takes it without waiting for a reader.
func (d *batchRail) queryPage(ctx context.Context, b ledger.Batch, offset int) <-chan pageAnswer {
	ch := make(chan pageAnswer, 1)
	go func() {
		q, err := d.queryBatch(ctx, b, wechatpay.BatchQuery{
			NeedQueryDetail: true, Offset: offset, Limit: d.poll.PageLimit, DetailStatus: wechatpay.DetailStatusAll,
		})
		ch <- pageAnswer{q, err}
	}()
	return ch
}

func (d *batchRail) queryBatch(ctx context.Context, b ledger.Batch, q wechatpay.BatchQuery) (*batchPage, error) {
	return throttled(ctx, d.cbQuery, d.query, func() (*batchPage, error) {
		return queryBatch(ctx, d.api, b.Rail, b.OutBatchNo, q)
	})
}

// pollFailed reschedules a batch whose query failed. NOT_FOUND is not a failure (docs/wechatpay.md
// §5): within the grace period the batch is still being accepted; after it, an operator is told,
// and the batch keeps being queried under the same number.
func (d *batchRail) pollFailed(ctx context.Context, b ledger.Batch, err error, now time.Time) error {
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
	d.log.Warn("batch query failed", "out_batch_no", b.OutBatchNo, "code", code, "err", err)
	return d.db.Reschedule(context.WithoutCancel(ctx), b.OutBatchNo, now.Add(d.backoff(2)), code, false)
}

// created is what a batch create answers, whichever rail.
type created struct {
	BatchID, Status string
}

// batchPage is one batch query answer, whichever rail: the direct API wraps the batch in
// transfer_batch (docs/wechatpay.md §5), the partner API is flat (docs/wechatpay.md §6).
type batchPage struct {
	Batch   wechatpay.TransferBatch
	Details []wechatpay.DetailBrief
}

// createBatch sends a frozen body to the create endpoint of its rail.
func createBatch(ctx context.Context, api *wechatpay.Client, rail string, body []byte) (created, error) {
	if rail == payout.RailPartner {
		r, err := api.PartnerCreateTransferBatchBody(ctx, body)
		if err != nil {
			return created{}, err
		}
		return created{BatchID: r.BatchID}, nil // the partner answer has no status (docs/wechatpay.md §6)
	}
	r, err := api.CreateTransferBatchBody(ctx, body)
	if err != nil {
		return created{}, err
	}
	return created{BatchID: r.BatchID, Status: r.BatchStatus}, nil
}

// queryBatch queries a batch by out_batch_no on its rail.
func queryBatch(ctx context.Context, api *wechatpay.Client, rail, outBatchNo string, q wechatpay.BatchQuery) (*batchPage, error) {
	if rail == payout.RailPartner {
		r, err := api.PartnerQueryBatchByOutBatchNo(ctx, outBatchNo, q)
		if err != nil {
			return nil, err
		}
		return &batchPage{Batch: wechatpay.TransferBatch{
			MchID: r.SpMchID, OutBatchNo: r.OutBatchNo, BatchID: r.BatchID, BatchStatus: r.BatchStatus,
			CloseReason: r.CloseReason, TotalAmount: r.TotalAmount, TotalNum: r.TotalNum,
			SuccessAmount: r.SuccessAmount, SuccessNum: r.SuccessNum, FailAmount: r.FailAmount, FailNum: r.FailNum,
		}, Details: r.TransferDetailList}, nil
	}
	r, err := api.QueryBatchByOutBatchNo(ctx, outBatchNo, q)
	if err != nil {
		return nil, err
	}
	return &batchPage{Batch: r.TransferBatch, Details: r.TransferDetailList}, nil
}

// detail is one single-detail query answer, whichever rail: the only answer that carries
// fail_reason (docs/wechatpay.md §5, §6). The openid and name ciphertext of the answer are not
// kept.
type detail struct {
	OutDetailNo, DetailID, Status, FailReason string
}

// queryDetail queries one detail by out_batch_no and out_detail_no on its rail.
func queryDetail(ctx context.Context, api *wechatpay.Client, rail, outBatchNo, outDetailNo string) (detail, error) {
	if rail == payout.RailPartner {
		r, err := api.PartnerQueryDetailByOutDetailNo(ctx, outBatchNo, outDetailNo)
		if err != nil {
			return detail{}, err
		}
		return detail{OutDetailNo: r.OutDetailNo, DetailID: r.DetailID, Status: r.DetailStatus, FailReason: r.FailReason}, nil
	}
	r, err := api.QueryDetailByOutDetailNo(ctx, outBatchNo, outDetailNo)
	if err != nil {
		return detail{}, err
	}
	return detail{OutDetailNo: r.OutDetailNo, DetailID: r.DetailID, Status: r.DetailStatus, FailReason: r.FailReason}, nil
}
