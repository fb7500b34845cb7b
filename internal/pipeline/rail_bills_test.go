package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// manualClock is the time of a bills world: the sandbox and the pipeline read it, the test
// moves it.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *manualClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// billsWorld is a pipeline on transfer bills with one sealed batch, one bill per openid (D0,
// D1, …), against a bills-only sandbox on the same manual clock at speed 1 (a confirmed bill
// settles ProcessDelay later).
type billsWorld struct {
	p       *Pipeline
	srv     *wechatpaytest.Server
	clk     *manualClock
	b       ledger.Batch
	commits *atomic.Int64 // ledger transactions committed
}

func newBillsWorld(t *testing.T, openIDs []string, opts ...wechatpaytest.Option) *billsWorld {
	t.Helper()
	clk := &manualClock{t: time.Now()}
	srv := wechatpaytest.NewServer(t, append([]wechatpaytest.Option{
		wechatpaytest.WithClock(clk.now), wechatpaytest.WithSpeed(1), wechatpaytest.WithRateLimit(0),
		func(o *wechatpaytest.Options) { o.Product, o.BillAcceptDelay = wechatpaytest.ProductBills, 0 },
	}, opts...)...)
	cfg := DefaultConfig()
	cfg.Product = ProductBills
	req := payout.Request{MchID: wechatpaytest.DefaultMchID, AppID: wechatpaytest.DefaultAppID, SceneID: "1000"}
	commits := new(atomic.Int64)
	p, b := sealedOn(t, srv, cfg, Deps{Now: clk.now, Log: slog.New(slog.DiscardHandler)}, payout.RailBills, req, openIDs,
		ledger.WithCommitObserver(func(time.Duration) { commits.Add(1) }))
	return &billsWorld{p: p, srv: srv, clk: clk, b: b, commits: commits}
}

// step runs one driver step of the batch after moving the clock by d.
func (w *billsWorld) step(t *testing.T, d time.Duration) {
	t.Helper()
	w.clk.add(d)
	if err := w.p.driver.rails[payout.RailBills].step(context.Background(), w.b); err != nil {
		t.Fatal(err)
	}
}

