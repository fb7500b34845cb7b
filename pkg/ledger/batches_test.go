package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDB_SealBatch_Refusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		edit    func(b *Batch, ps []Payout)
		wantErr error
	}{
		{name: "valid", edit: func(*Batch, []Payout) {}},
		{name: "total amount not the members' sum", edit: func(b *Batch, _ []Payout) { b.TotalAmount++ }, wantErr: ErrInvalid},
		{name: "total num not the members' count", edit: func(b *Batch, _ []Payout) { b.TotalNum-- }, wantErr: ErrInvalid},
		{name: "member not claimed", edit: func(b *Batch, _ []Payout) { b.Members[1] = 4 }, wantErr: ErrInvalid},
		{name: "member listed twice", edit: func(b *Batch, _ []Payout) { b.Members[1] = b.Members[0] }, wantErr: ErrInvalid},
		{name: "body lists another amount", edit: func(b *Batch, ps []Payout) {
			ps[0].Amount++
			b.Body = bodyFor(b.OutBatchNo, ps)
		}, wantErr: ErrInvalid},
		{name: "body not JSON", edit: func(b *Batch, _ []Payout) { b.Body = []byte("{") }, wantErr: ErrInvalid},
		{name: "other merchant", edit: func(b *Batch, _ []Payout) { b.MchID = "1900000999" }, wantErr: ErrInvalid},
		{name: "bad out_batch_no", edit: func(b *Batch, _ []Payout) { b.OutBatchNo = "B-1" }, wantErr: ErrInvalid},
		{name: "over the direct cap", edit: func(b *Batch, _ []Payout) { b.TotalNum = MaxDetailsDirect + 1 }, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := mustOpenLedger(t)
			ps := []Payout{newPayout("a", 100), newPayout("b", 200), newPayout("c", 300)}
			for i, s := range mustInsert(t, db, ps...) {
				ps[i].Seq = s
			}
			mustInsert(t, db, newPayout("unclaimed", 100)) // seq 4
			if err := db.MarkClaimed(ctx, []int64{1, 2, 3}); err != nil {
				t.Fatal(err)
			}
			b := batchFor("B1", ps)
			tt.edit(&b, ps)
			err := db.SealBatch(ctx, b)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("SealBatch = %v, want %v", err, tt.wantErr)
			}
			want := PayoutSealed
			if tt.wantErr != nil {
				want = PayoutClaimed
				if _, err := db.Batch(ctx, "B1"); !errors.Is(err, ErrNotFound) {
					t.Fatalf("refused batch was stored: %v", err)
				}
			}
			for _, k := range []string{"a", "b", "c"} {
				mustState(t, db, k, want)
			}
			mustAuditClean(t, db.now(), db.Path())
		})
	}
}

// TestDB_ClaimAndSeal seals a batch whose members are partly RECEIVED (claimed by the
// caller just now) and partly CLAIMED: one transaction records the claims and the seal, the
// event chain replays cleanly, and SealBatch still refuses RECEIVED members.
func TestDB_ClaimAndSeal(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := []Payout{newPayout("a", 100), newPayout("b", 200), newPayout("c", 300)}
	for i, s := range mustInsert(t, db, ps...) {
		ps[i].Seq = s
	}
	if err := db.MarkClaimed(ctx, []int64{ps[1].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := db.SealBatch(ctx, batchFor("B1", ps)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SealBatch with RECEIVED members = %v, want ErrInvalid", err)
	}
	mustState(t, db, "a", PayoutReceived)
	if err := db.ClaimAndSeal(ctx, batchFor("B1", ps)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		mustState(t, db, k, PayoutSealed)
	}
	if err := db.ClaimAndSeal(ctx, batchFor("B1", ps)); err != nil {
		t.Fatalf("sealing again with the same content = %v, want a no-op", err)
	}
	dup := newPayout("d", 100)
	dup.Seq = mustInsert(t, db, dup)[0]
	if err := db.MarkDuplicate(ctx, dup.Seq, "other", false); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimAndSeal(ctx, batchFor("B2", []Payout{dup})); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ClaimAndSeal of a DUPLICATE = %v, want ErrInvalid", err)
	}
	// The owner's ledger is not audited with this one.
	mustAuditFinds(t, db.now(), map[string]int{"owner_missing": 1}, db.Path())
}

func TestDB_SealBatch_AgainIsNoOpButNotWithOtherContent(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := mustSeal(t, db, "B1", "a", 2)
	if err := db.SealBatch(ctx, batchFor("B1", ps)); err != nil {
		t.Fatalf("sealing the same batch again = %v, want nil", err)
	}
	if err := db.SealBatch(ctx, batchFor("B1", ps[:1])); !errors.Is(err, ErrInvalid) {
		t.Fatalf("sealing B1 with other members = %v, want ErrInvalid", err)
	}
	b, err := db.Batch(ctx, "B1")
	if err != nil {
		t.Fatal(err)
	}
	if b.State != BatchSealed || len(b.Members) != 2 || b.TotalAmount != 201 || string(b.Body) != string(bodyFor("B1", ps)) {
		t.Fatalf("Batch = %+v", b)
	}
}

func TestBatch_LogValueHidesBody(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "batch", Batch{OutBatchNo: "B1", Body: []byte(`{"openid":"secret-openid"}`)})
	if strings.Contains(buf.String(), "secret-openid") || !strings.Contains(buf.String(), "B1") {
		t.Fatalf("log line = %s", buf.String())
	}
}

