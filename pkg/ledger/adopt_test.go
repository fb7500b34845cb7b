package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestDB_Adoption(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path)

	wantAdopting := func(t *testing.T, db *DB, want string) {
		t.Helper()
		if got, err := db.Adopting(ctx); err != nil || got != want {
			t.Fatalf("Adopting = %q, %v; want %q", got, err, want)
		}
	}
	wantAdopting(t, db, "")
	if err := db.BeginAdoption(ctx, "lost1"); err != nil {
		t.Fatal(err)
	}
	wantAdopting(t, db, "lost1")

	for _, tt := range []struct {
		name     string
		instance string
		wantErr  error
	}{
		{name: "the same instance again (resumed)", instance: "lost1"},
		{name: "another instance", instance: "lost2", wantErr: ErrAdopting},
		{name: "an empty id", instance: "", wantErr: ErrInvalid},
		{name: "not an instance id", instance: "lost-1", wantErr: ErrInvalid},
		{name: "an id over 32 characters", instance: "L234567890123456789012345678901234", wantErr: ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := db.BeginAdoption(ctx, tt.instance); !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("BeginAdoption(%q) = %v, want %v", tt.instance, err, tt.wantErr)
			}
			wantAdopting(t, db, "lost1")
		})
	}

	// The mark outlives the process: a processor started on the file after a crashed
	// adoption must find it.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpenPath(t, path)
	wantAdopting(t, db, "lost1")
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	wantAdopting(t, ro, "lost1")
	ro.Close()

	if err := db.EndAdoption(ctx); err != nil {
		t.Fatal(err)
	}
	wantAdopting(t, db, "")
	if err := db.EndAdoption(ctx); err != nil {
		t.Fatalf("EndAdoption with no mark = %v, want nil", err)
	}
	if err := db.BeginAdoption(ctx, "lost2"); err != nil {
		t.Fatalf("BeginAdoption of another instance once ended = %v", err)
	}
	wantAdopting(t, db, "lost2")
	// The unfinished adoption is a stuck state the audit names.
	r, err := Audit(ctx, []string{path}, db.now())
	if err != nil || len(r.Violations) != 1 || r.Violations[0].Check != "adoption_unfinished" {
		t.Fatalf("audit with an unfinished adoption = %+v (%v), want one adoption_unfinished", r, err)
	}
}

// mustDuplicate inserts ps and marks each DUPLICATE of owner (conflict: with other
// content); it returns ps with their seqs.
func mustDuplicate(t testing.TB, db *DB, owner string, conflict bool, ps ...Payout) []Payout {
	t.Helper()
	for i, s := range mustInsert(t, db, ps...) {
		ps[i].Seq = s
		if err := db.MarkDuplicate(context.Background(), s, owner, conflict); err != nil {
			t.Fatalf("MarkDuplicate: %v", err)
		}
	}
	return ps
}

