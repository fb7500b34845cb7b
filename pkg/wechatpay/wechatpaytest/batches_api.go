package wechatpaytest

// The batch API handlers: create (direct and partner), batch query and detail query
// (docs/wechatpay.md §4–§6). They read and change the model in batches.go under mu.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

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
// With need_query_detail=true an absent detail_status means ALL.
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
		// Optional (选填, docs/wechatpay.md §5 [003]). What WeChat does without it is not
		// documented; the sandbox answers as for ALL, the one value that hides no row.
		if q.NeedQueryDetail {
			q.DetailStatus = wechatpay.DetailStatusAll
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
		return partnerDetail{PartnerDetailResponse: wechatpay.PartnerDetailResponse{
			SpMchID: r.MchID, OutBatchNo: r.OutBatchNo, BatchID: r.BatchID, OutDetailNo: r.OutDetailNo,
			DetailID: r.DetailID, DetailStatus: r.DetailStatus, TransferAmount: r.TransferAmount,
			TransferRemark: r.TransferRemark, FailReason: r.FailReason, OpenID: r.OpenID, UserName: r.UserName,
			InitiateTime: r.InitiateTime, UpdateTime: r.UpdateTime,
		}, AppID: r.AppID}, nil
	}
}

// partnerDetail is the answer to a partner detail query: appid is optional there
// (docs/wechatpay.md §6 [SDK]) and left out when empty, where wechatpay.PartnerDetailResponse
// would send "appid":"". Its AppID shadows the embedded one.
type partnerDetail struct {
	wechatpay.PartnerDetailResponse
	AppID string `json:"appid,omitempty"`
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
