package ledger

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
)

// mustOpenInstructions opens the instruction table of path; t.Cleanup closes it.
func mustOpenInstructions(t *testing.T, path string, now func() time.Time) *Instructions {
	t.Helper()
	a, err := OpenInstructions(context.Background(), path, WithNow(now), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("OpenInstructions: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func newInstr(receipt, no string, appids ...string) NewInstruction {
	return NewInstruction{ReceiptID: receipt, OutInstructionNo: no, AppIDs: appids,
		Body: []byte(`{"out_instruction_no":"` + no + `"}` + "\n")}
}

func TestInstructions_Record(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	a := mustOpenInstructions(t, path, time.Now)

	first, created, err := a.Record(ctx, newInstr("R1", "I1", "wxa"))
	if err != nil || !created || first.State != InstrRecorded || first.OutInstructionNo != "I1" {
		t.Fatalf("Record: %+v created=%v err=%v", first, created, err)
	}
	// A restart records again with a fresh number: it gets the first number and body back.
	again, created, err := a.Record(ctx, newInstr("R1", "I2", "wxa"))
	if err != nil || created || again.ID != first.ID || again.OutInstructionNo != "I1" || string(again.Body) != string(first.Body) {
		t.Fatalf("Record again: %+v created=%v err=%v; want instruction I1 back", again, created, err)
	}
	if _, _, err := a.Record(ctx, newInstr("R1", "I3", "wxb")); !errors.Is(err, ErrInstructionLive) {
		t.Fatalf("Record with other app ids: %v, want ErrInstructionLive", err)
	}
	for _, in := range []NewInstruction{newInstr("", "I", "wx"), newInstr("R", "I"), {ReceiptID: "R", OutInstructionNo: "I", AppIDs: []string{"a,b"}, Body: []byte("{}")}} {
		if _, _, err := a.Record(ctx, in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Record(%+v): %v, want ErrInvalid", in, err)
		}
	}
	// Only a RECORDED instruction can be rejected; then the receipt takes a new number.
	if _, err := a.Reject(ctx, first.ID, "PARAM_ERROR"); err != nil {
		t.Fatal(err)
	}
	second, created, err := a.Record(ctx, newInstr("R1", "I4", "wxb"))
	if err != nil || !created || second.OutInstructionNo != "I4" {
		t.Fatalf("Record after a rejection: %+v created=%v err=%v", second, created, err)
	}
	open, err := a.Open(ctx)
	if err != nil || len(open) != 1 || open[0].ID != second.ID {
		t.Fatalf("Open: %+v %v; want only I4", open, err)
	}
	// The request is frozen.
	tamperErr := func(q string) error {
		t.Helper()
		return a.write(ctx, func(tx *sql.Conn) error {
			_, err := tx.ExecContext(ctx, q)
			return err
		})
	}
	if err := tamperErr(`UPDATE abnormal_instructions SET body = x'7b7d' WHERE id = 1`); err == nil {
		t.Error("a body was changed")
	}
	if err := tamperErr(`DELETE FROM abnormal_log`); err == nil {
		t.Error("the log was deleted")
	}
	mustAuditClean(t, time.Now(), path)
}

func TestInstructions_Apply(t *testing.T) {
	ctx := context.Background()
	a := mustOpenInstructions(t, filepath.Join(t.TempDir(), "ledger.db"), time.Now)
	ans := func(state string, amount int64) InstructionAnswer {
		return InstructionAnswer{ReceiptState: state, Amount: amount, CreateTime: "2026-03-01T08:00:00+08:00"}
	}
	tests := []struct {
		name      string
		from      []InstructionAnswer // applied first
		reject    bool
		apply     InstructionAnswer
		wantState string
		wantErr   error
	}{
		{name: "created", apply: ans(InstrPending, 100), wantState: InstrPending},
		{name: "forward", from: []InstructionAnswer{ans(InstrPending, 100)}, apply: ans(InstrProgress, 100), wantState: InstrProgress},
		{name: "skips ahead", apply: ans(InstrCompleted, 100), wantState: InstrCompleted},
		{name: "stale answer ignored", from: []InstructionAnswer{ans(InstrProgress, 100)}, apply: ans(InstrPending, 100), wantState: InstrProgress},
		{name: "final stays", from: []InstructionAnswer{ans(InstrCompleted, 100)}, apply: ans(InstrPending, 100), wantState: InstrCompleted},
		{name: "amount changed", from: []InstructionAnswer{ans(InstrPending, 100)}, apply: ans(InstrProgress, 99), wantState: InstrPending, wantErr: ErrIllegalTransition},
		{name: "unknown state", apply: ans("RECEIPT_STATE_LOST", 100), wantState: InstrRecorded, wantErr: ErrIllegalTransition},
		{name: "RECORDED is ours, not WeChat's", apply: ans(InstrRecorded, 100), wantState: InstrRecorded, wantErr: ErrIllegalTransition},
		{name: "rejected stays", reject: true, apply: ans(InstrPending, 100), wantState: InstrRejected, wantErr: ErrIllegalTransition},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, _, err := a.Record(ctx, newInstr(tc.name, "I"+string(rune('a'+i)), "wx"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Attempt(ctx, in.ID); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.from {
				if _, err := a.Apply(ctx, in.ID, f); err != nil {
					t.Fatal(err)
				}
			}
			if tc.reject {
				if _, err := a.Reject(ctx, in.ID, "NOT_FOUND"); err != nil {
					t.Fatal(err)
				}
			}
			got, err := a.Apply(ctx, in.ID, tc.apply)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Apply: %v, want %v", err, tc.wantErr)
			}
			if got, _ = a.Get(ctx, in.ID); got.State != tc.wantState {
				t.Fatalf("state %s, want %s", got.State, tc.wantState)
			}
			if InstrFinal(got.State) == got.FinalAt.IsZero() {
				t.Errorf("state %s with final_at %v", got.State, got.FinalAt)
			}
			if tc.wantErr == nil && (got.Amount != 100 || got.CreateTime == "") {
				t.Errorf("WeChat's fields not kept: %+v", got)
			}
		})
	}
	// An acknowledged instruction cannot be rejected.
	open, _ := a.Open(ctx)
	for _, in := range open {
		if in.State == InstrRecorded {
			continue
		}
		if _, err := a.Reject(ctx, in.ID, "late"); !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("Reject of %s: %v, want ErrIllegalTransition", in.State, err)
		}
	}
}

