// Package reconcile compares, for one day, the ledgers' paid payouts with WeChat Pay's
// fund-flow bill (资金账单) of the OPERATION account and, within WeChat's 30-day query
// window, with WeChat's own answer for each payout: the three-way match of issue 15
// (docs/reconciliation.md §5).
//
// What is matched: every payout a ledger saw become SUCCESS that day is debited (支出) exactly
// once, for exactly its amount in fen, under its voucher number (业务凭证号: detail_id on the
// batch rails, transfer_bill_no on the bills rail; the remark 备注, our out_detail_no, is only
// a hint); every merchant-transfer debit of the bill is a payout we own; every return (收入)
// pairs with a payout that failed after its funds were debited. Reconcile only reads the
// ledgers (read-only, beside a running processor); recording the run is the caller's
// (ledger.RecordReconcile).
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// BusinessTransfer is the 业务名称 of a merchant transfer's rows. The sandbox writes it;
// what WeChat Pay writes is not documented (docs/reconciliation.md §3 [U]): should it differ,
// every payout shows up missing and every transfer row as ignored, loudly, never silently
// matched.
const BusinessTransfer = "商家转账"

// QueryWindow is how far back WeChat Pay's query APIs answer (docs/wechatpay.md §10): a day
// that started longer ago than this reconciles against the bill alone.
const QueryWindow = 30 * 24 * time.Hour

// Results of a Line.
const (
	Matched    = "matched"    // the records agree
	Missing    = "missing"    // on one side only (or a side that proves nothing: a bill not believed, a query not answered)
	Mismatched = "mismatched" // on both sides, but they disagree: amount, count, state
	Ignored    = "ignored"    // a bill row that is no merchant transfer (not judged)
)

// Remote is WeChat's answer about one payout, from its query APIs.
type Remote struct {
	State   string // detail_status (batch rails) or the bill's state (bills rail)
	Voucher string // detail_id or transfer_bill_no, as WeChat reports it
	Amount  int64  // fen; 0 when the answer does not carry it (a batch's detail pages)
}

// Query asks WeChat about one payout the ledger holds as paid. An error wrapping
// wechatpay.ErrNotFound means WeChat does not know it; one wrapping
// wechatpay.ErrInvalidRequest, that it is beyond the query window. ClientQuery builds one
// from a client.
type Query func(ctx context.Context, p ledger.Paid) (Remote, error)

// Input is one day's reconciliation.
type Input struct {
	// Date is the day, YYYY-MM-DD in China Standard Time (bill days are Beijing time).
	Date string
	// Ledgers are the files of every processor replica that may have paid that day; each is
	// opened read-only.
	Ledgers []string
	// Bill is the day's fund-flow bill of the OPERATION account; an empty one (no rows) when
	// WeChat has none (NO_STATEMENT_EXIST). It is not read when BillErr is set, unless BillErr
	// is a *wechatpay.BillSummaryError (the rows are read, the disagreement reported).
	Bill *wechatpay.FundFlowBill
	// BillSHA1 is the hex SHA1 of the bill file ("" when there is none).
	BillSHA1 string
	// BillErr says why the bill is not believed (e.g. wechatpay.ErrBillHash): then nothing is
	// proved paid, every payout of the day is missing.
	BillErr error
	// Previous is the bill of the day before, optional. A payout paid just before midnight
	// whose SUCCESS the ledger learned after it is debited on the previous day's bill; and a
	// payout must not be debited on both.
	Previous *wechatpay.FundFlowBill
	// Query, optional, asks WeChat about each matched payout when the day is within
	// QueryWindow of Now (three-way); without it, or beyond, the match is bill-only.
	Query Query
	// Now is the time of the run; zero means time.Now().
	Now time.Time
}

// ErrInput marks an Input that cannot be reconciled: a bad date, no ledger, no bill.
var ErrInput = errors.New("reconcile: bad input")

