package wechatpaytest

import (
	"errors"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// instr is one abnormal-fund transfer instruction (docs/abnormal-funds.md). Its receipt is
// RECEIPT_STATE_PENDING at creation and until Accept (AcceptDelay later), then
// RECEIPT_STATE_PROGRESS until Done (ProcessDelay after Accept), then RECEIPT_STATE_COMPLETED;
// a notify_url then gets ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS.
type instr struct {
	ReceiptID string                                     `json:"receipt_id"`
	Amount    wechatpay.Fen                              `json:"amount"`
	Req       wechatpay.CreateTransferInstructionRequest `json:"request"`
	Created   time.Time                                  `json:"created"`
	Accept    time.Time                                  `json:"accept,omitzero"` // zero in states saved before it: PROGRESS at once
	Done      time.Time                                  `json:"done"`
	Notified  bool                                       `json:"notified,omitempty"`
}

// state is the receipt_state of in at now. At its creation instant an instruction is PENDING
// even with no delays, as the create answer of seed 004's example is (docs/abnormal-funds.md).
func (in *instr) state(now time.Time) string {
	switch {
	case !now.After(in.Created) || now.Before(in.Accept):
		return wechatpay.ReceiptStatePending
	case now.Before(in.Done):
		return wechatpay.ReceiptStateProgress
	}
	return wechatpay.ReceiptStateCompleted
}

func (in *instr) key() string { return in.ReceiptID + "/" + in.Req.OutInstructionNo }

// AddReceipt registers an abnormal in-transit fund receipt of amount fen that instructions
// may then pay back (docs/abnormal-funds.md). Instructions for unknown receipts get 404 NOT_FOUND.
func (s *Server) AddReceipt(receiptID string, amount wechatpay.Fen) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Receipts == nil {
		s.st.Receipts = map[string]wechatpay.Fen{}
	}
	s.st.Receipts[receiptID] = amount
	s.version++
}

func (s *Server) instrResponse(in *instr, now time.Time) wechatpay.TransferInstructionResponse {
	r := wechatpay.TransferInstructionResponse{
		ProductName: "在途异常资金付款", ReceiptID: in.ReceiptID,
		TransferAmount: wechatpay.ReceiptAmount{Total: in.Amount, Currency: "CNY"},
		ReceiptState:   in.state(now), CreateTime: rfc3339(in.Created), LastUpdateTime: rfc3339(in.Created),
		Instruction: &wechatpay.TransferInstruction{
			OutInstructionNo: in.Req.OutInstructionNo, TransferMode: in.Req.TransferMode,
			Commander: &wechatpay.Commander{Operator: "MERCHANT", MchID: s.opts.MchID},
			AppID:     in.Req.AppID, NotifyURL: in.Req.NotifyURL,
		},
	}
	switch r.ReceiptState {
	case wechatpay.ReceiptStateProgress:
		if !in.Accept.IsZero() {
			r.LastUpdateTime = rfc3339(in.Accept)
		}
	case wechatpay.ReceiptStateCompleted:
		r.LastUpdateTime, r.Instruction.SuccessTime = rfc3339(in.Done), rfc3339(in.Done)
	}
	return r
}

// createInstr is POST …/receipts/{receipt_id}/transfer-instructions (docs/abnormal-funds.md).
func (s *Server) createInstr(c *call) (any, error) {
	var r wechatpay.CreateTransferInstructionRequest
	if err := decodeStrict(c.body, &r); err != nil {
		return nil, err
	}
	switch {
	case !textOK(r.OutInstructionNo, 1, 64):
		return nil, paramError("out_instruction_no: want 1 to 64 characters")
	case len(r.AppID) == 0 || len(r.AppID) > 5:
		return nil, paramError("appid: want 1 to 5 app ids")
	case r.TransferMode != wechatpay.TransferModeOriginalReceiveUser:
		return nil, paramError("transfer_mode: want %s", wechatpay.TransferModeOriginalReceiveUser)
	case len(r.NotifyURL) > 255:
		return nil, paramError("notify_url: longer than 255 characters")
	}
	if err := s.holdInstr(c, HoldBeforeCommit); err != nil {
		return nil, err
	}
	res, err := s.commitInstr(c, &r)
	if err == nil {
		err = s.holdInstr(c, HoldAfterCommit)
	}
	return res, err
}

// commitInstr creates the instruction r for the call's receipt, or answers the one the
// receipt has. One receipt takes one instruction: the same out_instruction_no with the same
// request answers it again (the sandbox's idempotency; whether WeChat answers 200 or
// ALREADY_EXISTS to such a resend is [U]), and any other instruction for the receipt gets 400
// ALREADY_EXISTS, "当前在途异常资金付款单已在处理中或处理成功" (docs/abnormal-funds.md).
func (s *Server) commitInstr(c *call, r *wechatpay.CreateTransferInstructionRequest) (any, error) {
	receipt := c.r.PathValue("receipt_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	amount, ok := s.st.Receipts[receipt]
	if !ok {
		return nil, notFound("no such receipt")
	}
	if in := s.receiptInstr(receipt); in != nil {
		if in.Req.OutInstructionNo == r.OutInstructionNo && instrEqual(&in.Req, r) {
			return s.instrResponse(in, c.now), nil
		}
		return nil, apiError(http.StatusBadRequest, "ALREADY_EXISTS", "the receipt already has an instruction")
	}
	accept := c.now.Add(s.opts.scaled(s.opts.AcceptDelay))
	in := &instr{ReceiptID: receipt, Amount: amount, Req: *r, Created: c.now, Accept: accept, Done: accept.Add(s.opts.scaled(s.opts.ProcessDelay))}
	s.st.Instrs = append(s.st.Instrs, in)
	s.idx.instrs[in.key()] = in
	s.version++
	return s.instrResponse(in, c.now), nil
}

// receiptInstr is the instruction of receipt, or nil. Callers hold mu.
func (s *Server) receiptInstr(receipt string) *instr {
	for _, in := range s.st.Instrs {
		if in.ReceiptID == receipt {
			return in
		}
	}
	return nil
}

func instrEqual(a, b *wechatpay.CreateTransferInstructionRequest) bool {
	return a.TransferMode == b.TransferMode && a.NotifyURL == b.NotifyURL && slices.Equal(a.AppID, b.AppID)
}

// queryInstr is GET …/transfer-instructions/{out_instruction_no} (docs/abnormal-funds.md).
func (s *Server) queryInstr(c *call) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	in := s.idx.instrs[c.r.PathValue("receipt_id")+"/"+c.r.PathValue("out_instruction_no")]
	if in == nil {
		return nil, notFound("no such instruction")
	}
	return s.instrResponse(in, c.now), nil
}

