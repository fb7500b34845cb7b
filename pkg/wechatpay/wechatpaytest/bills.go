package wechatpaytest

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// bill is one transfer bill of the new 商家转账 (docs/transfer-bills.md): ACCEPTED for BillAcceptDelay,
// then WAIT_USER_CONFIRM until the simulated user acts (ConfirmBill, DeclineBill, or by openid at
// BillAutoConfirm) or the bill closes unconfirmed (BillConfirmTimeout + BillCloseLag). A confirmed
// bill is TRANSFERING for ProcessDelay, then SUCCESS or FAIL by the FailOpenIDPrefix rule; a
// declined one is FAIL USER_DECLINED, a closed one FAIL OVERDUE_CLOSE. A cancel before the user
// confirms goes CANCELING for ProcessDelay, then CANCELLED. The user's next act is the earliest of
// ConfirmAt, DeclineAt and ExpireAt.
type bill struct {
	Req        wechatpay.CreateTransferBillRequest `json:"request"` // user_name decrypted
	BodyHash   string                              `json:"body_sha256"`
	No         string                              `json:"transfer_bill_no"`
	Package    string                              `json:"package_info"`
	Created    time.Time                           `json:"created"`
	Accept     time.Time                           `json:"accept"`
	Process    time.Duration                       `json:"process"`
	ConfirmAt  time.Time                           `json:"confirm_at,omitzero"`
	DeclineAt  time.Time                           `json:"decline_at,omitzero"`
	ExpireAt   time.Time                           `json:"expire_at,omitzero"`
	CancelAt   time.Time                           `json:"cancel_at,omitzero"`
	State      string                              `json:"state,omitempty"` // final state once settled
	FailReason string                              `json:"fail_reason,omitempty"`
	Settled    time.Time                           `json:"settled,omitzero"`
}

// The user's acts on a waiting bill.
const (
	actNone = iota
	actConfirm
	actDecline
	actExpire
)

// act returns the user's next act on a bill that waits for it, and when; ties go to the
// first of confirm, decline, expire.
func (b *bill) act() (time.Time, int) {
	var at time.Time
	act := actNone
	for _, c := range []struct {
		t   time.Time
		act int
	}{{b.ConfirmAt, actConfirm}, {b.DeclineAt, actDecline}, {b.ExpireAt, actExpire}} {
		if !c.t.IsZero() && (act == actNone || c.t.Before(at)) {
			at, act = c.t, c.act
		}
	}
	return at, act
}

// state is the bill's state at now; call advance(now) first.
func (b *bill) state(now time.Time) string {
	switch {
	case b.State != "":
		return b.State
	case !b.CancelAt.IsZero():
		return wechatpay.BillCanceling
	case now.Before(b.Accept):
		return wechatpay.BillAccepted
	}
	if at, act := b.act(); act == actConfirm && !now.Before(at) {
		return wechatpay.BillTransfering
	}
	return wechatpay.BillWaitUserConfirm
}

// due returns when an unsettled bill settles, to what state and with what fail_reason;
// zero while it waits with no deadline.
func (b *bill) due() (time.Time, string, string) {
	if !b.CancelAt.IsZero() {
		return b.CancelAt.Add(b.Process), wechatpay.BillCancelled, ""
	}
	at, act := b.act()
	switch act {
	case actConfirm:
		if r := failReason(b.Req.OpenID); r != "" {
			return at.Add(b.Process), wechatpay.BillFail, r
		}
		return at.Add(b.Process), wechatpay.BillSuccess, ""
	case actDecline:
		return at, wechatpay.BillFail, reasonUserDeclined
	case actExpire:
		return at, wechatpay.BillFail, reasonOverdueClose
	}
	return time.Time{}, "", ""
}

// advanceBills settles bills whose time has come. It is the only place that pays a bill or
// debits the balance for one, and it runs once per bill: State is set here, never cleared.
// Callers hold mu.
func (s *Server) advanceBills(now time.Time) {
	for b := range s.idx.openBills {
		at, st, reason := b.due()
		if at.IsZero() || now.Before(at) {
			continue
		}
		b.State, b.FailReason, b.Settled = st, reason, at
		delete(s.idx.openBills, b)
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

// validateBill checks a bill create (docs/transfer-bills.md).
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
	}
	if r.NotifyURL != "" {
		if err := notifyURLOK(r.NotifyURL); err != nil {
			return paramError("notify_url: %v", err)
		}
	}
	for i, info := range r.TransferSceneReportInfos {
		if !textOK(info.InfoType, 1, 15) || !textOK(info.InfoContent, 1, 32) {
			return paramError("transfer_scene_report_infos[%d]: info_type 1 to 15 and info_content 1 to 32 characters", i)
		}
	}
	return s.validateScene(r)
}

// validateScene checks the create against its scene's rule (Options.BillScenes,
// docs/transfer-bills.md).
func (s *Server) validateScene(r *wechatpay.CreateTransferBillRequest) error {
	rule, ok := s.opts.BillScenes[r.TransferSceneID]
	if !ok {
		return paramError("transfer_scene_id: scene %s is not open to this merchant", r.TransferSceneID)
	}
	exact := len(r.TransferSceneReportInfos) == len(rule.ReportInfos)
	seen := map[string]bool{}
	for _, info := range r.TransferSceneReportInfos {
		if seen[info.InfoType] || !slices.Contains(rule.ReportInfos, info.InfoType) {
			exact = false
		}
		seen[info.InfoType] = true
	}
	if !exact {
		return paramError("transfer_scene_report_infos: 需传入转账场景报备信息 (scene %s: exactly one each of %s)", r.TransferSceneID, strings.Join(rule.ReportInfos, ", "))
	}
	if p := r.UserRecvPerception; p != "" && !slices.Contains(rule.Perceptions, p) {
		return paramError("user_recv_perception: scene %s allows only %q", r.TransferSceneID, rule.Perceptions)
	}
	return nil
}

