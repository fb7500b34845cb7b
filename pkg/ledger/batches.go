package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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

// billBody is the part of a transfer-bill create body (docs/transfer-bills.md) the ledger checks
// against its member.
type billBody struct {
	OutBillNo string `json:"out_bill_no"`
	Amount    int64  `json:"transfer_amount"`
}

// checkBill reports how a bill's create body disagrees with its member (nil if it agrees).
func checkBill(body []byte, m member) error {
	var bb billBody
	if err := json.Unmarshal(body, &bb); err != nil {
		return fmt.Errorf("bill body of member seq=%d is not a create request: %w", m.seq, err)
	}
	if bb.OutBillNo != m.key || bb.Amount != m.amount {
		return fmt.Errorf("bill body is %s/%d fen; member seq=%d is %s/%d fen", bb.OutBillNo, bb.Amount, m.seq, m.key, m.amount)
	}
	return nil
}

// billsDigest is SHA-256 over the bill bodies, each length-prefixed, in member order. A
// rail-bills seal event's digest is SHA-256(manifest) followed by it, so the chain covers
// every frozen bill body.
func billsDigest(bodies [][]byte) []byte {
	h := sha256.New()
	var lb [binary.MaxVarintLen64]byte
	for _, b := range bodies {
		h.Write(lb[:binary.PutUvarint(lb[:], uint64(len(b)))])
		h.Write(b)
	}
	return h.Sum(nil)
}