// Reconcile matches in.Date's paid payouts of every ledger against the bill (and WeChat's
// queries, within the window) and returns the report. The error is non-nil only when it
// cannot judge at all: a bad Input (ErrInput) or a ledger that cannot be read; discrepancies
// are in the Report. Queries run one at a time, under ctx.
func Reconcile(ctx context.Context, in Input) (*Report, error) {
	start, end, err := ledger.DayBounds(in.Date)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	case len(in.Ledgers) == 0:
		return nil, fmt.Errorf("%w: no ledger", ErrInput)
	case in.Bill == nil && in.BillErr == nil:
		return nil, fmt.Errorf("%w: no bill and no reason for it", ErrInput)
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	m := &matcher{in: in, start: start, end: end, dbs: map[string]*ledger.DB{}}
	defer m.close()
	r := &Report{Date: in.Date, Ledgers: in.Ledgers, Mode: ledger.RunBillOnly, Lines: []Line{}}
	if in.Query != nil && now.Sub(start) < QueryWindow {
		r.Mode = ledger.RunThreeWay
	}
	var paid []owned
	for _, path := range in.Ledgers {
		db, err := ledger.OpenReadOnly(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		m.dbs[path] = db
		m.order = append(m.order, path)
		ps, err := db.PaidOn(ctx, in.Date)
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", path, err)
		}
		for _, p := range ps {
			paid = append(paid, owned{p, path})
		}
		if err := r.addAbnormal(ctx, db, path, start, end); err != nil {
			return nil, err
		}
	}
	r.Payouts = len(paid)
	var summary *wechatpay.BillSummaryError
	switch {
	case in.BillErr != nil && !errors.As(in.BillErr, &summary):
		r.Bill, r.BillError = ledger.RunBillRefused, in.BillErr.Error()
		r.add(Line{Result: Missing, Note: "the bill is not believed: " + in.BillErr.Error()})
		for _, p := range paid {
			r.add(p.line(Missing, "not proved debited: the bill is not believed"))
		}
		return r, nil
	case in.BillSHA1 == "" && len(in.Bill.Rows) == 0:
		r.Bill = ledger.RunBillNone
	default:
		r.Bill, r.BillSHA1 = ledger.RunBillFile, in.BillSHA1
	}
	if summary != nil {
		r.BillError = summary.Error()
		r.add(Line{Result: Mismatched, Note: "the bill's summary disagrees with its rows: " + summary.Error()})
	}
	r.BillRows = len(in.Bill.Rows)
	if err := m.match(ctx, r, paid); err != nil {
		return nil, err
	}
	return r, nil
}

// owned is a paid payout and the ledger file it is in.
type owned struct {
	ledger.Paid
	file string
}

// line is a report line about p.
func (p owned) line(result, note string) Line {
	return Line{Result: result, Key: p.OutDetailNo, Rail: p.Rail, OutBatchNo: p.OutBatchNo, Voucher: p.Voucher,
		LedgerFen: p.Amount, Ledger: p.file, Note: note}
}

// matcher holds one run's open ledgers and the bill's transfer rows by voucher.
type matcher struct {
	in         Input
	start, end time.Time
	dbs        map[string]*ledger.DB
	order      []string
}

func (m *matcher) close() {
	for _, db := range m.dbs {
		db.Close()
	}
}

// rows indexes a bill's merchant-transfer rows by voucher, debits and returns apart; the
// other rows are returned as they are.
func rows(b *wechatpay.FundFlowBill) (debits, credits map[string][]wechatpay.FundFlowRow, other []wechatpay.FundFlowRow) {
	debits, credits = map[string][]wechatpay.FundFlowRow{}, map[string][]wechatpay.FundFlowRow{}
	if b == nil {
		return debits, credits, nil
	}
	for _, r := range b.Rows {
		switch {
		case r.BusinessName != BusinessTransfer:
			other = append(other, r)
		case r.Direction == wechatpay.FlowExpense:
			debits[r.VoucherNo] = append(debits[r.VoucherNo], r)
		default:
			credits[r.VoucherNo] = append(credits[r.VoucherNo], r)
		}
	}
	return debits, credits, other
}

// fen sums rows' amounts.
func fen(rs []wechatpay.FundFlowRow) int64 {
	var s int64
	for _, r := range rs {
		s += int64(r.Amount)
	}
	return s
}

