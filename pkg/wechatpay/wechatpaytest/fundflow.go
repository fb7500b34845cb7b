package wechatpaytest

// Fund-flow bills (资金账单, docs/reconciliation.md): the OPERATION account's daily statement,
// written from the sandbox's own record of payments, applied for with a signed, signed-answer
// GET and downloaded from a URL on the sandbox's own host whose answer is not signed. Faults
// (SpoilFundFlow) make the statement disagree with the record the way a reconciliation must
// notice.

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1" // the bill hash WeChat Pay documents is SHA1 (docs/reconciliation.md §2)
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// Endpoints of the fund-flow bill, as ServeMux patterns (docs/reconciliation.md §1, §2). The
// download answers raw bytes with no Wechatpay-Signature, as WeChat Pay's does.
const (
	EndpointFundFlowBill = "GET /v3/bill/fundflowbill"
	EndpointBillDownload = "GET /v3/billdownload/file"
)

// Fund-flow defaults.
const (
	// DefaultFundFlowDelay is when a day's bill becomes ready, counted from the end of that day
	// in China Standard Time: 10:00 the next morning. WeChat Pay starts generating at 09:00 and
	// advises fetching after 10:00 (docs/reconciliation.md §1).
	DefaultFundFlowDelay = 10 * time.Hour
	// BillURLValidity is how long a download_url works. WeChat Pay documents 30 s on the download
	// page and 5 min on the newer application page (docs/reconciliation.md §2): the sandbox keeps
	// the shorter. Speed does not scale it.
	BillURLValidity = 30 * time.Second
	// fundFlowHistoryMonths is how old a bill may be (docs/reconciliation.md §1: three months).
	fundFlowHistoryMonths = 3
	// notionalBalance opens the account's running balance when Options.Balance is Unlimited:
	// 100 million yuan, in fen.
	notionalBalance wechatpay.Fen = 100_000_000_00
)

// What the sandbox writes in a transfer's row. What WeChat Pay writes for 商家转账 is not
// confirmed by any official page (docs/reconciliation.md §3); match on 业务凭证号 and amounts, not
// on these texts.
const (
	FundFlowBusinessName = "商家转账"
	FundFlowTypeTransfer = "转账"   // a payment: 支出
	FundFlowTypeReturn   = "转账退回" // the funds of a failed detail coming back: 收入 (Options.FundFlowReturns)
	FundFlowTypeUnknown  = "其他"   // a debit injected by BillExtraDebit
)

// WithFundFlowDelay sets Options.FundFlowDelay: -24h serves each day's bill, growing, from the
// start of that day (make run); the default waits for 10:00 the next day.
func WithFundFlowDelay(d time.Duration) Option { return func(o *Options) { o.FundFlowDelay = d } }

// WithFundFlowReturns sets Options.FundFlowReturns.
func WithFundFlowReturns(on bool) Option { return func(o *Options) { o.FundFlowReturns = on } }

// BillFault spoils the fund-flow bills the sandbox writes from then on (SpoilFundFlow), until
// ClearFaults. The file stays self-consistent (its summary adds up) unless the fault is
// BillWrongHash: what is wrong is that it disagrees with the sandbox's own record (Payments).
type BillFault struct {
	kind   billFaultKind
	no     string        // out_detail_no or out_bill_no
	amount wechatpay.Fen // the extra debit, or how far off
	at     time.Time     // when the extra debit happened
}

type billFaultKind int

const (
	billWrongHash billFaultKind = iota + 1
	billMissingRow
	billExtraDebit
	billAmountOff
)

var billFaultNames = map[billFaultKind]string{
	billWrongHash:  "bill_wrong_hash",
	billMissingRow: "bill_missing_row",
	billExtraDebit: "bill_extra_debit",
	billAmountOff:  "bill_amount_off",
}

// BillWrongHash makes every application answer a hash_value that is not the SHA1 of the file.
var BillWrongHash = BillFault{kind: billWrongHash}

