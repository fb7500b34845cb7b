package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// billRail pays through transfer bills (商家转账, docs/transfer-bills.md): each member of a
// sealed batch is one bill, out_bill_no = its out_detail_no, created from the body frozen at
// sealing, confirmed by the payee in WeChat, and followed by callbacks (hints the ledger
// applies monotonically) and by queries, the sweep that catches what callbacks missed.
// Every ambiguous answer replays the same body under the same number; a new number is only
// ever an upstream's new request (docs/rails.md).
type billRail struct {
	*driver
	notifyURL string
	sweepMin  time.Duration // shortest wait between two queries of one bill
	workers   int           // bills of one batch in flight at once
	cbCreate  *gobreaker.CircuitBreaker[*wechatpay.CreateTransferBillResponse]
	cbQuery   *gobreaker.CircuitBreaker[*wechatpay.TransferBill]
	cbCancel  *gobreaker.CircuitBreaker[*wechatpay.CancelTransferBillResponse]
}

func newBillRail(d *driver, notifyURL string, cfg BreakerConfig) *billRail {
	sweep := d.poll.Interval
	if notifyURL != "" {
		sweep = d.poll.BillSweep // callbacks drive state; queries only sweep
	}
	return &billRail{
		driver: d, notifyURL: notifyURL, sweepMin: sweep, workers: d.submit.BillWorkers,
		cbCreate: newBreaker[*wechatpay.CreateTransferBillResponse]("wechatpay-bill-create", cfg, d.log),
		cbQuery:  newBreaker[*wechatpay.TransferBill]("wechatpay-bill-query", cfg, d.log),
		cbCancel: newBreaker[*wechatpay.CancelTransferBillResponse]("wechatpay-bill-cancel", cfg, d.log),
	}
}

// billInfo is what a request adds to a bill body beyond the ledger's columns: the scene's report
// rows and the payee's perception (docs/transfer-bills.md). Intake stores it in Payout.BillInfo.
type billInfo struct {
	Perception  string                              `json:"user_recv_perception,omitempty"`
	ReportInfos []wechatpay.TransferSceneReportInfo `json:"transfer_scene_report_infos"`
}

// newBillInfo encodes the bill fields of a request for the ledger.
func newBillInfo(r *payout.Request) ([]byte, error) {
	bi := billInfo{Perception: r.UserRecvPerception, ReportInfos: make([]wechatpay.TransferSceneReportInfo, len(r.SceneReportInfos))}
	for i, ri := range r.SceneReportInfos {
		bi.ReportInfos[i] = wechatpay.TransferSceneReportInfo{InfoType: ri.InfoType, InfoContent: ri.InfoContent}
	}
	return json.Marshal(bi)
}

// manifest is the body a bills batch keeps in the ledger: the members and totals in the
// shape the ledger checks on every rail. WeChat never sees it.
type manifest struct {
	OutBatchNo  string          `json:"out_batch_no"`
	TotalAmount int64           `json:"total_amount"`
	TotalNum    int             `json:"total_num"`
	Details     []manifestEntry `json:"transfer_detail_list"`
}

type manifestEntry struct {
	OutDetailNo string `json:"out_detail_no"`
	Amount      int64  `json:"transfer_amount"`
}

// bodies builds the manifest and one frozen create body per member.
func (d *billRail) bodies(b batching.Batch, members []ledger.Payout) ([]byte, [][]byte, error) {
	m := manifest{OutBatchNo: b.OutBatchNo, TotalAmount: b.TotalAmount(), TotalNum: b.TotalNum(), Details: make([]manifestEntry, len(members))}
	each := make([][]byte, len(members))
	for i, p := range members {
		m.Details[i] = manifestEntry{OutDetailNo: p.OutDetailNo, Amount: p.Amount}
		var bi billInfo
		if err := json.Unmarshal(p.BillInfo, &bi); err != nil {
			return nil, nil, fmt.Errorf("bill fields of %s: %w", p.OutDetailNo, err)
		}
		body, err := json.Marshal(wechatpay.CreateTransferBillRequest{
			AppID: p.AppID, OutBillNo: p.OutDetailNo, TransferSceneID: p.SceneID, OpenID: p.OpenID,
			UserName: p.UserNameCipher, TransferAmount: wechatpay.Fen(p.Amount), TransferRemark: p.Remark,
			NotifyURL: d.notifyURL, UserRecvPerception: bi.Perception, TransferSceneReportInfos: bi.ReportInfos,
		})
		if err != nil {
			return nil, nil, err
		}
		each[i] = body
	}
	body, err := json.Marshal(m)
	return body, each, err
}

