package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// States of an abnormal-fund instruction (abnormal_instructions.state, migration 0007;
// docs/abnormal-funds.md). The RECEIPT_STATE_* values are WeChat's receipt_state, in their
// order; InstrRecorded comes before them and InstrRejected stands apart.
const (
	// InstrRecorded: committed with its number and body; WeChat has not acknowledged it.
	InstrRecorded = "RECORDED"
	// InstrPending, InstrProgress: WeChat holds the instruction and has not completed it.
	InstrPending  = "RECEIPT_STATE_PENDING"
	InstrProgress = "RECEIPT_STATE_PROGRESS"
	// InstrCompleted: final; WeChat paid the receipt's money to the original payee.
	InstrCompleted = "RECEIPT_STATE_COMPLETED"
	// InstrRejected: final; WeChat definitely holds no instruction of this number (a
	// PARAM_ERROR, an unknown receipt, the receipt instructed under another number). Only an
	// instruction WeChat never acknowledged can be rejected.
	InstrRejected = "REJECTED"
)

// instrRank orders the forward-only states; InstrRejected has none.
var instrRank = map[string]int{InstrRecorded: 0, InstrPending: 1, InstrProgress: 2, InstrCompleted: 3}

// InstrFinal reports whether state is final (InstrCompleted or InstrRejected).
func InstrFinal(state string) bool { return state == InstrCompleted || state == InstrRejected }

// ErrInstructionLive: Record found the receipt's live instruction recorded with another
// request (app ids or notify_url). Its number and body are frozen: follow that one.
var ErrInstructionLive = errors.New("ledger: the receipt already has a live instruction")

// NewInstruction is what Record commits before an instruction's first send.
type NewInstruction struct {
	ReceiptID        string
	OutInstructionNo string   // chosen once by the caller; unique within the receipt
	AppIDs           []string // as in Body
	NotifyURL        string   // as in Body; "" for none
	Body             []byte   // the exact bytes every attempt sends
}

// Instruction is one abnormal-fund transfer instruction as the ledger holds it.
type Instruction struct {
	ID               int64
	ReceiptID        string
	OutInstructionNo string
	AppIDs           []string
	NotifyURL        string
	Body             []byte
	State            string // one of the Instr… states
	Amount           int64  // the receipt's amount in fen once WeChat told it; 0 before
	// WeChat's fields, as last answered.
	ProductName, CreateTime, LastUpdateTime, SuccessTime string
	Attempts                                             int    // sends begun
	LastError                                            string // the last send's or query's error; "" after a success
	CreatedAt, UpdatedAt, SentAt, FinalAt                time.Time
}

// LogValue shows the instruction without its body.
func (in Instruction) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("id", in.ID), slog.String("receipt_id", in.ReceiptID),
		slog.String("out_instruction_no", in.OutInstructionNo), slog.String("state", in.State),
		slog.Int64("amount", in.Amount), slog.Int("attempts", in.Attempts))
}

// InstructionAnswer is what WeChat said of an instruction: a create's answer, a query's or a
// callback's (docs/abnormal-funds.md). Amount is transfer_amount.total in fen.
type InstructionAnswer struct {
	ReceiptState                                         string
	Amount                                               int64
	ProductName, CreateTime, LastUpdateTime, SuccessTime string
}

// Instructions is the abnormal-fund instruction table of one ledger file.
//
// Each method is one BEGIN IMMEDIATE transaction. Opened by OpenInstructions (the operator's
// command), it works beside a live processor, which holds the file's writer lock: it writes
// through a connection of its own, which SQLite serializes with the processor's writes (each
// waits up to the busy timeout for the other). That is safe because only Instructions writes
// its tables (abnormal_instructions, abnormal_log) and they touch no state the processor
// keeps in memory. For the same reason their history is an append-only log checked by audit
// views (audit_abnormal_*), not the hash-chained events, whose head the processor keeps in
// memory. The processor itself uses DB.Instructions, through its one writer. Safe for
// concurrent use; Close it when done.
type Instructions struct {
	write func(ctx context.Context, fn func(tx *sql.Conn) error) error // one BEGIN IMMEDIATE transaction
	r     *sql.DB
	close func() error
	now   func() time.Time
	log   *slog.Logger
}

