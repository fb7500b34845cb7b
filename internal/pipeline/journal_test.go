package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/journal"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/ledger"
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

	if _, err := journal.Ensure(ctx, js, "batches", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	p.driver.handle(ctx, b)
	es, err := j.Batches(ctx, p.driver.db.InstanceID())
	if err != nil || len(es) != 1 || es[0].OutBatchNo != b.OutBatchNo || !bytes.Equal(es[0].Body, b.Body) {
		t.Fatalf("journal %+v (%v); want the batch %s with its body", es, err, b.OutBatchNo)
	}
	if bs := srv.Batches(); len(bs) != 1 || bs[0].OutBatchNo != b.OutBatchNo {
		t.Fatalf("batches at WeChat %+v; want %s", bs, b.OutBatchNo)
	}
}
