package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNotMember: a detail row names an out_detail_no that is not a member of the batch.
var ErrNotMember = errors.New("ledger: not a member of the batch")

// Source says where a state change came from (events.source).
type Source string

// Sources of state changes.
const (
	SourceSubmit   Source = "submit"   // a create response
	SourceQuery    Source = "query"    // a verified query answer (batch or detail page)
	SourceCallback Source = "callback" // a verified notification
	SourceOperator Source = "operator" // a human, through an operator tool
)

// SubmitOutcome classifies one submit attempt.
type SubmitOutcome int

// Submit outcomes.
const (
	SubmitAccepted SubmitOutcome = iota // WeChat accepted the batch (BatchID set)
	SubmitRetry                         // ambiguous or blocked: stays as is, same number, try again at NextAt
	SubmitRejected                      // definitive reject (PARAM_ERROR): nothing was paid
)

// String returns the outcome name.
func (o SubmitOutcome) String() string {
	switch o {
	case SubmitAccepted:
		return "accepted"
	case SubmitRetry:
		return "retry"
	case SubmitRejected:
		return "rejected"
	}
	return fmt.Sprintf("SubmitOutcome(%d)", int(o))
}

// SubmitResult is the outcome of one submit attempt, as RecordSubmit stores it.
type SubmitResult struct {
	Outcome              SubmitOutcome
	BatchID, BatchStatus string // when accepted; an empty status means ACCEPTED
	ErrorCode            string // WeChat code or a transport class ("TIMEOUT"); stored as last_error_code
	// ErrorMessage is WeChat's message with ErrorCode, stored as last_error_message (cut to
	// MaxErrorMessage bytes of valid UTF-8) for operators; "" clears it.
	ErrorMessage string
	NextAt       time.Time // next action (poll or retry); zero = now
}

// BatchStatus is a batch's status from a verified query answer or callback (docs/wechatpay.md §7,
// §5).
type BatchStatus struct {
	BatchID, Status, CloseReason string
	SuccessAmount, FailAmount    int64
	SuccessNum, FailNum          int
}

// DetailRow is one row of a detail page (docs/wechatpay.md §5) or of a single-detail query.
type DetailRow struct {
	OutDetailNo, DetailID, Status, FailReason string
}

// RecordSubmit records one submit attempt in one transaction: attempts++, last_error_code,
// last_error_message and NextAt. Accepted moves the batch forward to BatchStatus (ACCEPTED if empty) and stores the
// batch_id. Rejected is only legal from SEALED: the batch and every member become REJECTED
// with fail_reason = ErrorCode, and their outcomes are written. ErrNotFound for an unknown
// batch; ErrIllegalTransition for a reject of a batch WeChat already knows.
func (db *DB) RecordSubmit(ctx context.Context, outBatchNo string, r SubmitResult) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		b, err := db.batchTx(ctx, tx, outBatchNo, false)
		if err != nil {
			return err
		}
		if err := notBills(b); err != nil {
			return err
		}
		now := db.now()
		next := r.NextAt
		if next.IsZero() {
			next = now
		}
		if _, err := tx.ExecContext(ctx, `UPDATE batches SET attempts = attempts + 1, last_error_code = ?, last_error_message = ?,
			next_at = ?, updated_at = ? WHERE out_batch_no = ?`, r.ErrorCode, capMessage(r.ErrorMessage), ms(next), ms(now), outBatchNo); err != nil {
			return err
		}
		if err := db.appendEvent(ctx, tx, event{Source: string(SourceSubmit), Kind: kindSubmit, OutBatchNo: outBatchNo,
			From: b.State, To: b.State, Data: fmt.Sprintf("attempt=%d outcome=%s code=%s batch_id=%s",
				b.Attempts+1, r.Outcome, r.ErrorCode, r.BatchID)}); err != nil {
			return err
		}
		switch r.Outcome {
		case SubmitAccepted:
			st := r.BatchStatus
			if st == "" {
				st = BatchAccepted
			}
			return db.applyBatchStatus(ctx, tx, b, SourceSubmit, BatchStatus{BatchID: r.BatchID, Status: st}, next)
		case SubmitRejected:
			if b.State != BatchSealed {
				return db.illegalf(ctx, "batch %s %s → %s", outBatchNo, b.State, BatchRejected)
			}
			return db.finishBatch(ctx, tx, b, SourceSubmit, BatchRejected, r.ErrorCode, map[string]any{"code": r.ErrorCode})
		case SubmitRetry:
			return nil
		}
		return fmt.Errorf("%w: submit outcome %d", ErrInvalid, r.Outcome)
	})
	if err != nil {
		return fmt.Errorf("record submit %s: %w", outBatchNo, err)
	}
	return nil
}

