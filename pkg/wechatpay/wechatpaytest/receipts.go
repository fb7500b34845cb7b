package wechatpaytest

// Electronic receipts (电子回单, docs/receipts.md): for the sandbox's own successful payments, an
// application is ACCEPTED (GENERATING on transfer bills) and FINISHED Options.ReceiptDelay later
// on the sandbox clock; a FINISHED query carries the SHA256 of a deterministic PDF-looking file
// and a download URL on the sandbox's own host whose answer is not signed. Applications are kept
// in memory only: SaveState does not write them.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// Endpoints of the receipt APIs, as ServeMux patterns (docs/receipts.md §1–§4). The download
// paths are those WeChat Pay's URLs are reported to use [U]; clients must take download_url as
// given.
const (
	EndpointApplyBatchReceipt  = "POST /v3/transfer/bill-receipt"
	EndpointBatchReceipt       = "GET /v3/transfer/bill-receipt/{out_batch_no}"
	EndpointApplyDetailReceipt = "POST /v3/transfer-detail/electronic-receipts"
	EndpointDetailReceipt      = "GET /v3/transfer-detail/electronic-receipts"
	EndpointApplyBillReceipt   = "POST /v3/fund-app/mch-transfer/elecsign/out-bill-no"
	EndpointBillReceipt        = "GET /v3/fund-app/mch-transfer/elecsign/out-bill-no/{out_bill_no}"
	EndpointReceiptDownload    = "GET /v3/transferdownload/signfile"
	EndpointElecsignDownload   = "GET /v3/transferdownload/elecvoucherfile"
)

// Receipt rules of the sandbox (docs/receipts.md §5). The age limits differ between WeChat Pay's
// pages; the sandbox keeps the shortest each page states.
const (
	// DefaultReceiptDelay is how long a receipt is generated before it is FINISHED; Speed scales
	// it. WeChat Pay states no time [U]; it advises querying every two minutes or more.
	DefaultReceiptDelay = 2 * time.Minute
	// ReceiptURLValidity is how long a download_url works (docs/receipts.md §4: ten minutes).
	// Speed does not scale it.
	ReceiptURLValidity = 10 * time.Minute
	// Age limits, from the payment: 30 days for a batch receipt, two years for a detail's, 180
	// days for a bill's (docs/receipts.md §5).
	receiptAgeBatch  = 30 * 24 * time.Hour
	receiptAgeDetail = 2 * 365 * 24 * time.Hour
	receiptAgeBill   = 180 * 24 * time.Hour
)

// FaultReceiptWrongHash names the receipt fault of Options.ReceiptWrongHash in Stats.Faults.
const FaultReceiptWrongHash = "receipt_wrong_hash"

// WithReceiptDelay sets Options.ReceiptDelay.
func WithReceiptDelay(d time.Duration) Option { return func(o *Options) { o.ReceiptDelay = d } }

// WithReceiptWithoutName sets Options.ReceiptWithoutName.
func WithReceiptWithoutName(on bool) Option { return func(o *Options) { o.ReceiptWithoutName = on } }

// WithReceiptWrongHash sets Options.ReceiptWrongHash.
func WithReceiptWrongHash(on bool) Option { return func(o *Options) { o.ReceiptWrongHash = on } }

// receipts holds the applications and download files. Its own mutex guards it; it takes
// Server.mu only to read payments, never while holding mu.
type receipts struct {
	s     *Server
	mu    sync.Mutex
	seq   int
	apps  map[string]*receiptApp // by receiptKey
	files map[string]receiptFile // download token → file
}

func newReceipts(s *Server) *receipts {
	return &receipts{s: s, apps: map[string]*receiptApp{}, files: map[string]receiptFile{}}
}

// receiptApp is one application: its number, file and when it is generated.
type receiptApp struct {
	no      string
	pdf     []byte
	created time.Time
	ready   time.Time
}

type receiptFile struct {
	body    []byte
	expires time.Time
}

// receiptPaid is what a receipt states about one payment.
type receiptPaid struct {
	outDetailNo, id string
	amount          wechatpay.Fen
	paidAt          time.Time
}

// receiptPDF returns the deterministic file of a receipt: PDF-looking bytes naming the merchant,
// the transfer and each payment (never a name or an openid).
func receiptPDF(mchID, title string, paid []receiptPaid) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%%PDF-1.4\n%% WeChat Pay sandbox electronic receipt (not a real PDF)\n%% mchid %s\n%% %s\n", mchID, title)
	for _, p := range paid {
		fmt.Fprintf(&b, "%% paid %s (%s) %d fen at %s\n", p.outDetailNo, p.id, p.amount, rfc3339(p.paidAt))
	}
	b.WriteString("%%EOF\n")
	return []byte(b.String())
}