// BillMissingRow leaves the payment of a number (out_detail_no or out_bill_no; every payment of
// it) out of the bill.
func BillMissingRow(no string) BillFault { return BillFault{kind: billMissingRow, no: no} }

// BillExtraDebit adds to the bill of at's day a 支出 of amount that no request asked for and
// Payments does not hold: its 业务凭证号 is no detail_id or transfer_bill_no.
func BillExtraDebit(at time.Time, amount wechatpay.Fen) BillFault {
	return BillFault{kind: billExtraDebit, at: at, amount: amount}
}

// BillAmountOff changes the amount of the row of a number (every payment of it) by delta fen;
// a change that would leave 0 fen or less is not made.
func BillAmountOff(no string, delta wechatpay.Fen) BillFault {
	return BillFault{kind: billAmountOff, no: no, amount: delta}
}

// String is the fault's name, e.g. "bill_amount_off".
func (f BillFault) String() string { return billFaultNames[f.kind] }

// SpoilFundFlow adds faults to every fund-flow bill written from now on. ClearFaults removes
// them. Stats.Faults counts each fault once per bill it spoils.
func (s *Server) SpoilFundFlow(faults ...BillFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flows.faults = append(s.flows.faults, faults...)
}

// fundFlow is the fund-flow part of the server. Guarded by Server.mu.
type fundFlow struct {
	faults []BillFault
	files  map[string]billFile // download token → file
}

// billFile is one application's file as it will be downloaded (gzip applied) and until when.
type billFile struct {
	body    []byte
	gzip    bool
	expires time.Time
}

// flowRow is one row of a bill before it is written.
type flowRow struct {
	at        time.Time
	txID      string
	flowID    string
	typ       string
	income    bool
	amount    wechatpay.Fen
	balance   wechatpay.Fen
	remark    string // out_detail_no or out_bill_no
	voucherNo string // detail_id or transfer_bill_no
}

// applyFundFlowBill serves GET /v3/bill/fundflowbill (docs/reconciliation.md §1).
func (s *Server) applyFundFlowBill(c *call) (any, error) {
	q := c.r.URL.Query()
	day, err := time.ParseInLocation(wechatpay.BillDateLayout, q.Get("bill_date"), cst)
	if err != nil {
		return nil, paramError("bill_date %q: want yyyy-MM-DD", q.Get("bill_date"))
	}
	account := q.Get("account_type")
	switch account {
	case "":
		account = wechatpay.AccountBasic // the API's default
	case wechatpay.AccountBasic, wechatpay.AccountOperation, wechatpay.AccountFees:
	default:
		return nil, paramError("account_type %q: want BASIC, OPERATION or FEES", account)
	}
	tar := q.Get("tar_type")
	if tar != "" && tar != wechatpay.TarGzip {
		return nil, paramError("tar_type %q: want GZIP", tar)
	}
	now := c.now.In(cst)
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, cst)
	switch {
	case day.After(today):
		return nil, paramError("bill_date %s is in the future", day.Format(wechatpay.BillDateLayout))
	case now.Before(day.AddDate(0, 0, 1).Add(s.opts.FundFlowDelay)):
		return nil, apiError(http.StatusBadRequest, "STATEMENT_CREATING", "账单生成中")
	case day.Before(today.AddDate(0, -fundFlowHistoryMonths, 0)):
		return nil, invalidRequest("bill_date %s: only the last %d months", day.Format(wechatpay.BillDateLayout), fundFlowHistoryMonths)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(c.now)
	var rows []flowRow
	if account == wechatpay.AccountOperation {
		rows = s.fundFlowRows(day)
	}
	if len(rows) == 0 {
		return nil, apiError(http.StatusBadRequest, "NO_STATEMENT_EXIST", "请求的账单文件不存在")
	}
	csvBytes := s.writeFundFlow(rows)
	sum := sha1.Sum(csvBytes)
	hash := hex.EncodeToString(sum[:])
	for _, f := range s.flows.faults {
		if f.kind == billWrongHash {
			other := sha1.Sum(append(csvBytes, '\n'))
			hash = hex.EncodeToString(other[:])
			s.faults.counts[f.String()]++
			break
		}
	}
	file := billFile{body: csvBytes, expires: c.now.Add(BillURLValidity)}
	if tar == wechatpay.TarGzip {
		file.body, file.gzip = gzipBytes(csvBytes), true
	}
	if s.flows.files == nil {
		s.flows.files = map[string]billFile{}
	}
	for t, f := range s.flows.files {
		if !c.now.Before(f.expires) {
			delete(s.flows.files, t)
		}
	}
	token := randomString(48)
	s.flows.files[token] = file
	base := s.url
	if base == "" { // served through Handler, not Start
		base = "http://" + c.r.Host
	}
	u := base + "/v3/billdownload/file?token=" + token
	if file.gzip {
		u += "&tartype=gzip"
	}
	return wechatpay.BillDownload{HashType: wechatpay.HashSHA1, HashValue: hash, DownloadURL: u}, nil
}