// Instructions returns the instruction table of db's own file, written through db's single
// writer and read through its readers. Closing it does nothing; closing db closes it.
func (db *DB) Instructions() *Instructions {
	return &Instructions{write: db.write, r: db.rdb, close: func() error { return nil }, now: db.now, log: db.log}
}

// OpenInstructions opens the instruction table of the ledger at path. With no processor
// holding the file it is opened (created if absent) and migrated first, as Open does; with
// one, the file must already be fully migrated. Options WithNow, WithLogger and WithMerchant
// apply (a file bound to another merchant is refused: ErrWrongMerchant); the others are
// ignored.
func OpenInstructions(ctx context.Context, path string, opts ...Option) (*Instructions, error) {
	cfg := &DB{now: time.Now, log: slog.Default()}
	for _, o := range opts {
		o(cfg)
	}
	switch db, err := Open(ctx, path, WithNow(cfg.now), WithLogger(cfg.log), WithMerchant(cfg.want)); {
	case err == nil:
		if err := db.Close(); err != nil {
			return nil, fmt.Errorf("open instructions: %w", err)
		}
	case !errors.Is(err, ErrLocked):
		return nil, fmt.Errorf("open instructions: %w", err)
	}
	r, err := openReader(ctx, path) // exists, is a ledger, fully migrated
	if err != nil {
		return nil, fmt.Errorf("open instructions: %w", err)
	}
	// A file bound to another merchant never pays for this one (docs/money-rules.md#merchant).
	if err := cfg.loadMerchant(ctx, r, false); err != nil {
		r.Close()
		return nil, fmt.Errorf("open instructions: %w", err)
	}
	w, err := sql.Open(driverName, dsn(path, false))
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open instructions %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	write := func(ctx context.Context, fn func(tx *sql.Conn) error) error {
		conn, err := w.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		return inTx(ctx, conn, fn)
	}
	return &Instructions{write: write, r: r, close: func() error { return errors.Join(w.Close(), r.Close()) },
		now: cfg.now, log: cfg.log}, nil
}

// Close closes the table's connections (none of a DB's Instructions).
func (a *Instructions) Close() error { return a.close() }

// instrCols selects an Instruction (scanInstr).
const instrCols = `id, receipt_id, out_instruction_no, appids, notify_url, body, state, amount, product_name,
	create_time, last_update_time, success_time, attempts, last_error, created_at, updated_at, sent_at, final_at`

func scanInstr(scan func(...any) error) (Instruction, error) {
	var in Instruction
	var appids string
	var created, updated, sent, final int64
	err := scan(&in.ID, &in.ReceiptID, &in.OutInstructionNo, &appids, &in.NotifyURL, &in.Body, &in.State, &in.Amount,
		&in.ProductName, &in.CreateTime, &in.LastUpdateTime, &in.SuccessTime, &in.Attempts, &in.LastError,
		&created, &updated, &sent, &final)
	in.AppIDs = strings.Split(appids, ",")
	in.CreatedAt, in.UpdatedAt, in.SentAt, in.FinalAt = fromMS(created), fromMS(updated), fromMS(sent), fromMS(final)
	return in, err
}

// getInstr reads instruction id inside tx.
func getInstr(ctx context.Context, tx querier, id int64) (Instruction, error) {
	var out []Instruction
	err := eachRow(ctx, tx, `SELECT `+instrCols+` FROM abnormal_instructions WHERE id = ?`, []any{id}, func(s func(...any) error) error {
		in, err := scanInstr(s)
		out = append(out, in)
		return err
	})
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("%w: abnormal-fund instruction id=%d", ErrNotFound, id)
	}
	if err != nil {
		return Instruction{}, err
	}
	return out[0], nil
}

// contradicted starts the detail of the log row written when WeChat answers with a state for
// an instruction the ledger holds REJECTED (migration 0008's audit_abnormal_contradicted
// matches it).
const contradicted = "contradicted: WeChat answers "