// ApplyBatchStatus moves a batch forward only (SEALED < WAIT_PAY/ACCEPTED < PROCESSING <
// FINISHED/CLOSED) in one transaction. A stale (lower) status is ignored without error; an
// impossible one (anything else after FINISHED/CLOSED/REJECTED, or another batch_id) is
// logged, counted and returned as ErrIllegalTransition. CLOSED makes every non-final member
// FAIL with fail_reason = CloseReason. Sets NextAt and clears NotFoundSince unless illegal.
func (db *DB) ApplyBatchStatus(ctx context.Context, outBatchNo string, src Source, st BatchStatus, nextAt time.Time) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		b, err := db.batchTx(ctx, tx, outBatchNo, false)
		if err != nil {
			return err
		}
		if err := notBills(b); err != nil {
			return err
		}
		return db.applyBatchStatus(ctx, tx, b, src, st, nextAt)
	})
	if err != nil {
		return fmt.Errorf("apply batch status %s: %w", outBatchNo, err)
	}
	return nil
}

// ApplyCallback applies a verified notification (docs/wechatpay.md §7): a notificationID already
// processed is a no-op; otherwise it is recorded and ApplyBatchStatus runs with
// SourceCallback and NextAt = now, in the same transaction.
func (db *DB) ApplyCallback(ctx context.Context, notificationID, outBatchNo string, st BatchStatus) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		b, err := db.batchTx(ctx, tx, outBatchNo, false)
		if err != nil {
			return err
		}
		if err := notBills(b); err != nil {
			return err
		}
		now := db.now()
		r, err := tx.ExecContext(ctx, `INSERT INTO notifications (id, out_batch_no, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			notificationID, outBatchNo, ms(now))
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return err
		}
		return db.applyBatchStatus(ctx, tx, b, SourceCallback, st, now)
	})
	if err != nil {
		return fmt.Errorf("apply callback %s for %s: %w", notificationID, outBatchNo, err)
	}
	return nil
}

// notBills refuses batch-API answers for a rail-bills batch (ErrInvalid): WeChat never
// sees such a batch; its members are followed as bills.
func notBills(b Batch) error {
	if b.Rail == RailBills {
		return fmt.Errorf("%w: batch %s is on rail bills: follow its bills", ErrInvalid, b.OutBatchNo)
	}
	return nil
}

func (db *DB) applyBatchStatus(ctx context.Context, tx *sql.Conn, b Batch, src Source, st BatchStatus, nextAt time.Time) error {
	cur, to := batchRank(b.State), batchRank(st.Status)
	switch {
	case to < 1 || st.Status == BatchRejected:
		return fmt.Errorf("%w: batch status %q", ErrInvalid, st.Status)
	case b.BatchID != "" && st.BatchID != "" && st.BatchID != b.BatchID:
		return db.illegalf(ctx, "batch %s: batch_id %s, status names %s", b.OutBatchNo, b.BatchID, st.BatchID)
	case cur == 3 && st.Status != b.State:
		return db.illegalf(ctx, "batch %s %s → %s (%s)", b.OutBatchNo, b.State, st.Status, src)
	}
	now := ms(db.now())
	if _, err := tx.ExecContext(ctx, `UPDATE batches SET next_at = ?, not_found_since = 0, updated_at = ?,
		batch_id = CASE WHEN batch_id = '' THEN ? ELSE batch_id END WHERE out_batch_no = ?`,
		ms(nextAt), now, st.BatchID, b.OutBatchNo); err != nil {
		return err
	}
	if to < cur {
		return nil // stale
	}
	changed := st.Status != b.State || st.CloseReason != b.CloseReason || st.SuccessAmount != b.SuccessAmount ||
		st.FailAmount != b.FailAmount || st.SuccessNum != b.SuccessNum || st.FailNum != b.FailNum
	if !changed {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE batches SET state = ?, close_reason = ?, success_amount = ?, fail_amount = ?,
		success_num = ?, fail_num = ?, state_at = CASE WHEN state != ? THEN ? ELSE state_at END,
		accepted_at = CASE WHEN accepted_at = 0 THEN ? ELSE accepted_at END WHERE out_batch_no = ?`,
		st.Status, st.CloseReason, st.SuccessAmount, st.FailAmount, st.SuccessNum, st.FailNum, st.Status, now, now,
		b.OutBatchNo); err != nil {
		return err
	}
	data := map[string]any{"batch_id": st.BatchID, "close_reason": st.CloseReason, "success_amount": st.SuccessAmount,
		"success_num": st.SuccessNum, "fail_amount": st.FailAmount, "fail_num": st.FailNum}
	if st.Status == BatchClosed {
		return db.finishBatch(ctx, tx, b, src, BatchClosed, st.CloseReason, data)
	}
	if err := db.appendEvent(ctx, tx, event{Source: string(src), Kind: kindBatchState, OutBatchNo: b.OutBatchNo,
		From: b.State, To: st.Status, Data: jsonString(data)}); err != nil {
		return err
	}
	return db.settle(ctx, tx, b.OutBatchNo)
}