// match judges the paid payouts, then what the bill has left over, then asks WeChat.
func (m *matcher) match(ctx context.Context, r *Report, paid []owned) error {
	debits, credits, other := rows(m.in.Bill)
	prevDebits, _, _ := rows(m.in.Previous)
	prevDay := m.start.AddDate(0, 0, -1).Format(ledger.DateLayout)
	var query []int // indexes into r.Lines of matched payouts, for three-way
	for _, p := range paid {
		if p.Voucher == "" {
			r.add(p.line(Missing, "the ledger has no WeChat number (detail_id/transfer_bill_no) to find its debit by"+m.hint(p)))
			continue
		}
		ds, prev := debits[p.Voucher], prevDebits[p.Voucher]
		delete(debits, p.Voucher)
		l := p.line("", "")
		l.BillFen = fen(ds) + fen(prev)
		if back := credits[p.Voucher]; len(back) > 0 { // money returned for a payout the ledger holds paid
			delete(credits, p.Voucher)
			l.Result, l.Note = Mismatched, fmt.Sprintf("SUCCESS in the ledger, but the bill returns %d fen (收入) under its number", fen(back))
			r.add(l)
			continue
		}
		switch n := len(ds) + len(prev); {
		case n == 0:
			l.Result, l.Note = Missing, "paid in the ledger, not debited in the bill"+m.hint(p)
		case n > 1:
			l.Result, l.Note = Mismatched, fmt.Sprintf("debited %d times (%d on %s, %d on %s), for %d fen in all", n, len(ds), m.in.Date, len(prev), prevDay, l.BillFen)
		case l.BillFen != p.Amount:
			l.Result, l.Note = Mismatched, fmt.Sprintf("amount: %d fen in the ledger, %d fen in the bill", p.Amount, l.BillFen)
		default:
			l.Result, l.Note = Matched, "debited once, same amount"
			if len(prev) == 1 {
				l.Note = "debited once, same amount, on " + prevDay + "'s bill (paid before midnight, seen paid after)"
			}
			if row := first(ds, prev); row.Remark != "" && row.Remark != p.OutDetailNo {
				l.Note += fmt.Sprintf("; the remark says %q", row.Remark)
			}
			query = append(query, len(r.Lines))
		}
		r.add(l)
	}
	if err := m.leftovers(ctx, r, debits, credits); err != nil {
		return err
	}
	for _, o := range other {
		r.add(Line{Result: Ignored, Voucher: o.VoucherNo, BillFen: signed(o), Note: fmt.Sprintf("%s/%s %s: not a merchant transfer", o.BusinessName, o.BusinessType, o.Direction)})
	}
	if r.Mode == ledger.RunThreeWay {
		m.ask(ctx, r, query, paid)
	}
	return nil
}

// first is the first row of a, else of b; one of them is not empty.
func first(a, b []wechatpay.FundFlowRow) wechatpay.FundFlowRow {
	if len(a) > 0 {
		return a[0]
	}
	return b[0]
}

// signed is a bill row's amount, negative for a debit.
func signed(r wechatpay.FundFlowRow) int64 {
	if r.Direction == wechatpay.FlowExpense {
		return -int64(r.Amount)
	}
	return int64(r.Amount)
}

// hint names a bill row whose remark is p's key, when the voucher did not find it.
func (m *matcher) hint(p owned) string {
	for _, r := range m.in.Bill.Rows {
		if r.Remark == p.OutDetailNo && r.BusinessName == BusinessTransfer {
			return fmt.Sprintf(" (a %s of %d fen with remark %s is under number %q)", r.Direction, r.Amount, p.OutDetailNo, r.VoucherNo)
		}
	}
	return ""
}

// leftovers judges the transfer rows no payout paid that day took: whose are they?
func (m *matcher) leftovers(ctx context.Context, r *Report, debits, credits map[string][]wechatpay.FundFlowRow) error {
	var vouchers []string // in bill order, once each
	listed := map[string]bool{}
	for _, b := range m.in.Bill.Rows {
		_, d := debits[b.VoucherNo]
		_, c := credits[b.VoucherNo]
		if (d || c) && !listed[b.VoucherNo] {
			listed[b.VoucherNo] = true
			vouchers = append(vouchers, b.VoucherNo)
		}
	}
	owners := map[string]owned{}
	for _, path := range m.order {
		ps, err := m.dbs[path].PaidByVoucher(ctx, vouchers)
		if err != nil {
			return fmt.Errorf("reconcile %s: %w", path, err)
		}
		for _, p := range ps {
			owners[p.Voucher] = owned{p, path}
		}
	}
	for _, v := range vouchers {
		r.add(m.leftover(v, debits[v], credits[v], owners))
	}
	return nil
}