// step handles the bills of the batch that are due, up to workers at once, a few rounds of
// workers per step: a step is short, so the batch comes back to the dispatcher soon and a
// cancel recorded meanwhile (the ledger hands those out first) waits little. The throttles
// keep the whole replica within its share of the merchant's limits.
func (d *billRail) step(ctx context.Context, b ledger.Batch) error {
	due, err := d.db.DueBills(ctx, b.OutBatchNo, d.now(), 2*d.workers)
	if err != nil {
		return err
	}
	marked, err := d.markSending(ctx, due)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, d.workers)
	var wg sync.WaitGroup
	for i, bl := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return nil
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := d.stepBill(ctx, bl, marked[i]); err != nil && ctx.Err() == nil {
				d.log.Error("bill step failed", "out_bill_no", bl.OutBillNo, "err", err)
			}
		}()
	}
	wg.Wait()
	return nil
}

// markSending records, in one transaction, the first send of every bill of due that this
// step will create (sealed, never sent, no cancel open, the create breaker closed), and
// reports which it marked: one commit a step where each bill's own mark took one commit a
// bill, a third of a bill's writes (its mark, its create's answer, its callback). A bill marked
// and then not sent (the breaker opened meanwhile, or ctx ended) is what a crash between a
// mark and its send leaves: a bill that may exist at WeChat, so its cancel goes to WeChat.
func (d *billRail) markSending(ctx context.Context, due []ledger.Bill) ([]bool, error) {
	marked := make([]bool, len(due))
	if ctx.Err() != nil || d.cbCreate.State() != gobreaker.StateClosed {
		return marked, nil // each create marks its own bill if it goes ahead
	}
	var rs []ledger.BillCreateRecord
	next := d.now().Add(d.backoff(0))
	for i, bl := range due {
		if bl.State == ledger.PayoutSealed && bl.Attempts == 0 && (bl.CancelRequestedAt.IsZero() || bl.CancelClosed) {
			marked[i] = true
			rs = append(rs, ledger.BillCreateRecord{OutBillNo: bl.OutBillNo,
				BillCreate: ledger.BillCreate{Outcome: ledger.SubmitRetry, ErrorCode: sendingCode, NextAt: next}})
		}
	}
	if len(rs) == 0 {
		return marked, nil
	}
	if err := d.db.RecordBillCreates(context.WithoutCancel(ctx), rs); err != nil {
		return nil, err
	}
	return marked, nil
}

// stepBill does the one thing a bill needs now: a pending cancel first, then a create (or
// its replay, which also brings package_info), else a query. marked is whether markSending
// recorded the bill's first send.
func (d *billRail) stepBill(ctx context.Context, bl ledger.Bill, marked bool) error {
	if !bl.CancelRequestedAt.IsZero() && !bl.CancelClosed {
		if done, err := d.cancel(ctx, bl); done || err != nil {
			return err
		}
	}
	switch {
	case ledger.PayoutFinal(bl.State):
		return nil // settled by the ledger once its cancel is closed
	case bl.State == ledger.PayoutSealed, needsCreate(bl):
		return d.create(ctx, bl, marked)
	}
	return d.query(ctx, bl)
}

// needsCreate reports whether a bill WeChat knows should be created again with the same
// body: it was only ACCEPTED or is still locking funds (PROCESSING: a top-up and a replay
// move it on, docs/transfer-bills.md), or it awaits the payee and we never got its package_info.
func needsCreate(bl ledger.Bill) bool {
	switch bl.State {
	case ledger.PayoutAccepted, ledger.PayoutProcessing:
		return true
	case ledger.PayoutWaitUserConfirm:
		return bl.PackageInfo == ""
	}
	return false
}

// sendingCode marks, before its first create is sent, a bill that may from then on exist
// at WeChat (see create).
const sendingCode = "SENDING"

