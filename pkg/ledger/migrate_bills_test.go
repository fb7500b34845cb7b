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
// and its audit through 0004 (and 0009, which moves the batch bodies out), and then takes
// bills.
func TestMigrate_0004KeepsRows(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	// Written under 0003 by the code of its day (today's cannot write 0003's batches): B1
	// (a0..a2) FINISHED with a0, a1 SUCCESS and a2 FAIL ACCOUNT_FROZEN, its outcome 1
	// published; B2 (b0, b1) SEALED; loose (700) RECEIVED and a conflict on it (701); dup (800)
	// DUPLICATE of owner1 with other content.
	if !loadFixture(t, "0003_rows", path) {
		t.Fatal("testdata/migrate/0003_rows.db.gz is missing")
	}
	old, err := Open(ctx, path, WithNow(clk.now), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		func(d *DB) { d.upTo = 3 })
	if err != nil {
		t.Fatal(err)
	}
	ps := []Payout{newPayout("a0", 100), newPayout("a1", 101), newPayout("a2", 102)}
	tables := []string{"batches", "payouts", "outcomes", "conflicts", "events", "notifications", "meta"}
	// batches as one row with its body, before and after 0009 moved the body out.
	withBodies := map[bool]string{false: "batches", true: "(SELECT b.*, bb.body FROM batches b JOIN batch_bodies bb USING (out_batch_no))"}
	dump := func(db *DB, moved bool) string {
		t.Helper()
		var out string
		for _, tb := range tables {
			var n int
			var sum string
			from := tb
			if tb == "batches" {
				from = withBodies[moved]
			}
			q := fmt.Sprintf(`SELECT count(*), coalesce(group_concat(r, '|'), '') FROM (SELECT quote(%s) AS r FROM %s ORDER BY 1)`,
				map[string]string{"batches": "out_batch_no || state || body || settled || success_amount || next_at",
					"payouts":  "seq || out_detail_no || state || amount || coalesce(out_batch_no, '') || fail_reason || content_hash",
					"outcomes": "id || seq || state || published_at", "conflicts": "id || seq", "events": "id || hex(hash)",
					"notifications": "id", "meta": "key || value"}[tb], from)
			if err := db.rdb.QueryRowContext(ctx, q).Scan(&n, &sum); err != nil {
				t.Fatalf("%s: %v", tb, err)
			}
			out += fmt.Sprintf("%s %d %s\n", tb, n, sum)
		}
		return out
	}
	before := dump(old, false)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db := mustOpenPath(t, path, WithNow(clk.now))
	if after := dump(db, true); after != before {
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