// leftover judges the debits ds and returns cs of voucher v that no payout paid that day took.
func (m *matcher) leftover(v string, ds, cs []wechatpay.FundFlowRow, owners map[string]owned) Line {
	p, ok := owners[v]
	if !ok || v == "" {
		what := "a debit no payout of ours asked for"
		if len(ds) == 0 {
			what = "a return (收入) for no payout of ours"
		}
		l := Line{Result: Missing, Voucher: v, BillFen: fen(ds) - fen(cs), Note: what}
		if remark := first(ds, cs).Remark; remark != "" {
			l.Note += fmt.Sprintf(" (remark %q)", remark)
		}
		return l
	}
	l := p.line("", "")
	l.BillFen = fen(ds) - fen(cs)
	day := ""
	if !p.At.IsZero() {
		day = p.At.In(ledger.ChinaTime).Format(ledger.DateLayout)
	}
	next := m.end.Format(ledger.DateLayout)
	switch {
	case p.State == ledger.PayoutSuccess && len(cs) == 0 && day == next:
		// Paid before midnight, seen paid after: the next day's run checks it against this
		// bill (its Previous) once more, so a second debit cannot hide.
		switch {
		case len(ds) > 1:
			l.Result, l.Note = Mismatched, fmt.Sprintf("debited %d times; SUCCESS in the ledger on %s", len(ds), day)
		case fen(ds) != p.Amount:
			l.Result, l.Note = Mismatched, fmt.Sprintf("amount: %d fen in the ledger, %d fen in the bill; SUCCESS in the ledger on %s", p.Amount, fen(ds), day)
		default:
			l.Result, l.Note = Matched, "debited once, same amount; SUCCESS in the ledger on "+day+" (seen paid after midnight)"
		}
	case p.State == ledger.PayoutSuccess:
		l.Result, l.Note = Mismatched, fmt.Sprintf("%d debits and %d returns on %s for a payout SUCCESS in the ledger on %s", len(ds), len(cs), m.in.Date, day)
	case p.State == ledger.PayoutFail || p.State == ledger.PayoutCancelled:
		// A lock that failed: its funds come back (docs/reconciliation.md §4).
		switch {
		case len(ds) == 1 && len(cs) == 1 && fen(ds) == p.Amount && fen(cs) == p.Amount:
			l.Result, l.Note = Matched, fmt.Sprintf("%s in the ledger: debited and returned, same amount", p.State)
		case len(ds) == 0 && len(cs) == 1 && fen(cs) == p.Amount:
			l.Result, l.Note = Matched, fmt.Sprintf("%s in the ledger: returned, same amount (debited on an earlier day)", p.State)
		case len(ds) == 1 && len(cs) == 0 && fen(ds) == p.Amount:
			l.Result, l.Note = Missing, fmt.Sprintf("%s in the ledger: debited, no return (收入) in this bill", p.State)
		default:
			l.Result, l.Note = Mismatched, fmt.Sprintf("%s in the ledger for %d fen: %d debits of %d fen and %d returns of %d fen", p.State, p.Amount, len(ds), fen(ds), len(cs), fen(cs))
		}
	default:
		l.Result, l.Note = Mismatched, fmt.Sprintf("%d debits and %d returns for a payout %s in the ledger", len(ds), len(cs), p.State)
	}
	return l
}

// ask checks each matched payout (lines at idx) with WeChat's query: it must be SUCCESS there,
// under the same number, for the same amount when the answer carries one.
func (m *matcher) ask(ctx context.Context, r *Report, idx []int, paid []owned) {
	byKey := make(map[string]owned, len(paid))
	for _, p := range paid {
		byKey[p.file+"\x00"+p.OutDetailNo] = p
	}
	for _, i := range idx {
		l := r.Lines[i]
		p := byKey[l.Ledger+"\x00"+l.Key]
		got, err := m.in.Query(ctx, p.Paid)
		switch {
		case errors.Is(err, wechatpay.ErrInvalidRequest):
			l.WeChat = "beyond the query window"
		case errors.Is(err, wechatpay.ErrNotFound):
			l.Result, l.WeChat, l.Note = Missing, "NOT_FOUND", "debited, but WeChat's query does not know it"
		case err != nil:
			l.Result, l.WeChat, l.Note = Missing, "no answer", "WeChat's query failed: "+err.Error()
		default:
			l.WeChat = got.State
			switch {
			case got.State != wechatpay.DetailStatusSuccess:
				l.Result, l.Note = Mismatched, "WeChat's query says "+got.State
			case got.Voucher != "" && got.Voucher != p.Voucher:
				l.Result, l.Note = Mismatched, fmt.Sprintf("WeChat's query names it %q, the ledger %q", got.Voucher, p.Voucher)
			case got.Amount != 0 && got.Amount != p.Amount:
				l.Result, l.Note = Mismatched, fmt.Sprintf("amount: %d fen in the ledger, %d fen in WeChat's query", p.Amount, got.Amount)
			}
		}
		r.recount(i, l)
	}
}

// addAbnormal adds the ledger's in-transit abnormal-fund instructions (docs/abnormal-funds.md)
// recorded or finished on the day, and every one still open.
func (r *Report) addAbnormal(ctx context.Context, db *ledger.DB, path string, start, end time.Time) error {
	ins, err := db.AbnormalInstructions(ctx)
	if err != nil {
		return fmt.Errorf("reconcile %s: %w", path, err)
	}
	within := func(t time.Time) bool { return !t.Before(start) && t.Before(end) }
	for _, in := range ins {
		if ledger.InstrFinal(in.State) && !within(in.CreatedAt) && !within(in.FinalAt) {
			continue
		}
		r.Abnormal = append(r.Abnormal, Abnormal{Ledger: path, ReceiptID: in.ReceiptID, OutInstructionNo: in.OutInstructionNo,
			State: in.State, Amount: in.Amount, RecordedAt: in.CreatedAt, FinalAt: in.FinalAt})
	}
	return nil
}
