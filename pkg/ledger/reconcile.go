package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// ChinaTime is the zone of WeChat Pay's bill days: China Standard Time, UTC+8 with no daylight
// saving (docs/reconciliation.md §1, §3). A bill_date names a day in this zone.
var ChinaTime = time.FixedZone("CST", 8*3600)

// DateLayout is the layout of a bill day: YYYY-MM-DD, as bill_date (docs/reconciliation.md §1).
const DateLayout = "2006-01-02"

// Paid is a payout as reconciliation compares it with WeChat Pay's fund-flow bill
// (docs/reconciliation.md §5). Voucher is WeChat's number of the transfer, the bill's
// 业务凭证号: detail_id on the batch rails, transfer_bill_no on the bills rail; "" if the
// ledger never learned it.
type Paid struct {
	Seq         int64
	OutDetailNo string // the payout's key (out_detail_no, out_bill_no on the bills rail)
	Rail        string
	State       string
	Amount      int64 // fen
	OutBatchNo  string
	Voucher     string
	// At is when the payout became final (SUCCESS for PaidOn): the time of its outcome row,
	// which movePayouts writes in the same transaction and with the same time as the
	// payout_state event that moved it there, and which nothing changes afterwards. It is the
	// ledger's time of learning the state (a query or callback), at or after WeChat's. Zero
	// when the payout is not final. updated_at is not used: it is the last change of the row,
	// not of its state.
	At time.Time
}

// DayBounds returns the start and end (exclusive) of date (YYYY-MM-DD) in China Standard
// Time, or an error wrapping ErrInvalid.
func DayBounds(date string) (start, end time.Time, err error) {
	start, err = time.ParseInLocation(DateLayout, date, ChinaTime)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: date %q: want YYYY-MM-DD", ErrInvalid, date)
	}
	return start, start.AddDate(0, 0, 1), nil
}

// paidCols selects a Paid from outcomes o (may be NULL), payouts p and bills b.
const paidCols = `p.seq, p.out_detail_no, p.rail, p.state, p.amount, coalesce(p.out_batch_no, ''),
	CASE WHEN p.rail = 'bills' THEN coalesce(b.transfer_bill_no, '') ELSE p.detail_id END, coalesce(o.at, 0)`

// PaidOn returns every payout that became SUCCESS on date (YYYY-MM-DD, China Standard Time,
// the day of a fund-flow bill), ordered by when: its outcome row's time falls within the day.
// An error wraps ErrInvalid for a malformed date. It reads one snapshot on the read pool, so
// it works on a DB from OpenReadOnly beside a running writer.
func (db *DB) PaidOn(ctx context.Context, date string) ([]Paid, error) {
	start, end, err := DayBounds(date)
	if err != nil {
		return nil, err
	}
	out, err := db.queryPaid(ctx, `SELECT `+paidCols+` FROM outcomes o JOIN payouts p ON p.seq = o.seq
		LEFT JOIN bills b ON b.seq = o.seq
		WHERE o.state = 'SUCCESS' AND o.at >= ? AND o.at < ? ORDER BY o.at, o.id`, ms(start), ms(end))
	if err != nil {
		return nil, fmt.Errorf("paid on %s: %w", date, err)
	}
	return out, nil
}

// PaidByVoucher returns the payouts, in any state, whose voucher (detail_id, or a bill's
// transfer_bill_no) is one of vouchers: how reconciliation finds whose a bill row is when it
// is no payout paid that day. At is set for final payouts. Each chunk of vouchers scans the
// payouts (no index on WeChat's numbers, which would slow every write): meant for the few
// rows a day's bill leaves over.
func (db *DB) PaidByVoucher(ctx context.Context, vouchers []string) ([]Paid, error) {
	var out []Paid
	vouchers = slices.DeleteFunc(slices.Clone(vouchers), func(v string) bool { return v == "" })
	for lo := 0; lo < len(vouchers); lo += seqChunk {
		part := vouchers[lo:min(lo+seqChunk, len(vouchers))]
		args := make([]any, 0, 2*len(part))
		for _, v := range part {
			args = append(args, v)
		}
		args = append(args, args...)
		ps, err := db.queryPaid(ctx, `SELECT `+paidCols+` FROM payouts p LEFT JOIN bills b ON b.seq = p.seq
			LEFT JOIN outcomes o ON o.seq = p.seq
			WHERE (p.rail != 'bills' AND p.detail_id IN (`+placeholders(len(part))+`))
			   OR (p.rail = 'bills' AND b.transfer_bill_no IN (`+placeholders(len(part))+`))
			ORDER BY p.seq`, args...)
		if err != nil {
			return nil, fmt.Errorf("paid by voucher: %w", err)
		}
		out = append(out, ps...)
	}
	return out, nil
}

// queryPaid runs a paidCols query on the read pool.
func (db *DB) queryPaid(ctx context.Context, q string, args ...any) ([]Paid, error) {
	var out []Paid
	err := eachRow(ctx, db.rdb, q, args, func(scan func(...any) error) error {
		var p Paid
		var at int64
		if err := scan(&p.Seq, &p.OutDetailNo, &p.Rail, &p.State, &p.Amount, &p.OutBatchNo, &p.Voucher, &at); err != nil {
			return err
		}
		p.At = fromMS(at)
		out = append(out, p)
		return nil
	})
	return out, err
}

