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
	"slices"
	"strconv"
)

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
	OutBatchNo  string       `json:"out_batch_no"`
	TotalAmount int64        `json:"total_amount"`
	TotalNum    int          `json:"total_num"`
	Details     []bodyDetail `json:"transfer_detail_list"`
}

// bodyDetail is one entry of a body's transfer_detail_list as the ledger checks it.
type bodyDetail struct {
	OutDetailNo string `json:"out_detail_no"`
	Amount      int64  `json:"transfer_amount"`
}

// parseBody decodes a create-request body and checks it against its batch: out_batch_no,
// total_amount and total_num are the batch's, and it lists n details.
func parseBody(outBatchNo string, totalAmount int64, totalNum, n int, body []byte) ([]bodyDetail, error) {
	cb, ok := scanBody(body)
	if !ok {
		if err := json.Unmarshal(body, &cb); err != nil {
			return nil, fmt.Errorf("body is not a create request: %w", err)
		}
	}
	if cb.OutBatchNo != outBatchNo || cb.TotalAmount != totalAmount || cb.TotalNum != totalNum || len(cb.Details) != n {
		return nil, fmt.Errorf("body has out_batch_no=%s total_amount=%d total_num=%d and %d details; the batch has %s total_amount=%d total_num=%d and %d members",
			cb.OutBatchNo, cb.TotalAmount, cb.TotalNum, len(cb.Details), outBatchNo, totalAmount, totalNum, n)
	}
	return cb.Details, nil
}

// checkBody reports how body disagrees with the batch and its members (nil if it agrees).
func checkBody(outBatchNo string, totalAmount int64, totalNum int, body []byte, members []member) error {
	details, err := parseBody(outBatchNo, totalAmount, totalNum, len(members), body)
	if err != nil {
		return err
	}
	return checkDetails(details, members)
}

// checkDetails reports the first of a body's details that is not its member (the same
// out_detail_no and amount, in order).
func checkDetails(details []bodyDetail, members []member) error {
	for i, d := range details {
		if m := members[i]; d.OutDetailNo != m.key || d.Amount != m.amount {
			return fmt.Errorf("body detail %d is %s/%d fen; member seq=%d is %s/%d fen", i, d.OutDetailNo, d.Amount, m.seq, m.key, m.amount)
		}
	}
	return nil
}

// checkBatch checks b's number, rail, cap and counts (ErrInvalid), before anything is read.
func checkBatch(b Batch) error {
	switch {
	case !validKey(b.OutBatchNo):
		return invalidf("out_batch_no: want 1-32 of [0-9A-Za-z]")
	case railCap(b.Rail) == 0:
		return invalidf("rail %q: want direct, partner or bills", b.Rail)
	case b.Rail == RailBills && len(b.Bills) != len(b.Members):
		return invalidf("%d bill bodies for %d members", len(b.Bills), len(b.Members))
	case b.Rail != RailBills && b.Bills != nil:
		return invalidf("bill bodies on rail %s", b.Rail)
	case b.TotalNum < 1 || b.TotalNum > railCap(b.Rail):
		return invalidf("total_num %d: want 1..%d on the %s rail", b.TotalNum, railCap(b.Rail), b.Rail)
	case len(b.Members) != b.TotalNum:
		return invalidf("total_num %d but %d members", b.TotalNum, len(b.Members))
	}
	return nil
}

