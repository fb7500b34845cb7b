package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// paidDay seals a direct batch of 3 and a bills batch of 2, pays two direct members just
// before midnight 2026-03-01 CST and the third just after, pays one bill that evening, fails
// the other. It returns the ledger and the keys.
func paidDay(t *testing.T) (*DB, []Payout, []Payout) {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 3, 1, 23, 58, 0, 0, ChinaTime)}
	db := mustOpenLedger(t, WithNow(clk.now))
	direct := mustSeal(t, db, "B1", "d", 3)
	bills := mustSealBills(t, db, "BB1", "b", 2)
	if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitAccepted, BatchID: "W1", BatchStatus: BatchProcessing}); err != nil {
		t.Fatal(err)
	}
	row := func(p Payout, st string) DetailRow {
		return DetailRow{OutDetailNo: p.OutDetailNo, DetailID: "D-" + p.OutDetailNo, Status: st}
	}
	clk.add(time.Minute) // 23:59
	if _, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, []DetailRow{row(direct[0], PayoutSuccess), row(direct[1], PayoutSuccess),
		row(direct[2], PayoutProcessing)}); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBillState(ctx, bills[0].OutDetailNo, SourceQuery, BillState{State: PayoutSuccess, TransferBillNo: "T-0"}, clk.now()); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBillState(ctx, bills[1].OutDetailNo, SourceQuery, BillState{State: PayoutFail, TransferBillNo: "T-1", FailReason: "OVERDUE_CLOSE"}, clk.now()); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Minute) // 00:01 on 2026-03-02
	if _, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, []DetailRow{row(direct[2], PayoutSuccess)}); err != nil {
		t.Fatal(err)
	}
	return db, direct, bills
}

func TestPaidOn(t *testing.T) {
	ctx := context.Background()
	db, direct, bills := paidDay(t)
	day := func(date string) string {
		ps, err := db.PaidOn(ctx, date)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, p := range ps {
			s = append(s, fmt.Sprintf("%s/%s/%s/%d/%s/%s/%s", p.OutDetailNo, p.Rail, p.State, p.Amount, p.OutBatchNo, p.Voucher,
				p.At.In(ChinaTime).Format("15:04")))
		}
		return strings.Join(s, " ")
	}
	if got, want := day("2026-03-01"), fmt.Sprintf("d0/direct/SUCCESS/%d/B1/D-d0/23:59 d1/direct/SUCCESS/%d/B1/D-d1/23:59 b0/bills/SUCCESS/%d/BB1/T-0/23:59",
		direct[0].Amount, direct[1].Amount, bills[0].Amount); got != want {
		t.Fatalf("PaidOn(2026-03-01) = %s\nwant %s", got, want)
	}
	if got, want := day("2026-03-02"), fmt.Sprintf("d2/direct/SUCCESS/%d/B1/D-d2/00:01", direct[2].Amount); got != want {
		t.Fatalf("PaidOn(2026-03-02) = %s, want %s", got, want)
	}
	if got := day("2026-02-28"); got != "" {
		t.Fatalf("PaidOn(2026-02-28) = %s, want none", got)
	}
	if _, err := db.PaidOn(ctx, "2026-3-1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PaidOn(2026-3-1) = %v, want ErrInvalid", err)
	}
}

func TestPaidOn_ReadOnly(t *testing.T) {
	db, _, _ := paidDay(t)
	ro, err := OpenReadOnly(context.Background(), db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	ps, err := ro.PaidOn(context.Background(), "2026-03-01")
	if err != nil || len(ps) != 3 {
		t.Fatalf("PaidOn on a read-only DB beside the writer = %d payouts, %v; want 3", len(ps), err)
	}
}

func TestPaidByVoucher(t *testing.T) {
	db, _, _ := paidDay(t)
	ps, err := db.PaidByVoucher(context.Background(), []string{"T-1", "D-d2", "nobody", ""})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.OutDetailNo+"/"+p.State+"/"+p.Voucher+"/"+fmt.Sprint(!p.At.IsZero()))
	}
	if got, want := strings.Join(got, " "), "d2/SUCCESS/D-d2/true b1/FAIL/T-1/true"; got != want {
		t.Fatalf("PaidByVoucher = %s, want %s", got, want)
	}
}

// run is a valid recorded run of date.
func run(date string) ReconcileRun {
	return ReconcileRun{Date: date, At: time.Date(2026, 3, 2, 10, 5, 0, 0, ChinaTime), Mode: RunThreeWay, Bill: RunBillFile,
		BillSHA1: strings.Repeat("ab", 20), Payouts: 3, Matched: 3, ReportSHA256: strings.Repeat("0f", 32)}
}