// Bills a reconcile run judged against (reconcile_runs.bill).
const (
	RunBillFile    = "file"    // a downloaded file whose SHA1 matched WeChat's hash_value
	RunBillNone    = "none"    // WeChat answered NO_STATEMENT_EXIST: no movement that day
	RunBillRefused = "refused" // a file that was not believed (hash mismatch, unreadable)
)

// Modes of a reconcile run (reconcile_runs.mode).
const (
	RunThreeWay = "three-way" // ledger, WeChat's queries and the bill
	RunBillOnly = "bill-only" // ledger and bill: the day is beyond WeChat's 30-day query window
)

// ReconcileRun is one recorded `processor reconcile` run (table reconcile_runs, migration 0006).
type ReconcileRun struct {
	ID           int64     // assigned by RecordReconcile
	Date         string    // the bill day, YYYY-MM-DD, China Standard Time
	At           time.Time // when it ran
	Mode         string    // RunThreeWay or RunBillOnly
	Bill         string    // RunBillFile, RunBillNone or RunBillRefused
	BillSHA1     string    // hex SHA1 of the bill file when Bill is RunBillFile, else ""
	Payouts      int       // ledger payouts SUCCESS that day
	Matched      int
	Missing      int
	Mismatched   int
	ReportSHA256 string // hex SHA-256 of the JSON report written
}

var (
	hexSHA1   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// check returns an error wrapping ErrInvalid naming the first field r gets wrong.
func (r ReconcileRun) check() error {
	_, _, err := DayBounds(r.Date)
	switch {
	case err != nil:
		return err
	case r.At.IsZero():
		return fmt.Errorf("%w: reconcile run: no time", ErrInvalid)
	case r.Mode != RunThreeWay && r.Mode != RunBillOnly:
		return fmt.Errorf("%w: reconcile run: mode %q", ErrInvalid, r.Mode)
	case r.Bill != RunBillFile && r.Bill != RunBillNone && r.Bill != RunBillRefused:
		return fmt.Errorf("%w: reconcile run: bill %q", ErrInvalid, r.Bill)
	case (r.Bill == RunBillFile) != hexSHA1.MatchString(r.BillSHA1):
		return fmt.Errorf("%w: reconcile run: bill %s with bill_sha1 %q (a lowercase hex SHA1 for a file, else empty)", ErrInvalid, r.Bill, r.BillSHA1)
	case !hexSHA256.MatchString(r.ReportSHA256):
		return fmt.Errorf("%w: reconcile run: report_sha256 %q is not a lowercase hex SHA-256", ErrInvalid, r.ReportSHA256)
	case r.Payouts < 0 || r.Matched < 0 || r.Missing < 0 || r.Mismatched < 0:
		return fmt.Errorf("%w: reconcile run: negative count", ErrInvalid)
	}
	return nil
}

// RecordReconcile appends run to the reconcile_runs of the ledger file at path and returns
// its id. It must be an existing, fully migrated ledger; an error wraps ErrInvalid for a run
// the table would refuse (nothing is written).
//
// Reconciliation runs beside a live processor, which holds the ledger's writer lock (Open
// would fail with ErrLocked), so this writes through a connection of its own in one BEGIN
// IMMEDIATE transaction: SQLite serializes it with the processor's writes (each waits up to
// the busy timeout for the other). That is safe because reconcile_runs is written by nothing
// else and touches no state the writer keeps in memory (the key index, the event chain's
// head); the row is append-only (triggers) and checked by the audit view
// audit_reconcile_runs.
func RecordReconcile(ctx context.Context, path string, run ReconcileRun) (int64, error) {
	if err := run.check(); err != nil {
		return 0, err
	}
	r, err := openReader(ctx, path) // exists, is a ledger, fully migrated
	if err != nil {
		return 0, fmt.Errorf("record reconcile: %w", err)
	}
	r.Close()
	w, err := sql.Open(driverName, dsn(path, false))
	if err != nil {
		return 0, fmt.Errorf("record reconcile: %w", err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	conn, err := w.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("record reconcile: %w", err)
	}
	defer conn.Close()
	var id int64
	err = inTx(ctx, conn, func(tx *sql.Conn) error {
		return tx.QueryRowContext(ctx, `INSERT INTO reconcile_runs (bill_date, at, mode, bill, bill_sha1, payouts, matched,
			missing, mismatched, report_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			run.Date, ms(run.At), run.Mode, run.Bill, run.BillSHA1, run.Payouts, run.Matched, run.Missing, run.Mismatched,
			run.ReportSHA256).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("record reconcile: %w", err)
	}
	return id, nil
}

// ReconcileRuns returns the recorded runs of date (YYYY-MM-DD), oldest first; every run when
// date is "".
func (db *DB) ReconcileRuns(ctx context.Context, date string) ([]ReconcileRun, error) {
	var out []ReconcileRun
	err := eachRow(ctx, db.rdb, `SELECT id, bill_date, at, mode, bill, bill_sha1, payouts, matched, missing, mismatched,
		report_sha256 FROM reconcile_runs WHERE ? = '' OR bill_date = ? ORDER BY id`, []any{date, date},
		func(scan func(...any) error) error {
			var r ReconcileRun
			var at int64
			if err := scan(&r.ID, &r.Date, &at, &r.Mode, &r.Bill, &r.BillSHA1, &r.Payouts, &r.Matched, &r.Missing,
				&r.Mismatched, &r.ReportSHA256); err != nil {
				return err
			}
			r.At = fromMS(at)
			out = append(out, r)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("reconcile runs: %w", err)
	}
	return out, nil
}