// outcomesOf returns the outcome rows of seq (state and whether published), in id order.
func outcomesOf(t testing.TB, db *DB, seq int64) []string {
	t.Helper()
	var out []string
	err := eachRow(context.Background(), db.rdb, `SELECT state, published_at > 0 FROM outcomes WHERE seq = ? ORDER BY id`, []any{seq},
		func(scan func(...any) error) error {
			var st string
			var published bool
			err := scan(&st, &published)
			out = append(out, fmt.Sprintf("%s published=%v", st, published))
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mustTotals fails unless Summary's payouts by state and payout_totals (read by Ops and by
// Totals) are all want.
func mustTotals(t testing.TB, db *DB, want string) {
	t.Helper()
	s, err := db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Payouts); got != want {
		t.Fatalf("Summary payouts = %s, want %s", got, want)
	}
	ops, err := db.Ops(context.Background(), db.now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ops.Payouts); got != want {
		t.Fatalf("payout_totals = %s, want %s", got, want)
	}
	totals, err := db.Totals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(totals); got != want {
		t.Fatalf("Totals = %s, want %s", got, want)
	}
}

func TestDB_Reclaim(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	ps := mustDuplicate(t, db, "lost1", false, newPayout("a", 100), newPayout("b", 200))
	kept := mustSeal(t, db, "K1", "k", 1) // another payout of this ledger, untouched
	// a's DUPLICATE outcome is published already, b's is not.
	out, err := db.PendingOutcomes(ctx, 10)
	if err != nil || len(out) != 2 {
		t.Fatalf("PendingOutcomes = %+v, %v; want the two DUPLICATEs", out, err)
	}
	if err := db.MarkPublished(ctx, []int64{out[0].ID}); err != nil {
		t.Fatal(err)
	}
	mustTotals(t, db, "map[DUPLICATE:{2 300} SEALED:{1 100}]")
	_, events := db.Position()

	clk.add(1)
	if err := db.Reclaim(ctx, []int64{ps[0].Seq, ps[1].Seq}, "lost1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		got, err := db.Payout(ctx, p.OutDetailNo)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != PayoutReceived || got.FailReason != "" || got.OutBatchNo != "" {
			t.Fatalf("%s after Reclaim: state %s, fail_reason %q, batch %q; want RECEIVED, none, none", p.OutDetailNo, got.State, got.FailReason, got.OutBatchNo)
		}
		if o := outcomesOf(t, db, p.Seq); len(o) != 0 {
			t.Fatalf("%s after Reclaim: outcomes %v, want none", p.OutDetailNo, o)
		}
	}
	mustState(t, db, kept[0].OutDetailNo, PayoutSealed)
	if pending, _ := db.PendingOutcomes(ctx, 10); len(pending) != 0 {
		t.Fatalf("PendingOutcomes after Reclaim = %+v, want none", pending)
	}
	if _, after := db.Position(); after != events+1 {
		t.Fatalf("Reclaim appended %d events, want 1", after-events)
	}
	mustTotals(t, db, "map[RECEIVED:{2 300} SEALED:{1 100}]")
	mustAuditClean(t, clk.now(), db.Path()) // the events replay DUPLICATE → RECEIVED

	// Reclaimed, the payouts are this ledger's to pay: sealed, paid, and their outcomes
	// written once (the DUPLICATE ones would have made these inserts fail).
	if err := db.ClaimAndSeal(ctx, batchFor("A1", ps)); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSubmit(ctx, "A1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wxA1", NextAt: clk.now()}); err != nil {
		t.Fatal(err)
	}
	fin := BatchStatus{BatchID: "wxA1", Status: BatchFinished, SuccessAmount: 100, SuccessNum: 1, FailAmount: 200, FailNum: 1}
	if err := db.ApplyBatchStatus(ctx, "A1", SourceQuery, fin, clk.now()); err != nil {
		t.Fatal(err)
	}
	rows := []DetailRow{{"a", "da", PayoutSuccess, ""}, {"b", "db", PayoutFail, "OPENID_INVALID"}}
	if n, err := db.ApplyDetailPage(ctx, "A1", SourceQuery, 0, rows); err != nil || n != 2 {
		t.Fatalf("ApplyDetailPage = %d, %v; want 2 changed", n, err)
	}
	for i, want := range []string{"SUCCESS published=false", "FAIL published=false"} {
		if got := outcomesOf(t, db, ps[i].Seq); fmt.Sprint(got) != fmt.Sprint([]string{want}) {
			t.Fatalf("%s outcomes = %v, want [%s]", ps[i].OutDetailNo, got, want)
		}
	}
	pending, err := db.PendingOutcomes(ctx, 10)
	if err != nil || len(pending) != 2 || pending[0].OutDetailNo != "a" || pending[0].State != PayoutSuccess ||
		pending[1].State != PayoutFail || pending[1].FailReason != "OPENID_INVALID" {
		t.Fatalf("PendingOutcomes = %+v, %v; want a SUCCESS and b FAIL OPENID_INVALID", pending, err)
	}
	mustTotals(t, db, "map[FAIL:{1 200} SEALED:{1 100} SUCCESS:{1 100}]")
	mustAuditClean(t, clk.now(), db.Path())
}

func TestDB_Reclaim_Refuses(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ok := mustDuplicate(t, db, "lost1", false, newPayout("ok", 100))[0]
	other := mustDuplicate(t, db, "other1", false, newPayout("other", 100))[0]
	conflict := mustDuplicate(t, db, "lost1", true, newPayout("conflict", 100))[0]
	received := newPayout("received", 100)
	received.Seq = mustInsert(t, db, received)[0]
	claimed := newPayout("claimed", 100)
	claimed.Seq = mustInsert(t, db, claimed)[0]
	if err := db.MarkClaimed(ctx, []int64{claimed.Seq}); err != nil {
		t.Fatal(err)
	}
	sealed := mustSeal(t, db, "S1", "s", 1)[0]
	const totals = "map[CLAIMED:{1 100} DUPLICATE:{3 300} RECEIVED:{1 100} SEALED:{1 100}]"
	mustTotals(t, db, totals)

	for _, tt := range []struct {
		name    string
		seqs    []int64
		owner   string // default lost1
		wantErr error
	}{
		{name: "owned by another instance", seqs: []int64{ok.Seq, other.Seq}, wantErr: ErrIllegalTransition},
		{name: "a conflict duplicate", seqs: []int64{ok.Seq, conflict.Seq}, wantErr: ErrIllegalTransition},
		{name: "a RECEIVED row", seqs: []int64{ok.Seq, received.Seq}, wantErr: ErrIllegalTransition},
		{name: "a CLAIMED row", seqs: []int64{claimed.Seq, ok.Seq}, wantErr: ErrIllegalTransition},
		{name: "a SEALED row", seqs: []int64{ok.Seq, sealed.Seq}, wantErr: ErrIllegalTransition},
		{name: "an unknown seq", seqs: []int64{ok.Seq, 999}, wantErr: ErrIllegalTransition},
		{name: "asked for another owner", seqs: []int64{ok.Seq}, owner: "other1", wantErr: ErrIllegalTransition},
	} {
		t.Run(tt.name, func(t *testing.T) {
			owner := cmp.Or(tt.owner, "lost1")
			lastSeq, lastEvent := db.Position()
			before := db.IllegalTransitions()
			if err := db.Reclaim(ctx, tt.seqs, owner); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Reclaim = %v, want %v", err, tt.wantErr)
			}
			if got := db.IllegalTransitions() - before; got != 1 {
				t.Fatalf("IllegalTransitions grew by %d, want 1", got)
			}
			// Nothing written: no event, the rows and their outcomes as they were.
			if s, e := db.Position(); s != lastSeq || e != lastEvent {
				t.Fatalf("Position %d/%d after a refused Reclaim, want %d/%d", s, e, lastSeq, lastEvent)
			}
			got, err := db.Payout(ctx, ok.OutDetailNo)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != PayoutDuplicate || got.FailReason != "owner lost1" {
				t.Fatalf("ok after a refused Reclaim: %s %q, want DUPLICATE \"owner lost1\"", got.State, got.FailReason)
			}
			if o := outcomesOf(t, db, ok.Seq); fmt.Sprint(o) != "[DUPLICATE published=false]" {
				t.Fatalf("ok outcomes = %v, want its DUPLICATE", o)
			}
			mustState(t, db, received.OutDetailNo, PayoutReceived)
			mustState(t, db, claimed.OutDetailNo, PayoutClaimed)
			mustState(t, db, sealed.OutDetailNo, PayoutSealed)
			mustTotals(t, db, totals)
		})
	}
}