// TestDB_BatchHeadsLeaveTheBody: the reads made after every step (DueBatches, BatchHead)
// carry no body, which is a thousand details or more; BatchBody and Batch return the frozen
// body byte for byte, and an unknown number is ErrNotFound.
func TestDB_BatchHeadsLeaveTheBody(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSeal(t, db, "B1", "k", 3)
	want := bodyFor("B1", ps)

	due, err := db.DueBatches(ctx, clk.now(), 10)
	if err != nil || len(due) != 1 || due[0].OutBatchNo != "B1" || due[0].Body != nil || due[0].TotalNum != 3 {
		t.Fatalf("DueBatches = %+v, %v; want the head of B1, without its body", due, err)
	}
	head, err := db.BatchHead(ctx, "B1")
	if err != nil || head.Body != nil || head.Members != nil || head.TotalAmount != due[0].TotalAmount {
		t.Fatalf("BatchHead = %+v, %v; want B1 without body or members", head, err)
	}
	body, err := db.BatchBody(ctx, "B1")
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("BatchBody = %q, %v; want %q", body, err, want)
	}
	if b, err := db.Batch(ctx, "B1"); err != nil || !bytes.Equal(b.Body, want) || len(b.Members) != 3 {
		t.Fatalf("Batch = %+v, %v; want B1 with its body and members", b, err)
	}
	if _, err := db.BatchBody(ctx, "B9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BatchBody of an unknown batch = %v, want ErrNotFound", err)
	}
}

// TestDB_BodyFrozen: a sealed body can be neither changed nor removed, by the ledger or by
// hand, and every step of its batch leaves it as sealed.
func TestDB_BodyFrozen(t *testing.T) {
	db := mustOpenLedger(t)
	mustSeal(t, db, "B1", "k", 3)
	ctx := context.Background()
	want, err := db.BatchBody(ctx, "B1")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wx1"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE batch_bodies SET body = x'7b7d' WHERE out_batch_no = 'B1'`,
		`DELETE FROM batch_bodies WHERE out_batch_no = 'B1'`,
	} {
		err := db.write(ctx, func(tx *sql.Conn) error {
			_, err := tx.ExecContext(ctx, q)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "batch body") {
			t.Fatalf("%s: %v, want the trigger's refusal", q, err)
		}
	}
	if body, err := db.BatchBody(ctx, "B1"); err != nil || !bytes.Equal(body, want) {
		t.Fatalf("BatchBody = %q, %v; want the body sealed", body, err)
	}
}