// finishBatch moves a batch to a final state that ends its members (CLOSED → FAIL,
// REJECTED → REJECTED) with fail_reason = reason, one event per member state.
func (db *DB) finishBatch(ctx context.Context, tx *sql.Conn, b Batch, src Source, state, reason string, data map[string]any) error {
	memberState := PayoutFail
	if state == BatchRejected {
		memberState = PayoutRejected
	}
	now := ms(db.now())
	if _, err := tx.ExecContext(ctx, `UPDATE batches SET state = ?, close_reason = CASE WHEN ? = 'CLOSED' THEN ? ELSE close_reason END,
		state_at = ?, updated_at = ? WHERE out_batch_no = ?`, state, state, reason, now, now, b.OutBatchNo); err != nil {
		return err
	}
	if err := db.appendEvent(ctx, tx, event{At: now, Source: string(src), Kind: kindBatchState, OutBatchNo: b.OutBatchNo,
		From: b.State, To: state, Data: jsonString(data)}); err != nil {
		return err
	}
	ms0, err := members(ctx, tx, `out_batch_no = ? ORDER BY batch_pos`, b.OutBatchNo)
	if err != nil {
		return err
	}
	byState := map[string][]int64{}
	var order []string
	for _, m := range ms0 {
		if PayoutFinal(m.state) && state == BatchClosed {
			continue // already paid or failed before the close
		}
		if !payoutLegal(m.state, memberState) {
			return db.illegalf(ctx, "payout seq=%d %s → %s (batch %s %s)", m.seq, m.state, memberState, b.OutBatchNo, state)
		}
		if byState[m.state] == nil {
			order = append(order, m.state)
		}
		byState[m.state] = append(byState[m.state], m.seq)
	}
	for _, from := range order {
		if err := db.movePayouts(ctx, tx, payoutMove{src: string(src), batch: b.OutBatchNo, seqs: byState[from], from: from,
			to: memberState, failReason: reason, at: now}); err != nil {
			return err
		}
	}
	return db.settle(ctx, tx, b.OutBatchNo)
}

