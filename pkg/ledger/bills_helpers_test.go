package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// newBillPayout returns a valid request on rail bills.
func newBillPayout(key string, amount int64) Payout {
	p := newPayout(key, amount)
	p.Rail, p.GroupKey, p.SceneID = RailBills, "bills/1900000109/wxapp", "1000"
	p.BillInfo = []byte(`{"user_recv_perception":"现金奖励","transfer_scene_report_infos":[{"info_type":"活动名称","info_content":"spring"}]}`)
	return p
}

// billBodyFor builds a transfer-bill create body (docs/transfer-bills.md) for p as a pipeline
// would.
func billBodyFor(p Payout) []byte {
	b, _ := json.Marshal(map[string]any{"appid": p.AppID, "out_bill_no": p.OutDetailNo, "transfer_scene_id": p.SceneID,
		"openid": p.OpenID, "transfer_amount": p.Amount, "transfer_remark": p.Remark})
	return b
}

// billBatchFor returns a sealable rail-bills batch of ps (which must carry their seqs).
func billBatchFor(no string, ps []Payout) Batch {
	b := batchFor(no, ps)
	for _, p := range ps {
		b.Bills = append(b.Bills, billBodyFor(p))
	}
	return b
}

// mustSealBills inserts n bill payouts keyed prefix0.. and claims and seals them as batch no.
func mustSealBills(t testing.TB, db *DB, no, prefix string, n int) []Payout {
	t.Helper()
	ps := make([]Payout, n)
	for i := range ps {
		ps[i] = newBillPayout(fmt.Sprintf("%s%d", prefix, i), int64(1000+i))
	}
	for i, s := range mustInsert(t, db, ps...) {
		ps[i].Seq = s
	}
	if err := db.ClaimAndSeal(context.Background(), billBatchFor(no, ps)); err != nil {
		t.Fatalf("ClaimAndSeal: %v", err)
	}
	return ps
}

// noticeFor is a notification of st for bill no that names the bill's merchant and amount as
// the ledger holds them.
func noticeFor(t testing.TB, db *DB, no string, st BillState) BillNotice {
	t.Helper()
	b := mustBill(t, db, no)
	return BillNotice{MchID: b.MchID, Amount: b.Amount, BillState: st}
}

// mustBill returns bill no or fails.
func mustBill(t testing.TB, db *DB, no string) Bill {
	t.Helper()
	b, err := db.Bill(context.Background(), no)
	if err != nil {
		t.Fatalf("Bill(%s): %v", no, err)
	}
	return b
}
