package wechatpay

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// chinaTime is the zone of a fund-flow bill's 记账时间 and of bill_date (UTC+8, no DST).
var chinaTime = time.FixedZone("CST", 8*3600)

// BillTimeLayout is the layout of 记账时间 in a fund-flow bill, in China Standard Time.
const BillTimeLayout = "2006-01-02 15:04:05"

// FundFlowColumns are the columns of a fund-flow bill's rows, in file order
// (docs/reconciliation.md §3).
var FundFlowColumns = [...]string{
	"记账时间", "微信支付业务单号", "资金流水单号", "业务名称", "业务类型", "收支类型",
	"收支金额(元)", "账户结余(元)", "资金变更提交申请人", "备注", "业务凭证号",
}

// FundFlowSummaryColumns are the columns of a fund-flow bill's summary line, in file order
// (docs/reconciliation.md §3).
var FundFlowSummaryColumns = [...]string{"资金流水总笔数", "收入笔数", "收入金额", "支出笔数", "支出金额"}

// utf8BOM may start a bill file; it is not part of the first header.
var utf8BOM = []byte("\xef\xbb\xbf")

// maxYuanDigits bounds the whole-yuan digits of an amount: 16 digits times 100 still fits an
// int64 (about 9.2e18).
const maxYuanDigits = 16

// ParseFundFlowBill reads a fund-flow bill file (docs/reconciliation.md §3): a header line, one
// line per fund movement, the summary header and the summary line. It accepts a UTF-8 BOM,
// CRLF or LF line ends, blank lines, quoted fields and headers with or without the backtick
// that WeChat Pay puts before every value. Amounts must be unsigned yuan with at most two
// decimals ("12", "12.3", "12.34"; the balance may carry a "-") and become fen exactly, with no
// float in between.
//
// A malformed file is an error wrapping ErrBillFormat that names the line. A file whose summary
// disagrees with its rows (counts or fen sums) returns the parsed bill together with a
// *BillSummaryError (errors.Is ErrBillSummary): the rows are what the file says, the caller
// decides what a disagreeing file is worth.
func ParseFundFlowBill(data []byte) (*FundFlowBill, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, utf8BOM)))
	r.FieldsPerRecord = -1 // checked per section below
	r.LazyQuotes = true    // a remark may hold a bare quote
	next := func() ([]string, int, error) {
		rec, err := r.Read()
		var pe *csv.ParseError
		switch {
		case errors.Is(err, io.EOF):
			return nil, 0, io.EOF
		case errors.As(err, &pe):
			return nil, 0, fmt.Errorf("%w: line %d: %v", ErrBillFormat, pe.Line, pe.Err)
		case err != nil:
			return nil, 0, fmt.Errorf("%w: %v", ErrBillFormat, err)
		}
		line, _ := r.FieldPos(0)
		for i := range rec {
			rec[i] = cell(rec[i])
		}
		return rec, line, nil
	}
	rec, line, err := next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: empty file", ErrBillFormat)
	}
	if err != nil {
		return nil, err
	}
	if err := header(rec, FundFlowColumns[:], line); err != nil {
		return nil, err
	}
	bill := &FundFlowBill{}
	var sum Fen // of every amount, so that no total can overflow
	for {
		rec, line, err = next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: no summary line (%s)", ErrBillFormat, FundFlowSummaryColumns[0])
		}
		if err != nil {
			return nil, err
		}
		if rec[0] == FundFlowSummaryColumns[0] {
			break
		}
		row, err := parseFundFlowRow(rec)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBillFormat, line, err)
		}
		if row.Amount > math.MaxInt64-sum {
			return nil, fmt.Errorf("%w: line %d: the amounts add up beyond an int64 of fen", ErrBillFormat, line)
		}
		sum += row.Amount
		bill.Rows = append(bill.Rows, row)
	}
	if err := header(rec, FundFlowSummaryColumns[:], line); err != nil {
		return nil, err
	}
	rec, line, err = next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: summary header without its values", ErrBillFormat)
	}
	if err != nil {
		return nil, err
	}
	bill.Summary, err = parseFundFlowSummary(rec)
	if err != nil {
		return nil, fmt.Errorf("%w: line %d: %v", ErrBillFormat, line, err)
	}
	if _, line, err = next(); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: line %d: data after the summary", ErrBillFormat, line)
	}
	if err := checkSummary(bill.Summary, bill.Totals()); err != nil {
		return bill, err
	}
	return bill, nil
}

// cell removes the blanks around a field and the one backtick WeChat Pay puts before it.
func cell(s string) string {
	return strings.TrimPrefix(strings.TrimSpace(s), "`")
}