// settle sets settled = 1 when the batch is final and every member is final.
func (db *DB) settle(ctx context.Context, tx *sql.Conn, outBatchNo string) error {
	_, err := tx.ExecContext(ctx, `UPDATE batches SET settled = 1 WHERE out_batch_no = ? AND settled = 0
		AND state IN ('FINISHED', 'CLOSED', 'REJECTED')
		AND NOT EXISTS (SELECT 1 FROM payouts WHERE out_batch_no = ? AND state NOT IN ('SUCCESS', 'FAIL', 'REJECTED'))`,
		outBatchNo, outBatchNo)
	return err
}

// ApplyDetailPage applies one page of detail rows (offset is recorded in the events) to the
// members of a batch in one transaction. Each row moves its payout forward only: an equal or
// stale (lower) status is ignored; an impossible one (e.g. SUCCESS → FAIL) or a row whose
// out_detail_no is not a member of this batch is logged, counted and not applied. The legal
// rows are committed even then; the returned error joins one error per refused row (wrapping
// ErrIllegalTransition or ErrNotMember). changed counts payouts whose state changed.
func (db *DB) ApplyDetailPage(ctx context.Context, outBatchNo string, src Source, offset int, rows []DetailRow) (changed int, err error) {
	var rowErrs []error
	err = db.write(ctx, func(tx *sql.Conn) error {
		changed, rowErrs = 0, nil
		if b, err := db.batchTx(ctx, tx, outBatchNo, false); err != nil {
			return err
		} else if err := notBills(b); err != nil {
			return err
		}
		keys := make([]any, len(rows))
		for i, r := range rows {
			keys[i] = r.OutDetailNo
		}
		ms0, err := members(ctx, tx, `out_batch_no = ? AND out_detail_no IN (`+placeholders(len(rows))+`)`,
			append([]any{outBatchNo}, keys...)...)
		if err != nil {
			return err
		}
		byKey := make(map[string]*member, len(ms0))
		for i := range ms0 {
			byKey[ms0[i].key] = &ms0[i]
		}
		// Check every row, then apply the page set-wise: the new detail ids in one statement,
		// and one move (UPDATE + event + outcome rows) per distinct transition.
		var ids []any // seq, detail_id pairs
		type transition struct{ from, to, reason string }
		moves := map[transition][]int64{}
		var order []transition
		for i, r := range rows {
			d, ok := byKey[r.OutDetailNo]
			if !ok {
				db.illegal.Add(1)
				db.log.WarnContext(ctx, "ledger: detail row for a non-member refused", "out_batch_no", outBatchNo, "out_detail_no", r.OutDetailNo)
				rowErrs = append(rowErrs, fmt.Errorf("row %d out_detail_no=%s: %w", offset+i, r.OutDetailNo, ErrNotMember))
				continue
			}
			legal, err := db.checkDetail(ctx, outBatchNo, src, d, r)
			if err != nil {
				rowErrs = append(rowErrs, err)
				continue
			}
			if d.detailID == "" && r.DetailID != "" {
				ids = append(ids, d.seq, r.DetailID)
				d.detailID = r.DetailID
			}
			if !legal {
				continue // the same or a stale (lower) status
			}
			t := transition{from: d.state, to: r.Status}
			if r.Status == PayoutFail {
				t.reason = r.FailReason
			}
			if _, ok := moves[t]; !ok {
				order = append(order, t)
			}
			moves[t] = append(moves[t], d.seq)
			d.state = r.Status
		}
		if err := db.setDetailIDs(ctx, tx, ids); err != nil {
			return err
		}
		now := ms(db.now())
		for _, t := range order {
			err := db.movePayouts(ctx, tx, payoutMove{src: string(src), batch: outBatchNo, seqs: moves[t], from: t.from, to: t.to,
				failReason: t.reason, at: now, data: jsonString(map[string]any{"offset": offset, "fail_reason": t.reason})})
			if err != nil {
				return err
			}
			changed += len(moves[t])
		}
		return db.settle(ctx, tx, outBatchNo)
	})
	if err != nil {
		return 0, fmt.Errorf("apply detail page %s offset %d: %w", outBatchNo, offset, err)
	}
	return changed, errors.Join(rowErrs...)
}