// fundFlowRows returns the OPERATION account's rows of day (midnight CST), faults applied, with
// the running balance. Callers hold mu and have advanced the state.
func (s *Server) fundFlowRows(day time.Time) []flowRow {
	end := day.AddDate(0, 0, 1)
	events := s.fundFlowEvents()
	balance := notionalBalance
	if !s.st.Unlimited {
		balance = s.opts.Balance
	}
	var rows []flowRow
	for i, e := range events {
		if e.at.Before(day) {
			balance += signed(e)
			continue
		}
		if !e.at.Before(end) {
			break
		}
		e.flowID = fmt.Sprintf("1000%s%012d", day.Format("20060102"), i+1)
		rows = append(rows, e)
	}
	seen := map[string]bool{}
	for _, f := range s.flows.faults {
		switch f.kind {
		case billMissingRow:
			rows = slices.DeleteFunc(rows, func(r flowRow) bool {
				hit := !r.income && r.remark == f.no
				seen[f.String()] = seen[f.String()] || hit
				return hit
			})
		case billAmountOff:
			for i := range rows {
				if r := &rows[i]; !r.income && r.remark == f.no && r.amount+f.amount > 0 {
					r.amount += f.amount
					seen[f.String()] = true
				}
			}
		case billExtraDebit:
			if at := f.at.In(cst); !at.Before(day) && at.Before(end) && f.amount > 0 {
				n := len(rows) + 1
				rows = append(rows, flowRow{
					at: at, txID: fmt.Sprintf("9900%s%016d", day.Format("20060102"), n), typ: FundFlowTypeUnknown,
					flowID: fmt.Sprintf("9900%s%012d", day.Format("20060102"), n), amount: f.amount,
					voucherNo: fmt.Sprintf("EXTRA%s%08d", day.Format("20060102"), n),
				})
				seen[f.String()] = true
			}
		}
	}
	for name := range seen {
		s.faults.counts[name]++
	}
	slices.SortStableFunc(rows, func(a, b flowRow) int { return a.at.Compare(b.at) })
	for i := range rows {
		balance += signed(rows[i])
		rows[i].balance = balance
	}
	return rows
}

// signed is a row's effect on the balance.
func signed(r flowRow) wechatpay.Fen {
	if r.income {
		return r.amount
	}
	return -r.amount
}