// create sends the bill's frozen body, the same out_bill_no every attempt. Before the first
// send the ledger records the attempt (attempts 0 → 1, code SENDING), here or, with marked,
// in the step's markSending: a bill with no attempt recorded has certainly never been sent,
// by this process or one that crashed between a send and its record, which is what lets a
// cancel end it here without WeChat.
func (d *billRail) create(ctx context.Context, bl ledger.Bill, marked bool) error {
	first := bl.Attempts == 0
	var sent time.Time
	res, err := d.cbCreate.Execute(func() (*wechatpay.CreateTransferBillResponse, error) {
		if first && !marked {
			err := d.db.RecordBillCreate(context.WithoutCancel(ctx), bl.OutBillNo, ledger.BillCreate{
				Outcome: ledger.SubmitRetry, ErrorCode: sendingCode, NextAt: d.now().Add(d.backoff(0))})
			if err != nil {
				return nil, fmt.Errorf("%w: %w", wechatpay.ErrNotSent, err)
			}
		}
		// The throttle's turn is taken after the record: a ledger write's wait (a commit
		// behind others, an fsync on a busy disk) between the turn and the send would bunch
		// requests into WeChat's one-second windows and overflow them.
		var err error
		if sent, err = d.driver.create.Wait(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", wechatpay.ErrNotSent, err)
		}
		return d.api.CreateTransferBillBody(ctx, bl.Body)
	})
	if is429(err) {
		d.driver.create.Slow(sent)
	}
	now, code := d.now(), errorCode(err)
	r := ledger.BillCreate{ErrorCode: code, ErrorMessage: errorMessage(err)}
	action := createAnswer(err, first)
	if action == createAccepted && res.OutBillNo == bl.OutBillNo && res.State == wechatpay.BillFail {
		action = createExists // a create answer carries no fail_reason; the query does
	}
	switch action {
	case createAccepted:
		if res.OutBillNo != bl.OutBillNo {
			d.log.Error("bill create answered for another bill; will ask again", "out_bill_no", bl.OutBillNo, "answered", res.OutBillNo)
			r.Outcome, r.ErrorCode, r.NextAt = ledger.SubmitRetry, "OTHER_BILL", now.Add(d.backoff(bl.Attempts))
			break
		}
		st := ledger.BillState{State: res.State, TransferBillNo: res.TransferBillNo, PackageInfo: res.PackageInfo, CreateTime: parseTime(res.CreateTime)}
		r.Outcome, r.State, r.NextAt = ledger.SubmitAccepted, st, d.nextLook(now, bl.Attempts, st)
		if st.State == wechatpay.BillProcessing {
			d.log.Warn("bill is locking funds (PROCESSING); replaying the same bill", "out_bill_no", bl.OutBillNo,
				"attempt", bl.Attempts+1, "action", "if it stays PROCESSING, top up the merchant's operating account")
		}
	case createExists:
		// The bill exists and is final (docs/transfer-bills.md): what it became is a query away.
		if err := d.db.RecordBillCreate(context.WithoutCancel(ctx), bl.OutBillNo, ledger.BillCreate{
			Outcome: ledger.SubmitRetry, ErrorCode: code, ErrorMessage: errorMessage(err), NextAt: now}); err != nil {
			return err
		}
		return d.query(ctx, bl)
	case createRejected:
		r.Outcome = ledger.SubmitRejected
		d.log.Error("bill rejected: nothing was paid", "out_bill_no", bl.OutBillNo, "code", code)
	case createProbe:
		if q, qerr := d.queryBill(ctx, bl); qerr == nil && q.OutBillNo == bl.OutBillNo {
			st := billState(q)
			r.Outcome, r.State, r.NextAt = ledger.SubmitAccepted, st, d.nextLook(now, bl.Attempts, st)
			d.log.Warn("bill create refused but the bill exists: following it", "out_bill_no", bl.OutBillNo, "code", code)
			break
		}
		fallthrough
	case createParked:
		r.Outcome, r.NextAt = ledger.SubmitRetry, now.Add(d.submit.ParkedRetry)
		d.log.Error("bill parked: operator action needed; the same number is retried", "out_bill_no", bl.OutBillNo, "code", code,
			"message", errorMessage(err), "retry_at", r.NextAt, "action", ParkedAction(code, payout.RailBills))
	case createNotSent:
		if ctx.Err() != nil {
			return nil
		}
		return d.db.RescheduleBill(ctx, bl.OutBillNo, now.Add(d.submit.RetryMin), code, false)
	default: // maybe created, so the same body again
		r.Outcome, r.NextAt = ledger.SubmitRetry, now.Add(d.backoff(bl.Attempts))
		d.log.Warn("bill create ambiguous; will resend the same body", "out_bill_no", bl.OutBillNo, "code", code, "attempt", bl.Attempts+1,
			"err", err)
	}
	if err := d.db.RecordBillCreate(context.WithoutCancel(ctx), bl.OutBillNo, r); err != nil {
		return err
	}
	d.changed()
	return nil
}