// checkDetail reports whether row r moves member d forward. A stale or repeated status is
// not legal and not an error; an impossible one (backwards from a final state, an unknown
// status, another detail_id) is counted and returned as ErrIllegalTransition.
func (db *DB) checkDetail(ctx context.Context, outBatchNo string, src Source, d *member, r DetailRow) (bool, error) {
	if d.detailID != "" && r.DetailID != "" && d.detailID != r.DetailID {
		return false, db.illegalf(ctx, "payout seq=%d out_detail_no=%s: detail_id %s, row says %s", d.seq, d.key, d.detailID, r.DetailID)
	}
	if detailRank(r.Status) < 1 {
		return false, db.illegalf(ctx, "payout seq=%d out_detail_no=%s: unknown detail status %q", d.seq, d.key, r.Status)
	}
	cur := d.state
	legal := payoutLegal(cur, r.Status)
	if !legal && r.Status != cur && !(detailRank(cur) >= 0 && detailRank(r.Status) < detailRank(cur)) {
		return false, db.illegalf(ctx, "payout seq=%d out_detail_no=%s %s → %s (%s, batch %s)", d.seq, d.key, cur, r.Status, src, outBatchNo)
	}
	return legal, nil
}

// setDetailIDs records WeChat's detail ids, given as (seq, detail_id) pairs, in one statement
// per chunk.
func (db *DB) setDetailIDs(ctx context.Context, tx *sql.Conn, pairs []any) error {
	for lo := 0; lo < len(pairs); lo += 2 * sealChunk {
		part := pairs[lo:min(lo+2*sealChunk, len(pairs))]
		q := `WITH d(seq, detail_id) AS (VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?),", len(part)/2), ",") + `)
			UPDATE payouts SET detail_id = d.detail_id FROM d WHERE payouts.seq = d.seq`
		if _, err := tx.ExecContext(ctx, q, part...); err != nil {
			return fmt.Errorf("set detail ids: %w", err)
		}
	}
	return nil
}

// Reschedule records when a batch is next due: after a failed poll or a NOT_FOUND answer
// (errCode), or after a paging pass (errCode ""). NextAt and last_error_code are set, and
// NotFoundSince is set to now when notFound and not already set. last_error_message is kept
// while the code stays the same and cleared when it changes (it explained the old code).
// ErrNotFound for an unknown batch.
func (db *DB) Reschedule(ctx context.Context, outBatchNo string, nextAt time.Time, errCode string, notFound bool) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		now := ms(db.now())
		r, err := tx.ExecContext(ctx, `UPDATE batches SET next_at = ?, last_error_code = ?, updated_at = ?,
			last_error_message = CASE WHEN last_error_code = ? THEN last_error_message ELSE '' END,
			not_found_since = CASE WHEN ? AND not_found_since = 0 THEN ? ELSE not_found_since END WHERE out_batch_no = ?`,
			ms(nextAt), errCode, now, errCode, notFound, now, outBatchNo)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reschedule %s: %w", outBatchNo, err)
	}
	return nil
}

// MaxErrorMessage is the most bytes of WeChat's message stored with a refusal
// (last_error_message); the client caps them the same.
const MaxErrorMessage = 512

// capMessage returns msg as valid UTF-8 (invalid bytes dropped) of at most MaxErrorMessage
// bytes, cut at a character boundary.
func capMessage(msg string) string {
	msg = strings.ToValidUTF8(msg, "")
	if len(msg) <= MaxErrorMessage {
		return msg
	}
	cut := MaxErrorMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut]
}

// jsonString encodes event data (maps of strings and numbers cannot fail).
func jsonString(v map[string]any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