// apply records an application for key, or answers 400 ALREADY_EXISTS when there is one [U].
func (r *receipts) apply(key string, now time.Time, pdf []byte) (*receiptApp, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.apps[key]; ok {
		return nil, apiError(http.StatusBadRequest, "ALREADY_EXISTS", "a receipt was already applied for: query it")
	}
	r.seq++
	a := &receiptApp{
		no:  fmt.Sprintf("1050%s%012d", now.In(cst).Format("20060102"), r.seq),
		pdf: pdf, created: now, ready: now.Add(r.s.opts.scaled(r.s.opts.ReceiptDelay)),
	}
	r.apps[key] = a
	return a, nil
}

// query returns the application of key and, once generated, its file with a fresh download URL
// under download (a path of this host).
func (r *receipts) query(c *call, key, download string) (*receiptApp, wechatpay.ReceiptFile, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.apps[key]
	if a == nil {
		return nil, wechatpay.ReceiptFile{}, notFound("no receipt was applied for")
	}
	if c.now.Before(a.ready) {
		return a, wechatpay.ReceiptFile{}, nil
	}
	for t, f := range r.files {
		if !c.now.Before(f.expires) {
			delete(r.files, t)
		}
	}
	token := randomString(32)
	r.files[token] = receiptFile{body: a.pdf, expires: c.now.Add(ReceiptURLValidity)}
	sum := sha256.Sum256(a.pdf)
	if r.s.opts.ReceiptWrongHash {
		sum = sha256.Sum256(append(append([]byte(nil), a.pdf...), '\n'))
		r.s.mu.Lock()
		r.s.faults.counts[FaultReceiptWrongHash]++
		r.s.mu.Unlock()
	}
	base := r.s.url
	if base == "" { // served through Handler, not Start
		base = "http://" + c.r.Host
	}
	u := base + strings.TrimPrefix(download, "GET ") + "?token=" + token
	if download == EndpointElecsignDownload {
		u += "&source=elecsign"
	}
	return a, wechatpay.ReceiptFile{HashType: wechatpay.HashSHA256, HashValue: strings.ToUpper(hex.EncodeToString(sum[:])), DownloadURL: u}, nil
}

// updated is an application's last change at now.
func (a *receiptApp) updated(now time.Time) time.Time {
	if now.Before(a.ready) {
		return a.created
	}
	return a.ready
}

// signatureStatus is a batch-API receipt's signature_status at now.
func (a *receiptApp) signatureStatus(now time.Time) string {
	if now.Before(a.ready) {
		return wechatpay.SignatureAccepted
	}
	return wechatpay.SignatureFinished
}

// tooOld refuses a receipt for a payment older than limit.
func tooOld(what string, paid, now time.Time, limit time.Duration) error {
	if now.Sub(paid) > limit {
		return invalidRequest("%s was paid %s, more than %v ago: too old for a receipt", what, rfc3339(paid), limit)
	}
	return nil
}

// batchPaid returns the successful details of direct batch no, or why there is no receipt:
// 404 NOT_FOUND for an unknown batch [U], 400 INVALID_REQUEST for a batch not FINISHED, with no
// success, sent without names [U] or too old [U] (docs/receipts.md §5).
func (s *Server) batchPaid(c *call, no string) ([]receiptPaid, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	b := s.idx.byOut[batchKey{no: no}]
	if b == nil {
		return nil, notFound("no such batch")
	}
	if st := b.status(c.now); st != wechatpay.BatchFinished || b.SuccessNum == 0 {
		return nil, invalidRequest("batch %s is %s with %d successful details: a receipt needs a FINISHED batch with at least one", no, st, b.SuccessNum)
	}
	var paid []receiptPaid
	for i, d := range b.Details {
		if in := b.Req.Details[i]; d.Status == wechatpay.DetailSuccess && (in.UserName != "" || s.opts.ReceiptWithoutName) {
			paid = append(paid, receiptPaid{outDetailNo: in.OutDetailNo, id: b.detailID(i), amount: in.Amount, paidAt: d.Settled})
		}
	}
	if len(paid) == 0 {
		return nil, invalidRequest("batch %s was sent without user_name: no receipt", no)
	}
	return paid, tooOld("batch "+no, b.Finished, c.now, receiptAgeBatch)
}

