package ledger

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// healthyBillsLedger builds a closed ledger with a rail-bills batch BB1 (h0 waiting for its
// payee, h1 paid, h2 accepted, h3 cancelled before it was sent) and a direct batch B2 that
// WeChat is processing.
func healthyBillsLedger(t *testing.T, clk *clock) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path, WithNow(clk.now))
	mustSealBills(t, db, "BB1", "h", 4)
	mustSeal(t, db, "B2", "d", 1)
	if err := db.RecordSubmit(ctx, "B2", SubmitResult{Outcome: SubmitAccepted, BatchID: "x2", BatchStatus: BatchProcessing}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		key string
		st  BillState
	}{
		{"h0", BillState{State: PayoutWaitUserConfirm, TransferBillNo: "Th0", PackageInfo: "pkg", CreateTime: clk.now()}},
		{"h1", BillState{State: PayoutTransfering, TransferBillNo: "Th1", CreateTime: clk.now()}},
		{"h2", BillState{State: PayoutAccepted, TransferBillNo: "Th2", CreateTime: clk.now()}},
	}
	for _, s := range steps {
		if err := db.RecordBillCreate(ctx, s.key, BillCreate{Outcome: SubmitAccepted, State: s.st, NextAt: clk.now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ApplyBillCallback(ctx, "n1", "h1", noticeFor(t, db, "h1", BillState{State: PayoutSuccess, TransferBillNo: "Th1"})); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RequestCancel(ctx, "h3", "typo"); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordCancel(ctx, "h3", CancelResult{Outcome: CancelLocal}); err != nil {
		t.Fatal(err)
	}
	mustPublishAll(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, clk.now(), path)
	return path
}

func TestAudit_Bills(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want map[string]int
	}{
		{name: "healthy", want: map[string]int{}},
		{name: "bill body amount edited",
			sql:  `UPDATE bills SET body = CAST(replace(CAST(body AS TEXT), '"transfer_amount":1000', '"transfer_amount":1') AS BLOB) WHERE out_bill_no = 'h0'`,
			want: map[string]int{"bill_rows": 1, "event_replay": 1}},
		{name: "bill body not json", sql: `UPDATE bills SET body = x'00' WHERE out_bill_no = 'h2'`,
			want: map[string]int{"bill_rows": 1, "event_replay": 1}},
		{name: "bill row deleted", sql: `DELETE FROM bills WHERE out_bill_no = 'h2'`,
			want: map[string]int{"bill_missing": 1, "event_replay": 1}},
		{name: "bill row renamed", sql: `UPDATE bills SET out_bill_no = 'zz' WHERE out_bill_no = 'h1'`,
			want: map[string]int{"bill_rows": 1}},
		{name: "bill for a direct member",
			sql: `INSERT INTO bills (out_bill_no, seq, out_batch_no, body, next_at, state_at, updated_at)
				SELECT out_detail_no, seq, out_batch_no, CAST('{"out_bill_no":"d0","transfer_amount":100}' AS BLOB), 0, 0, 0 FROM payouts WHERE out_detail_no = 'd0'`,
			want: map[string]int{"bill_rows": 1}},
		{name: "confirm notice deleted", sql: `DELETE FROM notices WHERE kind = 'WAIT_USER_CONFIRM'`,
			want: map[string]int{"bill_notice": 1}},
		{name: "transfer_bill_no shared", sql: `UPDATE bills SET transfer_bill_no = 'Th0' WHERE out_bill_no = 'h2'`,
			want: map[string]int{"bill_transfer_no": 1}},
		{name: "bill member in a batch-rail state", sql: `UPDATE payouts SET state = 'WAIT_PAY' WHERE out_detail_no = 'h2'`,
			want: map[string]int{"member_states": 1, "event_replay": 1, "payout_totals": 2}},
		{name: "cancelled without its outcome", sql: `DELETE FROM outcomes WHERE state = 'CANCELLED'`,
			want: map[string]int{"outcomes": 1}},
		{name: "bill batch over the cap", sql: `UPDATE batches SET total_num = 1001 WHERE out_batch_no = 'BB1'`,
			want: map[string]int{"batch_cap": 1, "batch_totals": 1, "batch_body": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			path := healthyBillsLedger(t, clk)
			if tt.sql != "" {
				tamper(t, path, tt.sql)
			}
			mustAuditFinds(t, clk.now(), tt.want, path)
		})
	}
}

func TestAudit_BillsOverTime(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := healthyBillsLedger(t, clk)
	db := mustOpenPath(t, path, WithNow(clk.now))
	if _, err := db.RequestCancel(ctx, "h2", ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		after time.Duration
		want  map[string]int
	}{
		{name: "cancel just requested", after: 59 * time.Minute, want: map[string]int{}},
		{name: "cancel open over an hour", after: 61 * time.Minute, want: map[string]int{"cancel_stuck": 1}},
		{name: "bills open past their expiry", after: BillConfirmWindow + BillOverdueMargin + time.Minute,
			want: map[string]int{"cancel_stuck": 1, "bill_overdue": 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustAuditFinds(t, clk.now().Add(tt.after), tt.want, path)
		})
	}
}

// TestAudit_Unaccepted: a batch still SEALED, or a bill WeChat never accepted, is stuck once
// its batch was sealed over StuckUnaccepted ago, with its own last code (and whether it is
// parked); a rail-bills batch is not (its bills are).
func TestAudit_Unaccepted(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path, WithNow(clk.now))
	mustSeal(t, db, "S1", "s", 1) // never sent
	mustSeal(t, db, "P1", "p", 1) // parked
	if err := db.RecordSubmit(ctx, "P1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH", NextAt: clk.now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	mustSeal(t, db, "A1", "a", 1) // WeChat has it
	if err := db.RecordSubmit(ctx, "A1", SubmitResult{Outcome: SubmitAccepted, BatchID: "xa", BatchStatus: BatchProcessing}); err != nil {
		t.Fatal(err)
	}
	mustSealBills(t, db, "BS", "n", 2) // no bill answered: the bills are flagged, not the batch
	mustSealBills(t, db, "BP", "m", 3) // m0 accepted, m1 parked, m2 never answered (a timeout)
	creates := map[string]BillCreate{
		"m0": {Outcome: SubmitAccepted, State: BillState{State: PayoutAccepted, TransferBillNo: "Tm0", CreateTime: clk.now()}},
		"m1": {Outcome: SubmitRetry, ErrorCode: "NO_AUTH"},
		"m2": {Outcome: SubmitRetry, ErrorCode: "TIMEOUT"},
	}
	for key, c := range creates {
		c.NextAt = clk.now().Add(time.Minute)
		if err := db.RecordBillCreate(ctx, key, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, clk.now().Add(StuckUnaccepted), path)
	r := mustAuditFinds(t, clk.now().Add(StuckUnaccepted+time.Minute), map[string]int{"stuck": 6}, path)
	got := map[string]string{}
	for _, v := range r.Violations {
		got[v.Row] = v.Detail
	}
	want := map[string]string{
		"batches out_batch_no=S1": "no code recorded",
		"batches out_batch_no=P1": "last code NOT_ENOUGH, parked: an operator must act",
		"bills out_bill_no=n0":    "no code recorded",
		"bills out_bill_no=n1":    "no code recorded",
		"bills out_bill_no=m1":    "last code NO_AUTH, parked: an operator must act",
		"bills out_bill_no=m2":    "last code TIMEOUT)",
	}
	for row, part := range want {
		if !strings.Contains(got[row], "SEALED 1h1m0s after sealing and never accepted by WeChat") || !strings.Contains(got[row], part) {
			t.Errorf("%s: %q, want it to say it was never accepted and %q", row, got[row], part)
		}
	}
}

// TestAudit_OutboxStuck: an outcome or notice event not published StuckOutbox after it was
// written is flagged, naming its payout; a published one never is.
func TestAudit_OutboxStuck(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path, WithNow(clk.now))
	seqs := mustInsert(t, db, newPayout("told", 100), newPayout("untold", 100))
	for _, seq := range seqs {
		if err := db.MarkDuplicate(ctx, seq, "elsewhere", false); err != nil {
			t.Fatal(err)
		}
	}
	outs, err := db.PendingOutcomes(ctx, 10)
	if err != nil || len(outs) != 2 {
		t.Fatalf("PendingOutcomes = %+v, %v; want 2", outs, err)
	}
	if err := db.MarkPublished(ctx, []int64{outs[0].ID}); err != nil {
		t.Fatal(err)
	}
	mustSealBills(t, db, "BB1", "h", 1)
	if err := db.RecordBillCreate(ctx, "h0", BillCreate{Outcome: SubmitAccepted,
		State: BillState{State: PayoutWaitUserConfirm, TransferBillNo: "Th0", PackageInfo: "pkg", CreateTime: clk.now()}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mustAuditFinds(t, clk.now().Add(StuckOutbox), map[string]int{"owner_missing": 2}, path)
	r := mustAuditFinds(t, clk.now().Add(StuckOutbox+time.Minute), map[string]int{"owner_missing": 2, "outbox_stuck": 2}, path)
	mustViolations(t, r, "outbox_stuck",
		"notices id=1 out_detail_no=h0: WAIT_USER_CONFIRM event unpublished for 11m0s (over 10m0s): upstream has not been told",
		"outcomes id=2 out_detail_no=untold: DUPLICATE event unpublished for 11m0s (over 10m0s): upstream has not been told")
}
