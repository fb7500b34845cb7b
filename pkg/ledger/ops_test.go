package ledger

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// opsLedger is a ledger with one batch in each situation an operator sees:
//
//	P1 direct, parked: refused NOT_ENOUGH with WeChat's message, retried in 10 min
//	BB1 bills: bill m0 parked (NOT_ENOUGH), bill m1 accepted (so the batch is PROCESSING)
//	A1 direct, accepted, polled
//	F1 direct, FINISHED: f0 SUCCESS, f1 FAIL (ACCOUNT_FROZEN), settled
//	R1 direct, REJECTED (PARAM_ERROR): r0, r1 REJECTED
//	loose: received, not batched
//
// The batches are sealed a second apart in that order; two minutes later A1, F1 and R1 get
// their answers and loose is received. Members carry a name cipher.
type opsLedger struct {
	db  *DB
	clk *clock
	// times
	sealedP1, answered time.Time
	f1                 []Payout
}

// cipher is a plausible base64 OAEP ciphertext (256 bytes, a 2048-bit key).
var cipher = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\x07secret-name\x00", 256/13+1))[:256])

// mustSealWith is mustSeal with each payout passed through edit before it is inserted.
func mustSealWith(t testing.TB, db *DB, no, prefix string, n int, edit func(*Payout)) []Payout {
	t.Helper()
	ps := make([]Payout, n)
	for i := range ps {
		ps[i] = newPayout(fmt.Sprintf("%s%d", prefix, i), int64(100+i))
		edit(&ps[i])
	}
	for i, s := range mustInsert(t, db, ps...) {
		ps[i].Seq = s
	}
	if err := db.ClaimAndSeal(context.Background(), batchFor(no, ps)); err != nil {
		t.Fatalf("ClaimAndSeal %s: %v", no, err)
	}
	return ps
}

func withCipher(p *Payout) { p.UserNameCipher = cipher }

