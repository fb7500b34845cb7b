package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Outcome is one outbox row: a payout that reached a final state (SUCCESS, FAIL, REJECTED,
// CANCELLED, DUPLICATE), written in the transaction that made it final. OutBillNo and
// TransferBillNo are set for members of a rail-bills batch. The pipeline publishes it
// (message id = OutDetailNo + State) and then calls MarkPublished.
type Outcome struct {
	ID                                                                   int64
	OutDetailNo, MchID, State, OutBatchNo, BatchID, DetailID, FailReason string
	OutBillNo, TransferBillNo                                            string
	Amount                                                               int64
	At                                                                   time.Time
}

// PendingOutcomes returns up to limit unpublished outcomes, oldest first.
func (db *DB) PendingOutcomes(ctx context.Context, limit int) ([]Outcome, error) {
	rows, err := db.rdb.QueryContext(ctx, `SELECT o.id, p.out_detail_no, p.mchid, o.state, coalesce(p.out_batch_no, ''),
		coalesce(b.batch_id, ''), p.detail_id, p.fail_reason, coalesce(bl.out_bill_no, ''), coalesce(bl.transfer_bill_no, ''),
		p.amount, o.at
		FROM outcomes o JOIN payouts p ON p.seq = o.seq LEFT JOIN batches b ON b.out_batch_no = p.out_batch_no
		LEFT JOIN bills bl ON bl.seq = o.seq
		WHERE o.published_at = 0 ORDER BY o.id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("pending outcomes: %w", err)
	}
	defer rows.Close()
	var out []Outcome
	for rows.Next() {
		var o Outcome
		var at int64
		if err := rows.Scan(&o.ID, &o.OutDetailNo, &o.MchID, &o.State, &o.OutBatchNo, &o.BatchID, &o.DetailID,
			&o.FailReason, &o.OutBillNo, &o.TransferBillNo, &o.Amount, &at); err != nil {
			return nil, fmt.Errorf("pending outcomes: %w", err)
		}
		o.At = fromMS(at)
		out = append(out, o)
	}
	return out, rows.Err()
}

// MarkPublished marks outcomes as published in one transaction; already published or unknown
// ids are ignored.
func (db *DB) MarkPublished(ctx context.Context, ids []int64) error {
	return db.markPublished(ctx, "outcomes", ids)
}

// markPublished sets published_at on the rows ids of an outbox table (outcomes, notices) in
// one transaction; already published or unknown ids are ignored.
func (db *DB) markPublished(ctx context.Context, table string, ids []int64) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		now := ms(db.now())
		return eachSeqChunk(ids, func(part []int64) error {
			_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET published_at = ? WHERE published_at = 0 AND id IN (`+
				placeholders(len(part))+`)`, append([]any{now}, int64Args(part)...)...)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("mark %s published: %w", table, err)
	}
	return nil
}

// StateTotal is a count of payouts and their amount in fen.
type StateTotal struct {
	Count  int
	Amount int64
}

// Summary counts batches and payouts by state, FAIL payouts by fail_reason ("" when WeChat's
// reason is missing), the bills rows (rail-bills members) by their payout's state, and
// recorded conflicts. The maps are never nil.
type Summary struct {
	Batches     map[string]int
	Payouts     map[string]StateTotal
	FailReasons map[string]StateTotal
	Bills       map[string]StateTotal
	Conflicts   int
}

// Summary scans the ledger (O(payouts); meant for a final print or a slow metrics tick).
func (db *DB) Summary(ctx context.Context) (Summary, error) {
	s := Summary{Batches: map[string]int{}, Payouts: map[string]StateTotal{}, FailReasons: map[string]StateTotal{},
		Bills: map[string]StateTotal{}}
	err := eachRow(ctx, db.rdb, `SELECT state, count(*) FROM batches GROUP BY state`, nil, func(scan func(...any) error) error {
		var st string
		var n int
		err := scan(&st, &n)
		s.Batches[st] = n
		return err
	})
	if err == nil {
		// One scan: FAIL rows are grouped by reason too, the others by state only.
		err = eachRow(ctx, db.rdb, `SELECT state, CASE state WHEN 'FAIL' THEN fail_reason ELSE '' END, count(*), sum(amount)
			FROM payouts GROUP BY 1, 2`, nil, func(scan func(...any) error) error {
			var st, reason string
			var t StateTotal
			if err := scan(&st, &reason, &t.Count, &t.Amount); err != nil {
				return err
			}
			sum := s.Payouts[st]
			s.Payouts[st] = StateTotal{Count: sum.Count + t.Count, Amount: sum.Amount + t.Amount}
			if st == PayoutFail {
				s.FailReasons[reason] = t
			}
			return nil
		})
	}
	if err == nil {
		err = eachRow(ctx, db.rdb, `SELECT p.state, count(*), sum(p.amount) FROM bills b JOIN payouts p ON p.seq = b.seq
			GROUP BY p.state`, nil, func(scan func(...any) error) error {
			var st string
			var t StateTotal
			err := scan(&st, &t.Count, &t.Amount)
			s.Bills[st] = t
			return err
		})
	}
	if err == nil {
		err = db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM conflicts`).Scan(&s.Conflicts)
	}
	if err != nil {
		return Summary{}, fmt.Errorf("summary: %w", err)
	}
	return s, nil
}