// TestInstructions_ApplyUnchanged: an answer that teaches nothing (a poll while the payee has
// not collected) writes nothing; one that does, writes.
func TestInstructions_ApplyUnchanged(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	a := mustOpenInstructions(t, filepath.Join(t.TempDir(), "ledger.db"), func() time.Time { return now })
	in, _, err := a.Record(ctx, newInstr("poll", "Ipoll", "wx"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attempt(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	pending := InstructionAnswer{ReceiptState: InstrPending, Amount: 100, CreateTime: "2026-03-01T16:00:00+08:00"}
	first, err := a.Apply(ctx, in.ID, pending)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	again, err := a.Apply(ctx, in.ID, pending)
	if err != nil {
		t.Fatal(err)
	}
	if !again.UpdatedAt.Equal(first.UpdatedAt) {
		t.Errorf("a repeated answer moved updated_at %v → %v", first.UpdatedAt, again.UpdatedAt)
	}
	pending.LastUpdateTime = "2026-03-01T17:00:00+08:00"
	now = now.Add(time.Hour)
	changed, err := a.Apply(ctx, in.ID, pending)
	if err != nil {
		t.Fatal(err)
	}
	if !changed.UpdatedAt.Equal(now) || changed.LastUpdateTime != pending.LastUpdateTime {
		t.Errorf("a new last_update_time: updated_at %v, last_update_time %q; want %v, %q", changed.UpdatedAt, changed.LastUpdateTime, now, pending.LastUpdateTime)
	}
}

// TestInstructions_BesideProcessor: the table is written while a processor holds the file.
func TestInstructions_BesideProcessor(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path)
	mustInsert(t, db, newPayout("k1", 100))
	a := mustOpenInstructions(t, path, time.Now)
	in, _, err := a.Record(ctx, newInstr("R1", "I1", "wx"))
	if err != nil {
		t.Fatal(err)
	}
	mustInsert(t, db, newPayout("k2", 100))
	if _, err := a.Attempt(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, in.ID, InstructionAnswer{ReceiptState: InstrCompleted, Amount: 5}); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, time.Now(), path)
}

// TestDB_Instructions: a processor's own table goes through its DB's one writer (each write
// is one of the DB's commits), and closing it leaves the DB open.
func TestDB_Instructions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	commits := 0
	db, err := Open(ctx, path, WithCommitObserver(func(time.Duration) { commits++ }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := db.Instructions()
	commits = 0 // Open's own
	in, _, err := a.Record(ctx, newInstr("R1", "I1", "wx"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attempt(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if commits != 2 {
		t.Errorf("%d commits of the DB's writer for a record and an attempt, want 2", commits)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	mustInsert(t, db, newPayout("k1", 100))
	if got, err := a.Get(ctx, in.ID); err != nil || got.Attempts != 1 {
		t.Fatalf("Get after Close: %+v, %v", got, err)
	}
	mustAuditClean(t, time.Now(), path)
}

func TestInstructions_Audit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	long := func() time.Time { return time.Now().Add(-2 * time.Hour) }
	old := mustOpenInstructions(t, path, long)
	if _, _, err := old.Record(ctx, newInstr("R1", "I1", "wx")); err != nil { // recorded, never sent
		t.Fatal(err)
	}
	week := func() time.Time { return time.Now().Add(-8 * 24 * time.Hour) }
	older := mustOpenInstructions(t, path, week)
	pending, _, err := older.Record(ctx, newInstr("R3", "I3", "wx"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := older.Attempt(ctx, pending.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := older.Apply(ctx, pending.ID, InstructionAnswer{ReceiptState: InstrPending}); err != nil { // acknowledged, never collected
		t.Fatal(err)
	}
	a := mustOpenInstructions(t, path, time.Now)
	in, _, _ := a.Record(ctx, newInstr("R2", "I2", "wx"))
	if _, err := a.Attempt(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	// Still retried and polled now: how long each has been in its state is what counts.
	stale, _ := a.Get(ctx, 1)
	if _, err := a.Attempt(ctx, stale.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Fail(ctx, stale.ID, "timeout"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, pending.ID, InstructionAnswer{ReceiptState: InstrPending}); err != nil {
		t.Fatal(err)
	}
	mustAuditFinds(t, time.Now(), map[string]int{"abnormal_stuck": 2}, path)
	// An attempt the log does not know of.
	if err := a.write(ctx, func(tx *sql.Conn) error {
		_, err := tx.ExecContext(ctx, `UPDATE abnormal_instructions SET attempts = 2 WHERE id = ?`, in.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mustAuditFinds(t, time.Now(), map[string]int{"abnormal_stuck": 2, "abnormal_history": 1}, path)
}

// TestInstructions_Contradicted: WeChat answering for an instruction the ledger holds REJECTED
// changes nothing, and the audit reports it (an answer for a RECORDED one is no contradiction).
func TestInstructions_Contradicted(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	a := mustOpenInstructions(t, path, time.Now)
	in, _, err := a.Record(ctx, newInstr("R1", "I1", "wx"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reject(ctx, in.ID, "NOT_FOUND"); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, time.Now(), path)
	for range 2 { // a callback WeChat delivers again
		got, err := a.Apply(ctx, in.ID, InstructionAnswer{ReceiptState: InstrCompleted, Amount: 5})
		if !errors.Is(err, ErrIllegalTransition) || got.State != InstrRejected {
			t.Fatalf("Apply to a REJECTED instruction: %s, %v; want it left REJECTED and ErrIllegalTransition", got.State, err)
		}
	}
	mustAuditFinds(t, time.Now(), map[string]int{"abnormal_contradicted": 1}, path)
}

// TestInstructions_WrongMerchant: the instruction table of a ledger bound to another merchant
// is refused, with or without a processor holding the file (an instruction sent from it would
// pay with this merchant's keys what that ledger records).
func TestInstructions_WrongMerchant(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := Open(ctx, path, WithMerchant("1900000001"))
	if err != nil {
		t.Fatal(err)
	}
	for _, held := range []bool{true, false} {
		if !held {
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := OpenInstructions(ctx, path, WithMerchant("1900000002")); !errors.Is(err, ErrWrongMerchant) {
			t.Fatalf("processor holding the file %v: OpenInstructions for another merchant = %v, want ErrWrongMerchant", held, err)
		}
		a, err := OpenInstructions(ctx, path, WithMerchant("1900000001"))
		if err != nil {
			t.Fatalf("processor holding the file %v: its own merchant: %v", held, err)
		}
		a.Close()
	}
}