// createBody is the part of a create-request body (docs/wechatpay.md §4, §6) the ledger checks
// against the members: the same field names on both rails.
type createBody struct {
	OutBatchNo  string `json:"out_batch_no"`
	TotalAmount int64  `json:"total_amount"`
	TotalNum    int    `json:"total_num"`
	Details     []struct {
		OutDetailNo string `json:"out_detail_no"`
		Amount      int64  `json:"transfer_amount"`
	} `json:"transfer_detail_list"`
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

// checkBody reports how body disagrees with the batch and its members (nil if it agrees).
func checkBody(outBatchNo string, totalAmount int64, totalNum int, body []byte, members []member) error {
	var cb createBody
	if err := json.Unmarshal(body, &cb); err != nil {
		return fmt.Errorf("body is not a create request: %w", err)
	}
	if cb.OutBatchNo != outBatchNo || cb.TotalAmount != totalAmount || cb.TotalNum != totalNum || len(cb.Details) != len(members) {
		return fmt.Errorf("body has out_batch_no=%s total_amount=%d total_num=%d and %d details; the batch has %s total_amount=%d total_num=%d and %d members",
			cb.OutBatchNo, cb.TotalAmount, cb.TotalNum, len(cb.Details), outBatchNo, totalAmount, totalNum, len(members))
	}
	for i, d := range cb.Details {
		if m := members[i]; d.OutDetailNo != m.key || d.Amount != m.amount {
			return fmt.Errorf("body detail %d is %s/%d fen; member seq=%d is %s/%d fen", i, d.OutDetailNo, d.Amount, m.seq, m.key, m.amount)
		}
	}
	return nil
}

// SealBatch commits a batch in one transaction: the batch row (state SEALED, NextAt = now)
// with its frozen body, and every member CLAIMED → SEALED with the batch ref and body
// position. From the stored rows it verifies that TotalAmount/TotalNum equal the members'
// sum and count, that every member is CLAIMED, in no batch, of the batch's rail and mchid,
// that TotalNum is within the rail's cap (1000 direct / 3000 partner), and that the body's
// out_batch_no, totals and transfer_detail_list (out_detail_no, transfer_amount, in order)
// match. On rail bills (cap MaxDetailsBills) Body is the manifest, checked the same way, and
// Bills must hold one body per member whose out_bill_no and transfer_amount are the
// member's out_detail_no and amount; a bills row per member (next_at = now, taking over a
// cancel requested before sealing) is committed in the same transaction. Otherwise it
// returns an error wrapping ErrInvalid and writes nothing. Sealing the same number again
// with the same members and bodies is a no-op.
func (db *DB) SealBatch(ctx context.Context, b Batch) error {
	return db.sealBatch(ctx, b, false)
}

// ClaimAndSeal is SealBatch for members whose ownership the caller has just claimed: members
// still RECEIVED are recorded RECEIVED → CLAIMED (one event) and sealed in the same
// transaction, which spares intake a transaction and a row rewrite per payout. CLAIMED
// members are sealed as by SealBatch.
func (db *DB) ClaimAndSeal(ctx context.Context, b Batch) error {
	return db.sealBatch(ctx, b, true)
}

func (db *DB) sealBatch(ctx context.Context, b Batch, claimed bool) error {
	if err := db.write(ctx, func(tx *sql.Conn) error { return db.seal(ctx, tx, b, claimed) }); err != nil {
		return fmt.Errorf("seal batch %s: %w", b.OutBatchNo, err)
	}
	return nil
}

// sealChunk is how many members one sealing UPDATE moves (two parameters each).
const sealChunk = 500

func (db *DB) seal(ctx context.Context, tx *sql.Conn, b Batch, claimed bool) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case !validKey(b.OutBatchNo):
		return invalid("out_batch_no: want 1-32 of [0-9A-Za-z]")
	case railCap(b.Rail) == 0:
		return invalid("rail %q: want direct, partner or bills", b.Rail)
	case b.Rail == RailBills && len(b.Bills) != len(b.Members):
		return invalid("%d bill bodies for %d members", len(b.Bills), len(b.Members))
	case b.Rail != RailBills && b.Bills != nil:
		return invalid("bill bodies on rail %s", b.Rail)
	case b.TotalNum < 1 || b.TotalNum > railCap(b.Rail):
		return invalid("total_num %d: want 1..%d on the %s rail", b.TotalNum, railCap(b.Rail), b.Rail)
	case len(b.Members) != b.TotalNum:
		return invalid("total_num %d but %d members", b.TotalNum, len(b.Members))
	}
	if old, err := db.batchTx(ctx, tx, b.OutBatchNo, true); err == nil {
		if bytes.Equal(old.Body, b.Body) && slices.Equal(old.Members, b.Members) && slices.EqualFunc(old.Bills, b.Bills, bytes.Equal) {
			return nil
		}
		return invalid("already sealed with other members or body")
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	ms0, err := members(ctx, tx, `seq IN (`+placeholders(len(b.Members))+`)`, int64Args(b.Members)...)
	if err != nil {
		return err
	}
	bySeq := make(map[int64]member, len(ms0))
	var sum int64
	for _, m := range ms0 {
		bySeq[m.seq] = m
		sum += m.amount
	}
	ordered := make([]member, len(b.Members))
	var unmarked []int64 // RECEIVED members this call records as claimed
	var unmarkedSum int64
	for i, s := range b.Members {
		m, ok := bySeq[s]
		if ok && claimed && m.state == PayoutReceived {
			unmarked = append(unmarked, s)
			unmarkedSum += m.amount
			m.state = PayoutClaimed
		}
		switch {
		case !ok:
			return invalid("member seq=%d: not stored (or listed twice)", s)
		case m.state != PayoutClaimed || m.outBatchNo != "":
			return invalid("member seq=%d out_detail_no=%s is %s in batch %q, want CLAIMED in none", s, m.key, m.state, m.outBatchNo)
		case m.rail != b.Rail || m.mchID != b.MchID:
			return invalid("member seq=%d out_detail_no=%s is %s/%s, batch is %s/%s", s, m.key, m.rail, m.mchID, b.Rail, b.MchID)
		}
		delete(bySeq, s)
		ordered[i] = m
	}
	if sum != b.TotalAmount || len(ms0) != b.TotalNum {
		return invalid("total_amount=%d total_num=%d but members sum to %d in %d", b.TotalAmount, b.TotalNum, sum, len(ms0))
	}
	if err := checkBody(b.OutBatchNo, b.TotalAmount, b.TotalNum, b.Body, ordered); err != nil {
		return invalid("%v", err)
	}
	for i, body := range b.Bills {
		if err := checkBill(body, ordered[i]); err != nil {
			return invalid("%v", err)
		}
	}
	now := ms(db.now())
	if len(unmarked) > 0 {
		slices.Sort(unmarked)
		err := db.appendEvent(ctx, tx, event{At: now, Source: srcIntake, Kind: kindPayoutState,
			Seqs: encodeSeqs(unmarked), From: PayoutReceived, To: PayoutClaimed})
		if err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO batches (out_batch_no, rail, group_key, mchid, total_amount, total_num, body,
		state, next_at, sealed_at, state_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'SEALED', ?, ?, ?, ?)`,
		b.OutBatchNo, b.Rail, b.GroupKey, b.MchID, b.TotalAmount, b.TotalNum, b.Body, now, now, now, now); err != nil {
		return err
	}
	// Set-based: one UPDATE … FROM a VALUES list per chunk of members, each row guarded so a
	// member that is no longer CLAIMED (or RECEIVED, claimed above) in no batch makes the
	// count come out short.
	from := `'CLAIMED'`
	if len(unmarked) > 0 {
		from = `'RECEIVED', 'CLAIMED'`
	}
	for lo := 0; lo < len(b.Members); lo += sealChunk {
		chunk := b.Members[lo:min(lo+sealChunk, len(b.Members))]
		args := make([]any, 0, 2*len(chunk)+2)
		for i, seq := range chunk {
			args = append(args, seq, lo+i)
		}
		args = append(args, b.OutBatchNo, now)
		q := `WITH m(seq, pos) AS (VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?),", len(chunk)), ",") + `)
			UPDATE payouts SET state = 'SEALED', out_batch_no = ?, batch_pos = m.pos, updated_at = ? FROM m
			WHERE payouts.seq = m.seq AND payouts.state IN (` + from + `) AND payouts.out_batch_no IS NULL`
		r, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil || n != int64(len(chunk)) {
			return fmt.Errorf("seal members %d..%d: %d of %d rows (%v)", lo, lo+len(chunk)-1, n, len(chunk), err)
		}
	}
	// The totals trigger leaves moves to SEALED to this one statement.
	if err := db.addTotals(ctx, tx, totalDelta{PayoutReceived, -len(unmarked), -unmarkedSum},
		totalDelta{PayoutClaimed, len(unmarked) - b.TotalNum, unmarkedSum - b.TotalAmount},
		totalDelta{PayoutSealed, b.TotalNum, b.TotalAmount}); err != nil {
		return err
	}
	bodySum := sha256.Sum256(b.Body)
	digest := bodySum[:]
	if b.Rail == RailBills {
		if err := db.insertBills(ctx, tx, b, ordered, now); err != nil {
			return err
		}
		digest = append(digest, billsDigest(b.Bills)...)
	}
	return db.appendEvent(ctx, tx, event{At: now, Source: srcPipeline, Kind: kindSeal, OutBatchNo: b.OutBatchNo,
		Seqs: encodeSeqs(b.Members), From: PayoutClaimed, To: PayoutSealed, Digest: digest,
		Data: fmt.Sprintf("total_amount=%d total_num=%d", b.TotalAmount, b.TotalNum)})
}

// insertBills writes the bills rows of a rail-bills batch being sealed; a cancel requested
// before sealing (cancels) is carried over.
func (db *DB) insertBills(ctx context.Context, tx *sql.Conn, b Batch, ordered []member, now int64) error {
	for i, m := range ordered {
		if _, err := db.exec(ctx, tx, true, `INSERT INTO bills (out_bill_no, seq, out_batch_no, body, next_at, state_at, updated_at,
			cancel_requested_at, cancel_reason)
			SELECT ?, ?, ?, ?, ?, ?, ?, coalesce(c.at, 0), coalesce(c.reason, '') FROM (SELECT 1) LEFT JOIN cancels c ON c.seq = ?`,
			m.key, m.seq, b.OutBatchNo, b.Bills[i], now, now, now, m.seq); err != nil {
			return fmt.Errorf("insert bill %d: %w", i, err)
		}
	}
	return nil
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

const batchCols = `out_batch_no, rail, group_key, mchid, total_amount, total_num, body, state, batch_id, attempts,
	last_error_code, close_reason, success_amount, fail_amount, success_num, fail_num, next_at, not_found_since,
	sealed_at, accepted_at, state_at, updated_at, settled`

// queryBatches scans batches; with withMembers it also loads each one's member seqs.
func queryBatches(ctx context.Context, q querier, withMembers bool, query string, args ...any) ([]Batch, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []Batch
	for rows.Next() {
		var b Batch
		var next, nf, sealed, acc, stateAt, upd int64
		if err := rows.Scan(&b.OutBatchNo, &b.Rail, &b.GroupKey, &b.MchID, &b.TotalAmount, &b.TotalNum, &b.Body, &b.State,
			&b.BatchID, &b.Attempts, &b.LastErrorCode, &b.CloseReason, &b.SuccessAmount, &b.FailAmount, &b.SuccessNum,
			&b.FailNum, &next, &nf, &sealed, &acc, &stateAt, &upd, &b.Settled); err != nil {
			rows.Close()
			return nil, err
		}
		b.NextAt, b.NotFoundSince, b.SealedAt, b.AcceptedAt = fromMS(next), fromMS(nf), fromMS(sealed), fromMS(acc)
		b.StateAt, b.UpdatedAt = fromMS(stateAt), fromMS(upd)
		out = append(out, b)
	}
	if err := rows.Close(); err != nil || !withMembers {
		return out, err
	}
	for i := range out {
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

// batchTx reads one batch; withMembers also loads its member seqs (a thousand rows or more).
func (db *DB) batchTx(ctx context.Context, q querier, outBatchNo string, withMembers bool) (Batch, error) {
	bs, err := queryBatches(ctx, q, withMembers, `SELECT `+batchCols+` FROM batches WHERE out_batch_no = ?`, outBatchNo)
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

// BatchHead is Batch without the members (Members and Bills nil): cheap enough to read after
// every step of a batch.
func (db *DB) BatchHead(ctx context.Context, outBatchNo string) (Batch, error) {
	return db.readBatch(ctx, outBatchNo, false)
}

func (db *DB) readBatch(ctx context.Context, outBatchNo string, withMembers bool) (Batch, error) {
	b, err := db.batchTx(ctx, db.rdb, outBatchNo, withMembers)
	if err != nil {
		return Batch{}, fmt.Errorf("batch %s: %w", outBatchNo, err)
	}
	return b, nil
}

// DueBatches returns up to limit unsettled batches with NextAt ≤ now, earliest first: on the
// batch rails those in state SEALED are to be submitted (with their frozen Body), the others
// to be polled; on rail bills (NextAt = the earliest of its unsettled bills) DueBills names
// the bills to step.
// Members is left nil (the driver needs none); Batch loads a batch with its members.
func (db *DB) DueBatches(ctx context.Context, now time.Time, limit int) ([]Batch, error) {
	bs, err := queryBatches(ctx, db.rdb, false, `SELECT `+batchCols+` FROM batches WHERE settled = 0 AND next_at <= ?
		ORDER BY next_at LIMIT ?`, ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due batches: %w", err)
	}
	return bs, nil
}

// NextDue returns the earliest NextAt of the unsettled batches; ok is false when there are none.
func (db *DB) NextDue(ctx context.Context) (time.Time, bool, error) {
	var v sql.NullInt64
	if err := db.rdb.QueryRowContext(ctx, `SELECT min(next_at) FROM batches WHERE settled = 0`).Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("next due: %w", err)
	}
	return time.UnixMilli(v.Int64).UTC(), v.Valid, nil
}