// logRow appends one row to abnormal_log.
func logRow(ctx context.Context, tx *sql.Conn, id, at int64, kind, from, to, detail string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO abnormal_log (instruction, at, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		id, at, kind, from, to, detail)
	return err
}

// Record commits in before its first send and returns it, created true. If the receipt
// already has a live (not rejected) instruction, Record returns that one, created false, and
// writes nothing: its number and body are the ones to send; when it was recorded with other
// app ids or another notify_url the error wraps ErrInstructionLive. An error wraps ErrInvalid
// for an incomplete in.
func (a *Instructions) Record(ctx context.Context, in NewInstruction) (_ Instruction, created bool, err error) {
	switch {
	case in.ReceiptID == "" || len(in.ReceiptID) > 64 || in.OutInstructionNo == "" || len(in.OutInstructionNo) > 64:
		return Instruction{}, false, fmt.Errorf("%w: instruction: receipt_id and out_instruction_no want 1 to 64 bytes", ErrInvalid)
	case len(in.AppIDs) == 0 || len(in.Body) == 0:
		return Instruction{}, false, fmt.Errorf("%w: instruction: no app id or no body", ErrInvalid)
	case slices.ContainsFunc(in.AppIDs, func(s string) bool { return s == "" || strings.Contains(s, ",") }):
		return Instruction{}, false, fmt.Errorf("%w: instruction: app ids %q", ErrInvalid, in.AppIDs)
	}
	var out Instruction
	err = a.write(ctx, func(tx *sql.Conn) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM abnormal_instructions WHERE receipt_id = ? AND state != ?`, in.ReceiptID, InstrRejected).Scan(&id)
		if err == nil {
			if out, err = getInstr(ctx, tx, id); err == nil && (!slices.Equal(out.AppIDs, in.AppIDs) || out.NotifyURL != in.NotifyURL) {
				err = fmt.Errorf("%w: receipt %s: instruction %s with app ids %q", ErrInstructionLive, in.ReceiptID, out.OutInstructionNo, out.AppIDs)
			}
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		now := ms(a.now())
		err = tx.QueryRowContext(ctx, `INSERT INTO abnormal_instructions (receipt_id, out_instruction_no, appids, notify_url, body, state,
			created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			in.ReceiptID, in.OutInstructionNo, strings.Join(in.AppIDs, ","), in.NotifyURL, in.Body, InstrRecorded, now, now).Scan(&id)
		if err != nil {
			return err
		}
		if err := logRow(ctx, tx, id, now, "record", "", InstrRecorded, ""); err != nil {
			return err
		}
		created = true
		out, err = getInstr(ctx, tx, id)
		return err
	})
	if err != nil {
		return out, false, fmt.Errorf("record instruction for receipt %s: %w", in.ReceiptID, err)
	}
	return out, created, nil
}

// Attempt counts one send of instruction id, before it goes out, and returns the
// instruction. An error wraps ErrNotFound for an unknown id.
func (a *Instructions) Attempt(ctx context.Context, id int64) (Instruction, error) {
	var out Instruction
	err := a.write(ctx, func(tx *sql.Conn) error {
		now := ms(a.now())
		res, err := tx.ExecContext(ctx, `UPDATE abnormal_instructions SET attempts = attempts + 1, updated_at = max(updated_at, ?),
			sent_at = CASE sent_at WHEN 0 THEN ? ELSE sent_at END WHERE id = ?`, now, now, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: abnormal-fund instruction id=%d", ErrNotFound, id)
		}
		if out, err = getInstr(ctx, tx, id); err != nil {
			return err
		}
		return logRow(ctx, tx, id, now, "attempt", "", "", fmt.Sprintf("attempt %d", out.Attempts))
	})
	if err != nil {
		return out, fmt.Errorf("instruction attempt: %w", err)
	}
	return out, nil
}

