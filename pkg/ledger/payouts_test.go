package ledger

import (
	"context"
	"errors"
	"testing"
)

func TestDB_InsertPayouts(t *testing.T) {
	ctx := context.Background()
	other := newPayout("k1", 999) // same key, other content
	tests := []struct {
		name    string
		group   []Payout
		want    []InsertStatus
		wantErr error
	}{
		{name: "new keys", group: []Payout{newPayout("n1", 100), newPayout("n2", 200)}, want: []InsertStatus{Inserted, Inserted}},
		{name: "same key same content is a no-op", group: []Payout{newPayout("k1", 100)}, want: []InsertStatus{Existing}},
		{name: "same key other content is a conflict", group: []Payout{other}, want: []InsertStatus{Conflict}},
		{name: "duplicate inside the group", group: []Payout{newPayout("d1", 100), newPayout("d1", 100), newPayout("d1", 5)},
			want: []InsertStatus{Inserted, Existing, Conflict}},
		{name: "zero amount", group: []Payout{newPayout("z1", 100), newPayout("z2", 0)}, wantErr: ErrInvalid},
		{name: "bad key", group: []Payout{newPayout("bad-key", 100)}, wantErr: ErrInvalid},
		{name: "plaintext name", group: []Payout{func() Payout { p := newPayout("u1", 100); p.UserNameCipher = "张三"; return p }()}, wantErr: ErrInvalid},
		{name: "unknown rail", group: []Payout{func() Payout { p := newPayout("r1", 100); p.Rail = "card"; return p }()}, wantErr: ErrInvalid},
		{name: "no content hash", group: []Payout{func() Payout { p := newPayout("h1", 100); p.ContentHash = nil; return p }()}, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := mustOpenLedger(t)
			first := mustInsert(t, db, newPayout("k1", 100))
			res, err := db.InsertPayouts(ctx, tt.group)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("InsertPayouts error = %v, want %v", err, tt.wantErr)
			}
			sum, serr := db.Summary(ctx)
			if serr != nil {
				t.Fatal(serr)
			}
			if tt.wantErr != nil {
				if got := sum.Payouts[PayoutReceived].Count; got != 1 {
					t.Fatalf("after a refused group %d payouts stored, want 1", got)
				}
				return
			}
			wantConflicts := 0
			for i, r := range res {
				if r.Status != tt.want[i] {
					t.Fatalf("result[%d] = %v, want %v", i, r.Status, tt.want[i])
				}
				if r.State != PayoutReceived || r.Seq == 0 {
					t.Fatalf("result[%d] = %+v, want a seq in RECEIVED", i, r)
				}
				if r.Status == Conflict {
					wantConflicts++
				}
			}
			if sum.Conflicts != wantConflicts {
				t.Fatalf("conflicts = %d, want %d", sum.Conflicts, wantConflicts)
			}
			p, err := db.Payout(ctx, "k1")
			if err != nil || p.Amount != 100 || p.Seq != first[0] {
				t.Fatalf("k1 = %+v, %v; want the first request kept (100 fen)", p, err)
			}
			mustAuditClean(t, db.now(), db.Path())
		})
	}
}

func TestDB_InsertPayouts_SeqsAreOrdered(t *testing.T) {
	db := mustOpenLedger(t)
	a := mustInsert(t, db, newPayout("a", 1), newPayout("b", 2))
	b := mustInsert(t, db, newPayout("c", 3))
	if a[0] != 1 || a[1] != 2 || b[0] != 3 {
		t.Fatalf("seqs = %v %v, want 1 2 3", a, b)
	}
	ps, err := db.PayoutsInState(context.Background(), PayoutReceived, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].OutDetailNo != "a" || ps[1].OutDetailNo != "b" {
		t.Fatalf("PayoutsInState(RECEIVED, 2) = %+v, want a, b", ps)
	}
}

func TestDB_MarkClaimedAndDuplicate(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	seqs := mustInsert(t, db, newPayout("a", 100), newPayout("b", 200), newPayout("c", 300))
	if err := db.MarkClaimed(ctx, seqs[:2]); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkClaimed(ctx, seqs[:2]); err != nil {
		t.Fatalf("repeated MarkClaimed = %v, want a no-op", err)
	}
	if err := db.MarkDuplicate(ctx, seqs[2], "Xy12345678"); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkDuplicate(ctx, seqs[2], "Xy12345678"); err != nil {
		t.Fatalf("repeated MarkDuplicate = %v, want a no-op", err)
	}
	if err := db.MarkClaimed(ctx, []int64{seqs[0], seqs[2]}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("MarkClaimed(DUPLICATE) = %v, want ErrIllegalTransition", err)
	}
	if err := db.MarkClaimed(ctx, []int64{999}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkClaimed(unknown) = %v, want ErrNotFound", err)
	}
	claimed, err := db.PayoutsInState(ctx, PayoutClaimed, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("PayoutsInState(CLAIMED) = %d, %v; want 2", len(claimed), err)
	}
	out, err := db.PendingOutcomes(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].OutDetailNo != "c" || out[0].State != PayoutDuplicate || out[0].FailReason != "owner Xy12345678" {
		t.Fatalf("PendingOutcomes = %+v, want one DUPLICATE for c", out)
	}
	if err := db.MarkPublished(ctx, []int64{out[0].ID}); err != nil {
		t.Fatal(err)
	}
	if out, _ := db.PendingOutcomes(ctx, 10); len(out) != 0 {
		t.Fatalf("PendingOutcomes after MarkPublished = %+v", out)
	}
	if got := db.IllegalTransitions(); got != 1 {
		t.Fatalf("IllegalTransitions = %d, want 1", got)
	}
	mustAuditClean(t, db.now(), db.Path())
}
