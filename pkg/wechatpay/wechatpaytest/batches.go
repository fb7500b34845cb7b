package wechatpaytest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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
	event, summary := wechatpay.EventBatchFinished, "商家转账批次完成"
	res := wechatpay.BatchFinishedResource{
		MchID: s.opts.MchID, OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID, BatchStatus: b.status(b.Finished),
		TotalNum: b.Req.TotalNum, TotalAmount: b.Req.TotalAmount, UpdateTime: rfc3339(b.Finished),
	}
	if b.Closed {
		event, summary, res.CloseReason = wechatpay.EventBatchClosed, "商家转账批次关闭", b.CloseReason
	} else {
		res.SuccessAmount, res.SuccessNum, res.FailAmount, res.FailNum = b.SuccessAmount, b.SuccessNum, b.FailAmount, b.FailNum
	}
	s.queueNotification(b.Req.NotifyURL, event, summary, res)
}

// noAuth answers a create of the product the merchant does not hold (docs/transfer-bills.md §1).
func (s *Server) noAuth(product string) error {
	if s.opts.Product == ProductBoth || s.opts.Product == product {
		return nil
	}
	if product == ProductBatches {
		return apiError(http.StatusForbidden, "NO_AUTH", "当前商户号接入升级版本功能，暂不支持使用升级前功能")
	}
	return apiError(http.StatusForbidden, "NO_AUTH", "当前商户号未接入升级版本功能，暂不支持使用升级版本功能")
}

// createBatch is POST /v3/transfer/batches (docs/wechatpay.md §4).
func (s *Server) createBatch(c *call) (any, error) {
	if err := s.noAuth(ProductBatches); err != nil {
		return nil, err
	}
	if res := s.replay(c, false); res != nil {
		return res, nil
	}
	var in wechatpay.CreateBatchRequest
	if err := decodeStrict(c.body, &in); err != nil {
		return nil, err
	}
	r := &batchReq{
		AppID: in.AppID, OutBatchNo: in.OutBatchNo, BatchName: in.BatchName, BatchRemark: in.BatchRemark,
		TotalAmount: in.TotalAmount, TotalNum: in.TotalNum, NotifyURL: in.NotifyURL, TransferSceneID: in.TransferSceneID,
		Details: make([]detailReq, len(in.TransferDetailList)),
	}
	for i, d := range in.TransferDetailList {
		r.Details[i] = detailReq{OutDetailNo: d.OutDetailNo, OpenID: d.OpenID, Amount: d.TransferAmount, Remark: d.TransferRemark, UserName: d.UserName}
	}
	return s.create(c, r)
}

// createPartnerBatch is POST /v3/partner-transfer/batches (docs/wechatpay.md §6).
func (s *Server) createPartnerBatch(c *call) (any, error) {
	if err := s.noAuth(ProductBatches); err != nil {
		return nil, err
	}
	var in wechatpay.PartnerCreateBatchRequest
	if res := s.replay(c, true); res != nil {
		return wechatpay.PartnerCreateBatchResponse{OutBatchNo: res.OutBatchNo, BatchID: res.BatchID, CreateTime: res.CreateTime}, nil
	}
	if err := decodeStrict(c.body, &in); err != nil {
		return nil, err
	}
	r := &batchReq{
		Partner: true, OutBatchNo: in.OutBatchNo, BatchName: in.BatchName, BatchRemark: in.BatchRemark,
		TotalAmount: in.TotalAmount, TotalNum: in.TotalNum, SubMchID: in.SubMchID, SubAppID: in.SubAppID,
		AuthorizationType: in.AuthorizationType, SpAppID: in.SpAppID, TransferPurpose: in.TransferPurpose,
		TransferScene: in.TransferScene, Details: make([]detailReq, len(in.TransferDetailList)),
	}
	for i, d := range in.TransferDetailList {
		r.Details[i] = detailReq{OutDetailNo: d.OutDetailNo, OpenID: d.OpenID, Amount: d.TransferAmount, Remark: d.TransferRemark, UserName: d.UserName, UserIDCard: d.UserIDCard}
	}
	res, err := s.create(c, r)
	if err != nil {
		return nil, err
	}
	return wechatpay.PartnerCreateBatchResponse{OutBatchNo: res.OutBatchNo, BatchID: res.BatchID, CreateTime: res.CreateTime}, nil
}

func bodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// replay answers a create whose exact bytes created a batch before (a retry) without
// decoding it again, or returns nil.
func (s *Server) replay(c *call, partner bool) *wechatpay.CreateBatchResponse {
	hash := bodyHash(c.body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.idx.byHash[hash]; b != nil && b.Req.Partner == partner {
		return s.created(b, c.now)
	}
	return nil
}

// create validates r and answers for the batch with its number: the existing one when r is
// the same batch again (idempotent, docs/wechatpay.md §4), a new one otherwise.
func (s *Server) create(c *call, r *batchReq) (*wechatpay.CreateBatchResponse, error) {
	if err := s.validateBatch(r); err != nil {
		return nil, err
	}
	if !r.Partner && s.opts.AppID != "" && r.AppID != s.opts.AppID {
		return nil, apiError(http.StatusUnauthorized, "APPID_MCHID_NOT_MATCH", "appid is not bound to mchid %s", s.opts.MchID)
	}
	hash := bodyHash(c.body)
	key := batchKey{r.Partner, r.OutBatchNo}
	// OAEP decryption is slow (an RSA private-key operation per name): keep it unlocked.
	if err := s.decrypt(r, c.r.Header.Get("Wechatpay-Serial")); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.idx.byOut[key]; b != nil {
		if !b.Req.equal(r) {
			return nil, invalidRequest("out_batch_no %s already exists with different content", r.OutBatchNo)
		}
		return s.created(b, c.now), nil
	}
	if !s.st.hold(r.TotalAmount) {
		return nil, apiError(http.StatusForbidden, "NOT_ENOUGH", "balance %d fen is not enough for %d fen", max(s.st.available(), 0), r.TotalAmount)
	}
	s.st.Seq++
	prefix := "1030000"
	if r.Partner {
		prefix = "1040000"
	}
	now := c.now
	b := &batch{
		Req: *r, BodyHash: hash, ID: fmt.Sprintf("%s%s%025d", prefix, now.In(cst).Format("20060102"), s.st.Seq),
		Created: now, Accept: now.Add(s.opts.scaled(s.opts.AcceptDelay)), Process: s.opts.scaled(s.opts.ProcessDelay),
		Details: make([]detail, len(r.Details)), Pending: len(r.Details), Updated: now,
	}
	for i, d := range r.Details {
		if s.opts.NoPasswordLimit <= 0 || d.Amount <= s.opts.NoPasswordLimit {
			continue
		}
		dd := &b.Details[i]
		dd.WaitPay = true
		switch {
		case s.opts.AutoConfirm > 0:
			dd.ConfirmAt = b.Accept.Add(s.opts.scaled(s.opts.AutoConfirm))
		case s.opts.WaitPayTimeout > 0:
			dd.ExpireAt = b.Accept.Add(s.opts.scaled(s.opts.WaitPayTimeout))
		}
	}
	s.st.Batches = append(s.st.Batches, b)
	s.idx.addBatch(b)
	s.version++
	return s.created(b, now), nil
}

// created is the answer to a create of b. Callers hold mu.
func (s *Server) created(b *batch, now time.Time) *wechatpay.CreateBatchResponse {
	s.advance(now)
	return &wechatpay.CreateBatchResponse{OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID, CreateTime: rfc3339(b.Created), BatchStatus: b.status(now)}
}

// lookupBatch finds the batch a query names by batch_id or out_batch_no (docs/wechatpay.md §5).
// Callers hold mu and have advanced the state.
func (s *Server) lookupBatch(c *call, partner bool) (*batch, error) {
	var b *batch
	if id := c.r.PathValue("batch_id"); id != "" {
		if b = s.idx.byID[id]; b != nil && b.Req.Partner != partner {
			b = nil
		}
	} else {
		no, err := pathOutNo(c, "out_batch_no")
		if err != nil {
			return nil, err
		}
		b = s.idx.byOut[batchKey{partner, no}]
	}
	if b == nil {
		return nil, notFound("no such batch")
	}
	return b, s.visible(c.now, b.Created)
}

// pathOutNo returns the path parameter name, which must be an out_…_no (docs/wechatpay.md §4).
func pathOutNo(c *call, name string) (string, error) {
	no := c.r.PathValue(name)
	if !isOutNo(no) {
		return "", paramError("%s: want 1 to 32 characters of [0-9A-Za-z]", name)
	}
	return no, nil
}

// visible tells whether a query at now may see something created at created: not within
// NotFoundLag (docs/wechatpay.md §5: NOT_FOUND is not a failure) and not beyond QueryWindow.
func (s *Server) visible(now, created time.Time) error {
	switch {
	case now.Sub(created) > QueryWindow:
		return invalidRequest("older than 30 days; use the merchant platform")
	case now.Sub(created) < s.opts.scaled(s.opts.NotFoundLag):
		return notFound("not found")
	}
	return nil
}

// parseBatchQuery reads need_query_detail, offset, limit and detail_status (docs/wechatpay.md §5).
func parseBatchQuery(v url.Values) (wechatpay.BatchQuery, error) {
	q := wechatpay.BatchQuery{Limit: wechatpay.MinQueryLimit}
	switch v.Get("need_query_detail") {
	case "true":
		q.NeedQueryDetail = true
	case "false":
	default:
		return q, paramError("need_query_detail: required, true or false")
	}
	if s := v.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, paramError("offset: want an integer ≥ 0")
		}
		q.Offset = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < wechatpay.MinQueryLimit || n > wechatpay.MaxQueryLimit {
			return q, paramError("limit: want %d to %d", wechatpay.MinQueryLimit, wechatpay.MaxQueryLimit)
		}
		q.Limit = n
	}
	q.DetailStatus = v.Get("detail_status")
	switch q.DetailStatus {
	case wechatpay.DetailStatusAll, wechatpay.DetailStatusSuccess, wechatpay.DetailStatusFail, wechatpay.DetailStatusWaitPay:
	case "":
		if q.NeedQueryDetail {
			return q, paramError("detail_status: required with need_query_detail=true")
		}
	default:
		return q, paramError("detail_status: want ALL, SUCCESS, FAIL or WAIT_PAY")
	}
	return q, nil
}