func TestDB_BatchLifecycle(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustSeal(t, db, "B1", "k", 3)

	due, err := db.DueBatches(ctx, clk.now(), 10)
	if err != nil || len(due) != 1 || due[0].State != BatchSealed {
		t.Fatalf("DueBatches = %+v, %v; want B1 to submit", due, err)
	}
	// An ambiguous submit keeps the batch SEALED with the same number and body.
	retryAt := clk.now().Add(time.Minute)
	if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitRetry, ErrorCode: "TIMEOUT", NextAt: retryAt}); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueBatches(ctx, clk.now(), 10); len(due) != 0 {
		t.Fatalf("DueBatches right after a retry = %d batches, want 0", len(due))
	}
	if next, ok, err := db.NextDue(ctx); err != nil || !ok || !next.Equal(retryAt.Truncate(time.Millisecond)) {
		t.Fatalf("NextDue = %v %v %v, want %v", next, ok, err, retryAt)
	}
	clk.add(time.Minute)
	pollAt := clk.now().Add(time.Minute)
	if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wx1", NextAt: pollAt}); err != nil {
		t.Fatal(err)
	}
	// NOT_FOUND right after the create is not a failure: remember since when.
	if err := db.Reschedule(ctx, "B1", pollAt, "NOT_FOUND", true); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Minute)
	if err := db.Reschedule(ctx, "B1", pollAt, "NOT_FOUND", true); err != nil {
		t.Fatal(err)
	}
	b, _ := db.Batch(ctx, "B1")
	if b.State != BatchAccepted || b.BatchID != "wx1" || b.Attempts != 2 || b.LastErrorCode != "NOT_FOUND" ||
		!b.NotFoundSince.Equal(clk.now().Add(-time.Minute)) || b.AcceptedAt.IsZero() {
		t.Fatalf("after accept and NOT_FOUND: %+v", b)
	}
	if err := db.Reschedule(ctx, "nope", pollAt, "", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Reschedule(unknown) = %v, want ErrNotFound", err)
	}
	if err := db.ApplyBatchStatus(ctx, "B1", SourceQuery, BatchStatus{BatchID: "wx1", Status: BatchProcessing}, pollAt); err != nil {
		t.Fatal(err)
	}
	// A stale status is ignored, not an error.
	if err := db.ApplyBatchStatus(ctx, "B1", SourceQuery, BatchStatus{BatchID: "wx1", Status: BatchAccepted}, pollAt); err != nil {
		t.Fatalf("stale status = %v, want nil", err)
	}
	fin := BatchStatus{BatchID: "wx1", Status: BatchFinished, SuccessAmount: ps[0].Amount + ps[1].Amount, SuccessNum: 2,
		FailAmount: ps[2].Amount, FailNum: 1}
	if err := db.ApplyCallback(ctx, "n1", "B1", fin); err != nil {
		t.Fatal(err)
	}
	b, _ = db.Batch(ctx, "B1")
	if b.State != BatchFinished || b.Settled || !b.NotFoundSince.IsZero() {
		t.Fatalf("after FINISHED callback: %+v (want FINISHED, unsettled until pages)", b)
	}
	// A stale PROCESSING page row never undoes SUCCESS.
	rows := []DetailRow{{ps[0].OutDetailNo, "d0", PayoutSuccess, ""}, {ps[1].OutDetailNo, "d1", PayoutProcessing, ""}}
	if n, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, rows); err != nil || n != 2 {
		t.Fatalf("page 1 = %d, %v; want 2 changed", n, err)
	}
	stale := []DetailRow{{ps[0].OutDetailNo, "d0", PayoutProcessing, ""}}
	if n, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, stale); err != nil || n != 0 {
		t.Fatalf("stale page = %d, %v; want 0, nil", n, err)
	}
	mustState(t, db, ps[0].OutDetailNo, PayoutSuccess)
	before := db.IllegalTransitions()
	bad := []DetailRow{
		{ps[0].OutDetailNo, "d0", PayoutFail, "X"},   // SUCCESS → FAIL: illegal
		{"stranger", "dx", PayoutSuccess, ""},        // not a member
		{ps[1].OutDetailNo, "d1", PayoutSuccess, ""}, // legal, applied despite the others
		{ps[2].OutDetailNo, "d2", PayoutFail, "OPENID_INVALID"},
	}
	n, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 100, bad)
	if !errors.Is(err, ErrIllegalTransition) || !errors.Is(err, ErrNotMember) || n != 2 {
		t.Fatalf("mixed page = %d, %v; want 2 changed and both refusals", n, err)
	}
	if got := db.IllegalTransitions() - before; got != 2 {
		t.Fatalf("IllegalTransitions grew by %d, want 2", got)
	}
	b, _ = db.Batch(ctx, "B1")
	if !b.Settled {
		t.Fatalf("batch not settled with every member final: %+v", b)
	}
	if err := db.ApplyBatchStatus(ctx, "B1", SourceQuery, BatchStatus{BatchID: "wx1", Status: BatchProcessing}, pollAt); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("FINISHED → PROCESSING = %v, want ErrIllegalTransition", err)
	}
	if err := db.ApplyCallback(ctx, "n1", "B1", BatchStatus{Status: BatchProcessing}); err != nil {
		t.Fatalf("replayed notification = %v, want a no-op", err)
	}
	if due, _ := db.DueBatches(ctx, clk.now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("settled batch still due: %+v", due)
	}
	out, err := db.PendingOutcomes(ctx, 10)
	if err != nil || len(out) != 3 {
		t.Fatalf("PendingOutcomes = %+v, %v; want 3", out, err)
	}
	if o := out[2]; o.State != PayoutFail || o.FailReason != "OPENID_INVALID" || o.BatchID != "wx1" || o.DetailID != "d2" {
		t.Fatalf("outcome = %+v", o)
	}
	sum, err := db.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Batches[BatchFinished] != 1 || sum.Payouts[PayoutSuccess].Count != 2 || sum.Payouts[PayoutFail].Amount != ps[2].Amount {
		t.Fatalf("Summary = %+v", sum)
	}
	mustAuditClean(t, clk.now(), db.Path())
}

