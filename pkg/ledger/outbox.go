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
