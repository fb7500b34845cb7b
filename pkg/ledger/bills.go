package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"
)

// Errors of RequestCancel.
var (
	// ErrFinal: the payout is final; nothing can change it any more. The error names its state.
	ErrFinal = errors.New("ledger: payout is final")
	// ErrCannotCancel: the payout's rail cannot cancel (direct, partner), or it is DUPLICATE
	// (another instance owns the key).
	ErrCannotCancel = errors.New("ledger: payout's rail cannot cancel")
)

// MaxCancelReason is the longest cancel reason RequestCancel stores, in characters.
const MaxCancelReason = 64

// bills.cancel_closed values.
const (
	cancelOpen    = ""        // none requested, or requested and not yet ended
	cancelDone    = "done"    // ended in CANCELLED
	cancelRefused = "refused" // cannot happen (WeChat refused, or the bill ended otherwise first)
	cancelLocal   = "local"   // the bill was cancelled before WeChat ever saw it
)

// Cancel refusal codes written in CANCEL_REFUSED notices, as payout.CancelFinal and
// payout.CancelTooLate.
const (
	codeAlreadyFinal  = "ALREADY_FINAL"
	codeWeChatRefused = "WECHAT_REFUSED"
)

// Bill is one member of a rail-bills batch as the driver follows it. Its state is the
// payout's (one source of truth); Body is the frozen create body, sent byte for byte on
// every create (docs/transfer-bills.md: the same out_bill_no and body are idempotent).
type Bill struct {
	OutBillNo, OutBatchNo, MchID, AppID                             string
	Seq, Amount                                                     int64
	Body                                                            []byte
	State                                                           string // the payout's state
	TransferBillNo, PackageInfo, FailReason, LastErrorCode          string
	CreateTime, ExpireAt, NextAt, NotFoundSince, StateAt, UpdatedAt time.Time
	Attempts                                                        int // create calls, replays for package_info included
	CancelRequestedAt                                               time.Time
	CancelReason                                                    string
	CancelAttempts                                                  int
	CancelClosed                                                    bool // the requested cancel ended (CANCELLED, refused, or local)
	Settled                                                         bool // final and nothing left to do (no open cancel)

	closed string // bills.cancel_closed
}

// LogValue leaves out the body (openid, name cipher) and the package_info.
func (b Bill) LogValue() slog.Value {
	return slog.GroupValue(slog.String("out_bill_no", b.OutBillNo), slog.String("out_batch_no", b.OutBatchNo),
		slog.String("state", b.State), slog.String("transfer_bill_no", b.TransferBillNo), slog.Int64("amount", b.Amount),
		slog.Int("attempts", b.Attempts))
}

// BillState is a bill's state from a verified WeChat answer (create, query or callback).
// PackageInfo comes only with a create answer; CreateTime is WeChat's create_time.
type BillState struct {
	State, TransferBillNo, PackageInfo, FailReason string
	CreateTime                                     time.Time
}

// BillCreate is the outcome of one create call for a bill, as RecordBillCreate stores it.
type BillCreate struct {
	Outcome   SubmitOutcome
	State     BillState // when accepted
	ErrorCode string    // WeChat code or a transport class; stored as last_error_code
	// ErrorMessage is WeChat's message with ErrorCode, stored as last_error_message (cut to
	// MaxErrorMessage bytes of valid UTF-8) for operators; "" clears it.
	ErrorMessage string
	NextAt       time.Time // next action; zero = now
}

// CancelOutcome classifies one cancel of a bill.
type CancelOutcome int

// Cancel outcomes.
const (
	CancelAccepted CancelOutcome = iota // WeChat answered CANCELING or CANCELLED: State is applied
	CancelRetry                         // ambiguous: the same cancel again at NextAt
	CancelRefused                       // WeChat refused (the bill's state no longer allows it): the cancel is closed, a CANCEL_REFUSED notice written
	CancelLocal                         // never sent: the bill was never created (attempts 0, SEALED), so it is CANCELLED here
)

// String returns the outcome name.
func (o CancelOutcome) String() string {
	switch o {
	case CancelAccepted:
		return "accepted"
	case CancelRetry:
		return "retry"
	case CancelRefused:
		return "refused"
	case CancelLocal:
		return "local"
	}
	return fmt.Sprintf("CancelOutcome(%d)", int(o))
}

