package wechatpaytest

// The batch model and its clock: a batch's state is a function of time (status,
// detailStatus), and advance settles each detail exactly once when its time comes. The HTTP
// handlers are in batches_api.go, the test controls in batches_control.go.

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// cst is the +08:00 zone WeChat Pay writes its RFC 3339 times in.
var cst = time.FixedZone("CST", 8*3600)

func rfc3339(t time.Time) string { return t.In(cst).Format(time.RFC3339) }

// Simulated payees, chosen by openid prefix.
const (
	// FailOpenIDPrefix starts an openid that fails: "fail-<FAIL_REASON>-<anything>", e.g.
	// "fail-ACCOUNT_FROZEN-u42", makes its detail (or confirmed bill) end FAIL with that
	// fail_reason. Every other openid succeeds.
	FailOpenIDPrefix = "fail-"
	// NoConfirmOpenIDPrefix starts the openid of a transfer-bill payee who never confirms:
	// the bill stays WAIT_USER_CONFIRM until it closes FAIL OVERDUE_CLOSE at
	// Options.BillConfirmTimeout plus Options.BillCloseLag, e.g. "noconfirm-u7".
	NoConfirmOpenIDPrefix = "noconfirm-"
	// DeclineOpenIDPrefix starts the openid of a transfer-bill payee who declines when the
	// others confirm (Options.BillAutoConfirm): the bill ends FAIL with fail_reason
	// USER_DECLINED, a sandbox-only reason (receivers must keep unknown reasons as they
	// come), e.g. "decline-u9". Any other openid (fail-… included) confirms.
	DeclineOpenIDPrefix = "decline-"
)

// failReason returns the fail_reason an openid asks for, or "" for an openid that succeeds.
func failReason(openID string) string {
	rest, ok := strings.CutPrefix(openID, FailOpenIDPrefix)
	if !ok {
		return ""
	}
	reason, _, _ := strings.Cut(rest, "-")
	if reason == "" {
		return "OTHER_FAIL_REASON_TYPE"
	}
	return reason
}

// Fail reasons the sandbox itself gives.
const (
	reasonNotConfirmed = "MERCHANT_NOT_CONFIRM"
	reasonRejected     = "MERCHANT_REJECT"
	reasonOverdueClose = "OVERDUE_CLOSE"
	reasonUserDeclined = "USER_DECLINED"
)

// batch is one created batch, direct or partner. Its status is a function of the clock
// (status, detailStatus); advance settles details whose time has come, exactly once each.
type batch struct {
	Req           batchReq      `json:"request"`
	BodyHash      string        `json:"body_sha256"`
	ID            string        `json:"batch_id"`
	Created       time.Time     `json:"created"`
	Accept        time.Time     `json:"accept"`  // ACCEPTED → PROCESSING
	Process       time.Duration `json:"process"` // how long a detail stays PROCESSING
	Details       []detail      `json:"detail_states"`
	Pending       int           `json:"pending"` // details not settled
	Expired       int           `json:"expired"` // details failed for want of a confirmation
	Updated       time.Time     `json:"updated"`
	Finished      time.Time     `json:"finished,omitzero"`
	Closed        bool          `json:"closed,omitempty"`
	CloseReason   string        `json:"close_reason,omitempty"`
	Notified      bool          `json:"notified,omitempty"`
	SuccessAmount wechatpay.Fen `json:"success_amount"`
	SuccessNum    int           `json:"success_num"`
	FailAmount    wechatpay.Fen `json:"fail_amount"`
	FailNum       int           `json:"fail_num"`

	next  time.Time      // nothing to settle before this
	byOut map[string]int // out_detail_no → index
}

// detail is the state of one detail; its request is batch.Req.Details at the same index.
type detail struct {
	WaitPay    bool      `json:"wait_pay,omitempty"`
	ConfirmAt  time.Time `json:"confirm_at,omitzero"` // zero: not confirmed
	ExpireAt   time.Time `json:"expire_at,omitzero"`  // zero: waits forever
	Status     string    `json:"status,omitempty"`    // SUCCESS or FAIL once settled
	FailReason string    `json:"fail_reason,omitempty"`
	Settled    time.Time `json:"settled,omitzero"`
}

func (b *batch) index() {
	b.byOut = make(map[string]int, len(b.Req.Details))
	for i, d := range b.Req.Details {
		b.byOut[d.OutDetailNo] = i
	}
}

func (b *batch) detailID(i int) string { return fmt.Sprintf("%s%05d", b.ID, i+1) }