func TestDB_ClosedAndRejected(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := mustSeal(t, db, "C1", "c", 3)
	if err := db.RecordSubmit(ctx, "C1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wxc", BatchStatus: BatchWaitPay}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ApplyDetailPage(ctx, "C1", SourceQuery, 0, []DetailRow{{ps[0].OutDetailNo, "d", PayoutSuccess, ""}}); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBatchStatus(ctx, "C1", SourceQuery, BatchStatus{BatchID: "wxc", Status: BatchClosed, CloseReason: "OVERDUE_CLOSE",
		SuccessAmount: ps[0].Amount, SuccessNum: 1}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	mustState(t, db, ps[0].OutDetailNo, PayoutSuccess)
	for _, p := range ps[1:] {
		got, _ := db.Payout(ctx, p.OutDetailNo)
		if got.State != PayoutFail || got.FailReason != "OVERDUE_CLOSE" {
			t.Fatalf("member of a CLOSED batch = %s/%s, want FAIL/OVERDUE_CLOSE", got.State, got.FailReason)
		}
	}
	rs := mustSeal(t, db, "R1", "r", 2)
	if err := db.RecordSubmit(ctx, "R1", SubmitResult{Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range rs {
		got, _ := db.Payout(ctx, p.OutDetailNo)
		if got.State != PayoutRejected || got.FailReason != "PARAM_ERROR" {
			t.Fatalf("member of a rejected batch = %s/%s", got.State, got.FailReason)
		}
	}
	if err := db.RecordSubmit(ctx, "C1", SubmitResult{Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("rejecting an accepted batch = %v, want ErrIllegalTransition", err)
	}
	for _, no := range []string{"C1", "R1"} {
		if b, _ := db.Batch(ctx, no); !b.Settled {
			t.Fatalf("%s not settled: %+v", no, b)
		}
	}
	mustAuditClean(t, db.now(), db.Path())
}

func TestDB_BatchCaps(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := make([]Payout, MaxDetailsPartner)
	for i := range ps {
		ps[i] = newPayout(fmt.Sprintf("p%d", i), 100)
		ps[i].Rail, ps[i].SubMchID = railPartner, "1900000001"
	}
	seqs := mustInsert(t, db, ps...)
	for i := range ps {
		ps[i].Seq = seqs[i]
	}
	if err := db.MarkClaimed(ctx, seqs); err != nil {
		t.Fatal(err)
	}
	if err := db.SealBatch(ctx, batchFor("P1", ps)); err != nil {
		t.Fatalf("a 3000-detail partner batch: %v", err)
	}
	if b, err := db.Batch(ctx, "P1"); err != nil || len(b.Members) != MaxDetailsPartner || b.Members[2999] != seqs[2999] {
		t.Fatalf("Batch(P1) members = %d, %v", len(b.Members), err)
	}
	mustAuditClean(t, db.now(), db.Path())
}

func TestBatchHead(t *testing.T) {
	db := mustOpenLedger(t)
	mustSeal(t, db, "B1", "k", 3)
	full, err := db.Batch(context.Background(), "B1")
	if err != nil {
		t.Fatal(err)
	}
	head, err := db.BatchHead(context.Background(), "B1")
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Members) != 3 || head.Members != nil || head.State != full.State || head.TotalAmount != full.TotalAmount {
		t.Errorf("head %+v of batch %+v: want the same batch without members", head, full)
	}
	if _, err := db.BatchHead(context.Background(), "NOPE"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown batch: %v, want ErrNotFound", err)
	}
}