// createBill is POST /v3/fund-app/mch-transfer/transfer-bills (docs/transfer-bills.md), idempotent
// on out_bill_no while the bill is not final.
func (s *Server) createBill(c *call) (any, error) {
	if err := s.noAuth(ProductBills); err != nil {
		return nil, err
	}
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
			Accept: c.now.Add(s.opts.scaled(s.opts.BillAcceptDelay)), Process: s.opts.scaled(s.opts.ProcessDelay),
		}
		if s.opts.BillConfirmTimeout > 0 {
			b.ExpireAt = c.now.Add(s.opts.scaled(s.opts.BillConfirmTimeout) + s.opts.scaled(s.opts.BillCloseLag))
		}
		if s.opts.BillAutoConfirm > 0 {
			at := c.now.Add(s.opts.scaled(s.opts.BillAutoConfirm))
			switch {
			case strings.HasPrefix(r.OpenID, NoConfirmOpenIDPrefix):
			case strings.HasPrefix(r.OpenID, DeclineOpenIDPrefix):
				b.DeclineAt = at
			default:
				b.ConfirmAt = at
			}
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

// queryBill serves both bill queries (docs/transfer-bills.md).
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

// cancelBill is POST …/out-bill-no/{out_bill_no}/cancel (docs/transfer-bills.md): allowed until the
// user has confirmed; it only acknowledges, the final CANCELLED comes ProcessDelay later. A
// repeated cancel answers CANCELING or CANCELLED again (a cancel whose answer was lost is retried);
// a TRANSFERING, SUCCESS or FAIL bill answers 400 INVALID_REQUEST.
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
		b.CancelAt, b.ConfirmAt, b.DeclineAt, b.ExpireAt = c.now, time.Time{}, time.Time{}, time.Time{}
		s.version++
	case wechatpay.BillCanceling, wechatpay.BillCancelled:
	default:
		return nil, invalidRequest("the bill is %s and can no longer be cancelled", st)
	}
	return wechatpay.CancelTransferBillResponse{OutBillNo: b.Req.OutBillNo, TransferBillNo: b.No, State: b.state(c.now), UpdateTime: rfc3339(c.now)}, nil
}

// ConfirmBill is the simulated user confirming receipt of the bill outBillNo in WeChat,
// whatever its openid: a bill in WAIT_USER_CONFIRM goes TRANSFERING and settles
// ProcessDelay later (FAIL for a fail-… openid). ErrNoBatch: no such bill; ErrNotWaiting:
// it is not in WAIT_USER_CONFIRM.
func (s *Server) ConfirmBill(outBillNo string) error {
	return s.decideBill(outBillNo, true)
}

// DeclineBill is the simulated user declining the bill outBillNo, whatever its openid: a
// bill in WAIT_USER_CONFIRM ends FAIL USER_DECLINED now. Errors as ConfirmBill.
func (s *Server) DeclineBill(outBillNo string) error {
	return s.decideBill(outBillNo, false)
}

func (s *Server) decideBill(outBillNo string, confirm bool) error {
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
	if confirm {
		b.ConfirmAt, b.DeclineAt, b.ExpireAt = now, time.Time{}, time.Time{}
	} else {
		b.ConfirmAt, b.DeclineAt = time.Time{}, now
	}
	s.version++
	s.advanceBills(now)
	return nil
}

// BillSummary describes a transfer bill in the sandbox's own record, for tests and the
// admin API. Settled is zero until the bill is final.
type BillSummary struct {
	OutBillNo      string        `json:"out_bill_no"`
	TransferBillNo string        `json:"transfer_bill_no"`
	State          string        `json:"state"`
	FailReason     string        `json:"fail_reason,omitempty"`
	Amount         wechatpay.Fen `json:"transfer_amount"`
	Created        time.Time     `json:"created"`
	Settled        time.Time     `json:"settled,omitzero"`
}

func (b *bill) summary(now time.Time) BillSummary {
	return BillSummary{
		OutBillNo: b.Req.OutBillNo, TransferBillNo: b.No, State: b.state(now), FailReason: b.FailReason,
		Amount: b.Req.TransferAmount, Created: b.Created, Settled: b.Settled,
	}
}

// Bills summarises every transfer bill in creation order, settling whatever is due first.
func (s *Server) Bills() []BillSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advance(now)
	out := make([]BillSummary, 0, len(s.st.Bills))
	for _, b := range s.st.Bills {
		out = append(out, b.summary(now))
	}
	return out
}

// Bill summarises the bill outBillNo, settling whatever is due first; ErrNoBatch if the
// sandbox has no such bill.
func (s *Server) Bill(outBillNo string) (BillSummary, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.advance(now)
	b := s.idx.bills[outBillNo]
	if b == nil {
		return BillSummary{}, ErrNoBatch
	}
	return b.summary(now), nil
}