// CancelResult is the outcome of one cancel, as RecordCancel stores it.
type CancelResult struct {
	Outcome   CancelOutcome
	State     BillState // when accepted
	ErrorCode string    // WeChat code or a transport class; stored as last_error_code
	NextAt    time.Time // next action; zero = now
}

const billCols = `b.out_bill_no, b.out_batch_no, p.mchid, p.appid, b.seq, p.amount, b.body, p.state, b.transfer_bill_no,
	b.package_info, p.fail_reason, b.last_error_code, b.create_time, b.expire_at, b.next_at, b.not_found_since, b.state_at,
	b.updated_at, b.attempts, b.cancel_requested_at, b.cancel_reason, b.cancel_attempts, b.cancel_closed, b.settled
	FROM bills b JOIN payouts p ON p.seq = b.seq`

// queryBills runs a billCols query.
func queryBills(ctx context.Context, q querier, where string, args ...any) ([]Bill, error) {
	var out []Bill
	err := eachRow(ctx, q, `SELECT `+billCols+` WHERE `+where, args, func(scan func(...any) error) error {
		var b Bill
		var create, expire, next, nf, stateAt, upd, cancelAt int64
		if err := scan(&b.OutBillNo, &b.OutBatchNo, &b.MchID, &b.AppID, &b.Seq, &b.Amount, &b.Body, &b.State,
			&b.TransferBillNo, &b.PackageInfo, &b.FailReason, &b.LastErrorCode, &create, &expire, &next, &nf, &stateAt,
			&upd, &b.Attempts, &cancelAt, &b.CancelReason, &b.CancelAttempts, &b.closed, &b.Settled); err != nil {
			return err
		}
		b.CreateTime, b.ExpireAt, b.NextAt, b.NotFoundSince = fromMS(create), fromMS(expire), fromMS(next), fromMS(nf)
		b.StateAt, b.UpdatedAt, b.CancelRequestedAt = fromMS(stateAt), fromMS(upd), fromMS(cancelAt)
		b.CancelClosed = b.closed != cancelOpen
		out = append(out, b)
		return nil
	})
	return out, err
}

// billTx reads one bill, or ErrNotFound.
func billTx(ctx context.Context, q querier, outBillNo string) (Bill, error) {
	bs, err := queryBills(ctx, q, `b.out_bill_no = ?`, outBillNo)
	switch {
	case err != nil:
		return Bill{}, err
	case len(bs) == 0:
		return Bill{}, ErrNotFound
	}
	return bs[0], nil
}

// Bill returns the bill out_bill_no, or an error wrapping ErrNotFound.
func (db *DB) Bill(ctx context.Context, outBillNo string) (Bill, error) {
	b, err := billTx(ctx, db.rdb, outBillNo)
	if err != nil {
		return Bill{}, fmt.Errorf("bill %s: %w", outBillNo, err)
	}
	return b, nil
}

// DueBills returns up to limit unsettled bills of batch outBatchNo with NextAt ≤ now:
// those with an open cancel first (a cancel loses its chance once the payee confirms), then
// earliest first. A batch's NextAt is the earliest NextAt of its unsettled bills, so
// DueBatches finds the rail-bills batches with due bills.
func (db *DB) DueBills(ctx context.Context, outBatchNo string, now time.Time, limit int) ([]Bill, error) {
	bs, err := queryBills(ctx, db.rdb, `b.out_batch_no = ? AND b.settled = 0 AND b.next_at <= ?
		ORDER BY (b.cancel_requested_at > 0 AND b.cancel_closed = '') DESC, b.next_at LIMIT ?`,
		outBatchNo, ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("due bills %s: %w", outBatchNo, err)
	}
	return bs, nil
}

// RecordBillCreate records one create call for bill outBillNo in one transaction: attempts++,
// last_error_code, last_error_message and NextAt. SubmitAccepted applies State as ApplyBillState does (forward
// only). SubmitRejected is legal only while the payout is SEALED (WeChat never knew the
// bill): the payout becomes REJECTED with fail_reason = ErrorCode and its outcome is
// written; otherwise ErrIllegalTransition. SubmitRetry changes nothing else. ErrNotFound for
// an unknown bill.
func (db *DB) RecordBillCreate(ctx context.Context, outBillNo string, r BillCreate) error {
	return db.RecordBillCreates(ctx, []BillCreateRecord{{OutBillNo: outBillNo, BillCreate: r}})
}

