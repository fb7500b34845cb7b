package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
)

// Report is one day's reconciliation: its lines and their counts. It holds keys, numbers
// and amounts, never an openid or a name. Encoded as JSON it is the --json report.
type Report struct {
	Date      string   `json:"date"`
	Mode      string   `json:"mode"`                 // ledger.RunThreeWay or ledger.RunBillOnly
	Bill      string   `json:"bill"`                 // ledger.RunBillFile, RunBillNone or RunBillRefused
	BillSHA1  string   `json:"bill_sha1,omitempty"`  // of the file judged against
	BillError string   `json:"bill_error,omitempty"` // why it is not believed, or its summary disagrees
	Ledgers   []string `json:"ledgers"`
	Payouts   int      `json:"payouts"`   // paid (SUCCESS) that day in the ledgers
	BillRows  int      `json:"bill_rows"` // rows of the bill
	// Matched, Missing and Mismatched count the lines of each result (Ignored ones are not
	// counted).
	Matched    int    `json:"matched"`
	Missing    int    `json:"missing"`
	Mismatched int    `json:"mismatched"`
	Lines      []Line `json:"lines"`
	// Abnormal are the ledgers' in-transit abnormal-fund instructions recorded or finished on
	// the day, and every one still open. They are reported, not matched: the bill's rows for
	// them are not of the merchant-transfer business (what WeChat writes there is [U],
	// docs/abnormal-funds.md).
	Abnormal []Abnormal `json:"abnormal_funds,omitempty"`
}

// Abnormal is one abnormal-fund instruction of a ledger.
type Abnormal struct {
	Ledger           string    `json:"ledger"`
	ReceiptID        string    `json:"receipt_id"`
	OutInstructionNo string    `json:"out_instruction_no"`
	State            string    `json:"state"`
	Amount           int64     `json:"amount"` // fen, once WeChat told it
	RecordedAt       time.Time `json:"recorded_at"`
	FinalAt          time.Time `json:"final_at,omitzero"`
}

// Line is one judgement: a payout, a bill row nobody owns, or the bill itself (no Key).
type Line struct {
	Result     string `json:"result"`         // Matched, Missing, Mismatched or Ignored
	Key        string `json:"key,omitempty"`  // the payout's out_detail_no; "" when no payout of ours
	Rail       string `json:"rail,omitempty"` // direct, partner or bills
	OutBatchNo string `json:"out_batch_no,omitempty"`
	Voucher    string `json:"voucher,omitempty"` // 业务凭证号: detail_id or transfer_bill_no
	LedgerFen  int64  `json:"ledger_fen"`        // the payout's amount; 0 when none
	BillFen    int64  `json:"bill_fen"`          // what the bill moved for it (debits minus returns; signed for ignored rows)
	WeChat     string `json:"wechat,omitempty"`  // WeChat's state by query (three-way), or why there is none
	Ledger     string `json:"ledger,omitempty"`  // the ledger file holding the payout
	Note       string `json:"note"`              // what was found, in words
}

// add appends l and counts it.
func (r *Report) add(l Line) {
	r.Lines = append(r.Lines, l)
	r.count(l.Result, 1)
}

// recount replaces line i with l, moving the count if its result changed.
func (r *Report) recount(i int, l Line) {
	r.count(r.Lines[i].Result, -1)
	r.Lines[i] = l
	r.count(l.Result, 1)
}

func (r *Report) count(result string, n int) {
	switch result {
	case Matched:
		r.Matched += n
	case Missing:
		r.Missing += n
	case Mismatched:
		r.Mismatched += n
	}
}

// OK reports whether the day reconciles: nothing missing, nothing mismatched.
func (r *Report) OK() bool { return r.Missing == 0 && r.Mismatched == 0 }

// Summary is the one line a run ends with: "reconcile: N matched, M missing, K mismatched".
func (r *Report) Summary() string {
	return fmt.Sprintf("reconcile: %d matched, %d missing, %d mismatched", r.Matched, r.Missing, r.Mismatched)
}

// JSON is the report as written to --json: indented, one trailing newline. Digest is its
// SHA-256.
func (r *Report) JSON() []byte {
	b, _ := json.MarshalIndent(r, "", "  ") // plain strings and numbers: cannot fail
	return append(b, '\n')
}

// Digest is the hex SHA-256 of JSON(): what the ledger records of the report.
func (r *Report) Digest() string {
	sum := sha256.Sum256(r.JSON())
	return hex.EncodeToString(sum[:])
}

// WriteText writes the readable report: a heading, a table of every line that is not
// matched (the JSON report has them all), and last, alone on its line, Summary.
func (r *Report) WriteText(w io.Writer) error {
	bill := r.Bill
	if r.BillSHA1 != "" {
		bill += " sha1 " + r.BillSHA1
	}
	fmt.Fprintf(w, "fund-flow bill %s (OPERATION): %s, %d rows; %d payouts paid that day in %d ledgers; %s\n",
		r.Date, bill, r.BillRows, r.Payouts, len(r.Ledgers), r.Mode)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	n := 0
	for _, l := range r.Lines {
		if l.Result == Matched {
			continue
		}
		if n == 0 {
			fmt.Fprintln(tw, "RESULT\tKEY\tRAIL\tVOUCHER\tLEDGER FEN\tBILL FEN\tWECHAT\tNOTE")
		}
		n++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", l.Result, dash(l.Key), dash(l.Rail), dash(l.Voucher), l.LedgerFen, l.BillFen, dash(l.WeChat), l.Note)
	}
	if n == 0 {
		fmt.Fprintln(tw, "every payout debited once for its amount; every transfer row is ours")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Abnormal) > 0 {
		open := 0
		for _, a := range r.Abnormal {
			if !ledger.InstrFinal(a.State) {
				open++
				fmt.Fprintf(w, "abnormal fund: receipt %s instruction %s is %s (recorded %s): not final\n",
					a.ReceiptID, a.OutInstructionNo, a.State, a.RecordedAt.In(ledger.ChinaTime).Format(time.DateTime))
			}
		}
		fmt.Fprintf(w, "abnormal funds: %d instructions of the day or open, %d not final (processor abnormal-fund resume)\n", len(r.Abnormal), open)
	}
	_, err := fmt.Fprintln(w, r.Summary())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
