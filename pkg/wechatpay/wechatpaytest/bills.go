package wechatpaytest

import (
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// bill is one transfer bill of the new 商家转账 (spec §8): ACCEPTED, then WAIT_USER_CONFIRM
// until the simulated user confirms (ConfirmBill, BillAutoConfirm) or it expires, then
// TRANSFERING, then SUCCESS or FAIL by the FailOpenIDPrefix rule. A cancel before the user
// confirms goes CANCELING, then CANCELLED.
type bill struct {
	Req        wechatpay.CreateTransferBillRequest `json:"request"` // user_name decrypted
	BodyHash   string                              `json:"body_sha256"`
	No         string                              `json:"transfer_bill_no"`
	Package    string                              `json:"package_info"`
	Created    time.Time                           `json:"created"`
	Accept     time.Time                           `json:"accept"`
	Process    time.Duration                       `json:"process"`
	ConfirmAt  time.Time                           `json:"confirm_at,omitzero"`
	ExpireAt   time.Time                           `json:"expire_at,omitzero"`
	CancelAt   time.Time                           `json:"cancel_at,omitzero"`
	State      string                              `json:"state,omitempty"` // final state once settled
	FailReason string                              `json:"fail_reason,omitempty"`
	Settled    time.Time                           `json:"settled,omitzero"`
}

func (b *bill) state(now time.Time) string {
	switch {
	case b.State != "":
		return b.State
	case !b.CancelAt.IsZero():
		return wechatpay.BillCanceling
	case now.Before(b.Accept):
		return wechatpay.BillAccepted
	case b.ConfirmAt.IsZero() || now.Before(b.ConfirmAt):
		return wechatpay.BillWaitUserConfirm
	}
	return wechatpay.BillTransfering
}

// due returns when an unsettled bill settles and to what state; zero while it waits.
func (b *bill) due() (time.Time, string) {
	switch {
	case !b.CancelAt.IsZero():
		return b.CancelAt.Add(b.Process), wechatpay.BillCancelled
	case !b.ConfirmAt.IsZero():
		if failReason(b.Req.OpenID) != "" {
			return b.ConfirmAt.Add(b.Process), wechatpay.BillFail
		}
		return b.ConfirmAt.Add(b.Process), wechatpay.BillSuccess
	case !b.ExpireAt.IsZero():
		return b.ExpireAt, wechatpay.BillFail
	}
	return time.Time{}, ""
}

// advanceBills settles bills whose time has come. Callers hold mu.
func (s *Server) advanceBills(now time.Time) {
	for b := range s.idx.openBills {
		at, st := b.due()
		if at.IsZero() || now.Before(at) {
			continue
		}
		b.State, b.Settled = st, at
		delete(s.idx.openBills, b)
		switch {
		case st == wechatpay.BillFail && b.ConfirmAt.IsZero():
			b.FailReason = reasonOverdueClose
		case st == wechatpay.BillFail:
			b.FailReason = failReason(b.Req.OpenID)
		}
		paid := st == wechatpay.BillSuccess
		s.st.release(b.Req.TransferAmount, paid)
		if paid {
			s.st.Payments = append(s.st.Payments, Payment{Kind: KindBill, OutDetailNo: b.Req.OutBillNo, DetailID: b.No, Amount: b.Req.TransferAmount, PaidAt: at})
		}
		s.version++
		if b.Req.NotifyURL != "" {
			s.queueNotification(b.Req.NotifyURL, wechatpay.EventBillFinished, "商家转账单据终态通知", wechatpay.BillFinishedResource{
				OutBillNo: b.Req.OutBillNo, TransferBillNo: b.No, State: st, MchID: s.opts.MchID,
				TransferAmount: b.Req.TransferAmount, OpenID: b.Req.OpenID, FailReason: b.FailReason,
				CreateTime: rfc3339(b.Created), UpdateTime: rfc3339(at),
			})
		}
	}
}

// validateBill checks a bill create (spec §8.2).
func (s *Server) validateBill(r *wechatpay.CreateTransferBillRequest) error {
	switch {
	case !textOK(r.AppID, 1, 32):
		return paramError("appid: want 1 to 32 characters")
	case !isOutNo(r.OutBillNo):
		return paramError("out_bill_no: want 1 to 32 characters of [0-9A-Za-z]")
	case !textOK(r.TransferSceneID, 1, 36):
		return paramError("transfer_scene_id: want 1 to 36 characters")
	case !textOK(r.OpenID, 1, 64):
		return paramError("openid: want 1 to 64 characters")
	case r.TransferAmount < s.opts.MinAmount:
		return paramError("transfer_amount: %d fen is below the minimum of %d fen", r.TransferAmount, s.opts.MinAmount)
	case !textOK(r.TransferRemark, 1, 32):
		return paramError("transfer_remark: want 1 to 32 UTF-8 characters")
	case r.UserName == "" && r.TransferAmount >= userNameRequiredFrom:
		return paramError("user_name: required from %d fen", userNameRequiredFrom)
	case len(r.TransferSceneReportInfos) == 0:
		return paramError("transfer_scene_report_infos: 需传入转账场景报备信息")
	}
	if r.NotifyURL != "" {
		if err := notifyURLOK(r.NotifyURL); err != nil {
			return paramError("notify_url: %v", err)
		}
	}
	types := map[string]bool{}
	for i, info := range r.TransferSceneReportInfos {
		if !textOK(info.InfoType, 1, 15) || !textOK(info.InfoContent, 1, 32) {
			return paramError("transfer_scene_report_infos[%d]: info_type 1 to 15 and info_content 1 to 32 characters", i)
		}
		types[info.InfoType] = true
	}
	if r.TransferSceneID == "1000" {
		if !types["活动名称"] || !types["奖励说明"] {
			return paramError("transfer_scene_report_infos: scene 1000 needs 活动名称 and 奖励说明")
		}
		if p := r.UserRecvPerception; p != "" && p != "现金奖励" && p != "活动奖励" {
			return paramError("user_recv_perception: scene 1000 allows 现金奖励 or 活动奖励")
		}
	}
	return nil
}

// createBill is POST /v3/fund-app/mch-transfer/transfer-bills (spec §8.2), idempotent on
// out_bill_no while the bill is not final.
func (s *Server) createBill(c *call) (any, error) {
	var r wechatpay.CreateTransferBillRequest
	if err := decodeStrict(c.body, &r); err != nil {
		return nil, err
	}
	if err := s.validateBill(&r); err != nil {
		return nil, err
	}
	if s.opts.AppID != "" && r.AppID != s.opts.AppID {
		return nil, apiError(http.StatusUnauthorized, "APPID_MCHID_NOT_MATCH", "appid is not bound to mchid %s", s.opts.MchID)
	}
	if r.UserName != "" {
		if c.r.Header.Get("Wechatpay-Serial") != s.opts.PlatformKeyID {
			return nil, paramError("Wechatpay-Serial: does not name the key that encrypts user_name; want %s", s.opts.PlatformKeyID)
		}
		name, err := s.decryptField(r.UserName)
		if err != nil || !textOK(name, 2, 30) {
			return nil, paramError("user_name: not an OAEP ciphertext of a 2 to 30 character name")
		}
		r.UserName = name
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	b := s.idx.bills[r.OutBillNo]
	switch {
	case b != nil && !reflect.DeepEqual(b.Req, r):
		return nil, invalidRequest("out_bill_no %s already exists with different content", r.OutBillNo)
	case b != nil && b.State != "":
		return nil, apiError(http.StatusBadRequest, "ALREADY_EXISTS", "the bill is final (%s); query it", b.State)
	case b == nil:
		if !s.st.hold(r.TransferAmount) {
			return nil, apiError(http.StatusForbidden, "NOT_ENOUGH", "balance is not enough for %d fen", r.TransferAmount)
		}
		s.st.Seq++
		b = &bill{
			Req: r, BodyHash: bodyHash(c.body), Package: randomString(48), Created: c.now,
			No:     fmt.Sprintf("1330000%s%025d", c.now.In(cst).Format("20060102"), s.st.Seq),
			Accept: c.now.Add(s.opts.scaled(s.opts.AcceptDelay)), Process: s.opts.scaled(s.opts.ProcessDelay),
		}
		if s.opts.BillAutoConfirm > 0 {
			b.ConfirmAt = c.now.Add(s.opts.scaled(s.opts.BillAutoConfirm))
		} else if s.opts.BillConfirmTimeout > 0 {
			b.ExpireAt = c.now.Add(s.opts.scaled(s.opts.BillConfirmTimeout))
		}
		s.st.Bills = append(s.st.Bills, b)
		s.idx.bills[r.OutBillNo], s.idx.billByNo[b.No] = b, b
		s.idx.openBills[b] = struct{}{}
		s.version++
	}
	return wechatpay.CreateTransferBillResponse{
		OutBillNo: b.Req.OutBillNo, TransferBillNo: b.No, CreateTime: rfc3339(b.Created),
		State: b.state(c.now), PackageInfo: b.Package,
	}, nil
}

// lookupBill finds the bill a query names. Callers hold mu and have advanced the state.
func (s *Server) lookupBill(c *call) (*bill, error) {
	var b *bill
	if no := c.r.PathValue("transfer_bill_no"); no != "" {
		b = s.idx.billByNo[no]
	} else {
		no, err := pathOutNo(c, "out_bill_no")
		if err != nil {
			return nil, err
		}
		b = s.idx.bills[no]
	}
	if b == nil {
		return nil, notFound("no such bill")
	}
	return b, s.visible(c.now, b.Created)
}

// queryBill serves both bill queries (spec §8.2).
func (s *Server) queryBill(c *call) (any, error) {
	s.mu.Lock()
	s.advance(c.now)
	b, err := s.lookupBill(c)
	var r wechatpay.TransferBill
	if err == nil {
		update := b.Created
		if !b.Settled.IsZero() {
			update = b.Settled
		}
		r = wechatpay.TransferBill{
			MchID: s.opts.MchID, OutBillNo: b.Req.OutBillNo, TransferBillNo: b.No, AppID: b.Req.AppID,
			State: b.state(c.now), TransferAmount: b.Req.TransferAmount, TransferRemark: b.Req.TransferRemark,
			FailReason: b.FailReason, OpenID: b.Req.OpenID, UserName: b.Req.UserName,
			CreateTime: rfc3339(b.Created), UpdateTime: rfc3339(update),
		}
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if r.UserName, err = s.encryptName(r.UserName); err != nil {
		return nil, err
	}
	return r, nil
}

// cancelBill is POST …/out-bill-no/{out_bill_no}/cancel (spec §8.2): allowed until the user
// has confirmed; it only acknowledges, the final CANCELLED comes ProcessDelay later.
func (s *Server) cancelBill(c *call) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	b, err := s.lookupBill(c)
	if err != nil {
		return nil, err
	}
	switch st := b.state(c.now); st {
	case wechatpay.BillAccepted, wechatpay.BillWaitUserConfirm:
		b.CancelAt, b.ConfirmAt, b.ExpireAt = c.now, time.Time{}, time.Time{}
		s.version++
	case wechatpay.BillCanceling, wechatpay.BillCancelled:
	default:
		return nil, invalidRequest("the bill is %s and can no longer be cancelled", st)
	}
	return wechatpay.CancelTransferBillResponse{OutBillNo: b.Req.OutBillNo, TransferBillNo: b.No, State: b.state(c.now), UpdateTime: rfc3339(c.now)}, nil
}

// ConfirmBill is the simulated user confirming receipt of the bill outBillNo in WeChat: a
// bill in WAIT_USER_CONFIRM goes TRANSFERING and settles ProcessDelay later.
func (s *Server) ConfirmBill(outBillNo string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advance(now)
	b := s.idx.bills[outBillNo]
	if b == nil {
		return ErrNoBatch
	}
	if b.state(now) != wechatpay.BillWaitUserConfirm {
		return ErrNotWaiting
	}
	b.ConfirmAt, b.ExpireAt = now, time.Time{}
	s.version++
	return nil
}