// bodyDetails returns the details of b's body, checked against the batch alone (ErrInvalid):
// its header (parseBody), that the details sum to total_amount, and on rail bills that each
// bill body names its detail's out_detail_no and amount. That each detail is its member's
// row is checked by moveMembers, in the statement that seals them (or by checkMembers).
func bodyDetails(b Batch) ([]bodyDetail, error) {
	details, err := parseBody(b.OutBatchNo, b.TotalAmount, b.TotalNum, len(b.Members), b.Body)
	if err != nil {
		return nil, invalidf("%v", err)
	}
	var sum int64
	for _, d := range details {
		sum += d.Amount
	}
	if sum != b.TotalAmount {
		return nil, invalidf("body details sum to %d fen; total_amount is %d", sum, b.TotalAmount)
	}
	for i, body := range b.Bills {
		if err := checkBill(body, member{seq: b.Members[i], key: details[i].OutDetailNo, amount: details[i].Amount}); err != nil {
			return nil, invalidf("%v", err)
		}
	}
	return details, nil
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
	if err := checkBatch(b); err != nil {
		return err
	}
	if old, err := db.batchTx(ctx, tx, b.OutBatchNo, true); err == nil {
		if bytes.Equal(old.Body, b.Body) && slices.Equal(old.Members, b.Members) && slices.EqualFunc(old.Bills, b.Bills, bytes.Equal) {
			return nil
		}
		return invalidf("already sealed with other members or body")
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	details, err := bodyDetails(b)
	if err != nil {
		return err
	}
	// The members are checked by the statements that move them (moveMembers); when one does
	// not fit, everything since this savepoint is undone and diagnose names it.
	if _, err := tx.ExecContext(ctx, `SAVEPOINT seal`); err != nil {
		return err
	}
	now := ms(db.now())
	if err := db.insertBatch(ctx, tx, b, now); err != nil {
		return err
	}
	unmarked, err := db.moveMembers(ctx, tx, b, details, claimed, now)
	if errors.Is(err, errMembersDiffer) {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO seal`); err != nil {
			return err
		}
		return diagnose(ctx, tx, b, details, claimed)
	}
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `RELEASE seal`); err != nil {
		return err
	}
	var unmarkedSum int64
	for _, i := range unmarked {
		unmarkedSum += details[i].Amount
	}
	if len(unmarked) > 0 {
		seqs := make([]int64, len(unmarked))
		for j, i := range unmarked {
			seqs[j] = b.Members[i]
		}
		slices.Sort(seqs)
		if err := db.appendEvent(ctx, tx, event{At: now, Source: srcIntake, Kind: kindPayoutState,
			Seqs: encodeSeqs(seqs), From: PayoutReceived, To: PayoutClaimed}); err != nil {
			return err
		}
	}
	// The totals trigger leaves moves to SEALED to this one statement.
	if err := db.addTotals(ctx, tx, totalDelta{PayoutReceived, -len(unmarked), -unmarkedSum},
		totalDelta{PayoutClaimed, len(unmarked) - b.TotalNum, unmarkedSum - b.TotalAmount},
		totalDelta{PayoutSealed, b.TotalNum, b.TotalAmount}); err != nil {
		return err
	}
	if b.Rail == RailBills {
		if err := db.insertBills(ctx, tx, b, details, now); err != nil {
			return err
		}
	}
	return db.appendSeal(ctx, tx, b, now)
}

// insertBatch writes the row of batch b, sealed at now (state SEALED, due now).
func (db *DB) insertBatch(ctx context.Context, tx *sql.Conn, b Batch, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO batches (out_batch_no, rail, group_key, mchid, total_amount, total_num,
		state, next_at, sealed_at, state_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'SEALED', ?, ?, ?, ?)`,
		b.OutBatchNo, b.Rail, b.GroupKey, b.MchID, b.TotalAmount, b.TotalNum, now, now, now, now)
	if err == nil {
		_, err = tx.ExecContext(ctx, `INSERT INTO batch_bodies (out_batch_no, body) VALUES (?, ?)`, b.OutBatchNo, b.Body)
	}
	if err != nil {
		return fmt.Errorf("insert batch %s: %w", b.OutBatchNo, err)
	}
	return nil
}

// appendSeal appends b's seal event: its members CLAIMED → SEALED in body order, and the
// digest of its body (followed, on rail bills, by billsDigest of its bill bodies).
func (db *DB) appendSeal(ctx context.Context, tx *sql.Conn, b Batch, now int64) error {
	bodySum := sha256.Sum256(b.Body)
	digest := bodySum[:]
	if b.Rail == RailBills {
		digest = append(digest, billsDigest(b.Bills)...)
	}
	return db.appendEvent(ctx, tx, event{At: now, Source: srcPipeline, Kind: kindSeal, OutBatchNo: b.OutBatchNo,
		Seqs: encodeSeqs(b.Members), From: PayoutClaimed, To: PayoutSealed, Digest: digest,
		Data: fmt.Sprintf("total_amount=%d total_num=%d", b.TotalAmount, b.TotalNum)})
}

// insertBills writes the bills rows of a rail-bills batch being sealed; a cancel requested
// before sealing (cancels) is carried over.
func (db *DB) insertBills(ctx context.Context, tx *sql.Conn, b Batch, details []bodyDetail, now int64) error {
	for i, d := range details {
		if _, err := tx.ExecContext(ctx, `INSERT INTO bills (out_bill_no, seq, out_batch_no, body, next_at, state_at, updated_at,
			cancel_requested_at, cancel_reason)
			SELECT ?, ?, ?, ?, ?, ?, ?, coalesce(c.at, 0), coalesce(c.reason, '') FROM (SELECT 1) LEFT JOIN cancels c ON c.seq = ?`,
			d.OutDetailNo, b.Members[i], b.OutBatchNo, b.Bills[i], now, now, now, b.Members[i]); err != nil {
			return fmt.Errorf("insert bill %d: %w", i, err)
		}
	}
	return nil
}

// invalidf returns an error wrapping ErrInvalid.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// errMembersDiffer: a member is not, in the ledger, the row its body detail names in the
// state sealing needs. diagnose says which and how.
var errMembersDiffer = errors.New("members differ from their rows")

// moveQuery moves members to SEALED at their body positions, each row guarded: the row at
// the member's seq must be the detail's out_detail_no and amount, of the batch's rail and
// merchant, in the given state and in no batch. The members come as one JSON array of
// [seq, out_detail_no, amount] (one parameter however large the batch).
const moveQuery = `WITH m AS (SELECT key AS pos, value->>0 AS seq, value->>1 AS k, value->>2 AS amount FROM json_each(?))
	UPDATE payouts SET state = 'SEALED', out_batch_no = ?, batch_pos = m.pos, updated_at = ? FROM m
	WHERE payouts.seq = m.seq AND payouts.out_detail_no = m.k AND payouts.amount = m.amount
		AND payouts.rail = ? AND payouts.mchid = ? AND payouts.state = ? AND payouts.out_batch_no IS NULL`

// moveMembers seals b's members (moveQuery) and returns the indexes, into b.Members, of those
// that were RECEIVED. Without claimed every member must be CLAIMED; with it, RECEIVED or
// CLAIMED. errMembersDiffer when any member does not fit: the caller undoes the moves.
func (db *DB) moveMembers(ctx context.Context, tx *sql.Conn, b Batch, details []bodyDetail, claimed bool, now int64) ([]int, error) {
	js := membersJSON(b.Members, details)
	from := PayoutClaimed
	if claimed {
		from = PayoutReceived
	}
	r, err := tx.ExecContext(ctx, moveQuery, js, b.OutBatchNo, now, b.Rail, b.MchID, from)
	if err != nil {
		return nil, err
	}
	n, err := r.RowsAffected()
	switch {
	case err != nil:
		return nil, err
	case n == int64(len(b.Members)) && claimed:
		unmarked := make([]int, len(b.Members))
		for i := range unmarked {
			unmarked[i] = i
		}
		return unmarked, nil
	case n == int64(len(b.Members)):
		return nil, nil
	case !claimed:
		return nil, errMembersDiffer
	}
	// Members an earlier version left CLAIMED (it recorded claims in their own transaction).
	already := map[int64]bool{}
	err = eachRow(ctx, tx, moveQuery+` RETURNING payouts.seq`, []any{js, b.OutBatchNo, now, b.Rail, b.MchID, PayoutClaimed},
		func(scan func(...any) error) error {
			var seq int64
			err := scan(&seq)
			already[seq] = true
			return err
		})
	if err != nil {
		return nil, err
	}
	if n+int64(len(already)) != int64(len(b.Members)) {
		return nil, errMembersDiffer
	}
	var unmarked []int
	for i, seq := range b.Members {
		if !already[seq] {
			unmarked = append(unmarked, i)
		}
	}
	return unmarked, nil
}

// membersJSON encodes members and their details for moveQuery: [[seq,"out_detail_no",amount],…].
func membersJSON(seqs []int64, details []bodyDetail) string {
	buf := make([]byte, 0, len(seqs)*48)
	buf = append(buf, '[')
	for i, seq := range seqs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		buf = strconv.AppendInt(buf, seq, 10)
		buf = append(buf, ',')
		k, _ := json.Marshal(details[i].OutDetailNo) // a string always marshals
		buf = append(buf, k...)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, details[i].Amount, 10)
		buf = append(buf, ']')
	}
	return string(append(buf, ']'))
}

