package wechatpaytest

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// endpointUnknown names calls that match no API in Stats and faults.
const endpointUnknown = "unknown"

// routes builds the API mux and, with Options.Admin, the admin API.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	old, bills := s.opts.RateLimit, s.opts.BillRateLimit
	rc := newReceipts(s)
	for _, r := range []struct {
		pattern string
		limit   int
		fn      apiFunc
	}{
		{EndpointCreateBatch, old, s.createBatch},
		{EndpointBatchByID, old, s.queryBatch(false)},
		{EndpointBatchByOutNo, old, s.queryBatch(false)},
		{EndpointDetailByID, old, s.queryDetail(false)},
		{EndpointDetailByOutNo, old, s.queryDetail(false)},
		{EndpointPartnerCreate, old, s.createPartnerBatch},
		{EndpointPartnerByID, old, s.queryBatch(true)},
		{EndpointPartnerByOutNo, old, s.queryBatch(true)},
		{EndpointPartnerDetailID, old, s.queryDetail(true)},
		{EndpointPartnerDetailOut, old, s.queryDetail(true)},
		{EndpointCreateBill, bills, s.createBill},
		{EndpointBillByOutNo, bills, s.queryBill},
		{EndpointBillByNo, bills, s.queryBill},
		{EndpointCancelBill, bills, s.cancelBill},
		{EndpointCreateInstr, bills, s.createInstr},
		{EndpointInstrByOutNo, bills, s.queryInstr},
		{EndpointReceipt, bills, s.queryReceipt},
		{EndpointFundFlowBill, 0, s.applyFundFlowBill},
		{EndpointApplyBatchReceipt, old, rc.applyBatch},
		{EndpointBatchReceipt, old, rc.queryBatch},
		{EndpointApplyDetailReceipt, old, rc.applyDetail},
		{EndpointDetailReceipt, old, rc.queryDetail},
		{EndpointApplyBillReceipt, bills, rc.applyBill},
		{EndpointBillReceipt, bills, rc.queryBill},
	} {
		mux.HandleFunc(r.pattern, s.api(r.pattern, r.limit, r.fn))
	}
	mux.HandleFunc(EndpointBillDownload, s.downloadBill) // unsigned answer: not through api
	mux.HandleFunc(EndpointReceiptDownload, rc.download(EndpointReceiptDownload))
	mux.HandleFunc(EndpointElecsignDownload, rc.download(EndpointElecsignDownload))
	mux.HandleFunc("/", s.api(endpointUnknown, 0, func(*call) (any, error) { return nil, notFound("no such API") }))
	if s.opts.Admin {
		s.adminRoutes(mux)
	}
	return mux
}

// Admin API, served under /sandbox/ only with Options.Admin (cmd/sandbox --admin). It needs
// no signature. Bodies and answers are JSON; errors are {"error": "..."} with 400 or 404
// (an unknown batch, detail or bill).
const (
	AdminPaid        = "GET /sandbox/paid"                         // PaidReport
	AdminBatches     = "GET /sandbox/batches"                      // []BatchSummary
	AdminStats       = "GET /sandbox/stats"                        // Stats
	AdminBalance     = "GET /sandbox/balance"                      // BalanceReport
	AdminTopUp       = "POST /sandbox/topup"                       // {"amount": fen} → BalanceReport
	AdminConfirm     = "POST /sandbox/confirm"                     // ConfirmRequest → {"count": n}
	AdminClose       = "POST /sandbox/close"                       // CloseRequest → {}
	AdminConfirmBill = "POST /sandbox/bills/confirm"               // {"out_bill_no": …} → {} (see ConfirmBill)
	AdminBills       = "GET /sandbox/bills"                        // []BillSummary, in creation order
	AdminBillConfirm = "POST /sandbox/bills/{out_bill_no}/confirm" // → BillSummary (see ConfirmBill)
	AdminBillDecline = "POST /sandbox/bills/{out_bill_no}/decline" // → BillSummary (see DeclineBill)
	AdminFaults      = "POST /sandbox/faults"                      // FaultRequest → Stats
	AdminClearFaults = "DELETE /sandbox/faults"                    // → {}
	AdminAddReceipt  = "POST /sandbox/receipts"                    // {"receipt_id": …, "amount": fen} → {}
	AdminInstrs      = "GET /sandbox/instructions"                 // []InstructionSummary (see Instructions)
)

// PaidReport is the answer of GET /sandbox/paid.
type PaidReport struct {
	Paid       map[string]int `json:"paid"`        // out_detail_no or out_bill_no → times paid
	PaidBills  map[string]int `json:"paid_bills"`  // out_bill_no → times paid
	DoublePaid []string       `json:"double_paid"` // numbers paid more than once
	Payments   []Payment      `json:"payments"`
	Total      wechatpay.Fen  `json:"total_amount"` // sum of all payments
}

// BalanceReport is the answer of GET /sandbox/balance.
type BalanceReport struct {
	Limited bool          `json:"limited"`
	Balance wechatpay.Fen `json:"balance"`
	Held    wechatpay.Fen `json:"held"`
}

// ConfirmRequest is the body of POST /sandbox/confirm: confirm (or, with Reject, reject)
// the WAIT_PAY details of a direct batch; all of them when OutDetailNo is empty.
type ConfirmRequest struct {
	OutBatchNo  string `json:"out_batch_no"`
	OutDetailNo string `json:"out_detail_no,omitempty"`
	Reject      bool   `json:"reject,omitempty"`
}

