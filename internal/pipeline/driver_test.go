package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// directRequest holds the batch-level fields of the direct test payouts.
var directRequest = payout.Request{MchID: wechatpaytest.DefaultMchID, AppID: wechatpaytest.DefaultAppID, SceneID: "1001"}

// sealedBatch builds a pipeline over a fresh ledger and the sandbox srv, seals one batch of n
// payouts through the sealer, and returns the pipeline and the batch as the driver sees it.
func sealedBatch(t *testing.T, srv *wechatpaytest.Server, n int) (*Pipeline, ledger.Batch) {
	t.Helper()
	openIDs := make([]string, n)
	for i := range openIDs {
		openIDs[i] = fmt.Sprintf("oD%d", i)
	}
	return sealedBatchOf(t, srv, DefaultConfig(), slog.New(slog.DiscardHandler), directRequest, openIDs)
}

// sealedBatchOf is sealedBatch with cfg, log, the batch-level fields of req (its rail
// included) and one 100-fen payout per openid, keyed D0, D1, ….
func sealedBatchOf(t *testing.T, srv *wechatpaytest.Server, cfg Config, log *slog.Logger, req payout.Request, openIDs []string) (*Pipeline, ledger.Batch) {
	t.Helper()
	return sealedOn(t, srv, cfg, Deps{Log: log}, req.Rail(), req, openIDs)
}

// sealedOn builds a pipeline over a fresh ledger, the sandbox srv and deps (DB, API and
// Merchant filled in), and seals one batch on rail: one 100-fen payout per openid, keyed
// D0, D1, …, with the batch-level fields of req (and, on rail bills, scene 1000's report
// rows). It returns the pipeline and the batch as the driver sees it.
func sealedOn(t *testing.T, srv *wechatpaytest.Server, cfg Config, deps Deps, rail string, req payout.Request, openIDs []string,
	lopts ...ledger.Option) (*Pipeline, ledger.Batch) {
	t.Helper()
	ctx := context.Background()
	var copts []wechatpay.Option
	if deps.Now != nil { // one clock for the ledger, the client's signatures and the pipeline
		lopts, copts = append(lopts, ledger.WithNow(deps.Now)), append(copts, wechatpay.WithClock(deps.Now))
	}
	db, err := ledger.Open(ctx, filepath.Join(t.TempDir(), "ledger.db"), lopts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	api, err := wechatpay.NewClient(srv.ClientConfig(), copts...)
	if err != nil {
		t.Fatal(err)
	}
	deps.DB, deps.API, deps.Merchant = db, api, Merchant{MchID: wechatpaytest.DefaultMchID}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	var billInfo []byte
	if rail == payout.RailBills {
		req.SceneReportInfos = []payout.SceneReportInfo{{InfoType: "活动名称", InfoContent: "春节红包"}, {InfoType: "奖励说明", InfoContent: "签到奖励"}}
		if billInfo, err = newBillInfo(&req); err != nil {
			t.Fatal(err)
		}
	}
	n := len(openIDs)
	rows := make([]ledger.Payout, n)
	for i := range rows {
		key := fmt.Sprintf("D%d", i)
		h := sha256.Sum256([]byte(key))
		rows[i] = ledger.Payout{OutDetailNo: key, MchID: req.MchID, AppID: req.AppID, SubMchID: req.SubMchID, SceneID: req.SceneID,
			OpenID: openIDs[i], Remark: "r", Rail: rail, GroupKey: batching.GroupKeyFor(rail, &req), Amount: 100, ContentHash: h[:],
			BillInfo: billInfo}
	}
	res, err := db.InsertPayouts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]int64, n)
	for i, r := range res {
		rows[i].Seq, seqs[i] = r.Seq, r.Seq
	}
	if err := db.MarkClaimed(ctx, seqs); err != nil {
		t.Fatal(err)
	}
	if err := p.sealer.add(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if err := p.sealer.seal(ctx, p.sealer.b.Flush()); err != nil {
		t.Fatal(err)
	}
	now := time.Now
	if deps.Now != nil {
		now = deps.Now
	}
	due, err := db.DueBatches(ctx, now().Add(time.Minute), 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("due batches: %v, %v", due, err)
	}
	// As the driver hands it to its rail: with the frozen body.
	if due[0].Body, err = db.BatchBody(ctx, due[0].OutBatchNo); err != nil {
		t.Fatal(err)
	}
	return p, due[0]
}