func newOpsLedger(t *testing.T, opts ...Option) *opsLedger {
	t.Helper()
	ctx := context.Background()
	o := &opsLedger{clk: newClock()}
	o.db = mustOpenLedger(t, append([]Option{WithNow(o.clk.now)}, opts...)...)
	db, clk := o.db, o.clk
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	o.sealedP1 = clk.now()
	mustSealWith(t, db, "P1", "p", 2, withCipher)
	must(db.RecordSubmit(ctx, "P1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH", ErrorMessage: "资金不足",
		NextAt: clk.now().Add(10 * time.Minute)}))
	clk.add(time.Second)
	bs := mustSealBills(t, db, "BB1", "m", 2)
	must(db.RecordBillCreate(ctx, bs[0].OutDetailNo, BillCreate{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH",
		ErrorMessage: "balance low", NextAt: clk.now().Add(10 * time.Minute)}))
	must(db.RecordBillCreate(ctx, bs[1].OutDetailNo, BillCreate{Outcome: SubmitAccepted,
		State: BillState{State: PayoutAccepted, TransferBillNo: "T1", CreateTime: clk.now()}, NextAt: clk.now().Add(time.Hour)}))
	clk.add(time.Second)
	mustSealWith(t, db, "A1", "a", 2, withCipher)
	clk.add(time.Second)
	o.f1 = mustSealWith(t, db, "F1", "f", 2, withCipher)
	clk.add(time.Second)
	mustSealWith(t, db, "R1", "r", 2, withCipher)

	clk.add(2 * time.Minute)
	o.answered = clk.now()
	must(db.RecordSubmit(ctx, "A1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wxA1", NextAt: clk.now().Add(time.Minute)}))
	must(db.RecordSubmit(ctx, "F1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wxF1"}))
	must(db.ApplyBatchStatus(ctx, "F1", SourceQuery, BatchStatus{BatchID: "wxF1", Status: BatchFinished,
		SuccessAmount: o.f1[0].Amount, SuccessNum: 1, FailAmount: o.f1[1].Amount, FailNum: 1}, clk.now()))
	if _, err := db.ApplyDetailPage(ctx, "F1", SourceQuery, 0, []DetailRow{
		{OutDetailNo: "f0", DetailID: "d0", Status: PayoutSuccess},
		{OutDetailNo: "f1", DetailID: "d1", Status: PayoutFail, FailReason: "ACCOUNT_FROZEN"},
	}); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Second)
	must(db.RecordSubmit(ctx, "R1", SubmitResult{Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR", ErrorMessage: "bad appid"}))
	mustInsert(t, db, newPayout("loose", 999))
	return o
}

func TestOps(t *testing.T) {
	ctx := context.Background()
	o := newOpsLedger(t)
	db := o.db
	if err := db.MarkPublished(ctx, []int64{1}); err != nil { // f0's SUCCESS
		t.Fatal(err)
	}
	s, err := db.Ops(ctx, o.clk.now(), 10)
	if err != nil {
		t.Fatalf("Ops: %v", err)
	}
	if got, want := s.Instance, db.InstanceID(); got != want {
		t.Fatalf("Instance = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(s.Payouts), "map[ACCEPTED:{1 1001} FAIL:{1 101} RECEIVED:{1 999} REJECTED:{2 201} SEALED:{5 1402} SUCCESS:{1 100}]"; got != want {
		t.Fatalf("Payouts = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(s.Batches), "[{bills PROCESSING 1} {direct ACCEPTED 1} {direct FINISHED 1} {direct REJECTED 1} {direct SEALED 1}]"; got != want {
		t.Fatalf("Batches = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(s.Parked), "[{batch NOT_ENOUGH 1} {bill NOT_ENOUGH 1}]"; got != want {
		t.Fatalf("Parked = %s, want %s", got, want)
	}
	if got, want := s.OpenTotal, 3; got != want {
		t.Fatalf("OpenTotal = %d, want %d", got, want)
	}
	if got, want := s.OldestOpen, o.sealedP1; !got.Equal(want) {
		t.Fatalf("OldestOpen = %v, want %v", got, want)
	}
	var order []string
	for _, b := range s.Open {
		order = append(order, fmt.Sprintf("%s parked=%v code=%s msg=%q bills=%d open=%d attempts=%d",
			b.OutBatchNo, b.Parked, b.LastErrorCode, b.LastErrorMessage, b.ParkedBills, b.OpenMembers, b.Attempts))
	}
	if got, want := strings.Join(order, "\n"), strings.Join([]string{
		`P1 parked=true code=NOT_ENOUGH msg="资金不足" bills=0 open=2 attempts=1`,
		`BB1 parked=true code=NOT_ENOUGH msg="balance low" bills=1 open=2 attempts=0`,
		`A1 parked=false code= msg="" bills=0 open=2 attempts=1`,
	}, "\n"); got != want {
		t.Fatalf("Open =\n%s\nwant\n%s", got, want)
	}
	p1 := s.Open[0]
	if p1.Rail != railDirect || p1.State != BatchSealed || p1.TotalNum != 2 || p1.TotalAmount != 201 ||
		!p1.SealedAt.Equal(o.sealedP1) || !p1.NextAt.Equal(o.sealedP1.Add(10*time.Minute)) {
		t.Fatalf("Open[0] = %+v", p1)
	}
	if got, want := s.Open[2].BatchID, "wxA1"; got != want {
		t.Fatalf("A1 BatchID = %s, want %s", got, want)
	}
	var fails []string
	for _, f := range s.RecentFailures {
		fails = append(fails, f.OutDetailNo+" "+f.State+" "+f.FailReason+" "+f.OutBatchNo+" "+f.OpenID)
	}
	if got, want := strings.Join(fails, "|"), "r1 REJECTED PARAM_ERROR R1 o-r1|r0 REJECTED PARAM_ERROR R1 o-r0|f1 FAIL ACCOUNT_FROZEN F1 o-f1"; got != want {
		t.Fatalf("RecentFailures = %s, want %s", got, want)
	}
	if got, want := s.Received1m, 1; got != want {
		t.Fatalf("Received1m = %d, want %d (only loose is newer than a minute)", got, want)
	}
	if got, want := s.Paid1m, (StateTotal{Count: 1, Amount: 100}); got != want {
		t.Fatalf("Paid1m = %+v, want %+v", got, want)
	}
	if got, want := fmt.Sprint(s.OutboxPending), "map[notice:0 outcome:3]"; got != want {
		t.Fatalf("OutboxPending = %s, want %s", got, want)
	}
	if got, want := s.OldestUnpublishedAt, o.answered; !got.Equal(want) {
		t.Fatalf("OldestUnpublishedAt = %v, want %v (f1's FAIL)", got, want)
	}

	t.Run("limit cuts the lists, not the counts", func(t *testing.T) {
		s, err := db.Ops(ctx, o.clk.now(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Open) != 1 || s.Open[0].OutBatchNo != "P1" || s.OpenTotal != 3 || len(s.RecentFailures) != 1 || len(s.Parked) != 2 {
			t.Fatalf("Ops(limit 1) = open %+v (total %d), failures %+v, parked %v", s.Open, s.OpenTotal, s.RecentFailures, s.Parked)
		}
	})
	t.Run("a parked batch accepted is no longer parked", func(t *testing.T) {
		if err := db.RecordSubmit(ctx, "P1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wxP1"}); err != nil {
			t.Fatal(err)
		}
		s, err := db.Ops(ctx, o.clk.now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprint(s.Parked), "[{bill NOT_ENOUGH 1}]"; got != want {
			t.Fatalf("Parked = %s, want %s", got, want)
		}
		if s.Open[0].OutBatchNo != "BB1" || s.Open[1].OutBatchNo != "P1" || s.Open[1].Parked {
			t.Fatalf("Open = %+v, want BB1 (parked bill) then P1", s.Open)
		}
	})
}

func TestOps_EmptyLedger(t *testing.T) {
	db := mustOpenLedger(t)
	s, err := db.Ops(context.Background(), time.Now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Payouts) != 0 || len(s.Open) != 0 || s.OpenTotal != 0 || !s.OldestOpen.IsZero() || len(s.Parked) != 0 ||
		!s.OldestUnpublishedAt.IsZero() || s.OutboxPending["outcome"] != 0 || s.Payouts == nil {
		t.Fatalf("Ops of an empty ledger = %+v", s)
	}
}

func TestLookup(t *testing.T) {
	ctx := context.Background()
	o := newOpsLedger(t)
	db := o.db

	v, err := db.Lookup(ctx, "f1")
	if err != nil {
		t.Fatalf("Lookup(f1): %v", err)
	}
	if v.State != PayoutFail || v.FailReason != "ACCOUNT_FROZEN" || v.OutBatchNo != "F1" || v.DetailID != "d1" ||
		v.OpenID != "o-f1" || v.Amount != 101 || v.MchID != "1900000109" || v.StreamSeq != 7 || v.ReceivedAt.IsZero() {
		t.Fatalf("Lookup(f1) = %+v", v)
	}
	if v.Batch == nil || v.Batch.State != BatchFinished || v.Batch.BatchID != "wxF1" || v.Batch.OpenMembers != 0 || v.Batch.Parked {
		t.Fatalf("Lookup(f1).Batch = %+v", v.Batch)
	}
	if v.Bill != nil {
		t.Fatalf("Lookup(f1).Bill = %+v, want none on the direct rail", v.Bill)
	}
	if v.Outcome == nil || v.Outcome.State != PayoutFail || !v.Outcome.CreatedAt.Equal(o.answered) || !v.Outcome.PublishedAt.IsZero() {
		t.Fatalf("Lookup(f1).Outcome = %+v", v.Outcome)
	}
	var hist []string
	for i, e := range v.History {
		if i > 0 && e.ID <= v.History[i-1].ID {
			t.Fatalf("History not in id order: %+v", v.History)
		}
		hist = append(hist, e.Source+"/"+e.Kind+" "+e.FromState+"→"+e.ToState)
	}
	// Not the event moving f0 alone to SUCCESS, nor anything of another batch.
	if got, want := strings.Join(hist, ", "), "intake/insert →RECEIVED, intake/payout_state RECEIVED→CLAIMED, "+
		"pipeline/seal CLAIMED→SEALED, submit/submit SEALED→SEALED, submit/batch_state SEALED→ACCEPTED, "+
		"query/batch_state ACCEPTED→FINISHED, query/payout_state SEALED→FAIL"; got != want {
		t.Fatalf("History =\n%s\nwant\n%s", got, want)
	}
	if dump := fmt.Sprintf("%+v %+v", v, *v.Batch); strings.Contains(dump, cipher) || strings.Contains(dump, "transfer_detail_list") {
		t.Fatalf("Lookup shows the name cipher or the body: %s", dump)
	}

	t.Run("bill", func(t *testing.T) {
		v, err := db.Lookup(ctx, "m0")
		if err != nil {
			t.Fatal(err)
		}
		if v.Bill == nil || v.Bill.OutBillNo != "m0" || v.Bill.LastErrorCode != "NOT_ENOUGH" || v.Bill.LastErrorMessage != "balance low" ||
			v.Bill.Attempts != 1 || v.Bill.TransferBillNo != "" {
			t.Fatalf("Lookup(m0).Bill = %+v", v.Bill)
		}
		if v.Batch == nil || !v.Batch.Parked || v.Batch.ParkedBills != 1 || v.Batch.LastErrorCode != "NOT_ENOUGH" {
			t.Fatalf("Lookup(m0).Batch = %+v", v.Batch)
		}
		var kinds []string
		for _, e := range v.History {
			kinds = append(kinds, e.Kind)
		}
		// m1's bill_create, bill and batch events name m1, the batch's move to PROCESSING names no seq.
		if got, want := strings.Join(kinds, ","), "insert,payout_state,seal,bill_create,batch_state"; got != want {
			t.Fatalf("History kinds = %s, want %s", got, want)
		}
	})
	t.Run("not batched", func(t *testing.T) {
		v, err := db.Lookup(ctx, "loose")
		if err != nil {
			t.Fatal(err)
		}
		if v.Batch != nil || v.Outcome != nil || len(v.History) != 1 || v.History[0].Kind != kindInsert {
			t.Fatalf("Lookup(loose) = %+v", v)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if _, err := db.Lookup(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Lookup(nobody) = %v, want ErrNotFound", err)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		ro, err := OpenReadOnly(ctx, db.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		v, err := ro.Lookup(ctx, "f1")
		if err != nil || v.OutDetailNo != "f1" || len(v.History) != 7 {
			t.Fatalf("read-only Lookup(f1) = %+v, %v", v, err)
		}
		if _, err := ro.Ops(ctx, o.clk.now(), 10); err != nil {
			t.Fatalf("read-only Ops: %v", err)
		}
	})
}

func TestRetryNow(t *testing.T) {
	ctx := context.Background()
	o := newOpsLedger(t)
	db, now := o.db, o.clk.now()
	before, err := db.Batch(ctx, "P1")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.RetryNow(ctx, "P1", "alice", now); err != nil {
		t.Fatalf("RetryNow(P1): %v", err)
	}
	after, err := db.Batch(ctx, "P1")
	if err != nil {
		t.Fatal(err)
	}
	if !after.NextAt.Equal(now) {
		t.Fatalf("P1 NextAt = %v, want now %v", after.NextAt, now)
	}
	if after.State != before.State || after.Attempts != before.Attempts || string(after.Body) != string(before.Body) ||
		after.OutBatchNo != before.OutBatchNo || after.LastErrorCode != before.LastErrorCode || after.Settled {
		t.Fatalf("RetryNow changed more than NextAt:\nbefore %+v\nafter  %+v", before, after)
	}
	due, err := db.DueBatches(ctx, now, 10)
	if err != nil || !slices.ContainsFunc(due, func(b Batch) bool { return b.OutBatchNo == "P1" }) {
		t.Fatalf("DueBatches after RetryNow = %d batches, %v; want P1 due", len(due), err)
	}
	v, err := db.Lookup(ctx, "p0")
	if err != nil {
		t.Fatal(err)
	}
	last := v.History[len(v.History)-1]
	if last.Source != string(SourceOperator) || last.Kind != kindRetryNow || last.FromState != BatchSealed ||
		last.ToState != BatchSealed || !strings.Contains(last.Data, `"by":"alice"`) {
		t.Fatalf("last event = %+v, want operator retry_now by alice", last)
	}

	// Bills: the parked bill becomes due, the accepted one keeps its time, and so the batch.
	m1 := mustBill(t, db, "m1")
	if err := db.RetryNow(ctx, "BB1", "bob", now); err != nil {
		t.Fatalf("RetryNow(BB1): %v", err)
	}
	if got := mustBill(t, db, "m0"); !got.NextAt.Equal(now) || got.Attempts != 1 || got.State != PayoutSealed {
		t.Fatalf("m0 after RetryNow = %+v, want due now, one attempt, SEALED", got)
	}
	if got := mustBill(t, db, "m1"); !got.NextAt.Equal(m1.NextAt) {
		t.Fatalf("m1 NextAt = %v, want %v (accepted: not touched)", got.NextAt, m1.NextAt)
	}
	bb, err := db.Batch(ctx, "BB1")
	if err != nil || !bb.NextAt.Equal(now) || bb.State != BatchProcessing {
		t.Fatalf("BB1 after RetryNow = %+v, %v", bb, err)
	}
	dueBills, err := db.DueBills(ctx, "BB1", now, 10)
	if err != nil || len(dueBills) != 1 || dueBills[0].OutBillNo != "m0" {
		t.Fatalf("DueBills(BB1) = %v, %v; want m0", dueBills, err)
	}
	mustAuditClean(t, o.clk.now(), db.Path())

	for _, tc := range []struct {
		name, no, by string
		wantErr      error
	}{
		{name: "settled", no: "F1", by: "alice", wantErr: ErrIllegalTransition},
		{name: "rejected", no: "R1", by: "alice", wantErr: ErrIllegalTransition},
		{name: "unknown", no: "Z9", by: "alice", wantErr: ErrNotFound},
		{name: "nobody", no: "A1", by: "", wantErr: ErrInvalid},
		{name: "accepted and polled", no: "A1", by: "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.RetryNow(ctx, tc.no, tc.by, now); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("RetryNow(%s, %q) = %v, want %v", tc.no, tc.by, err, tc.wantErr)
			}
		})
	}
	if got, want := db.IllegalTransitions(), int64(0); got != want {
		t.Fatalf("IllegalTransitions = %d, want %d (an operator's refused click is not WeChat contradicting us)", got, want)
	}
	mustAuditClean(t, o.clk.now(), db.Path())
}

func TestErrorMessage(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	mustSeal(t, db, "B1", "b", 1)
	ps := mustSealBills(t, db, "BB1", "m", 1)
	long := strings.Repeat("é", 300) // 600 bytes
	stored := func(table, where string) string {
		t.Helper()
		var m string
		if err := db.rdb.QueryRowContext(ctx, `SELECT last_error_message FROM `+table+` WHERE `+where).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	steps := []struct {
		name       string
		do         func() error
		wantBatch  string
		wantBill   string
		checkBills bool
	}{
		{name: "stored", do: func() error {
			return db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH", ErrorMessage: "余额不足"})
		}, wantBatch: "余额不足"},
		{name: "same code kept by a reschedule", do: func() error {
			return db.Reschedule(ctx, "B1", time.Now(), "NOT_ENOUGH", false)
		}, wantBatch: "余额不足"},
		{name: "capped at 512 bytes of whole characters", do: func() error {
			return db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH", ErrorMessage: long})
		}, wantBatch: strings.Repeat("é", 256)},
		{name: "invalid bytes dropped", do: func() error {
			return db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "NO_AUTH", ErrorMessage: "no\xffauth"})
		}, wantBatch: "noauth"},
		{name: "a code without a message clears it", do: func() error {
			return db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "TIMEOUT"})
		}, wantBatch: ""},
		{name: "another code by a reschedule clears it", do: func() error {
			if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "NO_AUTH", ErrorMessage: "x"}); err != nil {
				return err
			}
			return db.Reschedule(ctx, "B1", time.Now(), "RAIL_NOT_CONFIGURED", false)
		}, wantBatch: ""},
		{name: "bill stored and capped", do: func() error {
			return db.RecordBillCreate(ctx, ps[0].OutDetailNo, BillCreate{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH", ErrorMessage: long})
		}, checkBills: true, wantBill: strings.Repeat("é", 256)},
		{name: "bill same code kept by a reschedule", do: func() error {
			return db.RescheduleBill(ctx, ps[0].OutDetailNo, time.Now(), "NOT_ENOUGH", false)
		}, checkBills: true, wantBill: strings.Repeat("é", 256)},
		{name: "bill cleared by the next attempt", do: func() error {
			return db.RecordBillCreate(ctx, ps[0].OutDetailNo, BillCreate{Outcome: SubmitRetry, ErrorCode: "SYSTEM_ERROR"})
		}, checkBills: true, wantBill: ""},
	}
	for _, st := range steps { // in order: each step starts from the one before
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.checkBills {
			if got := stored("bills", "out_bill_no = 'm0'"); got != st.wantBill {
				t.Fatalf("%s: bill message = %q, want %q", st.name, got, st.wantBill)
			}
			continue
		}
		if got := stored("batches", "out_batch_no = 'B1'"); got != st.wantBatch {
			t.Fatalf("%s: batch message = %q, want %q", st.name, got, st.wantBatch)
		}
	}
}

func TestCapMessage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantLen  int
	}{
		{name: "short", in: "balance low", wantLen: 11},
		{name: "exactly the cap", in: strings.Repeat("a", MaxErrorMessage), wantLen: MaxErrorMessage},
		{name: "ascii over", in: strings.Repeat("a", 600), wantLen: MaxErrorMessage},
		{name: "3-byte characters over", in: strings.Repeat("余", 200), wantLen: 510},
		{name: "4-byte characters over", in: strings.Repeat("😀", 200), wantLen: 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := capMessage(tc.in)
			if len(got) != tc.wantLen || !utf8.ValidString(got) || !strings.HasPrefix(tc.in, got) {
				t.Fatalf("capMessage = %d bytes (valid %v), want %d bytes, a valid prefix", len(got), utf8.ValidString(got), tc.wantLen)
			}
		})
	}
}

