package pipeline

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// claimsSetup opens a ledger in a temporary directory and a claims bucket on an embedded
// JetStream server.
func claimsSetup(t *testing.T) (*ledger.DB, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	ctx := context.Background()
	db, err := ledger.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	js := natstest.Connect(t, natstest.Run(t))
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims"})
	if err != nil {
		t.Fatal(err)
	}
	return db, js, kv
}

// testRows returns n 100-fen direct payouts keyed prefix0, prefix1, ….
func testRows(prefix string, n int) []ledger.Payout {
	rows := make([]ledger.Payout, n)
	for i := range rows {
		key := fmt.Sprintf("%s%d", prefix, i)
		h := sha256.Sum256([]byte(key))
		rows[i] = ledger.Payout{OutDetailNo: key, MchID: "1900000001", AppID: "wxa", OpenID: "o" + key, Remark: "r",
			Rail: payout.RailDirect, GroupKey: "g", Amount: 100, ContentHash: h[:], StreamSeq: uint64(i + 1)}
	}
	return rows
}

// TestResumeClaims covers the crash window "after the ledger commit, before the claim": the
// restarted replica claims its RECEIVED rows; one whose message was meanwhile redelivered to
// (and claimed by) another replica becomes a DUPLICATE here and is never batched.
func TestResumeClaims(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)

	rows := testRows("R", 5)
	if _, err := db.InsertPayouts(ctx, rows); err != nil {
		t.Fatal(err)
	}
	other := claims.New(js, kv, "otherInstance")
	if _, err := other.Claim(ctx, []string{claims.Key("1900000001", "R3")}); err != nil {
		t.Fatal(err)
	}

	in := &intake{cfg: IntakeConfig{FetchBatch: 2}, db: db, claims: claims.New(js, kv, db.InstanceID()), pending: newPendingSet(), log: slog.New(slog.DiscardHandler)}
	if err := in.resume(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		p, err := db.Payout(ctx, r.OutDetailNo)
		if err != nil {
			t.Fatal(err)
		}
		want := ledger.PayoutClaimed
		if r.OutDetailNo == "R3" {
			want = ledger.PayoutDuplicate
		}
		if p.State != want {
			t.Errorf("%s: state %s, want %s", r.OutDetailNo, p.State, want)
		}
	}
	if left, err := db.PayoutsInState(ctx, ledger.PayoutReceived, 10); err != nil || len(left) != 0 {
		t.Fatalf("RECEIVED left after resume: %d, %v", len(left), err)
	}
}

// TestRedeliveryClaimsOnce covers a key redelivered to the replica that holds it: while its
// payout is being claimed or waits in the sealer it is not claimed again, once sealed it
// never is, and after a failed claim (dropped from the pending set) it is claimed again.
func TestRedeliveryClaimsOnce(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	in := &intake{db: db, claims: claims.New(js, kv, db.InstanceID()), pending: newPendingSet(), log: slog.New(slog.DiscardHandler)}
	rows := testRows("D", 3)
	deliver := func() committedGroup {
		t.Helper()
		c := committedGroup{rows: append([]ledger.Payout(nil), rows...)}
		if _, err := in.insert(ctx, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	keys := func(c committedGroup) []string {
		var out []string
		for _, i := range c.toClaim {
			out = append(out, c.rows[i].OutDetailNo)
		}
		return out
	}

	first := deliver()
	owned, err := in.claim(ctx, first.rows, first.toClaim)
	if err != nil || len(owned) != 3 {
		t.Fatalf("first delivery: owned %d, %v; want all 3", len(owned), err)
	}
	if got := keys(deliver()); len(got) != 0 {
		t.Fatalf("redelivered while pending: claims %v again", got)
	}

	// The sealer seals D0 and D1, then drops them from the pending set.
	body := `{"out_batch_no":"B1","total_amount":200,"total_num":2,"transfer_detail_list":[` +
		`{"out_detail_no":"D0","transfer_amount":100},{"out_detail_no":"D1","transfer_amount":100}]}`
	err = db.ClaimAndSeal(ctx, ledger.Batch{OutBatchNo: "B1", Rail: payout.RailDirect, GroupKey: "g", MchID: "1900000001",
		Members: []int64{owned[0].Seq, owned[1].Seq}, TotalAmount: 200, TotalNum: 2, Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	in.pending.drop(owned[0].Seq, owned[1].Seq)
	if got := keys(deliver()); len(got) != 0 {
		t.Fatalf("redelivered after the seal (D2 still pending): claims %v", got)
	}

	// D2's claim failed: finish drops it, and the next delivery claims it again.
	in.pending.drop(owned[2].Seq)
	if got := keys(deliver()); len(got) != 1 || got[0] != "D2" {
		t.Fatalf("redelivered after a failed claim: claims %v, want [D2]", got)
	}
}
