package pipeline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/journal"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestDriver_SendsOnlyLeasedAndJournaled: the driver sends nothing while its heartbeat lease
// is stale, nor a batch it could not journal; once both hold, the batch is in the journal,
// byte for byte, before WeChat has it.
func TestDriver_SendsOnlyLeasedAndJournaled(t *testing.T) {
	ctx := context.Background()
	srv := wechatpaytest.NewServer(t)
	js := natstest.Connect(t, natstest.Run(t))
	j, err := journal.Ensure(ctx, js, "batches", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var leased atomic.Bool
	p, b := sealedOn(t, srv, DefaultConfig(), Deps{Log: slog.New(slog.DiscardHandler), Journal: j, Leased: leased.Load},
		directRequest.Rail(), directRequest, []string{"oA", "oB"})
	held := func(code string) {
		t.Helper()
		if n := len(srv.Batches()); n != 0 {
			t.Fatalf("%d batches at WeChat; want none while %s", n, code)
		}
		got, err := p.driver.db.BatchHead(ctx, b.OutBatchNo)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastErrorCode != code || got.State != ledger.BatchSealed || !got.NextAt.After(time.Now()) {
			t.Fatalf("batch %s code %q due %v; want SEALED, %s, later", got.State, got.LastErrorCode, got.NextAt, code)
		}
	}

	p.driver.handle(ctx, b)
	held(codeHeartbeatStale)
	if es, err := j.Batches(ctx, p.driver.db.InstanceID()); err != nil || len(es) != 0 {
		t.Fatalf("journal holds %d entries (%v) before the lease holds", len(es), err)
	}

	leased.Store(true)
	if err := js.DeleteObjectStore(ctx, "batches"); err != nil {
		t.Fatal(err)
	}
	p.driver.handle(ctx, b)
	held(codeJournalUnavailable)

	// A journal that answers again (a new bucket: the server deletes the old one's stream in
	// the background, and may refuse a new store until it has: asked again for a while).
	deadline := time.Now().Add(30 * time.Second)
	for j, err = journal.Ensure(ctx, js, "batches2", 1, time.Hour); err != nil; j, err = journal.Ensure(ctx, js, "batches2", 1, time.Hour) {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	p.driver.journal = j
	p.driver.handle(ctx, b)
	body, err := p.driver.db.BatchBody(ctx, b.OutBatchNo)
	if err != nil || len(body) == 0 {
		t.Fatalf("the batch's frozen body: %q, %v", body, err)
	}
	es, err := j.Batches(ctx, p.driver.db.InstanceID())
	if err != nil || len(es) != 1 || es[0].OutBatchNo != b.OutBatchNo || !bytes.Equal(es[0].Body, body) {
		t.Fatalf("journal %+v (%v); want the batch %s with its body", es, err, b.OutBatchNo)
	}
	if bs := srv.Batches(); len(bs) != 1 || bs[0].OutBatchNo != b.OutBatchNo {
		t.Fatalf("batches at WeChat %+v; want %s", bs, b.OutBatchNo)
	}
}

// TestSweep_ClaimsOnlyLeased: while the heartbeat lease is stale, intake claims nothing (an
// adopter reading this instance's claims must see all of them) and leaves its payouts
// RECEIVED, out of the pending set; once it holds, the sweep claims them.
func TestSweep_ClaimsOnlyLeased(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	if _, err := db.InsertPayouts(ctx, testRows("L", 3)); err != nil {
		t.Fatal(err)
	}
	var leased atomic.Bool
	claimed := make(chan []ledger.Payout, 10)
	in := &intake{m: metrics.New(""), prog: &progress{}, cfg: IntakeConfig{FetchBatch: 10}, db: db, claims: claims.New(js, kv, db.InstanceID()),
		pending: newPendingSet(), merchant: Merchant{MchID: "1900000001"}, prefix: payout.DefaultSubjectPrefix, claimed: claimed,
		log: slog.New(slog.DiscardHandler), leased: leased.Load}

	if err := in.sweep(ctx); !errors.Is(err, errLeaseStale) {
		t.Fatalf("sweep without the lease = %v, want errLeaseStale", err)
	}
	if held, err := claims.OwnedBy(ctx, js, kv, db.InstanceID()); err != nil || len(held) != 0 || len(in.pending.seqs) != 0 {
		t.Fatalf("without the lease: %d claims (%v), %d pending; want none", len(held), err, len(in.pending.seqs))
	}
	leased.Store(true)
	if err := in.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if held, err := claims.OwnedBy(ctx, js, kv, db.InstanceID()); err != nil || len(held) != 3 || len(claimed) != 1 {
		t.Fatalf("with the lease: %d claims (%v), %d groups to the sealer; want 3 and 1", len(held), err, len(claimed))
	}
}
