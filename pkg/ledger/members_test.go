package ledger

import (
	"context"
	"maps"
	"testing"
)

func TestDB_MemberStates(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := mustSeal(t, db, "B1", "m", 3)
	mustSeal(t, db, "B2", "other", 2) // another batch's members are not B1's
	mustInsert(t, db, newPayout("loose", 100))
	if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wx1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBatchStatus(ctx, "B1", SourceQuery, BatchStatus{BatchID: "wx1", Status: BatchFinished}, db.now()); err != nil {
		t.Fatal(err)
	}
	rows := []DetailRow{
		{ps[0].OutDetailNo, "d0", PayoutSuccess, ""},
		{ps[1].OutDetailNo, "d1", PayoutFail, "ACCOUNT_FROZEN"},
	}
	if _, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, rows); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		outBatchNo string
		want       map[string]string
	}{
		{"every member with its state", "B1", map[string]string{
			ps[0].OutDetailNo: PayoutSuccess, ps[1].OutDetailNo: PayoutFail, ps[2].OutDetailNo: PayoutSealed}},
		{"untouched batch", "B2", map[string]string{"other0": PayoutSealed, "other1": PayoutSealed}},
		{"unknown batch is empty", "nope", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.MemberStates(ctx, tt.outBatchNo)
			if err != nil {
				t.Fatalf("MemberStates: %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("MemberStates(%s) = %v, want %v", tt.outBatchNo, got, tt.want)
			}
		})
	}
}
