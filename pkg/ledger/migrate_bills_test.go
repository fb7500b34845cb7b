package ledger

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
)

// TestMigrate_0004KeepsRows: a ledger written under 0003 (settled and open batches, a
// published outcome, a conflict, a duplicate, loose rows) keeps every row, its event chain
// and its audit through 0004, and then takes bills.
func TestMigrate_0004KeepsRows(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	old, err := Open(ctx, path, WithNow(clk.now), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		func(d *DB) { d.upTo = 3 })
	if err != nil {
		t.Fatal(err)
	}
	ps := mustSeal(t, old, "B1", "a", 3)
	mustSeal(t, old, "B2", "b", 2)
	seqs := mustInsert(t, old, newPayout("loose", 700), newPayout("dup", 800))
	if err := old.MarkDuplicate(ctx, seqs[1], "owner1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := old.InsertPayouts(ctx, []Payout{newPayout("loose", 701)}); err != nil { // a conflict
		t.Fatal(err)
	}
	// (RecordSubmit writes last_error_message, which 0005 adds: B1 goes straight to its status.)
	if err := old.ApplyBatchStatus(ctx, "B1", SourceQuery, BatchStatus{BatchID: "wx1", Status: BatchFinished,
		SuccessAmount: ps[0].Amount + ps[1].Amount, SuccessNum: 2, FailAmount: ps[2].Amount, FailNum: 1}, clk.now()); err != nil {
		t.Fatal(err)
	}
	if _, err := old.ApplyDetailPage(ctx, "B1", SourceQuery, 0, []DetailRow{
		{OutDetailNo: "a0", DetailID: "d0", Status: PayoutSuccess}, {OutDetailNo: "a1", DetailID: "d1", Status: PayoutSuccess},
		{OutDetailNo: "a2", DetailID: "d2", Status: PayoutFail, FailReason: "ACCOUNT_FROZEN"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := old.MarkPublished(ctx, []int64{1}); err != nil { // PendingOutcomes reads bills (0004)
		t.Fatal(err)
	}
	tables := []string{"batches", "payouts", "outcomes", "conflicts", "events", "notifications", "meta"}
	dump := func(db *DB) string {
		t.Helper()
		var out string
		for _, tb := range tables {
			var n int
			var sum string
			q := fmt.Sprintf(`SELECT count(*), coalesce(group_concat(r, '|'), '') FROM (SELECT quote(%s) AS r FROM %s ORDER BY 1)`,
				map[string]string{"batches": "out_batch_no || state || body || settled || success_amount || next_at",
					"payouts":  "seq || out_detail_no || state || amount || coalesce(out_batch_no, '') || fail_reason || content_hash",
					"outcomes": "id || seq || state || published_at", "conflicts": "id || seq", "events": "id || hex(hash)",
					"notifications": "id", "meta": "key || value"}[tb], tb)
			if err := db.rdb.QueryRowContext(ctx, q).Scan(&n, &sum); err != nil {
				t.Fatalf("%s: %v", tb, err)
			}
			out += fmt.Sprintf("%s %d %s\n", tb, n, sum)
		}
		return out
	}
	before := dump(old)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db := mustOpenPath(t, path, WithNow(clk.now))
	if after := dump(db); after != before {
		t.Fatalf("rows changed by the migration:\nbefore\n%s\nafter\n%s", before, after)
	}
	sumAfter, err := db.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := db.Ops(ctx, clk.now(), 10) // payout_totals (0005) computed from the rows already there
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ops.Payouts), fmt.Sprint(sumAfter.Payouts); got != want {
		t.Fatalf("Ops.Payouts after the migration = %s, want %s (Summary)", got, want)
	}
	if got, want := fmt.Sprint(sumAfter.Payouts), fmt.Sprintf("map[DUPLICATE:{1 800} FAIL:{1 %d} RECEIVED:{1 700} SEALED:{2 201} SUCCESS:{2 %d}]",
		ps[2].Amount, ps[0].Amount+ps[1].Amount); got != want || sumAfter.Conflicts != 2 || len(sumAfter.Bills) != 0 {
		t.Fatalf("Summary after the migration = %+v, want payouts %s and 2 conflicts", sumAfter, want)
	}
	var fk int
	if err := db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM pragma_foreign_key_check`).Scan(&fk); err != nil || fk != 0 {
		t.Fatalf("foreign_key_check: %d rows, %v", fk, err)
	}
	var idx int
	if err := db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN
		('batches_due', 'payouts_keys', 'payouts_open', 'payouts_batch', 'outcomes_pending')`).Scan(&idx); err != nil || idx != 5 {
		t.Fatalf("%d of the 5 rebuilt tables' indexes, %v", idx, err)
	}
	// The chain, replay and views agree (owner1's ledger is not given).
	mustAuditFinds(t, clk.now(), map[string]int{"owner_missing": 1}, path)
	// The migrated file takes the bills rail, and its keys are still known.
	if _, err := db.InsertPayouts(ctx, []Payout{newPayout("loose", 700)}); err != nil {
		t.Fatal(err)
	}
	bs := mustSealBills(t, db, "BB1", "m", 2)
	if err := db.RecordBillCreate(ctx, bs[0].OutDetailNo, BillCreate{Outcome: SubmitAccepted,
		State: BillState{State: PayoutSuccess, TransferBillNo: "T"}, NextAt: clk.now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, db, "payouts", "out_detail_no = 'loose'"); n != 1 {
		t.Fatalf("%d rows for key loose after migration, want 1", n)
	}
	mustAuditFinds(t, clk.now(), map[string]int{"owner_missing": 1}, path)
}