// detailIndex parses a detail_id of b, or returns -1.
func (b *batch) detailIndex(id string) int {
	rest, ok := strings.CutPrefix(id, b.ID)
	if !ok || len(rest) != 5 {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || n > len(b.Details) {
		return -1
	}
	return n - 1
}

func (b *batch) kind() string {
	if b.Req.Partner {
		return KindPartner
	}
	return KindBatch
}

// due returns when an unsettled detail settles and whether that is an expiry; zero when it
// waits for a confirmation with no deadline.
func (b *batch) due(d *detail) (time.Time, bool) {
	start := b.Accept
	if d.WaitPay {
		if d.ConfirmAt.IsZero() {
			return d.ExpireAt, !d.ExpireAt.IsZero()
		}
		start = d.ConfirmAt
	}
	return start.Add(b.Process), false
}

// detailStatus is the status of d at now; call advance(now) first.
func (b *batch) detailStatus(d *detail, now time.Time) string {
	switch {
	case d.Status != "":
		return d.Status
	case now.Before(b.Accept):
		return wechatpay.DetailInit
	case d.WaitPay && (d.ConfirmAt.IsZero() || now.Before(d.ConfirmAt)):
		return wechatpay.DetailWaitPay
	}
	return wechatpay.DetailProcessing
}

// status is the batch status at now; call advance(now) first.
func (b *batch) status(now time.Time) string {
	switch {
	case b.Closed:
		return wechatpay.BatchClosed
	case b.Pending == 0:
		return wechatpay.BatchFinished
	case now.Before(b.Accept):
		return wechatpay.BatchAccepted
	}
	for i := range b.Details {
		if d := &b.Details[i]; d.Status == "" && b.detailStatus(d, now) != wechatpay.DetailWaitPay {
			return wechatpay.BatchProcessing
		}
	}
	return wechatpay.BatchWaitPay
}

// updated is the time of the batch's last change at or before now.
func (b *batch) updated(now time.Time) time.Time {
	if !now.Before(b.Accept) && b.Accept.After(b.Updated) {
		return b.Accept
	}
	return b.Updated
}

// advance settles every detail, bill and instruction whose time has come. Callers hold mu.
func (s *Server) advance(now time.Time) {
	for b := range s.idx.open {
		if !now.Before(b.next) {
			s.advanceBatch(b, now)
		}
	}
	s.advanceBills(now)
	s.advanceInstrs(now)
}

func (s *Server) advanceBatch(b *batch, now time.Time) {
	var next time.Time
	for i := range b.Details {
		d := &b.Details[i]
		if d.Status != "" {
			continue
		}
		at, expired := b.due(d)
		switch {
		case at.IsZero():
		case now.Before(at):
			if next.IsZero() || at.Before(next) {
				next = at
			}
		case expired:
			s.settle(b, i, at, wechatpay.DetailFail, reasonNotConfirmed)
			b.Expired++
		default:
			if r := failReason(b.Req.Details[i].OpenID); r != "" {
				s.settle(b, i, at, wechatpay.DetailFail, r)
			} else {
				s.settle(b, i, at, wechatpay.DetailSuccess, "")
			}
		}
	}
	if next.IsZero() {
		next = farFuture
	}
	b.next = next
	if b.Pending == 0 {
		if b.Expired == len(b.Details) {
			b.Closed, b.CloseReason = true, reasonOverdueClose
		}
		s.finish(b)
	}
}

// farFuture is the next event of a batch that only waits for confirmations.
var farFuture = time.Unix(1<<40, 0)

// settle makes detail i final. It is the only place that pays a detail or debits the
// balance, and it runs once per detail: Status is set here and never cleared.
func (s *Server) settle(b *batch, i int, at time.Time, status, reason string) {
	d, in := &b.Details[i], &b.Req.Details[i]
	d.Status, d.FailReason, d.Settled = status, reason, at
	paid := status == wechatpay.DetailSuccess
	s.st.release(in.Amount, paid)
	if paid {
		b.SuccessAmount += in.Amount
		b.SuccessNum++
		s.st.Payments = append(s.st.Payments, Payment{
			Kind: b.kind(), OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID,
			OutDetailNo: in.OutDetailNo, DetailID: b.detailID(i), Amount: in.Amount, PaidAt: at,
		})
	} else {
		b.FailAmount += in.Amount
		b.FailNum++
	}
	b.Pending--
	if at.After(b.Updated) {
		b.Updated = at
	}
	s.version++
}

// finish ends a batch whose details are all settled and queues its notification.
func (s *Server) finish(b *batch) {
	delete(s.idx.open, b)
	b.Finished = b.Updated
	s.version++
	if b.Req.NotifyURL == "" || b.Notified {
		return
	}
	b.Notified = true
	res := wechatpay.BatchFinishedResource{
		MchID: s.opts.MchID, OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID, BatchStatus: b.status(b.Finished),
		TotalNum: b.Req.TotalNum, TotalAmount: b.Req.TotalAmount, UpdateTime: rfc3339(b.Finished),
	}
	if b.Closed {
		res.CloseReason = b.CloseReason
		s.queueNotification(b.Req.NotifyURL, wechatpay.EventBatchClosed, "商家转账批次关闭", res)
		return
	}
	s.queueNotification(b.Req.NotifyURL, wechatpay.EventBatchFinished, "商家转账批次完成", finishedResource{
		BatchFinishedResource: res,
		SuccessAmount:         b.SuccessAmount, SuccessNum: b.SuccessNum, FailAmount: b.FailAmount, FailNum: b.FailNum,
	})
}

// finishedResource is the plaintext of MCHTRANSFER.BATCH.FINISHED as WeChat sends it: the four
// totals are always there, 0 included (docs/wechatpay.md §7), where the omitempty tags of
// wechatpay.BatchFinishedResource would drop a 0. Its fields shadow the embedded ones.
type finishedResource struct {
	wechatpay.BatchFinishedResource
	SuccessAmount wechatpay.Fen `json:"success_amount"`
	SuccessNum    int           `json:"success_num"`
	FailAmount    wechatpay.Fen `json:"fail_amount"`
	FailNum       int           `json:"fail_num"`
}