func TestRecordReconcile(t *testing.T) {
	ctx := context.Background()
	db, _, _ := paidDay(t) // the writer stays open, as a running processor's
	id, err := RecordReconcile(ctx, db.Path(), run("2026-03-01"))
	if err != nil {
		t.Fatalf("RecordReconcile beside the writer: %v", err)
	}
	if _, err := RecordReconcile(ctx, db.Path(), run("2026-03-02")); err != nil {
		t.Fatal(err)
	}
	runs, err := db.ReconcileRuns(ctx, "2026-03-01")
	if err != nil {
		t.Fatal(err)
	}
	want := run("2026-03-01")
	want.ID, want.At = id, want.At.UTC()
	if len(runs) != 1 || runs[0] != want {
		t.Fatalf("ReconcileRuns = %+v, want [%+v]", runs, want)
	}
	if all, err := db.ReconcileRuns(ctx, ""); err != nil || len(all) != 2 {
		t.Fatalf("ReconcileRuns(\"\") = %d runs, %v; want 2", len(all), err)
	}
	// The writer's own work goes on: the side connection took no lock it keeps.
	mustSeal(t, db, "B2", "e", 1)
	if err := db.RecordSubmit(ctx, "B2", SubmitResult{Outcome: SubmitAccepted, BatchID: "x2", BatchStatus: BatchProcessing}); err != nil {
		t.Fatal(err)
	}
	mustPublishAll(t, db)
	if _, err := db.wconn.ExecContext(ctx, `UPDATE reconcile_runs SET matched = 0`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("UPDATE reconcile_runs = %v, want refused as append-only", err)
	}
	if _, err := db.wconn.ExecContext(ctx, `DELETE FROM reconcile_runs`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("DELETE FROM reconcile_runs = %v, want refused as append-only", err)
	}
	mustAuditClean(t, time.Date(2026, 3, 2, 10, 6, 0, 0, ChinaTime), db.Path())
}

func TestRecordReconcile_Invalid(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	tests := []struct {
		name    string
		edit    func(*ReconcileRun)
		wantErr error
	}{
		{name: "bad date", edit: func(r *ReconcileRun) { r.Date = "2026-3-1" }, wantErr: ErrInvalid},
		{name: "no time", edit: func(r *ReconcileRun) { r.At = time.Time{} }, wantErr: ErrInvalid},
		{name: "unknown mode", edit: func(r *ReconcileRun) { r.Mode = "two-way" }, wantErr: ErrInvalid},
		{name: "unknown bill", edit: func(r *ReconcileRun) { r.Bill = "maybe" }, wantErr: ErrInvalid},
		{name: "file without its sha1", edit: func(r *ReconcileRun) { r.BillSHA1 = "" }, wantErr: ErrInvalid},
		{name: "uppercase sha1", edit: func(r *ReconcileRun) { r.BillSHA1 = strings.Repeat("AB", 20) }, wantErr: ErrInvalid},
		{name: "refused bill with a sha1", edit: func(r *ReconcileRun) { r.Bill = RunBillRefused }, wantErr: ErrInvalid},
		{name: "report digest too short", edit: func(r *ReconcileRun) { r.ReportSHA256 = "0f" }, wantErr: ErrInvalid},
		{name: "negative count", edit: func(r *ReconcileRun) { r.Missing = -1 }, wantErr: ErrInvalid},
		{name: "no bill that day", edit: func(r *ReconcileRun) { r.Bill, r.BillSHA1, r.Payouts, r.Matched = RunBillNone, "", 0, 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run("2026-03-01")
			tc.edit(&r)
			if _, err := RecordReconcile(ctx, db.Path(), r); !errors.Is(err, tc.wantErr) {
				t.Fatalf("RecordReconcile = %v, want %v", err, tc.wantErr)
			}
		})
	}
	if _, err := RecordReconcile(ctx, t.TempDir()+"/absent.db", run("2026-03-01")); err == nil {
		t.Fatal("RecordReconcile into a file that is no ledger succeeded")
	}
}

func TestAudit_ReconcileRuns(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	clean := run("2026-03-01")
	clean.Bill, clean.BillSHA1, clean.Payouts, clean.Matched = RunBillNone, "", 0, 0
	refusedReported := run("2026-03-02")
	refusedReported.Bill, refusedReported.BillSHA1, refusedReported.Matched, refusedReported.Missing = RunBillRefused, "", 0, 4
	refusedClean := run("2026-03-03") // a run that calls a day clean against a bill it did not believe
	refusedClean.Bill, refusedClean.BillSHA1 = RunBillRefused, ""
	noneButPaid := run("2026-03-04") // no bill, yet payouts that day, and nothing reported
	noneButPaid.Bill, noneButPaid.BillSHA1 = RunBillNone, ""
	for _, r := range []ReconcileRun{clean, refusedReported, refusedClean, noneButPaid} {
		if _, err := RecordReconcile(ctx, db.Path(), r); err != nil {
			t.Fatal(err)
		}
	}
	r := mustAuditFinds(t, time.Now(), map[string]int{"reconcile_runs": 2}, db.Path())
	var rows []string
	for _, v := range r.Violations {
		rows = append(rows, v.Row)
	}
	if got, want := strings.Join(rows, "; "), "reconcile_runs id=3 bill_date=2026-03-03; reconcile_runs id=4 bill_date=2026-03-04"; got != want {
		t.Fatalf("audit rows %s, want %s", got, want)
	}
}
