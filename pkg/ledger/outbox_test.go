package ledger

import (
	"context"
	"fmt"
	"testing"
)

func TestDB_Summary_FailReasons(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := mustSeal(t, db, "B1", "f", 4) // amounts 100, 101, 102, 103
	if _, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, []DetailRow{
		{OutDetailNo: ps[0].OutDetailNo, DetailID: "d0", Status: PayoutFail},
		{OutDetailNo: ps[1].OutDetailNo, DetailID: "d1", Status: PayoutFail, FailReason: "TRANSFER_QUOTA_EXCEED"},
		{OutDetailNo: ps[2].OutDetailNo, DetailID: "d2", Status: PayoutFail, FailReason: "TRANSFER_QUOTA_EXCEED"},
		{OutDetailNo: ps[3].OutDetailNo, DetailID: "d3", Status: PayoutSuccess},
	}); err != nil {
		t.Fatal(err)
	}
	mustInsert(t, db, newPayout("open", 500))
	s, err := db.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(s.FailReasons), "map[:{1 100} TRANSFER_QUOTA_EXCEED:{2 203}]"; got != want {
		t.Fatalf("FailReasons = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(s.Payouts), "map[FAIL:{3 303} RECEIVED:{1 500} SUCCESS:{1 103}]"; got != want {
		t.Fatalf("Payouts = %s, want %s", got, want)
	}
	empty, err := mustOpenLedger(t).Summary(ctx)
	if err != nil || empty.FailReasons == nil || len(empty.FailReasons) != 0 {
		t.Fatalf("Summary of an empty ledger = %+v, %v; want an empty FailReasons map", empty, err)
	}
}
