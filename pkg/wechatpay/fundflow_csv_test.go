package wechatpay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readFixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fundflow", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseFundFlowBill(t *testing.T) {
	day := readFixture(t, "day.csv")
	header, rest, _ := strings.Cut(day, "\n")
	rows := strings.Split(strings.TrimSuffix(rest, "\n"), "\n") // 3 rows, summary header, summary
	summaryHeader := rows[3]
	withSummary := func(sum string) string {
		return header + "\n" + strings.Join(rows[:3], "\n") + "\n" + summaryHeader + "\n" + sum + "\n"
	}
	withRow := func(row string) string {
		return header + "\n" + row + "\n" + summaryHeader + "\n`1,`0,`0.00,`1,`1.00\n"
	}
	const goodRow = "`2025-01-15 12:00:01,`T1,`F1,`商家转账,`转账,`支出,`1.00,`5.00,`1900000001API,`D1,`V1"
	replaceField := func(i int, v string) string {
		f := strings.Split(goodRow, ",")
		f[i] = v
		return withRow(strings.Join(f, ","))
	}
	tests := []struct {
		name      string
		in        string
		wantErr   error
		wantRows  int
		wantSum   FundFlowSummary
		wantField string // of a *BillSummaryError
	}{
		{name: "a day", in: day, wantRows: 3, wantSum: FundFlowSummary{3, 1, 1200, 2, 123435}},
		{name: "BOM and CRLF", in: "\xef\xbb\xbf" + strings.ReplaceAll(day, "\n", "\r\n"), wantRows: 3, wantSum: FundFlowSummary{3, 1, 1200, 2, 123435}},
		{name: "backticked headers", in: strings.NewReplacer("记账时间,", "`记账时间,", "资金流水总笔数,", "`资金流水总笔数,").Replace(day), wantRows: 3, wantSum: FundFlowSummary{3, 1, 1200, 2, 123435}},
		{name: "blank lines", in: strings.ReplaceAll(day, "\n", "\n\n"), wantRows: 3, wantSum: FundFlowSummary{3, 1, 1200, 2, 123435}},
		{name: "empty day", in: readFixture(t, "empty_day.csv"), wantRows: 0},
		{name: "quoted remark with a comma", in: withRow(strings.Replace(goodRow, "`D1", "\"`D1, again\"", 1)), wantRows: 1, wantSum: FundFlowSummary{1, 0, 0, 1, 100}},
		{name: "negative balance", in: replaceField(7, "`-5.00"), wantRows: 1, wantSum: FundFlowSummary{1, 0, 0, 1, 100}},
		{name: "whole yuan", in: withRow(strings.Replace(goodRow, "`1.00", "`1", 1)), wantRows: 1, wantSum: FundFlowSummary{1, 0, 0, 1, 100}},
		{name: "empty file", in: "", wantErr: ErrBillFormat},
		{name: "only a BOM", in: "\xef\xbb\xbf", wantErr: ErrBillFormat},
		{name: "unknown header", in: strings.Replace(day, "备注", "备 注", 1), wantErr: ErrBillFormat},
		{name: "header of another bill", in: "交易时间,公众账号ID,商户号\n", wantErr: ErrBillFormat},
		{name: "third decimal", in: replaceField(6, "`1.005"), wantErr: ErrBillFormat},
		{name: "dash amount", in: replaceField(6, "`-"), wantErr: ErrBillFormat},
		{name: "negative amount", in: replaceField(6, "`-1.00"), wantErr: ErrBillFormat},
		{name: "exponent", in: replaceField(6, "`1e2"), wantErr: ErrBillFormat},
		{name: "trailing dot", in: replaceField(6, "`1."), wantErr: ErrBillFormat},
		{name: "empty amount", in: replaceField(6, "`"), wantErr: ErrBillFormat},
		{name: "dash balance", in: replaceField(7, "`-"), wantErr: ErrBillFormat},
		{name: "unknown direction", in: replaceField(5, "`转账"), wantErr: ErrBillFormat},
		{name: "bad time", in: replaceField(0, "`2025/01/15 12:00:01"), wantErr: ErrBillFormat},
		{name: "missing field", in: withRow(strings.TrimSuffix(goodRow, ",`V1")), wantErr: ErrBillFormat},
		{name: "no summary", in: header + "\n" + goodRow + "\n", wantErr: ErrBillFormat},
		{name: "summary header without values", in: header + "\n" + goodRow + "\n" + summaryHeader + "\n", wantErr: ErrBillFormat},
		{name: "bad summary count", in: withSummary("`3x,`1,`12.00,`2,`1234.35"), wantErr: ErrBillFormat},
		{name: "bad summary amount", in: withSummary("`3,`1,`12.001,`2,`1234.35"), wantErr: ErrBillFormat},
		{name: "short summary", in: withSummary("`3,`1,`12.00,`2"), wantErr: ErrBillFormat},
		{name: "data after the summary", in: day + "`extra\n", wantErr: ErrBillFormat},
		{name: "amounts beyond an int64", in: header + "\n" + strings.Repeat(strings.Replace(goodRow, "`1.00", "`9999999999999999.99", 1)+"\n", 10) + summaryHeader + "\n`10,`0,`0,`10,`0\n", wantErr: ErrBillFormat},
		{name: "summary total off", in: withSummary("`4,`1,`12.00,`2,`1234.35"), wantErr: ErrBillSummary, wantField: "资金流水总笔数"},
		{name: "summary income count off", in: withSummary("`3,`0,`12.00,`2,`1234.35"), wantErr: ErrBillSummary, wantField: "收入笔数"},
		{name: "summary income amount off", in: withSummary("`3,`1,`12.01,`2,`1234.35"), wantErr: ErrBillSummary, wantField: "收入金额"},
		{name: "summary expense count off", in: withSummary("`3,`1,`12.00,`3,`1234.35"), wantErr: ErrBillSummary, wantField: "支出笔数"},
		{name: "summary expense amount off by one fen", in: withSummary("`3,`1,`12.00,`2,`1234.36"), wantErr: ErrBillSummary, wantField: "支出金额"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bill, err := ParseFundFlowBill([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantField != "" {
				var se *BillSummaryError
				if !errors.As(err, &se) || se.Field != tt.wantField {
					t.Fatalf("err = %v, want a disagreement on %s", err, tt.wantField)
				}
				if bill == nil || len(bill.Rows) != 3 {
					t.Fatalf("bill = %+v, want the 3 rows with the disagreement", bill)
				}
				return
			}
			if err != nil {
				if bill != nil {
					t.Fatalf("bill %+v returned with a format error", bill)
				}
				return
			}
			if got := len(bill.Rows); got != tt.wantRows {
				t.Fatalf("%d rows, want %d", got, tt.wantRows)
			}
			if got := bill.Summary; got != tt.wantSum {
				t.Fatalf("summary %+v, want %+v", got, tt.wantSum)
			}
		})
	}
}