// Fail records msg, the error of a send or a query of instruction id, as its last_error. The
// state does not change. msg must hold no secret (WeChat's errors hold none).
func (a *Instructions) Fail(ctx context.Context, id int64, msg string) error {
	err := a.write(ctx, func(tx *sql.Conn) error {
		now := ms(a.now())
		res, err := tx.ExecContext(ctx, `UPDATE abnormal_instructions SET last_error = ?, updated_at = max(updated_at, ?) WHERE id = ?`, msg, now, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: abnormal-fund instruction id=%d", ErrNotFound, id)
		}
		return logRow(ctx, tx, id, now, "error", "", "", msg)
	})
	if err != nil {
		return fmt.Errorf("instruction error: %w", err)
	}
	return nil
}

// Apply records WeChat's answer about instruction id and returns the instruction. States
// move forward only: an answer behind the recorded state (a stale query) changes nothing and
// is not an error; a rejected instruction, an unknown receipt_state or a changed amount
// wraps ErrIllegalTransition and changes nothing. WeChat's fields are kept as last answered
// (empty ones do not erase). last_error is cleared. An answer that changes nothing (a poll of
// an instruction still waiting) writes nothing: updated_at stays when it was last changed.
func (a *Instructions) Apply(ctx context.Context, id int64, ans InstructionAnswer) (Instruction, error) {
	var out Instruction
	var illegal error
	err := a.write(ctx, func(tx *sql.Conn) error {
		cur, err := getInstr(ctx, tx, id)
		if err != nil {
			return err
		}
		rank, ok := instrRank[ans.ReceiptState]
		switch {
		case !ok || ans.ReceiptState == InstrRecorded:
			illegal = fmt.Errorf("%w: instruction %s: unknown receipt_state %q", ErrIllegalTransition, cur.OutInstructionNo, ans.ReceiptState)
		case cur.State == InstrRejected:
			illegal = fmt.Errorf("%w: instruction %s is REJECTED, WeChat answers %s", ErrIllegalTransition, cur.OutInstructionNo, ans.ReceiptState)
			// The ledger took WeChat to hold no instruction of this number; WeChat says it does.
			// Nothing changes, but the audit must see it (audit_abnormal_contradicted).
			if err := logRow(ctx, tx, id, ms(a.now()), "error", "", "", contradicted+ans.ReceiptState); err != nil {
				return err
			}
		case ans.Amount < 0 || (cur.Amount != 0 && ans.Amount != 0 && ans.Amount != cur.Amount):
			illegal = fmt.Errorf("%w: instruction %s: amount %d fen, WeChat now says %d", ErrIllegalTransition, cur.OutInstructionNo, cur.Amount, ans.Amount)
		}
		if illegal != nil {
			out = cur
			return nil
		}
		to := cur.State
		if rank > instrRank[cur.State] {
			to = ans.ReceiptState
		}
		now := ms(a.now())
		keep := func(old, new string) string {
			if new == "" {
				return old
			}
			return new
		}
		amount := cur.Amount
		if amount == 0 {
			amount = ans.Amount
		}
		var final int64
		if InstrFinal(to) {
			final = ms(cur.FinalAt)
			if final == 0 {
				final = now
			}
		}
		if to == cur.State && amount == cur.Amount && cur.LastError == "" && final == ms(cur.FinalAt) &&
			keep(cur.ProductName, ans.ProductName) == cur.ProductName && keep(cur.CreateTime, ans.CreateTime) == cur.CreateTime &&
			keep(cur.LastUpdateTime, ans.LastUpdateTime) == cur.LastUpdateTime && keep(cur.SuccessTime, ans.SuccessTime) == cur.SuccessTime {
			out = cur // a poll that learns nothing writes nothing
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE abnormal_instructions SET state = ?, amount = ?, product_name = ?, create_time = ?,
			last_update_time = ?, success_time = ?, last_error = '', updated_at = max(updated_at, ?), final_at = ? WHERE id = ?`,
			to, amount, keep(cur.ProductName, ans.ProductName), keep(cur.CreateTime, ans.CreateTime),
			keep(cur.LastUpdateTime, ans.LastUpdateTime), keep(cur.SuccessTime, ans.SuccessTime), now, final, id); err != nil {
			return err
		}
		if to != cur.State {
			if err := logRow(ctx, tx, id, now, "answer", cur.State, to, ""); err != nil {
				return err
			}
		}
		out, err = getInstr(ctx, tx, id)
		return err
	})
	if err == nil && illegal != nil {
		a.log.ErrorContext(ctx, "ledger: abnormal-fund answer refused", slog.String("error", illegal.Error()))
		err = illegal
	}
	if err != nil {
		return out, fmt.Errorf("apply instruction answer: %w", err)
	}
	return out, nil
}

// Reject makes instruction id final REJECTED for reason, which says why WeChat definitely
// holds no instruction of its number. Only a RECORDED instruction can be rejected (else the
// error wraps ErrIllegalTransition); rejecting a rejected one changes nothing.
func (a *Instructions) Reject(ctx context.Context, id int64, reason string) (Instruction, error) {
	var out Instruction
	err := a.write(ctx, func(tx *sql.Conn) error {
		cur, err := getInstr(ctx, tx, id)
		switch {
		case err != nil:
			return err
		case cur.State == InstrRejected:
			out = cur
			return nil
		case cur.State != InstrRecorded:
			return fmt.Errorf("%w: instruction %s is %s at WeChat, cannot be rejected (%s)", ErrIllegalTransition, cur.OutInstructionNo, cur.State, reason)
		}
		now := ms(a.now())
		if _, err := tx.ExecContext(ctx, `UPDATE abnormal_instructions SET state = ?, last_error = ?, updated_at = max(updated_at, ?), final_at = ?
			WHERE id = ? AND state = ?`, InstrRejected, reason, now, now, id, InstrRecorded); err != nil {
			return err
		}
		if err := logRow(ctx, tx, id, now, "reject", InstrRecorded, InstrRejected, reason); err != nil {
			return err
		}
		out, err = getInstr(ctx, tx, id)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("reject instruction: %w", err)
	}
	return out, nil
}

// Open returns every instruction not final (RECORDED, PENDING, PROGRESS),
// oldest first: the ones a restart must continue, by their numbers.
func (a *Instructions) Open(ctx context.Context) ([]Instruction, error) {
	return a.list(ctx, `WHERE state NOT IN (?, ?) ORDER BY id`, InstrCompleted, InstrRejected)
}

// All returns every instruction, oldest first.
func (a *Instructions) All(ctx context.Context) ([]Instruction, error) {
	return a.list(ctx, `ORDER BY id`)
}

// Get returns instruction id; an error wraps ErrNotFound for an unknown one.
func (a *Instructions) Get(ctx context.Context, id int64) (Instruction, error) {
	return getInstr(ctx, a.r, id)
}

// Find returns the instruction of receiptID numbered outInstructionNo; an error wraps
// ErrNotFound when the ledger has none (a callback for an instruction not ours).
func (a *Instructions) Find(ctx context.Context, receiptID, outInstructionNo string) (Instruction, error) {
	out, err := a.list(ctx, `WHERE receipt_id = ? AND out_instruction_no = ?`, receiptID, outInstructionNo)
	switch {
	case err != nil:
		return Instruction{}, err
	case len(out) == 0:
		return Instruction{}, fmt.Errorf("%w: abnormal-fund instruction %s of receipt %s", ErrNotFound, outInstructionNo, receiptID)
	}
	return out[0], nil
}

func (a *Instructions) list(ctx context.Context, where string, args ...any) ([]Instruction, error) {
	return listInstrs(ctx, a.r, where, args...)
}

// AbnormalInstructions returns every abnormal-fund instruction recorded in the ledger, oldest
// first; a read-only DB reads them too (reconcile reports them).
func (db *DB) AbnormalInstructions(ctx context.Context) ([]Instruction, error) {
	return listInstrs(ctx, db.rdb, `ORDER BY id`)
}

func listInstrs(ctx context.Context, q querier, where string, args ...any) ([]Instruction, error) {
	var out []Instruction
	err := eachRow(ctx, q, `SELECT `+instrCols+` FROM abnormal_instructions `+where, args, func(s func(...any) error) error {
		in, err := scanInstr(s)
		out = append(out, in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("instructions: %w", err)
	}
	return out, nil
}