// advanceInstrs sends the callback of instructions that completed. Callers hold mu.
func (s *Server) advanceInstrs(now time.Time) {
	for _, in := range s.st.Instrs {
		if in.Notified || in.state(now) != wechatpay.ReceiptStateCompleted {
			continue
		}
		in.Notified = true
		s.version++
		if in.Req.NotifyURL != "" {
			s.queueNotification(in.Req.NotifyURL, wechatpay.EventAbnormalFundSuccess, "在途异常资金付款成功", s.instrResponse(in, now))
		}
	}
}

// EndpointReceipt is the query of an abnormal-fund receipt, "查询在途异常资金付款结果"
// (https://pay.weixin.qq.com/doc/v3/partner/4015408031): the receipt's amount and state and,
// once instructed, its instruction.
const EndpointReceipt = "GET /v3/abnormal-fund-processing/receipts/{receipt_id}"

// queryReceipt is GET …/receipts/{receipt_id}. A receipt not yet instructed is
// RECEIPT_STATE_PENDING with no instruction; an unknown one is 404 NOT_FOUND.
func (s *Server) queryReceipt(c *call) (any, error) {
	receipt := c.r.PathValue("receipt_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	amount, ok := s.st.Receipts[receipt]
	if !ok {
		return nil, notFound("no such receipt")
	}
	if in := s.receiptInstr(receipt); in != nil {
		return s.instrResponse(in, c.now), nil
	}
	return wechatpay.TransferInstructionResponse{ProductName: "在途异常资金付款", ReceiptID: receipt,
		TransferAmount: wechatpay.ReceiptAmount{Total: amount, Currency: "CNY"}, ReceiptState: wechatpay.ReceiptStatePending}, nil
}

// InstructionSummary is one abnormal-fund instruction as the sandbox holds it: its own
// record, for exactly-once checks (one instruction per receipt, under which number).
type InstructionSummary struct {
	ReceiptID        string        `json:"receipt_id"`
	OutInstructionNo string        `json:"out_instruction_no"`
	Amount           wechatpay.Fen `json:"amount"`
	State            string        `json:"receipt_state"`
	AppID            []string      `json:"appid"`
}

// Instructions returns every abnormal-fund instruction the sandbox committed, by receipt,
// with its state at the sandbox's now.
func (s *Server) Instructions() []InstructionSummary {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]InstructionSummary, 0, len(s.st.Instrs))
	for _, in := range s.st.Instrs {
		out = append(out, InstructionSummary{ReceiptID: in.ReceiptID, OutInstructionNo: in.Req.OutInstructionNo,
			Amount: in.Amount, State: in.state(now), AppID: slices.Clone(in.Req.AppID)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ReceiptID < out[j].ReceiptID })
	return out
}

// HoldPoint is where HoldInstr stops an instruction create.
type HoldPoint int

const (
	// HoldBeforeCommit stops a create that arrived, before anything is committed: a client
	// that dies there left no instruction at the sandbox.
	HoldBeforeCommit HoldPoint = iota + 1
	// HoldAfterCommit stops a create after its instruction is committed, before any byte of
	// the answer: a client that dies there never learns it.
	HoldAfterCommit
)

// instrHold is a pending HoldInstr. Guarded by Server.mu.
type instrHold struct {
	at      HoldPoint
	held    chan struct{} // closed when a create stops at at
	release chan struct{} // closed by the release func
}

// errClientGone ends a held call whose client went away; nobody reads its answer.
var errClientGone = errors.New("the client went away")

// HoldInstr makes the next instruction create stop at p, so a test can kill the client at
// that point: held is closed once a create stops there; the call then waits until release is
// called (it goes on as usual) or its client goes away (a create held before commit then
// commits nothing). release may be called more than once. A later HoldInstr replaces one no
// create reached.
func (s *Server) HoldInstr(p HoldPoint) (held <-chan struct{}, release func()) {
	h := &instrHold{at: p, held: make(chan struct{}), release: make(chan struct{})}
	s.mu.Lock()
	s.hold = h
	s.mu.Unlock()
	var once sync.Once
	return h.held, func() { once.Do(func() { close(h.release) }) }
}

// holdInstr stops the call at p if a HoldInstr asks for it.
func (s *Server) holdInstr(c *call, p HoldPoint) error {
	s.mu.Lock()
	h := s.hold
	if h == nil || h.at != p {
		s.mu.Unlock()
		return nil
	}
	s.hold = nil
	s.mu.Unlock()
	close(h.held)
	select {
	case <-h.release:
		return nil
	case <-c.r.Context().Done():
		return errClientGone
	}
}