func TestParseFundFlowBill_Row(t *testing.T) {
	bill, err := ParseFundFlowBill([]byte(readFixture(t, "day.csv")))
	if err != nil {
		t.Fatal(err)
	}
	got := bill.Rows[1]
	want := FundFlowRow{
		Time:          time.Date(2025, 1, 15, 12, 0, 1, 0, chinaTime),
		TransactionID: "1030000071100999991182020050700019480001", FlowID: "100020250115000000000002",
		BusinessName: "商家转账", BusinessType: "转账", Direction: FlowExpense, Amount: 123405, Balance: 9999876565,
		Applicant: "1900000001API", Remark: "B1D1", VoucherNo: "103000007110099999118202005070001948000100002",
	}
	if !got.Time.Equal(want.Time) {
		t.Fatalf("time %v, want %v", got.Time, want.Time)
	}
	got.Time = want.Time
	if got != want {
		t.Fatalf("row\n got %+v\nwant %+v", got, want)
	}
}

func TestParseYuan(t *testing.T) {
	tests := []struct {
		in      string
		want    Fen
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "0.01", want: 1},
		{in: "0.1", want: 10},
		{in: "12.3", want: 1230},
		{in: "12.34", want: 1234},
		{in: "1234.05", want: 123405},
		{in: "9999999999999999.99", want: 999999999999999999},
		{in: "", wantErr: true},
		{in: ".5", wantErr: true},
		{in: "1.", wantErr: true},
		{in: "1.005", wantErr: true},
		{in: "0.001", wantErr: true},
		{in: "-", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "+1", wantErr: true},
		{in: "1e2", wantErr: true},
		{in: "1,000.00", wantErr: true},
		{in: "１.00", wantErr: true},
		{in: " 1", wantErr: true},
		{in: "0x10", wantErr: true},
		{in: "12345678901234567", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseYuan(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseYuan(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParseFundFlowBill: any input either parses into a bill whose rows are valid and add up
// to its summary, or fails with ErrBillFormat (no bill) or ErrBillSummary (the bill, whose
// summary indeed disagrees). It never panics.
func FuzzParseFundFlowBill(f *testing.F) {
	for _, name := range []string{"day.csv", "empty_day.csv"} {
		f.Add([]byte(readFixture(f, name)))
	}
	f.Add([]byte("\xef\xbb\xbf" + strings.ReplaceAll(readFixture(f, "day.csv"), "\n", "\r\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		bill, err := ParseFundFlowBill(data)
		switch {
		case errors.Is(err, ErrBillFormat):
			if bill != nil {
				t.Fatalf("bill returned with %v", err)
			}
			return
		case errors.Is(err, ErrBillSummary):
			if bill == nil || bill.Totals() == bill.Summary {
				t.Fatalf("%v with bill %+v", err, bill)
			}
		case err != nil:
			t.Fatalf("unclassified error %v", err)
		case bill.Totals() != bill.Summary:
			t.Fatalf("accepted summary %+v, rows add up to %+v", bill.Summary, bill.Totals())
		}
		for _, r := range bill.Rows {
			if r.Amount < 0 || (r.Direction != FlowIncome && r.Direction != FlowExpense) {
				t.Fatalf("bad row accepted: %+v", r)
			}
		}
	})
}
