package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// countRows returns the rows of table matching where (read pool).
func countRows(t testing.TB, db *DB, table, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.rdb.QueryRowContext(context.Background(), `SELECT count(*) FROM `+table+` WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSealBatch_Bills(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		edit    func(b *Batch, ps []Payout)
		wantErr error
	}{
		{name: "sealed", edit: func(*Batch, []Payout) {}},
		{name: "bill amount disagrees with its member", wantErr: ErrInvalid, edit: func(b *Batch, ps []Payout) {
			p := ps[1]
			p.Amount++
			b.Bills[1] = billBodyFor(p)
		}},
		{name: "bill number disagrees with its member", wantErr: ErrInvalid, edit: func(b *Batch, ps []Payout) {
			b.Bills[0], b.Bills[1] = b.Bills[1], b.Bills[0]
		}},
		{name: "bill body is not json", wantErr: ErrInvalid, edit: func(b *Batch, _ []Payout) { b.Bills[2] = []byte("x") }},
		{name: "a bill body missing", wantErr: ErrInvalid, edit: func(b *Batch, _ []Payout) { b.Bills = b.Bills[:2] }},
		{name: "manifest disagrees", wantErr: ErrInvalid, edit: func(b *Batch, ps []Payout) {
			b.Body = bodyFor(b.OutBatchNo, ps[:2])
		}},
		{name: "over the bills cap", wantErr: ErrInvalid, edit: func(b *Batch, _ []Payout) {
			b.TotalNum = MaxDetailsBills + 1
			for len(b.Members) < b.TotalNum {
				b.Members = append(b.Members, int64(len(b.Members)+100))
				b.Bills = append(b.Bills, b.Bills[0])
			}
		}},
		{name: "bill bodies on the direct rail", wantErr: ErrInvalid, edit: func(b *Batch, _ []Payout) { b.Rail = railDirect }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			db := mustOpenLedger(t, WithNow(clk.now))
			ps := []Payout{newBillPayout("k0", 100), newBillPayout("k1", 200), newBillPayout("k2", 300)}
			for i, s := range mustInsert(t, db, ps...) {
				ps[i].Seq = s
			}
			b := billBatchFor("BB1", ps)
			tt.edit(&b, ps)
			err := db.ClaimAndSeal(ctx, b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ClaimAndSeal = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if got := countRows(t, db, "bills", "1"); got != 0 {
					t.Fatalf("%d bills rows after a refused seal", got)
				}
				mustState(t, db, "k0", PayoutReceived)
				return
			}
			got, err := db.Batch(ctx, "BB1")
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Bills) != 3 || string(got.Bills[2]) != string(b.Bills[2]) || got.Rail != RailBills {
				t.Fatalf("Batch = %+v, want the 3 bill bodies", got)
			}
			for _, p := range ps {
				bl := mustBill(t, db, p.OutDetailNo)
				if bl.State != PayoutSealed || bl.Seq != p.Seq || bl.Amount != p.Amount || !bl.NextAt.Equal(clk.now()) ||
					string(bl.Body) != string(billBodyFor(p)) || bl.OutBatchNo != "BB1" {
					t.Fatalf("Bill(%s) = %+v", p.OutDetailNo, bl)
				}
			}
			if err := db.SealBatch(ctx, b); err != nil {
				t.Fatalf("sealing again: %v", err)
			}
			other := b
			other.Bills = append([][]byte{}, b.Bills...)
			other.Bills[0] = append([]byte(" "), b.Bills[0]...)
			if err := db.SealBatch(ctx, other); !errors.Is(err, ErrInvalid) {
				t.Fatalf("sealing again with other bill bodies = %v, want ErrInvalid", err)
			}
			p, err := db.Payout(ctx, "k0")
			if err != nil || string(p.BillInfo) != string(ps[0].BillInfo) {
				t.Fatalf("Payout.BillInfo = %q, %v; want %q", p.BillInfo, err, ps[0].BillInfo)
			}
			mustAuditClean(t, clk.now(), db.Path())
		})
	}
}

func TestInsertPayouts_BillInfoOnlyOnBills(t *testing.T) {
	db := mustOpenLedger(t)
	p := newPayout("x", 100)
	p.BillInfo = []byte(`{}`)
	if _, err := db.InsertPayouts(context.Background(), []Payout{p}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("InsertPayouts with bill_info on rail direct = %v, want ErrInvalid", err)
	}
}

func TestRecordBillCreate(t *testing.T) {
	ctx := context.Background()
	wuc := BillState{State: PayoutWaitUserConfirm, TransferBillNo: "T1", PackageInfo: "pkg1"}
	tests := []struct {
		name        string
		calls       []BillCreate
		wantErr     error // of the last call
		wantState   string
		wantNotices int
		wantAttempt int
		wantOutcome string // "" = none
	}{
		{name: "accepted waiting for the payee writes one notice",
			calls:     []BillCreate{{Outcome: SubmitAccepted, State: wuc}},
			wantState: PayoutWaitUserConfirm, wantNotices: 1, wantAttempt: 1},
		{name: "replays for package_info do not duplicate the notice",
			calls:     []BillCreate{{Outcome: SubmitAccepted, State: wuc}, {Outcome: SubmitAccepted, State: wuc}, {Outcome: SubmitAccepted, State: wuc}},
			wantState: PayoutWaitUserConfirm, wantNotices: 1, wantAttempt: 3},
		{name: "accepted without package_info writes none",
			calls:     []BillCreate{{Outcome: SubmitAccepted, State: BillState{State: PayoutAccepted, TransferBillNo: "T1"}}},
			wantState: PayoutAccepted, wantAttempt: 1},
		{name: "package_info from a replay after the state is known",
			calls: []BillCreate{{Outcome: SubmitAccepted, State: BillState{State: PayoutWaitUserConfirm, TransferBillNo: "T1"}},
				{Outcome: SubmitAccepted, State: wuc}},
			wantState: PayoutWaitUserConfirm, wantNotices: 1, wantAttempt: 2},
		{name: "ambiguous changes nothing else",
			calls:     []BillCreate{{Outcome: SubmitRetry, ErrorCode: "TIMEOUT"}},
			wantState: PayoutSealed, wantAttempt: 1},
		{name: "rejected while sealed",
			calls:     []BillCreate{{Outcome: SubmitRetry, ErrorCode: "TIMEOUT"}, {Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"}},
			wantState: PayoutRejected, wantAttempt: 2, wantOutcome: PayoutRejected},
		{name: "rejected once WeChat knows it", wantErr: ErrIllegalTransition,
			calls:     []BillCreate{{Outcome: SubmitAccepted, State: BillState{State: PayoutAccepted}}, {Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"}},
			wantState: PayoutAccepted, wantAttempt: 1},
		{name: "accepted after rejected", wantErr: ErrIllegalTransition,
			calls:     []BillCreate{{Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"}, {Outcome: SubmitAccepted, State: wuc}},
			wantState: PayoutRejected, wantAttempt: 1, wantOutcome: PayoutRejected},
		{name: "our REJECTED is not a WeChat state", wantErr: ErrInvalid,
			calls:     []BillCreate{{Outcome: SubmitAccepted, State: BillState{State: PayoutRejected}}},
			wantState: PayoutSealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			db := mustOpenLedger(t, WithNow(clk.now))
			ps := mustSealBills(t, db, "BB1", "c", 2)
			key := ps[0].OutDetailNo
			var err error
			for i, c := range tt.calls {
				c.NextAt = clk.now().Add(time.Duration(i+1) * time.Minute)
				if err = db.RecordBillCreate(ctx, key, c); err != nil && i < len(tt.calls)-1 {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("RecordBillCreate = %v, want %v", err, tt.wantErr)
			}
			b := mustBill(t, db, key)
			if got, want := b.State, tt.wantState; got != want {
				t.Fatalf("state = %s, want %s", got, want)
			}
			if got, want := b.Attempts, tt.wantAttempt; got != want {
				t.Fatalf("attempts = %d, want %d", got, want)
			}
			if got, want := countRows(t, db, "notices", "kind = 'WAIT_USER_CONFIRM'"), tt.wantNotices; got != want {
				t.Fatalf("%d notices, want %d", got, want)
			}
			var outcome string
			os, _ := db.PendingOutcomes(ctx, 10)
			for _, o := range os {
				outcome = o.State
				if o.State == PayoutRejected && o.FailReason != "PARAM_ERROR" {
					t.Fatalf("rejected outcome %+v: want fail_reason PARAM_ERROR", o)
				}
			}
			if outcome != tt.wantOutcome {
				t.Fatalf("outcome %q, want %q", outcome, tt.wantOutcome)
			}
			if tt.wantNotices > 0 {
				ns, err := db.PendingNotices(ctx, 10)
				if err != nil {
					t.Fatal(err)
				}
				if n := ns[0]; n.OutBillNo != key || n.PackageInfo != "pkg1" || n.TransferBillNo != "T1" || n.AppID != "wxapp" ||
					n.Amount != ps[0].Amount || n.Kind != NoticeWaitUserConfirm {
					t.Fatalf("notice = %+v", n)
				}
			}
			if bt, _ := db.Batch(ctx, "BB1"); tt.wantErr == nil && !bt.NextAt.Equal(clk.now()) {
				t.Fatalf("batch next_at = %v, want the other bill's %v", bt.NextAt, clk.now())
			}
			mustAuditClean(t, clk.now(), db.Path())
		})
	}
}

func TestRecordBillCreates(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSealBills(t, db, "BB1", "m", 3)
	sending := func(no string) BillCreateRecord {
		return BillCreateRecord{OutBillNo: no, BillCreate: BillCreate{Outcome: SubmitRetry, ErrorCode: "SENDING", NextAt: clk.now().Add(time.Minute)}}
	}
	t.Run("one error records none", func(t *testing.T) {
		err := db.RecordBillCreates(ctx, []BillCreateRecord{sending("m0"), sending("nope"), sending("m1")})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("RecordBillCreates = %v, want ErrNotFound naming nope", err)
		}
		for _, p := range ps {
			if b := mustBill(t, db, p.OutDetailNo); b.Attempts != 0 || b.LastErrorCode != "" {
				t.Fatalf("bill %s: %d attempts, code %q after a failed RecordBillCreates; want none", p.OutDetailNo, b.Attempts, b.LastErrorCode)
			}
		}
	})
	t.Run("each as RecordBillCreate", func(t *testing.T) {
		if err := db.RecordBillCreates(ctx, []BillCreateRecord{sending("m0"), sending("m2")}); err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct {
			no       string
			attempts int
			code     string
		}{{"m0", 1, "SENDING"}, {"m1", 0, ""}, {"m2", 1, "SENDING"}} {
			b := mustBill(t, db, want.no)
			if b.Attempts != want.attempts || b.LastErrorCode != want.code || b.State != PayoutSealed {
				t.Fatalf("bill %s: %s, %d attempts, code %q; want SEALED, %d, %q", want.no, b.State, b.Attempts, b.LastErrorCode, want.attempts, want.code)
			}
		}
		if bt, _ := db.Batch(ctx, "BB1"); !bt.NextAt.Equal(clk.now()) {
			t.Fatalf("batch next_at = %v, want m1's %v", bt.NextAt, clk.now())
		}
		mustAuditClean(t, clk.now(), db.Path())
	})
}

func TestApplyBillState(t *testing.T) {
	ctx := context.Background()
	type step struct {
		st      BillState
		wantErr error
	}
	s := func(state, tbn string) step { return step{st: BillState{State: state, TransferBillNo: tbn}} }
	bad := func(state, tbn string, err error) step {
		return step{st: BillState{State: state, TransferBillNo: tbn}, wantErr: err}
	}
	tests := []struct {
		name      string
		steps     []step
		wantState string
		wantIll   int64
	}{
		{name: "forward to success", steps: []step{s(PayoutAccepted, "T"), s(PayoutProcessing, "T"), s(PayoutWaitUserConfirm, "T"),
			s(PayoutTransfering, "T"), s(PayoutSuccess, "T")}, wantState: PayoutSuccess},
		{name: "stale answer ignored", steps: []step{s(PayoutTransfering, "T"), s(PayoutWaitUserConfirm, "T"), s(PayoutAccepted, "")},
			wantState: PayoutTransfering},
		{name: "stale after final ignored", steps: []step{s(PayoutSuccess, "T"), s(PayoutTransfering, "T")}, wantState: PayoutSuccess},
		{name: "final after final is illegal", steps: []step{s(PayoutSuccess, "T"), bad(PayoutFail, "T", ErrIllegalTransition)},
			wantState: PayoutSuccess, wantIll: 1},
		{name: "cancelled after fail is illegal", steps: []step{{st: BillState{State: PayoutFail, FailReason: "OVERDUE_CLOSE"}},
			bad(PayoutCancelled, "T", ErrIllegalTransition)},
			wantState: PayoutFail, wantIll: 1},
		{name: "another transfer_bill_no is illegal", steps: []step{s(PayoutAccepted, "T"), bad(PayoutSuccess, "U", ErrIllegalTransition)},
			wantState: PayoutAccepted, wantIll: 1},
		{name: "canceling then cancelled", steps: []step{s(PayoutWaitUserConfirm, "T"), s(PayoutCanceling, "T"), s(PayoutTransfering, "T"),
			s(PayoutCancelled, "T")}, wantState: PayoutCancelled},
		{name: "a batch-rail state is invalid", steps: []step{bad(PayoutWaitPay, "T", ErrInvalid)}, wantState: PayoutSealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			db := mustOpenLedger(t, WithNow(clk.now))
			ps := mustSealBills(t, db, "BB1", "m", 1)
			for i, st := range tt.steps {
				if err := db.ApplyBillState(ctx, ps[0].OutDetailNo, SourceQuery, st.st, clk.now()); !errors.Is(err, st.wantErr) {
					t.Fatalf("step %d %s: %v, want %v", i, st.st.State, err, st.wantErr)
				}
			}
			mustState(t, db, ps[0].OutDetailNo, tt.wantState)
			if got, want := db.IllegalTransitions(), tt.wantIll; got != want {
				t.Fatalf("IllegalTransitions = %d, want %d", got, want)
			}
			b := mustBill(t, db, ps[0].OutDetailNo)
			if got, want := b.Settled, PayoutFinal(tt.wantState); got != want {
				t.Fatalf("bill settled = %v, want %v", got, want)
			}
			mustAuditClean(t, clk.now(), db.Path())
		})
	}
}

func TestApplyBillState_Facts(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSealBills(t, db, "BB1", "f", 1)
	key := ps[0].OutDetailNo
	created := clk.now().Add(-time.Minute)
	if err := db.RescheduleBill(ctx, key, clk.now().Add(time.Second), "NOT_FOUND", true); err != nil {
		t.Fatal(err)
	}
	if b := mustBill(t, db, key); !b.NotFoundSince.Equal(clk.now()) || b.LastErrorCode != "NOT_FOUND" {
		t.Fatalf("after RescheduleBill: %+v", b)
	}
	next := clk.now().Add(10 * time.Minute)
	if err := db.ApplyBillState(ctx, key, SourceQuery, BillState{State: PayoutAccepted, TransferBillNo: "T", CreateTime: created}, next); err != nil {
		t.Fatal(err)
	}
	b := mustBill(t, db, key)
	if !b.CreateTime.Equal(created) || !b.ExpireAt.Equal(created.Add(BillConfirmWindow)) || !b.NextAt.Equal(next) ||
		!b.NotFoundSince.IsZero() || b.TransferBillNo != "T" {
		t.Fatalf("bill after ApplyBillState = %+v", b)
	}
	if bt, _ := db.Batch(ctx, "BB1"); bt.State != BatchProcessing || !bt.NextAt.Equal(next) {
		t.Fatalf("batch = %s next %v, want PROCESSING next %v", bt.State, bt.NextAt, next)
	}
	if err := db.ApplyBillState(ctx, key, SourceQuery, BillState{State: PayoutFail, FailReason: "OVERDUE_CLOSE"}, next); err != nil {
		t.Fatal(err)
	}
	p, _ := db.Payout(ctx, key)
	os, _ := db.PendingOutcomes(ctx, 10)
	if p.FailReason != "OVERDUE_CLOSE" || len(os) != 1 || os[0].State != PayoutFail || os[0].OutBillNo != key || os[0].TransferBillNo != "T" {
		t.Fatalf("payout %+v, outcomes %+v", p, os)
	}
	mustAuditClean(t, clk.now(), db.Path())
}

// TestApplyBillCallback_Checks: a notification that names another merchant or amount than
// the bill's writes nothing (not even its id, so WeChat's retry is judged again); a FAIL
// without its reason is left to the query sweep; an accepted one returns the bill's batch.
func TestApplyBillCallback_Checks(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSealBills(t, db, "BB1", "k", 2)
	for _, p := range ps {
		if err := db.RecordBillCreate(ctx, p.OutDetailNo, BillCreate{Outcome: SubmitAccepted, NextAt: clk.now().Add(time.Hour),
			State: BillState{State: PayoutWaitUserConfirm, TransferBillNo: "T" + p.OutDetailNo, PackageInfo: "pkg"}}); err != nil {
			t.Fatal(err)
		}
	}
	paid, failed := ps[0], ps[1]
	success := BillState{State: PayoutSuccess, TransferBillNo: "T" + paid.OutDetailNo}
	for _, n := range []BillNotice{
		{MchID: paid.MchID, Amount: paid.Amount + 1, BillState: success},
		{MchID: "1900000999", Amount: paid.Amount, BillState: success},
	} {
		if batch, err := db.ApplyBillCallback(ctx, "n1", paid.OutDetailNo, n); !errors.Is(err, ErrInvalid) || batch != "" {
			t.Fatalf("notification of mchid %s amount %d: (%q, %v), want ErrInvalid", n.MchID, n.Amount, batch, err)
		}
		mustState(t, db, paid.OutDetailNo, PayoutWaitUserConfirm)
	}
	// The same notification id, now naming what was sent (the merchant left out): applied.
	if batch, err := db.ApplyBillCallback(ctx, "n1", paid.OutDetailNo, BillNotice{Amount: paid.Amount, BillState: success}); err != nil || batch != "BB1" {
		t.Fatalf("notification = (%q, %v), want (BB1, nil)", batch, err)
	}
	mustState(t, db, paid.OutDetailNo, PayoutSuccess)

	fail := BillState{State: PayoutFail, TransferBillNo: "T" + failed.OutDetailNo}
	if batch, err := db.ApplyBillCallback(ctx, "n2", failed.OutDetailNo, noticeFor(t, db, failed.OutDetailNo, fail)); err != nil || batch != "" {
		t.Fatalf("FAIL without a reason = (%q, %v), want (\"\", nil)", batch, err)
	}
	mustState(t, db, failed.OutDetailNo, PayoutWaitUserConfirm)
	fail.FailReason = "PAYEE_ACCOUNT_ABNORMAL"
	if _, err := db.ApplyBillCallback(ctx, "n2", failed.OutDetailNo, noticeFor(t, db, failed.OutDetailNo, fail)); err != nil {
		t.Fatal(err)
	}
	mustState(t, db, failed.OutDetailNo, PayoutFail)
	if b := mustBill(t, db, failed.OutDetailNo); b.FailReason != fail.FailReason {
		t.Fatalf("fail_reason %q, want %q", b.FailReason, fail.FailReason)
	}
	mustAuditClean(t, clk.now(), db.Path())
}

func TestApplyBillCallback_Dedupe(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSealBills(t, db, "BB1", "n", 2)
	key := ps[0].OutDetailNo
	next := clk.now().Add(time.Hour)
	if err := db.RecordBillCreate(ctx, key, BillCreate{Outcome: SubmitAccepted, State: BillState{State: PayoutAccepted, TransferBillNo: "T"},
		NextAt: next}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		id, state, want string
	}{
		{id: "n1", state: PayoutTransfering, want: PayoutTransfering},
		{id: "n1", state: PayoutSuccess, want: PayoutTransfering}, // seen: a no-op
		{id: "n2", state: PayoutSuccess, want: PayoutSuccess},
	}
	for _, s := range steps {
		if _, err := db.ApplyBillCallback(ctx, s.id, key, noticeFor(t, db, key, BillState{State: s.state, TransferBillNo: "T"})); err != nil {
			t.Fatalf("callback %s: %v", s.id, err)
		}
		mustState(t, db, key, s.want)
	}
	if b := mustBill(t, db, key); !b.NextAt.Equal(next) {
		t.Fatalf("callback moved next_at to %v, want the bill's %v", b.NextAt, next)
	}
	if _, err := db.ApplyBillCallback(ctx, "n3", "nosuch", BillNotice{Amount: 1000, BillState: BillState{State: PayoutSuccess}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("callback for an unknown bill = %v, want ErrNotFound", err)
	}
	mustAuditClean(t, clk.now(), db.Path())
}

func TestBills_BatchSettles(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSealBills(t, db, "BB1", "s", 3)
	at := func(m int) time.Time { return clk.now().Add(time.Duration(m) * time.Minute) }
	for i, p := range ps {
		if err := db.RecordBillCreate(ctx, p.OutDetailNo, BillCreate{Outcome: SubmitAccepted,
			State: BillState{State: PayoutAccepted, TransferBillNo: "T" + p.OutDetailNo}, NextAt: at(10 * (i + 1))}); err != nil {
			t.Fatal(err)
		}
	}
	want := func(next time.Time, state string, settled bool) {
		t.Helper()
		b, err := db.Batch(ctx, "BB1")
		if err != nil {
			t.Fatal(err)
		}
		if b.State != state || b.Settled != settled || (!settled && !b.NextAt.Equal(next)) {
			t.Fatalf("batch %s settled %v next %v, want %s settled %v next %v", b.State, b.Settled, b.NextAt, state, settled, next)
		}
	}
	want(at(10), BatchProcessing, false)
	due, err := db.DueBills(ctx, "BB1", at(20), 10)
	if err != nil || len(due) != 2 || due[0].OutBillNo != "s0" || due[1].OutBillNo != "s1" {
		t.Fatalf("DueBills = %+v, %v; want s0, s1", due, err)
	}
	// A cancel jumps the queue (it loses its chance once the payee confirms): recorded at
	// minute 15, s1 comes before s0, due since minute 10.
	clk.add(15 * time.Minute)
	if _, err := db.RequestCancel(ctx, "s1", "test"); err != nil {
		t.Fatal(err)
	}
	due, err = db.DueBills(ctx, "BB1", at(5), 1)
	if err != nil || len(due) != 1 || due[0].OutBillNo != "s1" {
		t.Fatalf("DueBills with a cancel on s1 = %+v, %v; want s1 first", due, err)
	}
	if err := db.RecordCancel(ctx, "s1", CancelResult{Outcome: CancelRefused, ErrorCode: "INVALID_REQUEST", NextAt: at(5)}); err != nil {
		t.Fatal(err)
	}
	clk.add(-15 * time.Minute)
	if err := db.ApplyBillState(ctx, "s0", SourceQuery, BillState{State: PayoutSuccess}, at(1)); err != nil {
		t.Fatal(err)
	}
	want(at(20), BatchProcessing, false)
	if err := db.ApplyBillState(ctx, "s2", SourceQuery, BillState{State: PayoutFail, FailReason: "OVERDUE_CLOSE"}, at(1)); err != nil {
		t.Fatal(err)
	}
	want(at(20), BatchProcessing, false)
	if err := db.ApplyBillState(ctx, "s1", SourceCallback, BillState{State: PayoutSuccess}, at(1)); err != nil {
		t.Fatal(err)
	}
	want(time.Time{}, BatchFinished, true)
	b, _ := db.Batch(ctx, "BB1")
	if b.SuccessNum != 2 || b.SuccessAmount != ps[0].Amount+ps[1].Amount || b.FailNum != 1 || b.FailAmount != ps[2].Amount {
		t.Fatalf("batch sums %+v", b)
	}
	if _, ok, _ := db.NextDue(ctx); ok {
		t.Fatal("NextDue reports a settled batch")
	}
	s, err := db.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Bills); got != fmt.Sprintf("map[FAIL:{1 %d} SUCCESS:{2 %d}]", ps[2].Amount, ps[0].Amount+ps[1].Amount) {
		t.Fatalf("Summary.Bills = %s", got)
	}
	if err := db.RecordSubmit(ctx, "BB1", SubmitResult{Outcome: SubmitRetry}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("RecordSubmit on a rail-bills batch = %v, want ErrInvalid", err)
	}
	mustAuditClean(t, clk.now(), db.Path())
}

func TestCancel(t *testing.T) {
	ctx := context.Background()
	type env struct {
		db  *DB
		clk *clock
		ps  []Payout // sealed bills c0, c1
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e env)
	}{
		{name: "unknown payout", run: func(t *testing.T, e env) {
			if _, err := e.db.RequestCancel(ctx, "nosuch", ""); !errors.Is(err, ErrNotFound) {
				t.Fatalf("RequestCancel = %v, want ErrNotFound", err)
			}
		}},
		{name: "final payout", run: func(t *testing.T, e env) {
			if err := e.db.ApplyBillState(ctx, "c0", SourceQuery, BillState{State: PayoutSuccess}, e.clk.now()); err != nil {
				t.Fatal(err)
			}
			st, err := e.db.RequestCancel(ctx, "c0", "")
			if !errors.Is(err, ErrFinal) || st != PayoutSuccess || !strings.Contains(err.Error(), PayoutSuccess) {
				t.Fatalf("RequestCancel = %q, %v; want SUCCESS, ErrFinal", st, err)
			}
		}},
		{name: "a repeat once the payout is final is still a repeat", run: func(t *testing.T, e env) {
			// A cancel recorded, then redelivered (its ack lost) after the bill ended: the
			// first cancel is answered by the bill's own end, so the repeat must not be
			// refused a second time.
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			if err := e.db.ApplyBillState(ctx, "c0", SourceQuery, BillState{State: PayoutSuccess}, e.clk.now()); err != nil {
				t.Fatal(err)
			}
			if st, err := e.db.RequestCancel(ctx, "c0", ""); err != nil || st != PayoutSuccess {
				t.Fatalf("repeated RequestCancel = %q, %v; want SUCCESS, nil", st, err)
			}
		}},
		{name: "batch rail cannot cancel", run: func(t *testing.T, e env) {
			mustSeal(t, e.db, "B9", "d", 1)
			if st, err := e.db.RequestCancel(ctx, "d0", ""); !errors.Is(err, ErrCannotCancel) || st != PayoutSealed {
				t.Fatalf("RequestCancel = %q, %v; want SEALED, ErrCannotCancel", st, err)
			}
		}},
		{name: "duplicate cannot cancel", run: func(t *testing.T, e env) {
			seq := mustInsert(t, e.db, newBillPayout("dup", 100))[0]
			if err := e.db.MarkDuplicate(ctx, seq, "other1", false); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.RequestCancel(ctx, "dup", ""); !errors.Is(err, ErrCannotCancel) {
				t.Fatalf("RequestCancel = %v, want ErrCannotCancel", err)
			}
		}},
		{name: "reason too long", run: func(t *testing.T, e env) {
			if _, err := e.db.RequestCancel(ctx, "c0", strings.Repeat("取", MaxCancelReason+1)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("RequestCancel = %v, want ErrInvalid", err)
			}
		}},
		{name: "before sealing the bill takes it over", run: func(t *testing.T, e env) {
			p := newBillPayout("early", 500)
			p.Seq = mustInsert(t, e.db, p)[0]
			if st, err := e.db.RequestCancel(ctx, "early", "changed mind"); err != nil || st != PayoutReceived {
				t.Fatalf("RequestCancel = %q, %v; want RECEIVED, nil", st, err)
			}
			e.clk.add(time.Minute)
			if err := e.db.ClaimAndSeal(ctx, billBatchFor("BB2", []Payout{p})); err != nil {
				t.Fatal(err)
			}
			b := mustBill(t, e.db, "early")
			if b.CancelRequestedAt.IsZero() || b.CancelReason != "changed mind" || b.CancelClosed {
				t.Fatalf("bill = %+v, want the cancel carried over", b)
			}
			if err := e.db.RecordCancel(ctx, "early", CancelResult{Outcome: CancelLocal}); err != nil {
				t.Fatal(err)
			}
			mustState(t, e.db, "early", PayoutCancelled)
		}},
		{name: "repeat is a no-op", run: func(t *testing.T, e env) {
			for i := 0; i < 2; i++ {
				if st, err := e.db.RequestCancel(ctx, "c0", "r"); err != nil || st != PayoutSealed {
					t.Fatalf("RequestCancel %d = %q, %v", i, st, err)
				}
			}
			if got := countRows(t, e.db, "events", "kind = 'cancel'"); got != 1 {
				t.Fatalf("%d cancel events, want 1", got)
			}
		}},
		{name: "local cancel of a bill never sent", run: func(t *testing.T, e env) {
			e.clk.add(time.Minute)
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			if b := mustBill(t, e.db, "c0"); !b.NextAt.Equal(e.clk.now()) {
				t.Fatalf("bill next_at %v, want now %v", b.NextAt, e.clk.now())
			}
			if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelLocal}); err != nil {
				t.Fatal(err)
			}
			b := mustBill(t, e.db, "c0")
			os, _ := e.db.PendingOutcomes(ctx, 10)
			if b.State != PayoutCancelled || !b.Settled || !b.CancelClosed || b.CancelAttempts != 0 || len(os) != 1 || os[0].State != PayoutCancelled {
				t.Fatalf("bill %+v outcomes %+v", b, os)
			}
			// WeChat answering for it later means it was sent after all.
			err := e.db.RecordBillCreate(ctx, "c0", BillCreate{Outcome: SubmitAccepted, State: BillState{State: PayoutAccepted}})
			if !errors.Is(err, ErrIllegalTransition) {
				t.Fatalf("create answer after a local cancel = %v, want ErrIllegalTransition", err)
			}
		}},
		{name: "local cancel after a create attempt is illegal", run: func(t *testing.T, e env) {
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			if err := e.db.RecordBillCreate(ctx, "c0", BillCreate{Outcome: SubmitRetry, ErrorCode: "TIMEOUT"}); err != nil {
				t.Fatal(err)
			}
			if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelLocal}); !errors.Is(err, ErrIllegalTransition) {
				t.Fatalf("RecordCancel = %v, want ErrIllegalTransition", err)
			}
			mustState(t, e.db, "c0", PayoutSealed)
		}},
		{name: "refused writes a notice", run: func(t *testing.T, e env) {
			if err := e.db.RecordBillCreate(ctx, "c0", BillCreate{Outcome: SubmitAccepted, State: BillState{State: PayoutTransfering, TransferBillNo: "T"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ { // a repeated refusal writes no second notice
				if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelRefused, ErrorCode: "INVALID_REQUEST"}); err != nil {
					t.Fatal(err)
				}
			}
			ns, _ := e.db.PendingNotices(ctx, 10)
			if len(ns) != 1 || ns[0].Kind != NoticeCancelRefused || ns[0].Code != codeWeChatRefused || ns[0].State != PayoutTransfering ||
				!strings.Contains(ns[0].Detail, "INVALID_REQUEST") {
				t.Fatalf("notices %+v", ns)
			}
			b := mustBill(t, e.db, "c0")
			if !b.CancelClosed || b.Settled || b.CancelAttempts != 2 {
				t.Fatalf("bill %+v: want the cancel closed, the bill open", b)
			}
			if err := e.db.MarkNoticesPublished(ctx, []int64{ns[0].ID}); err != nil {
				t.Fatal(err)
			}
			if ns, _ := e.db.PendingNotices(ctx, 10); len(ns) != 0 {
				t.Fatalf("notices after MarkNoticesPublished: %+v", ns)
			}
			// Past the hour: a closed cancel is not stuck; c1, never sent, is.
			r := mustAuditFinds(t, e.clk.now().Add(2*time.Hour), map[string]int{"stuck": 1}, e.db.Path())
			if v := r.Violations[0]; v.Row != "bills out_bill_no=c1" {
				t.Fatalf("stuck: %+v, want only c1, never sent", v)
			}
		}},
		{name: "accepted ends CANCELLED", run: func(t *testing.T, e env) {
			if err := e.db.RecordBillCreate(ctx, "c0", BillCreate{Outcome: SubmitAccepted, State: BillState{State: PayoutWaitUserConfirm, TransferBillNo: "T", PackageInfo: "p"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelRetry, ErrorCode: "SYSTEM_ERROR"}); err != nil {
				t.Fatal(err)
			}
			if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelAccepted, State: BillState{State: PayoutCanceling, TransferBillNo: "T"}}); err != nil {
				t.Fatal(err)
			}
			if err := e.db.ApplyBillState(ctx, "c0", SourceQuery, BillState{State: PayoutCancelled, TransferBillNo: "T"}, e.clk.now()); err != nil {
				t.Fatal(err)
			}
			b := mustBill(t, e.db, "c0")
			os, _ := e.db.PendingOutcomes(ctx, 10)
			if b.State != PayoutCancelled || !b.Settled || !b.CancelClosed || b.CancelAttempts != 2 || len(os) != 1 || os[0].State != PayoutCancelled {
				t.Fatalf("bill %+v outcomes %+v", b, os)
			}
			if ns, _ := e.db.PendingNotices(ctx, 10); len(ns) != 1 || ns[0].Kind != NoticeWaitUserConfirm {
				t.Fatalf("notices %+v, want only the WAIT_USER_CONFIRM one", ns)
			}
		}},
		{name: "accepted cancel must answer a cancel state", run: func(t *testing.T, e env) {
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelAccepted, State: BillState{State: PayoutSuccess}}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("RecordCancel = %v, want ErrInvalid", err)
			}
		}},
		{name: "bill succeeds first", run: func(t *testing.T, e env) {
			if _, err := e.db.RequestCancel(ctx, "c0", ""); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.ApplyBillCallback(ctx, "n1", "c0", noticeFor(t, e.db, "c0", BillState{State: PayoutSuccess, TransferBillNo: "T"})); err != nil {
				t.Fatal(err)
			}
			ns, _ := e.db.PendingNotices(ctx, 10)
			if len(ns) != 1 || ns[0].Code != codeAlreadyFinal || ns[0].State != PayoutSuccess {
				t.Fatalf("notices %+v, want one ALREADY_FINAL refusal", ns)
			}
			if b := mustBill(t, e.db, "c0"); !b.Settled || !b.CancelClosed {
				t.Fatalf("bill %+v", b)
			}
		}},
		{name: "no cancel requested", run: func(t *testing.T, e env) {
			if err := e.db.RecordCancel(ctx, "c0", CancelResult{Outcome: CancelLocal}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("RecordCancel = %v, want ErrInvalid", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			db := mustOpenLedger(t, WithNow(clk.now))
			ps := mustSealBills(t, db, "BB1", "c", 2)
			tt.run(t, env{db: db, clk: clk, ps: ps})
			want := map[string]int{}
			if n := countRows(t, db, "payouts", "state = 'DUPLICATE'"); n > 0 {
				want["owner_missing"] = n // the owner's ledger is not given
			}
			mustAuditFinds(t, clk.now(), want, db.Path())
		})
	}
}