// wantPayout checks a payout's ledger state and fail_reason.
func (w *billsWorld) wantPayout(t *testing.T, key, state, reason string) {
	t.Helper()
	p, err := w.p.driver.db.Payout(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != state || p.FailReason != reason {
		t.Fatalf("payout %s: %s %q, want %s %q", key, p.State, p.FailReason, state, reason)
	}
}

// notices returns the kind and code of every unpublished notice, by out_detail_no.
func (w *billsWorld) notices(t *testing.T) map[string][]string {
	t.Helper()
	ns, err := w.p.driver.db.PendingNotices(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, n := range ns {
		out[n.OutDetailNo] = append(out[n.OutDetailNo], n.Kind+":"+n.Code)
	}
	return out
}

func TestBills_CreateConfirmPay(t *testing.T) {
	w := newBillsWorld(t, []string{"oA", "fail-ACCOUNT_FROZEN-b"})
	w.step(t, 0)
	w.wantPayout(t, "D0", ledger.PayoutWaitUserConfirm, "")
	if got := w.notices(t); len(got["D0"]) != 1 || len(got["D1"]) != 1 || got["D0"][0] != ledger.NoticeWaitUserConfirm+":" {
		t.Fatalf("notices %v; want one WAIT_USER_CONFIRM per bill", got)
	}
	for _, key := range []string{"D0", "D1"} {
		if err := w.srv.ConfirmBill(key); err != nil {
			t.Fatal(err)
		}
	}
	w.step(t, 2*time.Minute) // the sweep finds both final
	w.wantPayout(t, "D0", ledger.PayoutSuccess, "")
	w.wantPayout(t, "D1", ledger.PayoutFail, "ACCOUNT_FROZEN")
	if got := w.srv.PaidBills(); got["D0"] != 1 || got["D1"] != 0 {
		t.Fatalf("sandbox paid %v; want D0 once, D1 never", got)
	}
	if got := w.srv.Stats().Requests[wechatpaytest.EndpointCreateBill]; got != 2 {
		t.Fatalf("%d creates, want 2", got)
	}
}

// TestBills_StepMarksFirstSendsTogether: a step records the first send of all its bills in
// one transaction before sending any, then one per answer: n+1 commits for n bills, not 2n.
func TestBills_StepMarksFirstSendsTogether(t *testing.T) {
	w := newBillsWorld(t, []string{"oA", "oB", "oC", "oD", "oE"})
	before := w.commits.Load()
	w.step(t, 0)
	if got := w.commits.Load() - before; got != 6 {
		t.Fatalf("%d commits for a step creating 5 bills, want 6 (one mark for all, one answer each)", got)
	}
	for _, key := range []string{"D0", "D1", "D2", "D3", "D4"} {
		w.wantPayout(t, key, ledger.PayoutWaitUserConfirm, "")
		bl, err := w.p.driver.db.Bill(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if bl.Attempts != 2 {
			t.Fatalf("bill %s: %d create records, want 2 (its mark and its answer)", key, bl.Attempts)
		}
	}
}

// TestBills_LostCreateAnswer: the create lands but its answer is lost; by the replay the
// payee has confirmed and the bill is final, so WeChat answers ALREADY_EXISTS. The driver
// queries instead of failing or renumbering, and the payee is paid once.
func TestBills_LostCreateAnswer(t *testing.T) {
	w := newBillsWorld(t, []string{"oA"})
	w.srv.FailNext(wechatpaytest.EndpointCreateBill, wechatpaytest.DropAfterCommit, 1)
	w.step(t, 0)
	w.wantPayout(t, "D0", ledger.PayoutSealed, "")
	if err := w.srv.ConfirmBill("D0"); err != nil {
		t.Fatal(err)
	}
	w.step(t, 10*time.Minute) // past the retry backoff and the payment's processing
	w.wantPayout(t, "D0", ledger.PayoutSuccess, "")
	bl, err := w.p.driver.db.Bill(context.Background(), "D0")
	if err != nil {
		t.Fatal(err)
	}
	if bl.Attempts != 3 || bl.LastErrorCode != wechatpay.ErrAlreadyExists.Code || bl.OutBillNo != "D0" {
		t.Fatalf("bill %+v; want 3 create records (the mark before the first send, 2 answers), the last ALREADY_EXISTS, under D0", bl)
	}
	if got := w.srv.PaidBills()["D0"]; got != 1 {
		t.Fatalf("D0 paid %d times, want 1", got)
	}
}

// TestBills_Refusals: a create refused for its content on the first attempt rejects the
// payout (nothing was paid); the same refusal after an attempt that may have landed parks it
// under its number instead (docs/money-rules.md#ambiguous).
func TestBills_Refusals(t *testing.T) {
	strict := func(o *wechatpaytest.Options) {
		o.BillScenes = map[string]wechatpaytest.BillSceneRule{"1000": {ReportInfos: []string{"活动名称", "奖励规则"}}}
	}
	t.Run("first attempt", func(t *testing.T) {
		w := newBillsWorld(t, []string{"oA"}, strict)
		w.step(t, 0)
		w.wantPayout(t, "D0", ledger.PayoutRejected, wechatpay.ErrParamError.Code)
	})
	t.Run("after an unanswered attempt", func(t *testing.T) {
		w := newBillsWorld(t, []string{"oA"}, strict)
		w.srv.FailNext(wechatpaytest.EndpointCreateBill, wechatpaytest.DropBeforeCommit, 1)
		w.step(t, 0)
		w.step(t, 10*time.Minute)
		w.wantPayout(t, "D0", ledger.PayoutSealed, "")
		bl, err := w.p.driver.db.Bill(context.Background(), "D0")
		if err != nil {
			t.Fatal(err)
		}
		if bl.Attempts != 3 || bl.LastErrorCode != wechatpay.ErrParamError.Code || !bl.NextAt.After(w.clk.now().Add(time.Minute)) {
			t.Fatalf("bill %+v; want parked after 2 sends (3 records), the last PARAM_ERROR", bl)
		}
	})
}

func TestBills_Cancel(t *testing.T) {
	ctx := context.Background()
	t.Run("never sent: cancelled here, nothing reaches WeChat", func(t *testing.T) {
		w := newBillsWorld(t, []string{"oA", "oB"})
		if st, err := w.p.driver.db.RequestCancel(ctx, "D0", "upstream"); err != nil || st != ledger.PayoutSealed {
			t.Fatalf("RequestCancel = %s, %v", st, err)
		}
		w.step(t, 0)
		w.wantPayout(t, "D0", ledger.PayoutCancelled, "")
		w.wantPayout(t, "D1", ledger.PayoutWaitUserConfirm, "")
		if _, err := w.srv.Bill("D0"); !errors.Is(err, wechatpaytest.ErrNoBatch) {
			t.Fatalf("sandbox bill D0: %v; want none", err)
		}
	})
	t.Run("sent, answer lost: cancelled at WeChat, not only here", func(t *testing.T) {
		w := newBillsWorld(t, []string{"oA"})
		w.srv.FailNext(wechatpaytest.EndpointCreateBill, wechatpaytest.DropAfterCommit, 1)
		w.step(t, 0) // the bill exists at WeChat; the ledger only knows a create was sent
		if _, err := w.p.driver.db.RequestCancel(ctx, "D0", "upstream"); err != nil {
			t.Fatal(err)
		}
		w.step(t, 10*time.Minute) // the same body again finds the bill
		w.step(t, 10*time.Second) // then the cancel
		w.step(t, 2*time.Minute)
		w.wantPayout(t, "D0", ledger.PayoutCancelled, "")
		if sb, err := w.srv.Bill("D0"); err != nil || sb.State != wechatpay.BillCancelled {
			t.Fatalf("sandbox bill D0: %+v, %v; want CANCELLED there too", sb, err)
		}
	})
	t.Run("waiting for the payee: CANCELING, then CANCELLED", func(t *testing.T) {
		w := newBillsWorld(t, []string{"oA"})
		w.step(t, 0)
		if _, err := w.p.driver.db.RequestCancel(ctx, "D0", "upstream"); err != nil {
			t.Fatal(err)
		}
		w.srv.FailNext(wechatpaytest.EndpointCancelBill, wechatpaytest.DropAfterCommit, 1) // asked twice: the same answer
		w.step(t, 0)
		w.step(t, 10*time.Second)
		w.wantPayout(t, "D0", ledger.PayoutCanceling, "")
		w.step(t, 2*time.Minute)
		w.wantPayout(t, "D0", ledger.PayoutCancelled, "")
		if sb, err := w.srv.Bill("D0"); err != nil || sb.State != wechatpay.BillCancelled {
			t.Fatalf("sandbox bill D0: %+v, %v; want CANCELLED", sb, err)
		}
	})
	t.Run("after the payee confirmed: refused, and the bill is paid", func(t *testing.T) {
		w := newBillsWorld(t, []string{"oA"})
		w.step(t, 0)
		if err := w.srv.ConfirmBill("D0"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.p.driver.db.RequestCancel(ctx, "D0", "upstream"); err != nil {
			t.Fatal(err)
		}
		w.step(t, 0)
		if got := w.notices(t)["D0"]; len(got) != 2 || got[1] != ledger.NoticeCancelRefused+":"+payout.CancelTooLate {
			t.Fatalf("notices of D0 %v; want WAIT_USER_CONFIRM then CANCEL_REFUSED %s", got, payout.CancelTooLate)
		}
		w.step(t, 2*time.Minute)
		w.wantPayout(t, "D0", ledger.PayoutSuccess, "")
		if got := w.srv.PaidBills()["D0"]; got != 1 {
			t.Fatalf("D0 paid %d times, want 1", got)
		}
	})
}
