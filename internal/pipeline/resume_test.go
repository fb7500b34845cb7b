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

// TestResumeClaims covers the crash window "after the ledger commit, before the claim": the
// restarted replica claims its RECEIVED rows; one whose message was meanwhile redelivered to
// (and claimed by) another replica becomes a DUPLICATE here and is never batched.
func TestResumeClaims(t *testing.T) {
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

	rows := make([]ledger.Payout, 5)
	for i := range rows {
		key := fmt.Sprintf("R%d", i)
		h := sha256.Sum256([]byte(key))
		rows[i] = ledger.Payout{OutDetailNo: key, MchID: "1900000001", AppID: "wxa", OpenID: "o" + key, Remark: "r",
			Rail: payout.RailDirect, GroupKey: "g", Amount: 100, ContentHash: h[:], StreamSeq: uint64(i + 1)}
	}
	if _, err := db.InsertPayouts(ctx, rows); err != nil {
		t.Fatal(err)
	}
	other := claims.New(js, kv, "otherInstance")
	if _, err := other.Claim(ctx, []string{claims.Key("1900000001", "R3")}); err != nil {
		t.Fatal(err)
	}

	in := &intake{cfg: IntakeConfig{FetchBatch: 2}, db: db, claims: claims.New(js, kv, db.InstanceID()), log: slog.New(slog.DiscardHandler)}
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