// detailPaid returns the payment of one direct detail, or why there is no receipt: 404 NOT_FOUND
// for an unknown batch or detail [U], 400 PARAM_ERROR for a detail not SUCCESS (docs/receipts.md
// §2), sent without a name [U] or too old [U].
func (s *Server) detailPaid(c *call, batchNo, detailNo string) (receiptPaid, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	b := s.idx.byOut[batchKey{no: batchNo}]
	if b == nil {
		return receiptPaid{}, notFound("no such batch")
	}
	i, ok := b.byOut[detailNo]
	if !ok {
		return receiptPaid{}, notFound("no such detail")
	}
	d, in := &b.Details[i], b.Req.Details[i]
	switch st := b.detailStatus(d, c.now); {
	case st != wechatpay.DetailSuccess:
		return receiptPaid{}, paramError("detail %s is %s: only a successful detail has a receipt", detailNo, st)
	case in.UserName == "" && !s.opts.ReceiptWithoutName:
		return receiptPaid{}, paramError("detail %s was sent without user_name: no receipt", detailNo)
	}
	return receiptPaid{outDetailNo: detailNo, id: b.detailID(i), amount: in.Amount, paidAt: d.Settled},
		tooOld("detail "+detailNo, d.Settled, c.now, receiptAgeDetail)
}

// billPaid returns the payment of a transfer bill, or why there is no receipt: 404 NOT_FOUND for
// an unknown bill [U], 400 INVALID_REQUEST for a bill not SUCCESS, sent without a name or too old
// (docs/receipts.md §3; the code is [U]).
func (s *Server) billPaid(c *call, no string) (receiptPaid, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	b := s.idx.bills[no]
	if b == nil {
		return receiptPaid{}, notFound("no such bill")
	}
	switch st := b.state(c.now); {
	case st != wechatpay.BillSuccess:
		return receiptPaid{}, invalidRequest("bill %s is %s: only a SUCCESS bill has a receipt", no, st)
	case b.Req.UserName == "" && !s.opts.ReceiptWithoutName:
		return receiptPaid{}, invalidRequest("bill %s was sent without user_name: no receipt", no)
	}
	return receiptPaid{outDetailNo: no, id: b.No, amount: b.Req.TransferAmount, paidAt: b.Settled},
		tooOld("bill "+no, b.Settled, c.now, receiptAgeBill)
}

// applyBatch serves POST /v3/transfer/bill-receipt (docs/receipts.md §1).
func (r *receipts) applyBatch(c *call) (any, error) {
	var in struct {
		OutBatchNo string `json:"out_batch_no"`
	}
	if err := decodeStrict(c.body, &in); err != nil {
		return nil, err
	}
	if !isOutNo(in.OutBatchNo) {
		return nil, paramError("out_batch_no %q", in.OutBatchNo)
	}
	paid, err := r.s.batchPaid(c, in.OutBatchNo)
	if err != nil {
		return nil, err
	}
	a, err := r.apply("batch/"+in.OutBatchNo, c.now, receiptPDF(r.s.opts.MchID, "batch "+in.OutBatchNo, paid))
	if err != nil {
		return nil, err
	}
	return wechatpay.BatchReceipt{OutBatchNo: in.OutBatchNo, SignatureNo: a.no, SignatureStatus: a.signatureStatus(c.now),
		CreateTime: rfc3339(a.created), UpdateTime: rfc3339(a.updated(c.now))}, nil
}

// queryBatch serves GET /v3/transfer/bill-receipt/{out_batch_no} (docs/receipts.md §1).
func (r *receipts) queryBatch(c *call) (any, error) {
	no, err := pathOutNo(c, "out_batch_no")
	if err != nil {
		return nil, err
	}
	a, f, err := r.query(c, "batch/"+no, EndpointReceiptDownload)
	if err != nil {
		return nil, err
	}
	return wechatpay.BatchReceipt{OutBatchNo: no, SignatureNo: a.no, SignatureStatus: a.signatureStatus(c.now), ReceiptFile: f,
		CreateTime: rfc3339(a.created), UpdateTime: rfc3339(a.updated(c.now))}, nil
}

// detailRequest checks the fields of a detail receipt request (docs/receipts.md §2).
func detailRequest(in wechatpay.DetailReceiptRequest) error {
	switch {
	case in.AcceptType != wechatpay.AcceptTypeBatchTransfer:
		return paramError("accept_type %q: the sandbox serves only %s", in.AcceptType, wechatpay.AcceptTypeBatchTransfer)
	case !isOutNo(in.OutBatchNo):
		return paramError("out_batch_no %q: required for BATCH_TRANSFER", in.OutBatchNo)
	case !isOutNo(in.OutDetailNo):
		return paramError("out_detail_no %q", in.OutDetailNo)
	}
	return nil
}

