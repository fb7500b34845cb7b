package wechatpaytest

import (
	"net/http"
	"slices"
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
	receipt := c.r.PathValue("receipt_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	amount, ok := s.st.Receipts[receipt]
	if !ok {
		return nil, notFound("no such receipt")
	}
	for _, in := range s.st.Instrs {
		if in.ReceiptID == receipt {
			if in.Req.OutInstructionNo == r.OutInstructionNo && instrEqual(&in.Req, &r) {
				return s.instrResponse(in, c.now), nil
			}
			return nil, apiError(http.StatusBadRequest, "ALREADY_EXISTS", "the receipt already has an instruction")
		}
	}
	accept := c.now.Add(s.opts.scaled(s.opts.AcceptDelay))
	in := &instr{ReceiptID: receipt, Amount: amount, Req: r, Created: c.now, Accept: accept, Done: accept.Add(s.opts.scaled(s.opts.ProcessDelay))}
	s.st.Instrs = append(s.st.Instrs, in)
	s.idx.instrs[in.key()] = in
	s.version++
	return s.instrResponse(in, c.now), nil
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