// BillCreateRecord is one bill's create call, for RecordBillCreates.
type BillCreateRecord struct {
	OutBillNo string
	BillCreate
}

// RecordBillCreates records the create calls rs, each as RecordBillCreate does, in one
// transaction: one commit for many, as the bills rail marks the first sends of a step. An
// error records none of them.
func (db *DB) RecordBillCreates(ctx context.Context, rs []BillCreateRecord) error {
	what := fmt.Sprintf("of %d bills", len(rs)) // the failing bill's number, once known
	if len(rs) == 1 {
		what = rs[0].OutBillNo
	}
	err := db.write(ctx, func(tx *sql.Conn) error {
		for _, r := range rs {
			if err := db.recordBillCreate(ctx, tx, r.OutBillNo, r.BillCreate); err != nil {
				what = r.OutBillNo
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record bill create %s: %w", what, err)
	}
	return nil
}

// recordBillCreate is RecordBillCreate inside a write.
func (db *DB) recordBillCreate(ctx context.Context, tx *sql.Conn, outBillNo string, r BillCreate) error {
	b, err := billTx(ctx, tx, outBillNo)
	if err != nil {
		return err
	}
	now := db.now()
	next := r.NextAt
	if next.IsZero() {
		next = now
	}
	if _, err := tx.ExecContext(ctx, `UPDATE bills SET attempts = attempts + 1, last_error_code = ?, last_error_message = ?,
		next_at = ?, updated_at = ? WHERE out_bill_no = ?`, r.ErrorCode, capMessage(r.ErrorMessage), ms(next), ms(now), outBillNo); err != nil {
		return err
	}
	b.Attempts++
	b.NextAt = next
	if err := db.appendEvent(ctx, tx, event{Source: string(SourceSubmit), Kind: kindBillCreate, OutBatchNo: b.OutBatchNo,
		Seqs: encodeSeqs([]int64{b.Seq}), From: b.State, To: b.State, Data: jsonString(map[string]any{
			"attempt": b.Attempts, "outcome": r.Outcome.String(), "code": r.ErrorCode, "transfer_bill_no": r.State.TransferBillNo,
			"state": r.State.State})}); err != nil {
		return err
	}
	switch r.Outcome {
	case SubmitAccepted:
		return db.applyBill(ctx, tx, b, SourceSubmit, r.State, next)
	case SubmitRejected:
		if b.State != PayoutSealed {
			return db.illegalf(ctx, "bill %s %s → %s", outBillNo, b.State, PayoutRejected)
		}
		if err := db.moveBill(ctx, tx, &b, SourceSubmit, PayoutRejected, r.ErrorCode); err != nil {
			return err
		}
		return db.settleBill(ctx, tx, b, SourceSubmit)
	case SubmitRetry:
		return db.refreshBatch(ctx, tx, b.OutBatchNo, SourceSubmit)
	}
	return fmt.Errorf("%w: create outcome %d", ErrInvalid, r.Outcome)
}

// ApplyBillState applies a verified bill state to bill outBillNo in one transaction, moving
// the member forward only (see the bills rail's state machine in states.go): the same or an
// earlier state is stale and ignored without error; another final after a final, a state of
// a bill WeChat never saw (REJECTED, cancelled locally), or a transfer_bill_no other than
// the one stored is logged, counted and returned as ErrIllegalTransition. It stores
// transfer_bill_no, package_info (if given), create_time and expire_at (create_time +
// BillConfirmWindow), and fail_reason on FAIL; a final state writes the outcome. The first
// time the bill is WAIT_USER_CONFIRM with a package_info known, a WAIT_USER_CONFIRM notice is
// written. NotFoundSince is cleared and NextAt set. A final bill is settled (an open cancel
// closed: done if CANCELLED, else refused with a CANCEL_REFUSED notice), and the batch is
// settled (FINISHED, sums of SUCCESS and FAIL members) once all its bills are; the batch's
// NextAt is kept at the earliest NextAt of its unsettled bills. ErrNotFound for an unknown
// bill; ErrInvalid for a state that is not a bill state.
func (db *DB) ApplyBillState(ctx context.Context, outBillNo string, src Source, st BillState, nextAt time.Time) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		b, err := billTx(ctx, tx, outBillNo)
		if err != nil {
			return err
		}
		return db.applyBill(ctx, tx, b, src, st, nextAt)
	})
	if err != nil {
		return fmt.Errorf("apply bill state %s: %w", outBillNo, err)
	}
	return nil
}