// query reads the bill by out_bill_no and applies what WeChat says.
func (d *billRail) query(ctx context.Context, bl ledger.Bill) error {
	res, err := d.queryBill(ctx, bl)
	now := d.now()
	if err != nil {
		code := errorCode(err)
		switch classify(err) {
		case wechatpay.ClassNotFound:
			// Not a failure (docs/wechatpay.md §11): a bill we created may not be visible
			// yet.
			if !bl.NotFoundSince.IsZero() && now.Sub(bl.NotFoundSince) > d.poll.NotFoundGrace {
				d.log.Error("bill still NOT_FOUND after the grace period; still querying the same number", "out_bill_no", bl.OutBillNo, "since", bl.NotFoundSince)
			}
			return d.db.RescheduleBill(context.WithoutCancel(ctx), bl.OutBillNo, now.Add(d.poll.Interval), code, true)
		case wechatpay.ClassNotSent:
			if ctx.Err() != nil {
				return nil
			}
			return d.db.RescheduleBill(ctx, bl.OutBillNo, now.Add(d.submit.RetryMin), code, false)
		}
		d.log.Warn("bill query failed", "out_bill_no", bl.OutBillNo, "code", code, "err", err)
		return d.db.RescheduleBill(context.WithoutCancel(ctx), bl.OutBillNo, now.Add(d.backoff(2)), code, false)
	}
	if res.OutBillNo != bl.OutBillNo {
		d.log.Error("bill query answered for another bill", "out_bill_no", bl.OutBillNo, "answered", res.OutBillNo)
		return d.db.RescheduleBill(context.WithoutCancel(ctx), bl.OutBillNo, now.Add(d.backoff(2)), "OTHER_BILL", false)
	}
	st := billState(res)
	if st.State == wechatpay.BillFail && st.FailReason == "" {
		// Upstream must know why before it pays again under a new number: ask again.
		d.log.Warn("bill FAIL without a fail_reason; will query again", "out_bill_no", bl.OutBillNo)
		return d.db.RescheduleBill(context.WithoutCancel(ctx), bl.OutBillNo, now.Add(d.poll.Interval), "NO_REASON", false)
	}
	err = d.db.ApplyBillState(context.WithoutCancel(ctx), bl.OutBillNo, ledger.SourceQuery, st, d.nextLook(now, bl.Attempts, st))
	d.changed()
	return err
}

func (d *billRail) queryBill(ctx context.Context, bl ledger.Bill) (*wechatpay.TransferBill, error) {
	return throttled(ctx, d.cbQuery, d.driver.query, func() (*wechatpay.TransferBill, error) {
		return d.api.QueryTransferBillByOutBillNo(ctx, bl.OutBillNo)
	})
}

// cancel acts on an upstream's cancel of the bill. done is false when the bill must first
// be created or followed (a create that may have reached WeChat is settled before it is
// cancelled; a bill already CANCELING is only followed).
func (d *billRail) cancel(ctx context.Context, bl ledger.Bill) (done bool, err error) {
	now := d.now()
	switch {
	case ledger.PayoutFinal(bl.State):
		return false, nil // the ledger closed the cancel when the bill became final
	case bl.State == ledger.PayoutSealed && bl.Attempts == 0:
		// Never sent: nothing exists at WeChat, and only this worker sends it.
		err := d.db.RecordCancel(context.WithoutCancel(ctx), bl.OutBillNo, ledger.CancelResult{Outcome: ledger.CancelLocal, NextAt: now})
		d.changed()
		return true, err
	case bl.State == ledger.PayoutSealed, bl.State == ledger.PayoutCanceling:
		return false, nil
	}
	res, err := throttled(ctx, d.cbCancel, d.driver.cancel, func() (*wechatpay.CancelTransferBillResponse, error) {
		return d.api.CancelTransferBill(ctx, bl.OutBillNo)
	})
	now = d.now()
	code := errorCode(err)
	r := ledger.CancelResult{ErrorCode: code}
	switch classify(err) {
	case wechatpay.ClassOK:
		st := ledger.BillState{State: res.State, TransferBillNo: res.TransferBillNo}
		r.Outcome, r.State, r.NextAt = ledger.CancelAccepted, st, now.Add(d.sweepMin)
		d.log.Info("bill cancel accepted", "out_bill_no", bl.OutBillNo, "state", res.State)
	case wechatpay.ClassRejected, wechatpay.ClassBlocked:
		// The bill is past the point where it can be cancelled (or the call is refused
		// for good): upstream is told; the bill is followed to its end as before.
		r.Outcome, r.NextAt = ledger.CancelRefused, now
		d.log.Warn("bill cancel refused by WeChat", "out_bill_no", bl.OutBillNo, "code", code)
	case wechatpay.ClassNotSent:
		if ctx.Err() != nil {
			return true, nil
		}
		r.Outcome, r.NextAt = ledger.CancelRetry, now.Add(d.submit.RetryMin)
	default:
		r.Outcome, r.NextAt = ledger.CancelRetry, now.Add(d.backoff(bl.CancelAttempts))
		d.log.Warn("bill cancel ambiguous; will ask again", "out_bill_no", bl.OutBillNo, "code", code, "err", err)
	}
	err = d.db.RecordCancel(context.WithoutCancel(ctx), bl.OutBillNo, r)
	d.changed()
	return true, err
}