// diagnose names the first reason b's members cannot be sealed, from the stored rows (the
// slow path, after moveMembers found a member that does not fit and its moves were undone).
func diagnose(ctx context.Context, tx *sql.Conn, b Batch, details []bodyDetail, claimed bool) error {
	ms0, err := members(ctx, tx, `seq IN (`+placeholders(len(b.Members))+`)`, int64Args(b.Members)...)
	if err != nil {
		return err
	}
	bySeq := make(map[int64]*member, len(ms0))
	for i := range ms0 {
		m := &ms0[i]
		if claimed && m.state == PayoutReceived {
			m.state = PayoutClaimed
		}
		bySeq[m.seq] = m
	}
	if err := checkMembers(b, details, func(seq int64) *member { return bySeq[seq] }); err != nil {
		return err
	}
	return invalidf("members changed while sealing")
}

// checkMembers reports (ErrInvalid) the first reason b cannot seal its members, given its
// body's details (bodyDetails) and find, which returns the payout a seq may be (nil: none):
// each must be there, CLAIMED, in no batch, of b's rail and merchant; TotalAmount must be
// their sum (checkBatch has checked TotalNum), and the details must be them in order
// (checkDetails). Each member that passes is marked (through find's pointer) as in b, so a
// member listed twice, or in an earlier batch checked against the same payouts, fails.
func checkMembers(b Batch, details []bodyDetail, find func(seq int64) *member) error {
	ordered := make([]member, len(b.Members))
	var sum int64
	for i, s := range b.Members {
		m := find(s)
		switch {
		case m == nil:
			return invalidf("member seq=%d: no such payout", s)
		case m.state != PayoutClaimed || m.outBatchNo != "":
			return invalidf("member seq=%d out_detail_no=%s is %s in batch %q, want CLAIMED in none", s, m.key, m.state, m.outBatchNo)
		case m.rail != b.Rail || m.mchID != b.MchID:
			return invalidf("member seq=%d out_detail_no=%s is %s/%s, batch is %s/%s", s, m.key, m.rail, m.mchID, b.Rail, b.MchID)
		}
		m.outBatchNo = b.OutBatchNo
		ordered[i] = *m
		sum += m.amount
	}
	if sum != b.TotalAmount {
		return invalidf("total_amount=%d but the members sum to %d", b.TotalAmount, sum)
	}
	if err := checkDetails(details, ordered); err != nil {
		return invalidf("%v", err)
	}
	return nil
}
