package wechatpaytest

// Test controls over batches: what the merchant's staff or WeChat Pay would do by hand
// (confirm, reject, close) and the summaries tests and the admin API read.

import (
	"errors"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// ErrNoBatch is returned by Confirm, Reject and CloseBatch for an unknown out_batch_no or
// out_detail_no, and by ConfirmBill and DeclineBill for an unknown out_bill_no.
var ErrNoBatch = errors.New("wechatpaytest: no such batch or detail")

// ErrNotWaiting is returned by Confirm and Reject when nothing named is in WAIT_PAY, by
// CloseBatch for a batch that already ended, and by ConfirmBill and DeclineBill for a bill
// not in WAIT_USER_CONFIRM.
var ErrNotWaiting = errors.New("wechatpaytest: nothing to confirm or close")

// Confirm confirms WAIT_PAY details of the direct batch outBatchNo, as the merchant's staff would
// (docs/wechatpay.md §5): all of them, or only outDetailNo when it is not empty. They are paid
// ProcessDelay later. It returns how many it confirmed.
func (s *Server) Confirm(outBatchNo, outDetailNo string) (int, error) {
	return s.decide(outBatchNo, outDetailNo, true)
}

// Reject is Confirm's opposite: the WAIT_PAY details fail now with MERCHANT_REJECT.
func (s *Server) Reject(outBatchNo, outDetailNo string) (int, error) {
	return s.decide(outBatchNo, outDetailNo, false)
}

func (s *Server) decide(outBatchNo, outDetailNo string, confirm bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advance(now)
	b := s.idx.byOut[batchKey{false, outBatchNo}]
	if b == nil {
		return 0, ErrNoBatch
	}
	if _, ok := b.byOut[outDetailNo]; outDetailNo != "" && !ok {
		return 0, ErrNoBatch
	}
	n := 0
	for i := range b.Details {
		d := &b.Details[i]
		if outDetailNo != "" && b.Req.Details[i].OutDetailNo != outDetailNo || b.detailStatus(d, now) != wechatpay.DetailWaitPay {
			continue
		}
		if confirm {
			d.ConfirmAt, d.ExpireAt = now, time.Time{}
			b.next = now
		} else {
			s.settle(b, i, now, wechatpay.DetailFail, reasonRejected)
		}
		n++
	}
	if n == 0 {
		return 0, ErrNotWaiting
	}
	s.advanceBatch(b, now)
	s.version++
	return n, nil
}

// CloseBatch closes an unfinished batch (direct or partner) now: its unsettled details fail
// with reason as fail_reason, the batch becomes CLOSED with reason as close_reason
// (docs/wechatpay.md §5: OVERDUE_CLOSE or TRANSFER_SCENE_INVALID), and its callback is sent.
func (s *Server) CloseBatch(outBatchNo string, partner bool, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advance(now)
	b := s.idx.byOut[batchKey{partner, outBatchNo}]
	if b == nil {
		return ErrNoBatch
	}
	if b.Pending == 0 {
		return ErrNotWaiting
	}
	for i := range b.Details {
		if b.Details[i].Status == "" {
			s.settle(b, i, now, wechatpay.DetailFail, reason)
		}
	}
	b.Closed, b.CloseReason = true, reason
	s.finish(b)
	return nil
}

// BatchSummary describes a batch for tests and the admin API.
type BatchSummary struct {
	Partner       bool          `json:"partner,omitempty"`
	OutBatchNo    string        `json:"out_batch_no"`
	BatchID       string        `json:"batch_id"`
	Status        string        `json:"batch_status"`
	CloseReason   string        `json:"close_reason,omitempty"`
	TotalNum      int           `json:"total_num"`
	TotalAmount   wechatpay.Fen `json:"total_amount"`
	SuccessNum    int           `json:"success_num"`
	SuccessAmount wechatpay.Fen `json:"success_amount"`
	FailNum       int           `json:"fail_num"`
	FailAmount    wechatpay.Fen `json:"fail_amount"`
	WaitPayNum    int           `json:"wait_pay_num"`
	CreateTime    string        `json:"create_time"`
}

// Batches summarises every batch in creation order, settling whatever is due first.
func (s *Server) Batches() []BatchSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advance(now)
	out := make([]BatchSummary, 0, len(s.st.Batches))
	for _, b := range s.st.Batches {
		sum := BatchSummary{
			Partner: b.Req.Partner, OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID, Status: b.status(now),
			CloseReason: b.CloseReason, TotalNum: b.Req.TotalNum, TotalAmount: b.Req.TotalAmount,
			SuccessNum: b.SuccessNum, SuccessAmount: b.SuccessAmount, FailNum: b.FailNum, FailAmount: b.FailAmount,
			CreateTime: rfc3339(b.Created),
		}
		for i := range b.Details {
			if b.detailStatus(&b.Details[i], now) == wechatpay.DetailWaitPay {
				sum.WaitPayNum++
			}
		}
		out = append(out, sum)
	}
	return out
}