// nextLook is when to act on a bill again after learning st. Bills that need their create
// replayed come back on the create backoff; bills waiting for the payee or for money are
// swept by queries spaced by half their age, from sweepMin (short without callbacks) up to
// BillSweepMax, so an unconfirmed bill costs a handful of queries over its 24 hours while
// callbacks do the work.
func (d *billRail) nextLook(now time.Time, attempts int, st ledger.BillState) time.Time {
	if needsCreate(ledger.Bill{State: st.State, PackageInfo: st.PackageInfo}) {
		return now.Add(d.backoff(attempts))
	}
	wait := d.sweepMin
	if !st.CreateTime.IsZero() {
		wait = max(wait, min(now.Sub(st.CreateTime)/2, d.poll.BillSweepMax))
	}
	return now.Add(wait)
}

func billState(t *wechatpay.TransferBill) ledger.BillState {
	return ledger.BillState{State: t.State, TransferBillNo: t.TransferBillNo, FailReason: t.FailReason, CreateTime: parseTime(t.CreateTime)}
}

// parseTime reads WeChat's RFC 3339 times; zero when absent or malformed (informational).
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// ParkedAction tells the operator what fixes a refusal that parks a batch or a bill on rail:
// one answer for every code ledger.ParkedCode knows. It decides on the code only; the log line
// carries WeChat's message beside it for the human.
func ParkedAction(code, rail string) string {
	switch {
	case code == wechatpay.ErrNoAuth.Code && rail == payout.RailBills:
		return "this merchant has no transfer-bill permission (商家转账); if it has the batch API, set wechatpay.product: batches"
	case code == wechatpay.ErrNoAuth.Code:
		return "if WeChat's message says 当前商户号接入升级版本功能, this merchant has transfer bills (商家转账, since 2025-01-15), not the batch API: set wechatpay.product: bills"
	}
	switch code {
	case wechatpay.ErrNotEnough.Code:
		return "top up the merchant's operating account"
	case wechatpay.ErrAccountError.Code:
		return "the merchant's account is restricted or frozen: clear it on the merchant platform (pay.weixin.qq.com)"
	case wechatpay.ErrQuotaExceed.Code:
		return "a transfer quota is used up: raise it on the merchant platform or wait for it to reset"
	case wechatpay.ErrSignError.Code:
		return "WeChat does not accept our signature: check the merchant key and wechatpay.merchant-serial-no against the merchant platform"
	case wechatpay.ErrAppIDMchIDNotMatch.Code:
		return "the appid is not bound to this mchid: bind it on the merchant platform, or fix the appid upstream sends"
	case wechatpay.ErrInvalidRequest.Code:
		return "WeChat refuses the request as sent (read its message); the number was queried first and does not exist there"
	case wechatpay.ErrParamError.Code:
		return "a field is refused after an earlier attempt went unanswered: read WeChat's message; the number is queried before any resend"
	case codeRailNotConfigured:
		return "no processor here drives this batch's rail: run one whose wechatpay.product drives it"
	}
	return "fix the cause at WeChat Pay (merchant platform); the same number is resent"
}

// errorMessage is WeChat's message of an API error, for operators' eyes only (never decided on).
func errorMessage(err error) string {
	var ae *wechatpay.APIError
	if errors.As(err, &ae) {
		return ae.Message
	}
	return ""
}