// CloseRequest is the body of POST /sandbox/close (see CloseBatch). Reason defaults to
// OVERDUE_CLOSE.
type CloseRequest struct {
	OutBatchNo string `json:"out_batch_no"`
	Partner    bool   `json:"partner,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// FaultRequest is the body of POST /sandbox/faults: Fault (a ParseFault name) for the next
// Count calls of Endpoint, or with probability Rate when Count is 0.
type FaultRequest struct {
	Endpoint string  `json:"endpoint"`
	Fault    string  `json:"fault"`
	Count    int     `json:"count,omitempty"`
	Rate     float64 `json:"rate,omitempty"`
}

func (s *Server) adminRoutes(mux *http.ServeMux) {
	handle := func(pattern string, fn func(r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			v, err := fn(r)
			status := http.StatusOK
			if err != nil {
				status = http.StatusBadRequest
				if errors.Is(err, ErrNoBatch) {
					status = http.StatusNotFound
				}
				v = map[string]string{"error": err.Error()}
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(v)
		})
	}
	empty := struct{}{}
	handle(AdminPaid, func(*http.Request) (any, error) {
		r := PaidReport{Paid: s.Paid(), PaidBills: s.PaidBills(), DoublePaid: s.DoublePaid(), Payments: s.Payments()}
		for _, p := range r.Payments {
			r.Total += p.Amount
		}
		if r.DoublePaid == nil {
			r.DoublePaid = []string{}
		}
		return r, nil
	})
	handle(AdminBatches, func(*http.Request) (any, error) { return s.Batches(), nil })
	handle(AdminStats, func(*http.Request) (any, error) { return s.Stats(), nil })
	balance := func() BalanceReport {
		b, h, ok := s.Balance()
		return BalanceReport{Limited: ok, Balance: b, Held: h}
	}
	handle(AdminBalance, func(*http.Request) (any, error) { return balance(), nil })
	handle(AdminTopUp, func(r *http.Request) (any, error) {
		var in struct {
			Amount wechatpay.Fen `json:"amount"`
		}
		if err := decodeAdmin(r, &in); err != nil {
			return nil, err
		}
		if in.Amount <= 0 {
			return nil, errors.New("amount: want > 0 fen")
		}
		s.TopUp(in.Amount)
		return balance(), nil
	})
	handle(AdminConfirm, func(r *http.Request) (any, error) {
		var in ConfirmRequest
		if err := decodeAdmin(r, &in); err != nil {
			return nil, err
		}
		decide := s.Confirm
		if in.Reject {
			decide = s.Reject
		}
		n, err := decide(in.OutBatchNo, in.OutDetailNo)
		return map[string]int{"count": n}, err
	})
	handle(AdminClose, func(r *http.Request) (any, error) {
		var in CloseRequest
		if err := decodeAdmin(r, &in); err != nil {
			return nil, err
		}
		if in.Reason == "" {
			in.Reason = reasonOverdueClose
		}
		return empty, s.CloseBatch(in.OutBatchNo, in.Partner, in.Reason)
	})
	handle(AdminConfirmBill, func(r *http.Request) (any, error) {
		var in struct {
			OutBillNo string `json:"out_bill_no"`
		}
		if err := decodeAdmin(r, &in); err != nil {
			return nil, err
		}
		return empty, s.ConfirmBill(in.OutBillNo)
	})
	handle(AdminBills, func(*http.Request) (any, error) { return s.Bills(), nil })
	for pattern, decide := range map[string]func(string) error{AdminBillConfirm: s.ConfirmBill, AdminBillDecline: s.DeclineBill} {
		handle(pattern, func(r *http.Request) (any, error) {
			no := r.PathValue("out_bill_no")
			if err := decide(no); err != nil {
				return nil, err
			}
			return s.Bill(no)
		})
	}
	handle(AdminFaults, func(r *http.Request) (any, error) {
		var in FaultRequest
		if err := decodeAdmin(r, &in); err != nil {
			return nil, err
		}
		f, err := ParseFault(in.Fault)
		switch {
		case err != nil:
			return nil, err
		case in.Endpoint == "":
			return nil, errors.New("endpoint: required (an API pattern or *)")
		case in.Count > 0:
			s.FailNext(in.Endpoint, f, in.Count)
		case in.Rate > 0 && in.Rate <= 1:
			s.FailRate(in.Endpoint, f, in.Rate)
		default:
			return nil, errors.New("want count > 0 or 0 < rate ≤ 1")
		}
		return s.Stats(), nil
	})
	handle(AdminClearFaults, func(*http.Request) (any, error) { s.ClearFaults(); return empty, nil })
	handle(AdminInstrs, func(*http.Request) (any, error) { return s.Instructions(), nil })
	handle(AdminAddReceipt, func(r *http.Request) (any, error) {
		var in struct {
			ReceiptID string        `json:"receipt_id"`
			Amount    wechatpay.Fen `json:"amount"`
		}
		if err := decodeAdmin(r, &in); err != nil {
			return nil, err
		}
		if in.ReceiptID == "" || in.Amount <= 0 {
			return nil, errors.New("want receipt_id and amount > 0")
		}
		s.AddReceipt(in.ReceiptID, in.Amount)
		return empty, nil
	})
}

func decodeAdmin(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