// applyDetail serves POST /v3/transfer-detail/electronic-receipts (docs/receipts.md §2).
func (r *receipts) applyDetail(c *call) (any, error) {
	var in wechatpay.DetailReceiptRequest
	if err := decodeStrict(c.body, &in); err != nil {
		return nil, err
	}
	if err := detailRequest(in); err != nil {
		return nil, err
	}
	p, err := r.s.detailPaid(c, in.OutBatchNo, in.OutDetailNo)
	if err != nil {
		return nil, err
	}
	title := fmt.Sprintf("detail %s of batch %s", in.OutDetailNo, in.OutBatchNo)
	a, err := r.apply("detail/"+in.OutBatchNo+"/"+in.OutDetailNo, c.now, receiptPDF(r.s.opts.MchID, title, []receiptPaid{p}))
	if err != nil {
		return nil, err
	}
	return wechatpay.DetailReceipt{AcceptType: in.AcceptType, OutBatchNo: in.OutBatchNo, OutDetailNo: in.OutDetailNo,
		SignatureNo: a.no, SignatureStatus: a.signatureStatus(c.now), CreateTime: rfc3339(a.created), UpdateTime: rfc3339(a.updated(c.now))}, nil
}

// queryDetail serves GET /v3/transfer-detail/electronic-receipts?accept_type=…&out_batch_no=…
// &out_detail_no=… (docs/receipts.md §2).
func (r *receipts) queryDetail(c *call) (any, error) {
	q := c.r.URL.Query()
	in := wechatpay.DetailReceiptRequest{AcceptType: q.Get("accept_type"), OutBatchNo: q.Get("out_batch_no"), OutDetailNo: q.Get("out_detail_no")}
	if err := detailRequest(in); err != nil {
		return nil, err
	}
	a, f, err := r.query(c, "detail/"+in.OutBatchNo+"/"+in.OutDetailNo, EndpointReceiptDownload)
	if err != nil {
		return nil, err
	}
	return wechatpay.DetailReceipt{AcceptType: in.AcceptType, OutBatchNo: in.OutBatchNo, OutDetailNo: in.OutDetailNo,
		SignatureNo: a.no, SignatureStatus: a.signatureStatus(c.now), ReceiptFile: f,
		CreateTime: rfc3339(a.created), UpdateTime: rfc3339(a.updated(c.now))}, nil
}

// elecsignState is a bill receipt's state at now.
func (a *receiptApp) elecsignState(now time.Time) string {
	if now.Before(a.ready) {
		return wechatpay.ElecsignGenerating
	}
	return wechatpay.ElecsignFinished
}

// applyBill serves POST /v3/fund-app/mch-transfer/elecsign/out-bill-no (docs/receipts.md §3).
func (r *receipts) applyBill(c *call) (any, error) {
	var in struct {
		OutBillNo string `json:"out_bill_no"`
	}
	if err := decodeStrict(c.body, &in); err != nil {
		return nil, err
	}
	if !isOutNo(in.OutBillNo) {
		return nil, paramError("out_bill_no %q", in.OutBillNo)
	}
	p, err := r.s.billPaid(c, in.OutBillNo)
	if err != nil {
		return nil, err
	}
	a, err := r.apply("bill/"+in.OutBillNo, c.now, receiptPDF(r.s.opts.MchID, "bill "+in.OutBillNo, []receiptPaid{p}))
	if err != nil {
		return nil, err
	}
	return wechatpay.BillReceipt{OutBillNo: in.OutBillNo, State: a.elecsignState(c.now),
		CreateTime: rfc3339(a.created), UpdateTime: rfc3339(a.updated(c.now))}, nil
}

// queryBill serves GET /v3/fund-app/mch-transfer/elecsign/out-bill-no/{out_bill_no}
// (docs/receipts.md §3).
func (r *receipts) queryBill(c *call) (any, error) {
	no, err := pathOutNo(c, "out_bill_no")
	if err != nil {
		return nil, err
	}
	a, f, err := r.query(c, "bill/"+no, EndpointElecsignDownload)
	if err != nil {
		return nil, err
	}
	return wechatpay.BillReceipt{OutBillNo: no, State: a.elecsignState(c.now), ReceiptFile: f,
		CreateTime: rfc3339(a.created), UpdateTime: rfc3339(a.updated(c.now))}, nil
}

// download serves a receipt's download_url (docs/receipts.md §4): the request must be signed; the
// answer is the file with no signature headers. An unknown or expired token answers 400
// INVALID_REQUEST.
func (r *receipts) download(endpoint string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		s := r.s
		c, ok := s.accept(w, req, endpoint)
		if !ok {
			return
		}
		now := c.now
		r.mu.Lock()
		f, ok := r.files[req.URL.Query().Get("token")]
		r.mu.Unlock()
		if !ok || !now.Before(f.expires) {
			s.write(w, c, invalidRequest("download_url expired or unknown: query the receipt again"), Fault{})
			return
		}
		w.Header().Set("Request-ID", s.requestID())
		w.Header().Set("Content-Type", "application/pdf")
		w.Write(f.body)
	}
}