func TestBodyDetails(t *testing.T) {
	ps := []Payout{newPayout("x2", 250), newPayout("x1", 100), newPayout("x3", 1)}
	for _, tt := range []struct {
		name    string
		body    []byte
		want    string
		wantErr bool
	}{
		{name: "in body order", body: bodyFor("B1", ps), want: "[{x2 250} {x1 100} {x3 1}]"},
		{name: "no details", body: []byte(`{"out_batch_no":"B1","transfer_detail_list":[]}`), want: "[]"},
		{name: "not JSON", body: []byte("{"), wantErr: true},
		{name: "empty", body: nil, wantErr: true},
		{name: "not an object", body: []byte(`[{"out_detail_no":"x1"}]`), wantErr: true},
		{name: "an amount that is not a number", body: []byte(`{"transfer_detail_list":[{"out_detail_no":"x1","transfer_amount":"100"}]}`), wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BodyDetails(tt.body)
			if (err != nil) != tt.wantErr {
				t.Fatalf("BodyDetails = %v, %v; want error %v", got, err, tt.wantErr)
			}
			if err == nil && fmt.Sprint(got) != tt.want {
				t.Fatalf("BodyDetails = %v, want %s", got, tt.want)
			}
		})
	}
}

// TestAudit_AdoptedOwner: a DUPLICATE row naming a lost instance is judged against the file
// of the instance that adopted it (meta adopted.<id>): clean when the adopter holds the key,
// owner_missing without the adoption, duplicate_unfinished when the adopter lacks the key.
func TestAudit_AdoptedOwner(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	other := mustOpenPath(t, filepath.Join(dir, "other.db"))
	mustDuplicate(t, other, "lost0001", false, newPayout("K1", 100))
	adopter := mustOpenPath(t, filepath.Join(dir, "adopter.db"))
	paths := []string{other.Path(), adopter.Path()}
	now := adopter.now()

	mustAuditFinds(t, now, map[string]int{"owner_missing": 1}, paths...)
	if err := adopter.BeginAdoption(ctx, "lost0001"); err != nil {
		t.Fatal(err)
	}
	if err := adopter.EndAdoption(ctx); err != nil {
		t.Fatal(err)
	}
	mustAuditFinds(t, now, map[string]int{"duplicate_unfinished": 1}, paths...)
	mustInsert(t, adopter, newPayout("K1", 100))
	mustAuditClean(t, now, paths...)
}

// TestDB_JournalSince: a ledger with no batch yet is journaled from the start (the zero time);
// one that already holds a batch is journaled from the first time it is asked; the answer
// never changes afterwards.
func TestDB_JournalSince(t *testing.T) {
	ctx := context.Background()
	fresh := mustOpenLedger(t)
	if got, err := fresh.JournalSince(ctx); err != nil || !got.IsZero() {
		t.Fatalf("fresh ledger: JournalSince = %v, %v; want the zero time", got, err)
	}
	mustSeal(t, fresh, "B1", "F", 2)
	if got, err := fresh.JournalSince(ctx); err != nil || !got.IsZero() {
		t.Fatalf("fresh ledger asked again: JournalSince = %v, %v; want the zero time", got, err)
	}

	clk := newClock()
	old := mustOpenLedger(t, WithNow(clk.now))
	mustSeal(t, old, "B1", "O", 2)
	want := clk.now()
	if got, err := old.JournalSince(ctx); err != nil || !got.Equal(want) {
		t.Fatalf("ledger with a batch: JournalSince = %v, %v; want %v", got, err, want)
	}
	clk.add(time.Hour)
	if got, err := old.JournalSince(ctx); err != nil || !got.Equal(want) {
		t.Fatalf("asked again: JournalSince = %v, %v; want %v", got, err, want)
	}
}