// page returns the detail rows of a query: only for a FINISHED batch, in creation order.
func (b *batch) page(q wechatpay.BatchQuery, now time.Time) []wechatpay.DetailBrief {
	if !q.NeedQueryDetail || b.status(now) != wechatpay.BatchFinished {
		return nil
	}
	var rows []wechatpay.DetailBrief
	skip := q.Offset
	for i := range b.Details {
		st := b.Details[i].Status
		if q.DetailStatus != wechatpay.DetailStatusAll && st != q.DetailStatus {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		if rows == nil {
			rows = make([]wechatpay.DetailBrief, 0, q.Limit)
		}
		rows = append(rows, wechatpay.DetailBrief{DetailID: b.detailID(i), OutDetailNo: b.Req.Details[i].OutDetailNo, DetailStatus: st})
		if len(rows) == q.Limit {
			break
		}
	}
	return rows
}

func (s *Server) transferBatch(b *batch, now time.Time) wechatpay.TransferBatch {
	return wechatpay.TransferBatch{
		MchID: s.opts.MchID, OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID, AppID: b.Req.AppID,
		BatchStatus: b.status(now), BatchType: "API", BatchName: b.Req.BatchName, BatchRemark: b.Req.BatchRemark,
		CloseReason: b.CloseReason, TotalAmount: b.Req.TotalAmount, TotalNum: b.Req.TotalNum,
		CreateTime: rfc3339(b.Created), UpdateTime: rfc3339(b.updated(now)),
		SuccessAmount: b.SuccessAmount, SuccessNum: b.SuccessNum, FailAmount: b.FailAmount, FailNum: b.FailNum,
		TransferSceneID: b.Req.TransferSceneID,
	}
}

// queryBatch serves the batch queries of docs/wechatpay.md §5 (direct) and §7 (partner, flat
// answer).
func (s *Server) queryBatch(partner bool) apiFunc {
	return func(c *call) (any, error) {
		q, err := parseBatchQuery(c.r.URL.Query())
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.advance(c.now)
		b, err := s.lookupBatch(c, partner)
		if err != nil {
			return nil, err
		}
		tb, rows := s.transferBatch(b, c.now), b.page(q, c.now)
		if !partner {
			return wechatpay.BatchQueryResponse{TransferBatch: tb, TransferDetailList: rows}, nil
		}
		r := &b.Req
		return wechatpay.PartnerBatchQueryResponse{
			SpMchID: tb.MchID, SubMchID: r.SubMchID, OutBatchNo: tb.OutBatchNo, BatchID: tb.BatchID,
			SubAppID: r.SubAppID, BatchStatus: tb.BatchStatus, BatchType: tb.BatchType,
			AuthorizationType: r.AuthorizationType, BatchName: tb.BatchName, BatchRemark: tb.BatchRemark,
			CloseReason: tb.CloseReason, TotalAmount: tb.TotalAmount, TotalNum: tb.TotalNum,
			CreateTime: tb.CreateTime, UpdateTime: tb.UpdateTime, SuccessAmount: tb.SuccessAmount,
			SuccessNum: tb.SuccessNum, FailAmount: tb.FailAmount, FailNum: tb.FailNum,
			TransferDetailList: rows, SpAppID: r.SpAppID, TransferPurpose: r.TransferPurpose, TransferScene: r.TransferScene,
		}, nil
	}
}

// queryDetail serves the detail queries of docs/wechatpay.md §5, §6. A detail of a batch that is
// still ACCEPTED is NOT_FOUND (docs/wechatpay.md §5: "not started").
func (s *Server) queryDetail(partner bool) apiFunc {
	return func(c *call) (any, error) {
		s.mu.Lock()
		b, i, err := s.lookupDetail(c, partner)
		var r wechatpay.DetailResponse
		if err == nil {
			d, in := &b.Details[i], &b.Req.Details[i]
			update := b.updated(c.now)
			if !d.Settled.IsZero() {
				update = d.Settled
			}
			r = wechatpay.DetailResponse{
				MchID: s.opts.MchID, OutBatchNo: b.Req.OutBatchNo, BatchID: b.ID, AppID: b.Req.AppID,
				OutDetailNo: in.OutDetailNo, DetailID: b.detailID(i), DetailStatus: b.detailStatus(d, c.now),
				TransferAmount: in.Amount, TransferRemark: in.Remark, FailReason: d.FailReason, OpenID: in.OpenID,
				UserName: in.UserName, InitiateTime: rfc3339(b.Created), UpdateTime: rfc3339(update),
			}
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if r.UserName, err = s.encryptName(r.UserName); err != nil {
			return nil, err
		}
		if !partner {
			return r, nil
		}
		return wechatpay.PartnerDetailResponse{
			SpMchID: r.MchID, OutBatchNo: r.OutBatchNo, BatchID: r.BatchID, AppID: r.AppID, OutDetailNo: r.OutDetailNo,
			DetailID: r.DetailID, DetailStatus: r.DetailStatus, TransferAmount: r.TransferAmount,
			TransferRemark: r.TransferRemark, FailReason: r.FailReason, OpenID: r.OpenID, UserName: r.UserName,
			InitiateTime: r.InitiateTime, UpdateTime: r.UpdateTime,
		}, nil
	}
}

// encryptName encrypts a name for an answer with the merchant's key (docs/wechatpay.md §3); ""
// stays "".
func (s *Server) encryptName(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	return wechatpay.EncryptOAEP(nil, s.opts.MerchantKey, name)
}

// lookupDetail finds the batch and detail index a detail query names. Callers hold mu.
func (s *Server) lookupDetail(c *call, partner bool) (*batch, int, error) {
	s.advance(c.now)
	b, err := s.lookupBatch(c, partner)
	if err != nil {
		return nil, 0, err
	}
	i := -1
	if id := c.r.PathValue("detail_id"); id != "" {
		i = b.detailIndex(id)
	} else {
		no, err := pathOutNo(c, "out_detail_no")
		if err != nil {
			return nil, 0, err
		}
		if n, ok := b.byOut[no]; ok {
			i = n
		}
	}
	if i < 0 {
		return nil, 0, notFound("no such detail")
	}
	if b.detailStatus(&b.Details[i], c.now) == wechatpay.DetailInit {
		return nil, 0, notFound("the detail is not accepted yet")
	}
	return b, i, nil
}

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
