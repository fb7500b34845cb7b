package wechatpay

import (
	"errors"
	"fmt"
	"time"
)

// Wire models and parsed form of the fund-flow bill (资金账单, docs/reconciliation.md): the
// daily statement of one of the merchant's WeChat Pay accounts, requested with
// ApplyFundFlowBill, fetched with DownloadBill and read with ParseFundFlowBill.

// Fund accounts a fund-flow bill can be asked for (account_type, docs/reconciliation.md §1).
// Transfers to users are debited from AccountOperation.
const (
	AccountBasic     = "BASIC"
	AccountOperation = "OPERATION"
	AccountFees      = "FEES"
)

// TarGzip asks for the bill file gzip-compressed (tar_type, docs/reconciliation.md §1).
const TarGzip = "GZIP"

// HashSHA1 is the only hash_type WeChat Pay documents for bill files (docs/reconciliation.md §2).
const HashSHA1 = "SHA1"

// BillDateLayout is the layout of bill_date: YYYY-MM-DD, a day in China Standard Time.
const BillDateLayout = "2006-01-02"

// FundFlowBillQuery is what ApplyFundFlowBill asks for. BillDate and AccountType are required
// (the API's default account BASIC is never assumed); TarType is "" (plain CSV) or TarGzip.
type FundFlowBillQuery struct {
	BillDate    string // YYYY-MM-DD (BillDateLayout), within the last three months
	AccountType string // AccountBasic, AccountOperation or AccountFees
	TarType     string // "" or TarGzip
}

// BillDownload is the answer of a bill application (docs/reconciliation.md §1): where to fetch
// the file within its short validity, and the hash of the uncompressed file. TarType is not on
// the wire: ApplyFundFlowBill copies it from the query so that DownloadBill knows to
// decompress.
type BillDownload struct {
	HashType    string `json:"hash_type"`
	HashValue   string `json:"hash_value"`
	DownloadURL string `json:"download_url"`
	TarType     string `json:"-"`
}

// Directions of a fund-flow row (收支类型).
const (
	FlowIncome  = "收入"
	FlowExpense = "支出"
)

// FundFlowRow is one line of a fund-flow bill (docs/reconciliation.md §3), fields in file order
// with the leading backtick removed. Amount is always positive: Direction tells which way the
// money moved.
type FundFlowRow struct {
	Time          time.Time // 记账时间, China Standard Time (+08:00)
	TransactionID string    // 微信支付业务单号
	FlowID        string    // 资金流水单号
	BusinessName  string    // 业务名称
	BusinessType  string    // 业务类型
	Direction     string    // 收支类型: FlowIncome or FlowExpense
	Amount        Fen       // 收支金额(元), in fen
	Balance       Fen       // 账户结余(元), in fen, after this row
	Applicant     string    // 资金变更提交申请人
	Remark        string    // 备注
	VoucherNo     string    // 业务凭证号
}

// FundFlowSummary is the summary line at the end of a fund-flow bill (资金流水总笔数, 收入笔数,
// 收入金额, 支出笔数, 支出金额).
type FundFlowSummary struct {
	Total         int
	IncomeCount   int
	IncomeAmount  Fen
	ExpenseCount  int
	ExpenseAmount Fen
}

// FundFlowBill is a parsed fund-flow bill: its rows in file order and its summary.
type FundFlowBill struct {
	Rows    []FundFlowRow
	Summary FundFlowSummary
}

// Totals computes the summary the rows add up to.
func (b *FundFlowBill) Totals() FundFlowSummary {
	s := FundFlowSummary{Total: len(b.Rows)}
	for _, r := range b.Rows {
		if r.Direction == FlowIncome {
			s.IncomeCount++
			s.IncomeAmount += r.Amount
		} else {
			s.ExpenseCount++
			s.ExpenseAmount += r.Amount
		}
	}
	return s
}

// ErrBillFormat marks a bill file that is not a fund-flow bill as documented: a missing or
// unknown header, a wrong number of fields, a bad amount, direction or time.
var ErrBillFormat = errors.New("wechatpay: bad fund-flow bill")

// ErrBillSummary marks a bill whose summary line disagrees with its rows. The error is a
// *BillSummaryError naming the disagreement.
var ErrBillSummary = errors.New("wechatpay: fund-flow bill summary disagrees with its rows")

// ErrBillHash marks a downloaded bill whose SHA1 is not the hash_value of its application:
// the file is not the one WeChat Pay described and must not be believed.
var ErrBillHash = errors.New("wechatpay: bill file hash mismatch")

// ErrForeignDownload marks a download_url whose scheme and host are not the client's BaseURL
// or BackupBaseURL. Nothing was sent: the merchant's signature never goes to another host.
var ErrForeignDownload = errors.New("wechatpay: download_url is not on the API host")

// BillSummaryError is the first disagreement between a bill's summary line and its rows.
// Field is the summary column (e.g. "支出金额"); counts and amounts in fen are both int64.
type BillSummaryError struct {
	Field   string
	Summary int64 // what the summary line says
	Rows    int64 // what the rows add up to
}

// Error names the column and both values.
func (e *BillSummaryError) Error() string {
	return fmt.Sprintf("%v: %s is %d in the summary, %d in the rows", ErrBillSummary, e.Field, e.Summary, e.Rows)
}

// Unwrap returns ErrBillSummary, so errors.Is(err, ErrBillSummary) holds.
func (e *BillSummaryError) Unwrap() error { return ErrBillSummary }
