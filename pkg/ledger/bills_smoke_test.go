package ledger

import (
	"context"
	"testing"
	"time"
)

func TestBills_Smoke(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSealBills(t, db, "BB1", "s", 2)
	for _, p := range ps {
		if err := db.RecordBillCreate(ctx, p.OutDetailNo, BillCreate{Outcome: SubmitAccepted, State: BillState{State: PayoutWaitUserConfirm,
			TransferBillNo: "t" + p.OutDetailNo, PackageInfo: "pkg", CreateTime: clk.now()}, NextAt: clk.now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := db.ApplyBillState(ctx, p.OutDetailNo, SourceQuery, BillState{State: PayoutSuccess, TransferBillNo: "t" + p.OutDetailNo}, clk.now()); err != nil {
			t.Fatal(err)
		}
	}
	b, err := db.Batch(ctx, "BB1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", b.LogValue())
	if !b.Settled || b.State != BatchFinished || len(b.Bills) != 2 {
		t.Fatalf("batch %+v", b)
	}
	ns, _ := db.PendingNotices(ctx, 10)
	os, _ := db.PendingOutcomes(ctx, 10)
	t.Logf("%+v\n%+v", ns, os)
	mustAuditClean(t, clk.now(), db.Path())
}