// header checks that rec names exactly the columns want, in order.
func header(rec []string, want []string, line int) error {
	if len(rec) != len(want) {
		return fmt.Errorf("%w: line %d: %d columns, want %d (%s…)", ErrBillFormat, line, len(rec), len(want), want[0])
	}
	for i, w := range want {
		if rec[i] != w {
			return fmt.Errorf("%w: line %d: column %d is %q, want %q", ErrBillFormat, line, i+1, rec[i], w)
		}
	}
	return nil
}

func parseFundFlowRow(rec []string) (FundFlowRow, error) {
	if len(rec) != len(FundFlowColumns) {
		return FundFlowRow{}, fmt.Errorf("%d fields, want %d", len(rec), len(FundFlowColumns))
	}
	t, err := time.ParseInLocation(BillTimeLayout, rec[0], chinaTime)
	if err != nil {
		return FundFlowRow{}, fmt.Errorf("%s %q: want %s", FundFlowColumns[0], rec[0], BillTimeLayout)
	}
	if rec[5] != FlowIncome && rec[5] != FlowExpense {
		return FundFlowRow{}, fmt.Errorf("%s %q: want %s or %s", FundFlowColumns[5], rec[5], FlowIncome, FlowExpense)
	}
	amount, err := ParseYuan(rec[6])
	if err != nil {
		return FundFlowRow{}, fmt.Errorf("%s: %w", FundFlowColumns[6], err)
	}
	balance, err := parseSignedYuan(rec[7])
	if err != nil {
		return FundFlowRow{}, fmt.Errorf("%s: %w", FundFlowColumns[7], err)
	}
	return FundFlowRow{
		Time: t, TransactionID: rec[1], FlowID: rec[2], BusinessName: rec[3], BusinessType: rec[4],
		Direction: rec[5], Amount: amount, Balance: balance, Applicant: rec[8], Remark: rec[9], VoucherNo: rec[10],
	}, nil
}

func parseFundFlowSummary(rec []string) (FundFlowSummary, error) {
	if len(rec) != len(FundFlowSummaryColumns) {
		return FundFlowSummary{}, fmt.Errorf("summary of %d fields, want %d", len(rec), len(FundFlowSummaryColumns))
	}
	var s FundFlowSummary
	counts := []*int{&s.Total, &s.IncomeCount, nil, &s.ExpenseCount, nil}
	amounts := []*Fen{nil, nil, &s.IncomeAmount, nil, &s.ExpenseAmount}
	for i, field := range rec {
		var err error
		if counts[i] != nil {
			*counts[i], err = parseCount(field)
		} else {
			*amounts[i], err = ParseYuan(field)
		}
		if err != nil {
			return FundFlowSummary{}, fmt.Errorf("%s: %w", FundFlowSummaryColumns[i], err)
		}
	}
	return s, nil
}

// checkSummary returns the first disagreement between the summary line and the rows' totals.
func checkSummary(sum, rows FundFlowSummary) error {
	for i, c := range []struct{ summary, rows int64 }{
		{int64(sum.Total), int64(rows.Total)},
		{int64(sum.IncomeCount), int64(rows.IncomeCount)},
		{int64(sum.IncomeAmount), int64(rows.IncomeAmount)},
		{int64(sum.ExpenseCount), int64(rows.ExpenseCount)},
		{int64(sum.ExpenseAmount), int64(rows.ExpenseAmount)},
	} {
		if c.summary != c.rows {
			return &BillSummaryError{Field: FundFlowSummaryColumns[i], Summary: c.summary, Rows: c.rows}
		}
	}
	return nil
}

// ParseYuan turns an unsigned amount in yuan with at most two decimals ("0", "12.3", "12.34")
// into fen exactly. A sign, an exponent, a third decimal ("1.005"), blanks or more than 16
// whole digits are errors: an amount that is not exactly fen is never rounded.
func ParseYuan(s string) (Fen, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || len(whole) > maxYuanDigits || !digits(whole) ||
		(dot && (len(frac) == 0 || len(frac) > 2 || !digits(frac))) {
		return 0, fmt.Errorf("amount %q: want yuan with at most two decimals", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q: %w", s, err)
	}
	f := int64(0)
	for i := range 2 {
		f *= 10
		if i < len(frac) {
			f += int64(frac[i] - '0')
		}
	}
	return Fen(w*100 + f), nil
}

// parseSignedYuan is ParseYuan allowing a leading "-" (an account balance).
func parseSignedYuan(s string) (Fen, error) {
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		v, err := ParseYuan(rest)
		return -v, err
	}
	return ParseYuan(s)
}

// parseCount reads a summary count: decimal digits only, at most 9 of them.
func parseCount(s string) (int, error) {
	if s == "" || len(s) > 9 || !digits(s) {
		return 0, fmt.Errorf("count %q: want decimal digits", s)
	}
	return strconv.Atoi(s)
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