// TestDriver_InvalidRequestButExists: WeChat answers INVALID_REQUEST to a create whose number
// already exists (docs/wechatpay.md §4). The driver queries, finds the batch under its number and
// follows it: it neither parks the batch nor gives its payouts a new number.
func TestDriver_InvalidRequestButExists(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	p, b := sealedBatch(t, srv, 3)
	ctx := context.Background()
	// The same number already exists with other content (here: another batch name).
	other := bytes.Replace(b.Body, []byte(`"batch_name":"`), []byte(`"batch_name":"x`), 1)
	created, err := p.driver.api.CreateTransferBatchBody(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.driver.api.CreateTransferBatchBody(ctx, b.Body); !errorsIsInvalidRequest(err) {
		t.Fatalf("the sandbox should refuse our body with INVALID_REQUEST, got %v", err)
	}

	if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := p.driver.db.Batch(ctx, b.OutBatchNo)
	if err != nil {
		t.Fatal(err)
	}
	if got.State == ledger.BatchSealed || got.BatchID != created.BatchID {
		t.Fatalf("batch state %s id %q; want it followed as accepted with id %q", got.State, got.BatchID, created.BatchID)
	}
}

func errorsIsInvalidRequest(err error) bool {
	return wechatpay.Classify(err) == wechatpay.ClassBlocked && errorCode(err) == wechatpay.ErrInvalidRequest.Code
}

// TestDriver_Rejections: a definite rejection the input caused marks the batch and its
// members REJECTED with the code (nothing was paid); one an operator must fix (NOT_ENOUGH)
// parks the batch under its number, and the same number is accepted once the balance is
// topped up.
func TestDriver_Rejections(t *testing.T) {
	ctx := context.Background()
	t.Run("PARAM_ERROR rejects the batch and its members", func(t *testing.T) {
		// Amounts of 100 fen under a 1000-fen minimum: WeChat answers PARAM_ERROR
		// (docs/wechatpay.md §4).
		srv := wechatpaytest.NewServer(t, func(o *wechatpaytest.Options) { o.MinAmount = 1000 })
		p, b := sealedBatch(t, srv, 2)
		if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
			t.Fatal(err)
		}
		got, err := p.driver.db.Batch(ctx, b.OutBatchNo)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != ledger.BatchRejected || got.LastErrorCode != wechatpay.ErrParamError.Code {
			t.Fatalf("batch %s (%s), want REJECTED with PARAM_ERROR", got.State, got.LastErrorCode)
		}
		for _, key := range []string{"D0", "D1"} {
			if py, err := p.driver.db.Payout(ctx, key); err != nil || py.State != ledger.PayoutRejected {
				t.Fatalf("payout %s: %+v, %v; want REJECTED", key, py.State, err)
			}
		}
		if len(srv.Paid()) != 0 {
			t.Fatalf("paid %v", srv.Paid())
		}
	})
	t.Run("PARAM_ERROR after an attempt that may have landed parks the batch", func(t *testing.T) {
		// The first create never got an answer: WeChat may hold the batch, so a refusal of a
		// later attempt proves nothing about the first (docs/money-rules.md#ambiguous). Nothing is REJECTED.
		srv := wechatpaytest.NewServer(t, func(o *wechatpaytest.Options) { o.MinAmount = 1000 })
		srv.FailNext(wechatpaytest.EndpointCreateBatch, wechatpaytest.DropBeforeCommit, 1)
		p, b := sealedBatch(t, srv, 2)
		for range 2 {
			if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
				t.Fatal(err)
			}
			var err error
			if b, err = p.driver.db.Batch(ctx, b.OutBatchNo); err != nil {
				t.Fatal(err)
			}
		}
		if b.State != ledger.BatchSealed || b.Attempts != 2 || b.LastErrorCode != wechatpay.ErrParamError.Code {
			t.Fatalf("batch %s after %d attempts (%s); want SEALED (parked) after 2, last PARAM_ERROR", b.State, b.Attempts, b.LastErrorCode)
		}
		if py, err := p.driver.db.Payout(ctx, "D0"); err != nil || py.State != ledger.PayoutSealed {
			t.Fatalf("payout D0: %+v, %v; want SEALED", py.State, err)
		}
	})
	t.Run("NO_AUTH from a merchant on transfer bills parks the batch and says what to set", func(t *testing.T) {
		srv := wechatpaytest.NewServer(t, wechatpaytest.WithProduct(wechatpaytest.ProductBills))
		var logs testingutil.LockedBuffer
		p, b := sealedBatchOf(t, srv, DefaultConfig(), slog.New(slog.NewTextHandler(&logs, nil)), directRequest, []string{"oA"})
		if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
			t.Fatal(err)
		}
		got, err := p.driver.db.Batch(ctx, b.OutBatchNo)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != ledger.BatchSealed || got.LastErrorCode != wechatpay.ErrNoAuth.Code {
			t.Fatalf("batch %s (%s); want SEALED (parked) with NO_AUTH", got.State, got.LastErrorCode)
		}
		if !strings.Contains(logs.String(), "set wechatpay.product: bills") {
			t.Fatalf("the parked batch's log line does not tell the operator what to set:\n%s", logs.String())
		}
	})
	t.Run("NOT_ENOUGH parks the batch; the same number goes through after a top-up", func(t *testing.T) {
		srv := wechatpaytest.NewServer(t, wechatpaytest.WithBalance(0))
		p, b := sealedBatch(t, srv, 2)
		before := time.Now()
		if err := p.driver.rails[b.Rail].step(ctx, b); err != nil {
			t.Fatal(err)
		}
		parked, err := p.driver.db.Batch(ctx, b.OutBatchNo)
		if err != nil {
			t.Fatal(err)
		}
		if parked.State != ledger.BatchSealed || parked.LastErrorCode != wechatpay.ErrNotEnough.Code ||
			parked.NextAt.Before(before.Add(p.driver.submit.ParkedRetry/2)) {
			t.Fatalf("batch %s (%s) next at %v; want SEALED with NOT_ENOUGH, retried after parked-retry", parked.State, parked.LastErrorCode, parked.NextAt)
		}
		srv.TopUp(1000)
		if err := p.driver.rails[parked.Rail].step(ctx, parked); err != nil {
			t.Fatal(err)
		}
		got, err := p.driver.db.Batch(ctx, b.OutBatchNo)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == ledger.BatchSealed || got.BatchID == "" || got.OutBatchNo != b.OutBatchNo {
			t.Fatalf("after the top-up: %s %q; want accepted under %s", got.State, got.BatchID, b.OutBatchNo)
		}
	})
}