func TestWithCommitObserver(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var seen []time.Duration
	db := mustOpenLedger(t, WithCommitObserver(func(d time.Duration) {
		mu.Lock()
		seen = append(seen, d)
		mu.Unlock()
	}))
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	base := count() // Open writes its meta in one transaction
	if base != 1 {
		t.Fatalf("observed %d commits after Open, want 1", base)
	}
	mustInsert(t, db, newPayout("a", 100))
	if got, want := count(), base+1; got != want {
		t.Fatalf("observed %d commits after one insert, want %d", got, want)
	}
	// A write that fails (an invalid seal) commits nothing and is not observed.
	if err := db.SealBatch(ctx, Batch{OutBatchNo: "B1", Rail: railDirect, TotalNum: 1, Members: []int64{999}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SealBatch = %v, want ErrInvalid", err)
	}
	if got, want := count(), base+1; got != want {
		t.Fatalf("observed %d commits after a failed write, want %d", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range seen {
		if d <= 0 {
			t.Fatalf("observed %v, want the transaction's positive duration", seen)
		}
	}
}

// BenchmarkOps reads Ops (limit 50) on a ledger of PAYSTREAM_BENCH_OPS (default 100,000)
// payouts with name ciphers in 1000-detail batches, received at 1000/s (so the last minute
// holds 60,000): 80% settled (a tenth of the details FAIL), 15% accepted and 5% parked.
func BenchmarkOps(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("PAYSTREAM_BENCH_OPS")); err == nil {
		n = v
	}
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(b, WithNow(clk.now))
	key := fillOps(b, db, clk, n)
	b.Run("ops", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s, err := db.Ops(ctx, clk.now(), 50)
			if err != nil {
				b.Fatal(err)
			}
			if s.OpenTotal == 0 {
				b.Fatal("no open batches")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	b.Run("lookup", func(b *testing.B) { // a member of a settled batch in the middle
		for i := 0; i < b.N; i++ {
			if v, err := db.Lookup(ctx, key); err != nil || len(v.History) < 5 {
				b.Fatalf("Lookup = %d events, %v", len(v.History), err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
}

// fillOps fills db as BenchmarkOps describes and returns the key of a member of the middle
// settled batch.
func fillOps(b testing.TB, db *DB, clk *clock, n int) (key string) {
	ctx := context.Background()
	random := func(p *Payout) {
		k := make([]byte, 256)
		rand.Read(k)
		p.UserNameCipher = base64.StdEncoding.EncodeToString(k)
		p.OutDetailNo = rand.Text()[:24]
	}
	for i := 0; i < n/1000; i++ {
		no := fmt.Sprintf("B%d", i)
		clk.add(time.Second)
		ps := mustSealWith(b, db, no, "x", 1000, random)
		if i == n/1000*2/5 {
			key = ps[500].OutDetailNo
		}
		switch pct := i * 100 / (n / 1000); {
		case pct < 80:
			var sa, fa int64
			rows := make([]DetailRow, len(ps))
			for j, p := range ps {
				rows[j] = DetailRow{OutDetailNo: p.OutDetailNo, DetailID: "d" + strconv.Itoa(j), Status: PayoutSuccess}
				if j%10 == 0 {
					rows[j].Status, rows[j].FailReason = PayoutFail, "ACCOUNT_FROZEN"
					fa += p.Amount
				} else {
					sa += p.Amount
				}
			}
			if err := db.RecordSubmit(ctx, no, SubmitResult{Outcome: SubmitAccepted, BatchID: "wx" + no}); err != nil {
				b.Fatal(err)
			}
			if err := db.ApplyBatchStatus(ctx, no, SourceQuery, BatchStatus{BatchID: "wx" + no, Status: BatchFinished,
				SuccessAmount: sa, SuccessNum: 900, FailAmount: fa, FailNum: 100}, time.Now()); err != nil {
				b.Fatal(err)
			}
			for off := 0; off < len(rows); off += 100 {
				if _, err := db.ApplyDetailPage(ctx, no, SourceQuery, off, rows[off:off+100]); err != nil {
					b.Fatal(err)
				}
			}
		case pct < 95:
			if err := db.RecordSubmit(ctx, no, SubmitResult{Outcome: SubmitAccepted, BatchID: "wx" + no}); err != nil {
				b.Fatal(err)
			}
		default:
			if err := db.RecordSubmit(ctx, no, SubmitResult{Outcome: SubmitRetry, ErrorCode: "NOT_ENOUGH", ErrorMessage: "余额不足"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return key
}

// TestDueQueriesUseTheDueIndex: the driver's reads of due batches (every wake-up) go through
// batches_due; an index added for Ops once took them over and sorted every open batch.
func TestDueQueriesUseTheDueIndex(t *testing.T) {
	db := mustOpenLedger(t)
	for _, q := range []string{
		`SELECT min(next_at) FROM batches WHERE settled = 0`,
		`SELECT out_batch_no FROM batches WHERE settled = 0 AND next_at <= 1 ORDER BY next_at LIMIT 10`,
	} {
		var plan strings.Builder
		err := eachRow(context.Background(), db.rdb, `EXPLAIN QUERY PLAN `+q, nil, func(scan func(...any) error) error {
			var id, parent, unused int
			var detail string
			err := scan(&id, &parent, &unused, &detail)
			plan.WriteString(detail + "\n")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(plan.String(), "batches_due") || strings.Contains(plan.String(), "TEMP B-TREE") {
			t.Errorf("%s\nplan:\n%s", q, plan.String())
		}
	}
}