// fundFlowEvents lists every movement of the OPERATION account in time order: each payment
// (Payments) and, with Options.FundFlowReturns, each failed batch detail as a debit when its
// batch was accepted and a return when it failed. Callers hold mu.
func (s *Server) fundFlowEvents() []flowRow {
	var ev []flowRow
	for _, p := range s.st.Payments {
		tx := p.BatchID
		if p.Kind == KindBill {
			tx = p.DetailID
		}
		ev = append(ev, flowRow{at: p.PaidAt.In(cst), txID: tx, typ: FundFlowTypeTransfer, amount: p.Amount, remark: p.OutDetailNo, voucherNo: p.DetailID})
	}
	if s.opts.FundFlowReturns {
		for _, b := range s.st.Batches {
			for i, d := range b.Details {
				if d.Status != wechatpay.DetailFail {
					continue
				}
				in := b.Req.Details[i]
				debit := flowRow{at: b.Accept.In(cst), txID: b.ID, typ: FundFlowTypeTransfer, amount: in.Amount, remark: in.OutDetailNo, voucherNo: b.detailID(i)}
				back := debit
				back.at, back.typ, back.income = d.Settled.In(cst), FundFlowTypeReturn, true
				ev = append(ev, debit, back)
			}
		}
	}
	slices.SortStableFunc(ev, func(a, b flowRow) int { return a.at.Compare(b.at) })
	return ev
}

// writeFundFlow writes rows as WeChat Pay's fund-flow CSV (docs/reconciliation.md §3): a plain
// header, every value after a backtick, then the summary header and line.
func (s *Server) writeFundFlow(rows []flowRow) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write(wechatpay.FundFlowColumns[:])
	var in, out int
	var inFen, outFen wechatpay.Fen
	for _, r := range rows {
		dir := wechatpay.FlowExpense
		if r.income {
			dir = wechatpay.FlowIncome
			in, inFen = in+1, inFen+r.amount
		} else {
			out, outFen = out+1, outFen+r.amount
		}
		w.Write(ticked(r.at.Format(wechatpay.BillTimeLayout), r.txID, r.flowID, FundFlowBusinessName, r.typ, dir,
			yuan(r.amount), yuan(r.balance), s.opts.MchID+"API", r.remark, r.voucherNo))
	}
	w.Write(wechatpay.FundFlowSummaryColumns[:])
	w.Write(ticked(fmt.Sprint(len(rows)), fmt.Sprint(in), yuan(inFen), fmt.Sprint(out), yuan(outFen)))
	w.Flush()
	return b.Bytes()
}

// ticked puts the backtick WeChat Pay writes before every value.
func ticked(fields ...string) []string {
	for i, f := range fields {
		fields[i] = "`" + f
	}
	return fields
}

// yuan formats fen as yuan with two decimals, exactly.
func yuan(f wechatpay.Fen) string {
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	return fmt.Sprintf("%s%d.%02d", sign, f/100, f%100)
}

func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b) // writes to a bytes.Buffer do not fail
	zw.Close()
	return out.Bytes()
}

// downloadBill serves the download_url of an application (docs/reconciliation.md §2): the
// request must be signed; the answer is the file as is, with no signature headers. An unknown
// or expired token answers 400 INVALID_REQUEST, as WeChat Pay's download does. Of the call faults
// (Fail(EndpointBillDownload, …)) SystemError and the Drop faults apply, Latency does not.
func (s *Server) downloadBill(w http.ResponseWriter, r *http.Request) {
	c, ok := s.accept(w, r, EndpointBillDownload)
	if !ok {
		return
	}
	now := c.now
	s.mu.Lock()
	_, fault := s.faults.pick(EndpointBillDownload)
	f, ok := s.flows.files[r.URL.Query().Get("token")]
	s.mu.Unlock()
	switch fault.kind {
	case faultSystemError:
		s.write(w, c, apiError(http.StatusInternalServerError, "SYSTEM_ERROR", "injected system error"), Fault{})
		return
	case faultDropBeforeCommit, faultDropAfterCommit:
		drop(w, nil)
		return
	}
	if !ok || !now.Before(f.expires) {
		s.write(w, c, invalidRequest("download_url expired or unknown: apply for the bill again"), Fault{})
		return
	}
	w.Header().Set("Request-ID", s.requestID())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(f.body)
}
