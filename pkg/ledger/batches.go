package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// Batch is one transfer batch. Members are payout seqs in body order; Body is the frozen
// create-request body, sent byte for byte on every attempt (docs/wechatpay.md §11). On rail
// bills the batch is ours only: Body is a manifest in the same shape (WeChat never sees it) and
// Bills holds each member's frozen transfer-bill create body, in Members order (nil on the other
// rails).
type Batch struct {
	OutBatchNo, Rail, GroupKey, MchID string
	Members                           []int64
	TotalAmount                       int64
	TotalNum                          int
	Body                              []byte
	State                             string
	BatchID                           string
	Attempts                          int
	LastErrorCode, CloseReason        string
	SuccessAmount, FailAmount         int64
	SuccessNum, FailNum               int
	NextAt                            time.Time // when the pipeline should next act (submit or poll)
	NotFoundSince                     time.Time // first NOT_FOUND since the last status; zero if none
	SealedAt, AcceptedAt, UpdatedAt   time.Time
	StateAt                           time.Time // when the batch entered State
	Settled                           bool      // FINISHED/CLOSED/REJECTED and every member final
	Bills                             [][]byte  // rail bills: one create body per member, Members order
}

// LogValue leaves out the body (it holds openids and name ciphertexts).
func (b Batch) LogValue() slog.Value {
	return slog.GroupValue(slog.String("out_batch_no", b.OutBatchNo), slog.String("state", b.State),
		slog.String("batch_id", b.BatchID), slog.Int64("total_amount", b.TotalAmount), slog.Int("total_num", b.TotalNum),
		slog.Int("attempts", b.Attempts))
}

// querier is a *sql.DB, *sql.Conn or *sql.Tx.
type querier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

// member is what sealing and auditing need of a batch member.
type member struct {
	seq        int64
	key        string
	amount     int64
	state      string
	outBatchNo string
	rail       string
	mchID      string
	detailID   string
}

// members selects batch-member facts for payouts matching where.
func members(ctx context.Context, q querier, where string, args ...any) ([]member, error) {
	var out []member
	err := eachRow(ctx, q, `SELECT seq, out_detail_no, amount, state, coalesce(out_batch_no, ''), rail, mchid,
		detail_id FROM payouts WHERE `+where, args, func(scan func(...any) error) error {
		var m member
		err := scan(&m.seq, &m.key, &m.amount, &m.state, &m.outBatchNo, &m.rail, &m.mchID, &m.detailID)
		out = append(out, m)
		return err
	})
	return out, err
}

// batchCols are the columns queryBatches scans: every column of batches (the body lives in
// batch_bodies, read only when sending or auditing).
const batchCols = `out_batch_no, rail, group_key, mchid, total_amount, total_num, state, batch_id, attempts,
	last_error_code, close_reason, success_amount, fail_amount, success_num, fail_num, next_at, not_found_since,
	sealed_at, accepted_at, state_at, updated_at, settled`

