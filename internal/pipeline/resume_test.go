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

// TestClaimReceived_ConflictAcrossReplicas: the key of a RECEIVED payout (the sweep's) is owned by another replica with other content
// (the same out_detail_no sent again with another amount, delivered here): the payout is
// recorded as a DUPLICATE with other content, never handed to the sealer.
func TestClaimReceived_ConflictAcrossReplicas(t *testing.T) {
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
	owned, err := in.claimReceived(ctx, rows)
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

// TestClaimReceived_FailureLeavesNothingPending: when recording a duplicate fails midway, the rows
// this instance already owns do not reach the sealer, so they must leave the pending set
// with the rest, or the sweep would never claim them again (stranded until a restart).
func TestClaimReceived_FailureLeavesNothingPending(t *testing.T) {
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
	if _, err := in.claimReceived(ctx, rows); err == nil {
		t.Fatal("claim succeeded although F1's duplicate could not be recorded")
	}
	if len(in.pending.seqs) != 0 {
		t.Fatalf("pending set keeps %v: the sweep would never claim them", in.pending.seqs)
	}
}
