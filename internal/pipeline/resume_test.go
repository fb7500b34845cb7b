package pipeline

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/metrics"
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

// TestSweep covers payouts committed but not claimed (a claim whose outcome stayed unknown,
// a group cut short by a crash): the sweep claims every RECEIVED payout nothing is working
// on and hands the owned ones to the sealer; one meanwhile claimed by another replica
// becomes a DUPLICATE here and is never batched; one in the pending set (intake holds it) is
// left alone, and so is one of another merchant. A second sweep finds nothing to do.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)

	rows := testRows("R", 7)
	rows[6].MchID = "1900000002" // in a ledger written before merchants were checked
	res, err := db.InsertPayouts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	other := claims.New(js, kv, "otherInstance")
	if _, err := other.Claim(ctx, []claims.Item{{Key: claims.Key("1900000001", "R3"), Digest: rows[3].ContentHash}}); err != nil {
		t.Fatal(err)
	}
	claimed := make(chan []ledger.Payout, 10)
	in := &intake{m: metrics.New(""), prog: &progress{}, cfg: IntakeConfig{FetchBatch: 2}, db: db, claims: claims.New(js, kv, db.InstanceID()), pending: newPendingSet(),
		merchant: Merchant{MchID: "1900000001"}, prefix: payout.DefaultSubjectPrefix, claimed: claimed, log: slog.New(slog.DiscardHandler)}
	in.pending.seqs[res[5].Seq] = true // R5 is with intake right now

	if err := in.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	close(claimed)
	var got []string
	for ps := range claimed {
		for _, p := range ps {
			got = append(got, p.OutDetailNo)
			if !in.pending.seqs[p.Seq] {
				t.Errorf("%s handed to the sealer outside the pending set", p.OutDetailNo)
			}
		}
	}
	if want := []string{"R0", "R1", "R2", "R4"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("swept to the sealer %v, want %v", got, want)
	}
	for key, want := range map[string]string{"R3": ledger.PayoutDuplicate, "R5": ledger.PayoutReceived, "R6": ledger.PayoutReceived, "R0": ledger.PayoutReceived} {
		p, err := db.Payout(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if p.State != want {
			t.Errorf("%s: state %s, want %s", key, p.State, want)
		}
	}
	if _, err := kv.Get(ctx, claims.Key("1900000001", "R5")); err == nil {
		t.Error("R5 was claimed although intake holds it")
	}
	if _, err := kv.Get(ctx, claims.Key("1900000002", "R6")); err == nil {
		t.Error("R6, another merchant's, was claimed")
	}

	again := make(chan []ledger.Payout, 10)
	in.claimed = again
	if err := in.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(again); n != 0 {
		t.Fatalf("a second sweep handed %d groups to the sealer", n)
	}
}

// TestClaim_ConflictAcrossReplicas: the key is owned by another replica with other content
// (the same out_detail_no sent again with another amount, delivered here): the payout is
// recorded as a DUPLICATE with other content, never handed to the sealer.
func TestClaim_ConflictAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	rows := testRows("K", 2)
	res, err := db.InsertPayouts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	other := claims.New(js, kv, "otherInstance")
	theirs := sha256.Sum256([]byte("another amount"))
	items := []claims.Item{{Key: claims.Key("1900000001", "K0"), Digest: theirs[:]}, {Key: claims.Key("1900000001", "K1"), Digest: rows[1].ContentHash}}
	if _, err := other.Claim(ctx, items); err != nil {
		t.Fatal(err)
	}
	in := &intake{m: metrics.New(""), prog: &progress{}, db: db, claims: claims.New(js, kv, db.InstanceID()), pending: newPendingSet(), log: slog.New(slog.DiscardHandler)}
	for i := range rows {
		rows[i].Seq = res[i].Seq
		in.pending.seqs[res[i].Seq] = true
	}
	owned, err := in.claim(ctx, rows, nil)
	if err != nil || len(owned) != 0 {
		t.Fatalf("owned %d, %v; want none", len(owned), err)
	}
	for key, conflict := range map[string]bool{"K0": true, "K1": false} {
		p, err := db.Payout(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(p.FailReason, "other content"); p.State != ledger.PayoutDuplicate || got != conflict {
			t.Errorf("%s: %s %q, want DUPLICATE, conflict %v", key, p.State, p.FailReason, conflict)
		}
	}
	if len(in.pending.seqs) != 0 {
		t.Errorf("pending set keeps %v", in.pending.seqs)
	}
}

// TestRedeliveryClaimsOnce covers a key redelivered to the replica that holds it: while its
// payout is being claimed or waits in the sealer it is not claimed again, once sealed it
// never is, and after a failed claim (dropped from the pending set) it is claimed again.
func TestRedeliveryClaimsOnce(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	in := &intake{m: metrics.New(""), prog: &progress{}, db: db, claims: claims.New(js, kv, db.InstanceID()), pending: newPendingSet(), log: slog.New(slog.DiscardHandler)}
	rows := testRows("D", 3)
	deliver := func() committedGroup {
		t.Helper()
		c := committedGroup{rows: append([]ledger.Payout(nil), rows...)}
		if _, err := in.insert(ctx, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	pick := func(c committedGroup) []ledger.Payout {
		var out []ledger.Payout
		for _, i := range c.toClaim {
			out = append(out, c.rows[i])
		}
		return out
	}
	keys := func(c committedGroup) []string {
		var out []string
		for _, i := range c.toClaim {
			out = append(out, c.rows[i].OutDetailNo)
		}
		return out
	}

	first := deliver()
	owned, err := in.claim(ctx, pick(first), nil)
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

// TestClaim_FailureLeavesNothingPending: when recording a duplicate fails midway, the rows
// this instance already owns do not reach the sealer, so they must leave the pending set
// with the rest, or the sweep would never claim them again (stranded until a restart).
func TestClaim_FailureLeavesNothingPending(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	rows := testRows("F", 2)
	res, err := db.InsertPayouts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	// A claim value that names no valid instance: the ledger refuses to record it as owner.
	if _, err := kv.Create(ctx, claims.Key("1900000001", "F1"), []byte("not-an-id!")); err != nil {
		t.Fatal(err)
	}
	in := &intake{m: metrics.New(""), prog: &progress{}, db: db, claims: claims.New(js, kv, db.InstanceID()), pending: newPendingSet(), log: slog.New(slog.DiscardHandler)}
	for i := range rows {
		rows[i].Seq = res[i].Seq
		in.pending.seqs[res[i].Seq] = true
	}
	if _, err := in.claim(ctx, rows, nil); err == nil {
		t.Fatal("claim succeeded although F1's duplicate could not be recorded")
	}
	if len(in.pending.seqs) != 0 {
		t.Fatalf("pending set keeps %v: the sweep would never claim them", in.pending.seqs)
	}
}