// queryBatches scans batches; with whole it also loads each one's body and member seqs.
func queryBatches(ctx context.Context, q querier, whole bool, query string, args ...any) ([]Batch, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []Batch
	for rows.Next() {
		var b Batch
		var next, nf, sealed, acc, stateAt, upd int64
		if err := rows.Scan(&b.OutBatchNo, &b.Rail, &b.GroupKey, &b.MchID, &b.TotalAmount, &b.TotalNum, &b.State,
			&b.BatchID, &b.Attempts, &b.LastErrorCode, &b.CloseReason, &b.SuccessAmount, &b.FailAmount, &b.SuccessNum,
			&b.FailNum, &next, &nf, &sealed, &acc, &stateAt, &upd, &b.Settled); err != nil {
			rows.Close()
			return nil, err
		}
		b.NextAt, b.NotFoundSince, b.SealedAt, b.AcceptedAt = fromMS(next), fromMS(nf), fromMS(sealed), fromMS(acc)
		b.StateAt, b.UpdatedAt = fromMS(stateAt), fromMS(upd)
		out = append(out, b)
	}
	if err := rows.Close(); err != nil || !whole {
		return out, err
	}
	for i := range out {
		if out[i].Body, err = batchBody(ctx, q, out[i].OutBatchNo); err != nil {
			return nil, err
		}
		ms, err := members(ctx, q, `out_batch_no = ? ORDER BY batch_pos`, out[i].OutBatchNo)
		if err != nil {
			return nil, err
		}
		out[i].Members = make([]int64, len(ms))
		for j, m := range ms {
			out[i].Members[j] = m.seq
		}
		if out[i].Rail == RailBills {
			if out[i].Bills, err = billBodies(ctx, q, out[i].OutBatchNo); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// billBodies returns the bill bodies of a rail-bills batch in member order.
func billBodies(ctx context.Context, q querier, outBatchNo string) ([][]byte, error) {
	var out [][]byte
	err := eachRow(ctx, q, `SELECT b.body FROM bills b JOIN payouts p ON p.seq = b.seq WHERE b.out_batch_no = ?
		ORDER BY p.batch_pos`, []any{outBatchNo}, func(scan func(...any) error) error {
		var body []byte
		err := scan(&body)
		out = append(out, body)
		return err
	})
	return out, err
}

// batchTx reads one batch; whole also loads its body and member seqs (a thousand rows or
// more), which a head (whole false) leaves nil.
func (db *DB) batchTx(ctx context.Context, q querier, outBatchNo string, whole bool) (Batch, error) {
	bs, err := queryBatches(ctx, q, whole, `SELECT `+batchCols+` FROM batches WHERE out_batch_no = ?`, outBatchNo)
	switch {
	case err != nil:
		return Batch{}, err
	case len(bs) == 0:
		return Batch{}, ErrNotFound
	}
	return bs[0], nil
}

// Batch returns the batch with its members, or an error wrapping ErrNotFound.
func (db *DB) Batch(ctx context.Context, outBatchNo string) (Batch, error) {
	return db.readBatch(ctx, outBatchNo, true)
}

// BatchHead is Batch without the body and the members (Body, Members and Bills nil): cheap
// enough to read after every step of a batch.
func (db *DB) BatchHead(ctx context.Context, outBatchNo string) (Batch, error) {
	return db.readBatch(ctx, outBatchNo, false)
}

func (db *DB) readBatch(ctx context.Context, outBatchNo string, whole bool) (Batch, error) {
	b, err := db.batchTx(ctx, db.rdb, outBatchNo, whole)
	if err != nil {
		return Batch{}, fmt.Errorf("batch %s: %w", outBatchNo, err)
	}
	return b, nil
}

// DueBatches returns up to limit unsettled batches with NextAt ≤ now, earliest first: on the
// batch rails those in state SEALED are to be submitted (BatchBody reads the frozen body to
// send), the others to be polled; on rail bills (NextAt = the earliest of its unsettled bills)
// DueBills names the bills to step. They are heads (BatchHead): Batch loads a whole batch.
func (db *DB) DueBatches(ctx context.Context, now time.Time, limit int) ([]Batch, error) {
	bs, err := queryBatches(ctx, db.rdb, false, `SELECT `+batchCols+` FROM batches WHERE settled = 0 AND next_at <= ?
		ORDER BY next_at LIMIT ?`, ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due batches: %w", err)
	}
	return bs, nil
}

// BatchBody returns the frozen body of a batch (Batch.Body), or an error wrapping ErrNotFound.
func (db *DB) BatchBody(ctx context.Context, outBatchNo string) ([]byte, error) {
	return batchBody(ctx, db.rdb, outBatchNo)
}

// batchBody reads the frozen body of a batch, or an error wrapping ErrNotFound.
func batchBody(ctx context.Context, q querier, outBatchNo string) ([]byte, error) {
	var body []byte
	found := false
	err := eachRow(ctx, q, `SELECT body FROM batch_bodies WHERE out_batch_no = ?`, []any{outBatchNo}, func(scan func(...any) error) error {
		found = true
		return scan(&body)
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("batch %s body: %w", outBatchNo, err)
	}
	return body, nil
}

// NextDue returns the earliest NextAt of the unsettled batches; ok is false when there are none.
func (db *DB) NextDue(ctx context.Context) (time.Time, bool, error) {
	var v sql.NullInt64
	if err := db.rdb.QueryRowContext(ctx, `SELECT min(next_at) FROM batches WHERE settled = 0`).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	return time.UnixMilli(v.Int64).UTC(), v.Valid, nil
}