// BillNotice is what a verified MCHTRANSFER.BILL.FINISHED notification says of a bill.
type BillNotice struct {
	MchID  string // the merchant it names; "" when it names none
	Amount int64  // transfer_amount, fen
	BillState
}

// ApplyBillCallback applies a verified MCHTRANSFER.BILL.FINISHED notification n of bill
// outBillNo and returns the bill's out_batch_no, in one transaction that first checks n
// against the bill:
//   - a merchant (when n names one) or an amount other than the bill's is ErrInvalid, and
//     nothing is written: verified, yet not what was sent, so a human looks (the query sweep
//     decides the bill);
//   - a FAIL without its fail_reason is not applied ("", nil): the query sweep brings the
//     reason;
//   - a notificationID already processed is a no-op;
//   - otherwise it is recorded and ApplyBillState runs with SourceCallback, keeping the
//     bill's NextAt.
func (db *DB) ApplyBillCallback(ctx context.Context, notificationID, outBillNo string, n BillNotice) (string, error) {
	var batch string
	err := db.write(ctx, func(tx *sql.Conn) error {
		b, err := billTx(ctx, tx, outBillNo)
		switch {
		case err != nil:
			return err
		case n.MchID != "" && n.MchID != b.MchID, n.Amount != b.Amount:
			return fmt.Errorf("%w: the notification says mchid %s amount %d, the ledger %s amount %d", ErrInvalid,
				n.MchID, n.Amount, b.MchID, b.Amount)
		case n.State == PayoutFail && n.FailReason == "":
			return nil
		}
		r, err := tx.ExecContext(ctx, `INSERT INTO notifications (id, out_batch_no, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			notificationID, b.OutBatchNo, ms(db.now()))
		if err != nil {
			return err
		}
		batch = b.OutBatchNo
		if added, err := r.RowsAffected(); err != nil || added == 0 {
			return err // a notification seen before: a no-op
		}
		return db.applyBill(ctx, tx, b, SourceCallback, n.BillState, b.NextAt)
	})
	if err != nil {
		return "", fmt.Errorf("apply bill callback %s for %s: %w", notificationID, outBillNo, err)
	}
	return batch, nil
}

// RescheduleBill records a failed call or a NOT_FOUND answer for bill outBillNo: NextAt and
// last_error_code are set, and NotFoundSince is set to now when notFound and not already
// set. last_error_message is kept while the code stays the same and cleared when it changes.
// ErrNotFound for an unknown bill.
func (db *DB) RescheduleBill(ctx context.Context, outBillNo string, nextAt time.Time, errCode string, notFound bool) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		now := ms(db.now())
		var batch string
		err := tx.QueryRowContext(ctx, `UPDATE bills SET next_at = ?, last_error_code = ?, updated_at = ?,
			last_error_message = CASE WHEN last_error_code = ? THEN last_error_message ELSE '' END,
			not_found_since = CASE WHEN ? AND not_found_since = 0 THEN ? ELSE not_found_since END WHERE out_bill_no = ?
			RETURNING out_batch_no`, ms(nextAt), errCode, now, errCode, notFound, now, outBillNo).Scan(&batch)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return db.refreshBatch(ctx, tx, batch, SourceQuery)
	})
	if err != nil {
		return fmt.Errorf("reschedule bill %s: %w", outBillNo, err)
	}
	return nil
}

// RequestCancel records an upstream cancel of payout outDetailNo (payout.CancelRequest) and
// returns the payout's state. ErrNotFound: no such payout here; ErrCannotCancel: its rail is
// direct or partner, or it is DUPLICATE; ErrFinal: it is final (the state is returned with
// both). A repeat is a no-op (nil). A payout not yet sealed keeps the request and its bill
// takes it over when sealed; a sealed one's bill is due now (NextAt). A reason over
// MaxCancelReason characters is ErrInvalid.
func (db *DB) RequestCancel(ctx context.Context, outDetailNo, reason string) (state string, err error) {
	if utf8.RuneCountInString(reason) > MaxCancelReason || !utf8.ValidString(reason) {
		return "", fmt.Errorf("request cancel: %w: reason: want at most %d characters of valid text", ErrInvalid, MaxCancelReason)
	}
	err = db.write(ctx, func(tx *sql.Conn) error {
		stored, err := db.lookupKeys(ctx, tx, []string{outDetailNo})
		if err != nil {
			return err
		}
		k, ok := stored[outDetailNo]
		if !ok {
			return ErrNotFound
		}
		var rail string
		if err := tx.QueryRowContext(ctx, `SELECT rail FROM payouts WHERE seq = ?`, k.seq).Scan(&rail); err != nil {
			return err
		}
		state = k.state
		var requested int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM cancels WHERE seq = ?`, k.seq).Scan(&requested); err != nil {
			return err
		}
		switch {
		case rail != RailBills || state == PayoutDuplicate:
			return fmt.Errorf("%w: rail %s, state %s", ErrCannotCancel, rail, state)
		case requested > 0:
			return nil // a repeat (a redelivery, say): the first one is answered, even if the payout is final by now
		case PayoutFinal(state):
			return fmt.Errorf("%w: %s", ErrFinal, state)
		}
		now := ms(db.now())
		r, err := tx.ExecContext(ctx, `INSERT INTO cancels (seq, reason, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, k.seq, reason, now)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return err // a repeat
		}
		var batch string
		err = tx.QueryRowContext(ctx, `UPDATE bills SET cancel_requested_at = ?, cancel_reason = ?, next_at = ?, updated_at = ?
			WHERE seq = ? RETURNING out_batch_no`, now, reason, now, now, k.seq).Scan(&batch)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := db.appendEvent(ctx, tx, event{Source: srcIntake, Kind: kindCancel, OutBatchNo: batch,
			Seqs: encodeSeqs([]int64{k.seq}), From: state, To: state,
			Data: jsonString(map[string]any{"cancel": "requested", "reason": reason})}); err != nil {
			return err
		}
		if batch == "" { // not sealed yet
			return nil
		}
		return db.refreshBatch(ctx, tx, batch, SourceSubmit)
	})
	if err != nil {
		return state, fmt.Errorf("request cancel: %w", err)
	}
	return state, nil
}

// RecordCancel records one cancel of bill outBillNo in one transaction (cancel_attempts++
// for every outcome but CancelLocal, which sent nothing; last_error_code and NextAt set).
// CancelAccepted applies State (CANCELING or CANCELLED) as ApplyBillState does. CancelRetry
// changes nothing else. CancelRefused closes the cancel and writes a CANCEL_REFUSED notice
// (code WECHAT_REFUSED, WeChat's ErrorCode in the detail); the bill is followed on as
// before. CancelLocal makes a bill WeChat never saw (attempts 0, still SEALED, checked here,
// else ErrIllegalTransition) CANCELLED without WeChat and writes its outcome. ErrNotFound
// for an unknown bill; ErrInvalid when no cancel was requested for it.
func (db *DB) RecordCancel(ctx context.Context, outBillNo string, r CancelResult) error {
	err := db.write(ctx, func(tx *sql.Conn) error {
		b, err := billTx(ctx, tx, outBillNo)
		if err != nil {
			return err
		}
		if b.CancelRequestedAt.IsZero() {
			return fmt.Errorf("%w: no cancel requested", ErrInvalid)
		}
		now := db.now()
		next := r.NextAt
		if next.IsZero() {
			next = now
		}
		sent := 1
		if r.Outcome == CancelLocal {
			sent = 0
		}
		if _, err := tx.ExecContext(ctx, `UPDATE bills SET cancel_attempts = cancel_attempts + ?, last_error_code = ?, next_at = ?,
			last_error_message = CASE WHEN last_error_code = ? THEN last_error_message ELSE '' END,
			updated_at = ? WHERE out_bill_no = ?`, sent, r.ErrorCode, ms(next), r.ErrorCode, ms(now), outBillNo); err != nil {
			return err
		}
		b.CancelAttempts += sent
		b.NextAt = next
		if err := db.appendEvent(ctx, tx, event{Source: string(SourceSubmit), Kind: kindCancel, OutBatchNo: b.OutBatchNo,
			Seqs: encodeSeqs([]int64{b.Seq}), From: b.State, To: b.State, Data: jsonString(map[string]any{
				"cancel": "attempt", "attempt": b.CancelAttempts, "outcome": r.Outcome.String(), "code": r.ErrorCode,
				"state": r.State.State})}); err != nil {
			return err
		}
		switch r.Outcome {
		case CancelAccepted:
			if s := r.State.State; s != PayoutCanceling && s != PayoutCancelled {
				return fmt.Errorf("%w: accepted cancel answers %q, want CANCELING or CANCELLED", ErrInvalid, s)
			}
			return db.applyBill(ctx, tx, b, SourceSubmit, r.State, next)
		case CancelRetry:
			return db.refreshBatch(ctx, tx, b.OutBatchNo, SourceSubmit)
		case CancelRefused:
			if b.closed == cancelOpen {
				if err := db.closeCancel(ctx, tx, &b, SourceSubmit, cancelRefused, codeWeChatRefused,
					"WeChat refused the cancel ("+r.ErrorCode+")"); err != nil {
					return err
				}
			}
			return db.refreshBatch(ctx, tx, b.OutBatchNo, SourceSubmit)
		case CancelLocal:
			if b.Attempts != 0 || b.State != PayoutSealed {
				return db.illegalf(ctx, "bill %s: local cancel of a bill %s after %d creates", outBillNo, b.State, b.Attempts)
			}
			if err := db.moveBill(ctx, tx, &b, SourceSubmit, PayoutCancelled, ""); err != nil {
				return err
			}
			if err := db.closeCancel(ctx, tx, &b, SourceSubmit, cancelLocal, "", ""); err != nil {
				return err
			}
			return db.settleBill(ctx, tx, b, SourceSubmit)
		}
		return fmt.Errorf("%w: cancel outcome %d", ErrInvalid, r.Outcome)
	})
	if err != nil {
		return fmt.Errorf("record cancel %s: %w", outBillNo, err)
	}
	return nil
}

// applyBill is ApplyBillState inside a write.
func (db *DB) applyBill(ctx context.Context, tx *sql.Conn, b Bill, src Source, st BillState, nextAt time.Time) error {
	if billRank(st.State) < 1 || st.State == PayoutRejected {
		return fmt.Errorf("%w: bill state %q", ErrInvalid, st.State)
	}
	if b.State == PayoutRejected || b.closed == cancelLocal {
		return db.illegalf(ctx, "bill %s %s (never sent to WeChat) → %s (%s)", b.OutBillNo, b.State, st.State, src)
	}
	if b.TransferBillNo != "" && st.TransferBillNo != "" && st.TransferBillNo != b.TransferBillNo {
		return db.illegalf(ctx, "bill %s: transfer_bill_no %s, %s answer names %s", b.OutBillNo, b.TransferBillNo, src, st.TransferBillNo)
	}
	move := false
	switch cur := b.State; {
	case st.State == cur:
	case legalOn(RailBills, cur, st.State):
		move = true
	case PayoutFinal(cur) && PayoutFinal(st.State):
		return db.illegalf(ctx, "bill %s %s → %s (%s)", b.OutBillNo, cur, st.State, src)
	case billRank(st.State) < billRank(cur):
		// stale: an answer older than what is known
	default:
		return db.illegalf(ctx, "bill %s %s → %s (%s)", b.OutBillNo, cur, st.State, src)
	}
	// WeChat's facts about the bill, kept whether or not the state moves (a create replay of
	// a bill already known WAIT_USER_CONFIRM brings its package_info).
	tbn, pkg, create := b.TransferBillNo, b.PackageInfo, b.CreateTime
	if tbn == "" {
		tbn = st.TransferBillNo
	}
	if st.PackageInfo != "" {
		pkg = st.PackageInfo
	}
	if create.IsZero() && !st.CreateTime.IsZero() {
		create = st.CreateTime.UTC().Truncate(time.Millisecond)
	}
	var expire time.Time
	if !create.IsZero() {
		expire = create.Add(BillConfirmWindow)
	}
	after := b.State
	if move {
		after = st.State
	}
	if b.closed == cancelOpen && !b.CancelRequestedAt.IsZero() && b.CancelAttempts == 0 && cancellable(after) {
		// A cancel not yet tried waits for nobody: the payee may confirm any moment.
		if now := db.now(); now.Before(nextAt) {
			nextAt = now
		}
	}
	now := ms(db.now())
	if _, err := tx.ExecContext(ctx, `UPDATE bills SET transfer_bill_no = ?, package_info = ?, create_time = ?, expire_at = ?,
		not_found_since = 0, next_at = ?, updated_at = ? WHERE out_bill_no = ?`,
		tbn, pkg, ms(create), ms(expire), ms(nextAt), now, b.OutBillNo); err != nil {
		return err
	}
	if tbn != b.TransferBillNo || pkg != b.PackageInfo || !create.Equal(b.CreateTime) {
		if err := db.appendEvent(ctx, tx, event{At: now, Source: string(src), Kind: kindBill, OutBatchNo: b.OutBatchNo,
			Seqs: encodeSeqs([]int64{b.Seq}), From: b.State, To: b.State, Data: jsonString(map[string]any{
				"transfer_bill_no": tbn, "create_time": ms(create), "package_info": pkg != ""})}); err != nil {
			return err
		}
	}
	b.TransferBillNo, b.PackageInfo, b.CreateTime, b.ExpireAt, b.NextAt = tbn, pkg, create, expire, nextAt
	if err := db.markBatchKnown(ctx, tx, b.OutBatchNo, src); err != nil {
		return err
	}
	if move {
		reason := ""
		if st.State == PayoutFail {
			reason = st.FailReason
		}
		if err := db.moveBill(ctx, tx, &b, src, st.State, reason); err != nil {
			return err
		}
	}
	if b.State == PayoutWaitUserConfirm && b.PackageInfo != "" {
		if err := db.addNotice(ctx, tx, b.Seq, NoticeWaitUserConfirm, noticeData{TransferBillNo: b.TransferBillNo,
			PackageInfo: b.PackageInfo, ExpireAt: ms(b.ExpireAt)}); err != nil {
			return err
		}
	}
	if PayoutFinal(b.State) {
		return db.settleBill(ctx, tx, b, src)
	}
	return db.refreshBatch(ctx, tx, b.OutBatchNo, src)
}

// cancellable reports whether a cancel can be asked of WeChat for a bill in state
// (docs/transfer-bills.md §6: officially before the payee confirms; a staff answer says any
// state not final).
func cancellable(state string) bool {
	switch state {
	case PayoutAccepted, PayoutProcessing, PayoutWaitUserConfirm, PayoutTransfering:
		return true
	}
	return false
}

// moveBill moves a bill's payout from b.State to to (legality checked by the caller), with
// the outcome row when to is final, and records when the bill entered it.
func (db *DB) moveBill(ctx context.Context, tx *sql.Conn, b *Bill, src Source, to, failReason string) error {
	now := ms(db.now())
	if err := db.movePayouts(ctx, tx, payoutMove{src: string(src), batch: b.OutBatchNo, seqs: []int64{b.Seq}, from: b.State,
		to: to, failReason: failReason, at: now, data: jsonString(map[string]any{"out_bill_no": b.OutBillNo,
			"transfer_bill_no": b.TransferBillNo, "fail_reason": failReason})}); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE bills SET state_at = ? WHERE out_bill_no = ?`, now, b.OutBillNo); err != nil {
		return err
	}
	b.State = to
	return nil
}

// settleBill settles a final bill: an open cancel is closed (done if CANCELLED, else
// refused with a CANCEL_REFUSED notice: the bill ended otherwise first), then the batch is
// refreshed.
func (db *DB) settleBill(ctx context.Context, tx *sql.Conn, b Bill, src Source) error {
	if !b.CancelRequestedAt.IsZero() && b.closed == cancelOpen {
		closed, code, detail := cancelDone, "", ""
		if b.State != PayoutCancelled {
			closed, code, detail = cancelRefused, codeAlreadyFinal, "the bill reached "+b.State+" first"
		}
		if err := db.closeCancel(ctx, tx, &b, src, closed, code, detail); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE bills SET settled = 1 WHERE out_bill_no = ?`, b.OutBillNo); err != nil {
		return err
	}
	return db.refreshBatch(ctx, tx, b.OutBatchNo, src)
}

// closeCancel ends a bill's requested cancel as closed; refused writes a CANCEL_REFUSED
// notice with code and detail.
func (db *DB) closeCancel(ctx context.Context, tx *sql.Conn, b *Bill, src Source, closed, code, detail string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE bills SET cancel_closed = ? WHERE out_bill_no = ?`, closed, b.OutBillNo); err != nil {
		return err
	}
	b.closed, b.CancelClosed = closed, true
	if closed == cancelRefused {
		if err := db.addNotice(ctx, tx, b.Seq, NoticeCancelRefused, noticeData{TransferBillNo: b.TransferBillNo, Code: code,
			Detail: detail, State: b.State}); err != nil {
			return err
		}
	}
	return db.appendEvent(ctx, tx, event{Source: string(src), Kind: kindCancel, OutBatchNo: b.OutBatchNo,
		Seqs: encodeSeqs([]int64{b.Seq}), From: b.State, To: b.State,
		Data: jsonString(map[string]any{"cancel": closed, "code": code})})
}

// markBatchKnown moves a rail-bills batch SEALED → PROCESSING once WeChat has answered for
// one of its bills.
func (db *DB) markBatchKnown(ctx context.Context, tx *sql.Conn, outBatchNo string, src Source) error {
	now := ms(db.now())
	r, err := tx.ExecContext(ctx, `UPDATE batches SET state = 'PROCESSING', state_at = ?, accepted_at = ?, updated_at = ?
		WHERE out_batch_no = ? AND state = 'SEALED'`, now, now, now, outBatchNo)
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil || n == 0 {
		return err
	}
	return db.appendEvent(ctx, tx, event{At: now, Source: string(src), Kind: kindBatchState, OutBatchNo: outBatchNo,
		From: BatchSealed, To: BatchProcessing})
}

// refreshBatch keeps a rail-bills batch's next_at at the earliest next_at of its unsettled
// bills and, once none is left, settles it: FINISHED with the sums of its SUCCESS and FAIL
// members.
func (db *DB) refreshBatch(ctx context.Context, tx *sql.Conn, outBatchNo string, src Source) error {
	var open int
	var next sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT count(*), min(next_at) FROM bills WHERE out_batch_no = ? AND settled = 0`,
		outBatchNo).Scan(&open, &next); err != nil {
		return err
	}
	now := ms(db.now())
	if open > 0 {
		_, err := tx.ExecContext(ctx, `UPDATE batches SET next_at = ?, updated_at = ? WHERE out_batch_no = ?`, next.Int64, now, outBatchNo)
		return err
	}
	var state string
	var settled bool
	if err := tx.QueryRowContext(ctx, `SELECT state, settled FROM batches WHERE out_batch_no = ?`, outBatchNo).Scan(&state, &settled); err != nil {
		return err
	}
	if settled {
		return nil
	}
	var sa, fa int64
	var sn, fn int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(CASE state WHEN 'SUCCESS' THEN amount END), 0),
		count(CASE state WHEN 'SUCCESS' THEN 1 END), coalesce(sum(CASE state WHEN 'FAIL' THEN amount END), 0),
		count(CASE state WHEN 'FAIL' THEN 1 END) FROM payouts WHERE out_batch_no = ?`, outBatchNo).Scan(&sa, &sn, &fa, &fn); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE batches SET state = 'FINISHED', success_amount = ?, success_num = ?, fail_amount = ?,
		fail_num = ?, settled = 1, state_at = ?, updated_at = ? WHERE out_batch_no = ?`, sa, sn, fa, fn, now, now, outBatchNo); err != nil {
		return err
	}
	return db.appendEvent(ctx, tx, event{At: now, Source: string(src), Kind: kindBatchState, OutBatchNo: outBatchNo,
		From: state, To: BatchFinished, Data: jsonString(map[string]any{"success_amount": sa, "success_num": sn,
			"fail_amount": fa, "fail_num": fn})})
}
