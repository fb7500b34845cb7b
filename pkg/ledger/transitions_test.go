package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// legalEdges is the payout state machine of the API contract, written out independently of
// payoutNext.
var legalEdges = map[[2]string]bool{
	{"RECEIVED", "CLAIMED"}: true, {"RECEIVED", "DUPLICATE"}: true,
	{"CLAIMED", "SEALED"}: true,
	{"SEALED", "INIT"}:    true, {"SEALED", "WAIT_PAY"}: true, {"SEALED", "PROCESSING"}: true,
	{"SEALED", "SUCCESS"}: true, {"SEALED", "FAIL"}: true, {"SEALED", "REJECTED"}: true,
	{"INIT", "WAIT_PAY"}: true, {"INIT", "PROCESSING"}: true, {"INIT", "SUCCESS"}: true, {"INIT", "FAIL"}: true,
	{"WAIT_PAY", "PROCESSING"}: true, {"WAIT_PAY", "SUCCESS"}: true, {"WAIT_PAY", "FAIL"}: true,
	{"PROCESSING", "SUCCESS"}: true, {"PROCESSING", "FAIL"}: true,
}

var allPayoutStates = []string{"RECEIVED", "CLAIMED", "DUPLICATE", "SEALED", "INIT", "WAIT_PAY", "PROCESSING", "SUCCESS", "FAIL", "REJECTED"}

// driveTo inserts a payout keyed key and moves it to state through the public API.
func driveTo(t *testing.T, db *DB, key, state string) Payout {
	t.Helper()
	ctx := context.Background()
	p := newPayout(key, 500)
	p.Seq = mustInsert(t, db, p)[0]
	var err error
	switch state {
	case "RECEIVED":
		return p
	case "DUPLICATE":
		if err := db.MarkDuplicate(ctx, p.Seq, "other", false); err != nil {
			t.Fatalf("mark duplicate: %v", err)
		}
		return p
	}
	if err := db.MarkClaimed(ctx, []int64{p.Seq}); err != nil {
		t.Fatalf("mark claimed: %v", err)
	}
	if state == "CLAIMED" {
		return p
	}
	if err = db.SealBatch(ctx, batchFor("B"+key, []Payout{p})); err != nil {
		t.Fatalf("seal: %v", err)
	}
	switch state {
	case "SEALED":
	case "REJECTED":
		err = db.RecordSubmit(ctx, "B"+key, SubmitResult{Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"})
	default:
		_, err = db.ApplyDetailPage(ctx, "B"+key, SourceQuery, 0, []DetailRow{{OutDetailNo: key, DetailID: "D" + key, Status: state,
			FailReason: failReasonFor(state)}})
	}
	if err != nil {
		t.Fatalf("drive %s to %s: %v", key, state, err)
	}
	mustState(t, db, key, state)
	return p
}

// attempt tries to move p to state through the API that would do it.
func attempt(db *DB, p Payout, state string) error {
	ctx := context.Background()
	switch state {
	case "RECEIVED":
		_, err := db.InsertPayouts(ctx, []Payout{newPayout(p.OutDetailNo, p.Amount)})
		return err
	case "CLAIMED":
		return db.MarkClaimed(ctx, []int64{p.Seq})
	case "DUPLICATE":
		return db.MarkDuplicate(ctx, p.Seq, "other", false)
	case "SEALED":
		return db.SealBatch(ctx, batchFor("C"+p.OutDetailNo, []Payout{p}))
	case "REJECTED":
		return db.RecordSubmit(ctx, "B"+p.OutDetailNo, SubmitResult{Outcome: SubmitRejected, ErrorCode: "PARAM_ERROR"})
	}
	_, err := db.ApplyDetailPage(ctx, "B"+p.OutDetailNo, SourceQuery, 0, []DetailRow{{OutDetailNo: p.OutDetailNo, DetailID: "D" + p.OutDetailNo,
		Status: state, FailReason: failReasonFor(state)}})
	return err
}

// failReasonFor returns the reason WeChat gives with a detail status: one for FAIL only.
func failReasonFor(state string) string {
	if state == PayoutFail {
		return "ACCOUNT_FROZEN"
	}
	return ""
}

func TestPayoutTransitions_EveryPair(t *testing.T) {
	db := mustOpenLedger(t)
	// Payouts outside any batch get a batch of their own name for detail and submit attempts,
	// so those attempts name a real batch they are not a member of.
	n := 0
	for _, from := range allPayoutStates {
		for _, to := range allPayoutStates {
			n++
			key := fmt.Sprintf("p%d", n)
			t.Run(from+" to "+to, func(t *testing.T) {
				p := driveTo(t, db, key, from)
				if _, err := db.Batch(context.Background(), "B"+key); errors.Is(err, ErrNotFound) {
					mustSeal(t, db, "B"+key, "h"+key, 1)
				}
				before := db.IllegalTransitions()
				err := attempt(db, p, to)
				legal := legalEdges[[2]string{from, to}]
				want := from
				if legal {
					want = to
				}
				mustState(t, db, key, want)
				switch {
				case legal && err != nil:
					t.Fatalf("legal %s → %s: %v", from, to, err)
				// Re-inserting is an idempotent no-op, and rejecting the batch an unbatched payout
				// is not in leaves it alone: only the state check applies to those.
				case !legal && from != to && err == nil && detailRank(from) < 0 && to != "RECEIVED" && !(to == "REJECTED" && unbatched(from)):
					t.Fatalf("illegal %s → %s: no error", from, to)
				case err != nil && !errors.Is(err, ErrIllegalTransition) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotMember):
					t.Fatalf("%s → %s: error %v is not a refusal", from, to, err)
				case errors.Is(err, ErrIllegalTransition) && db.IllegalTransitions() == before:
					t.Fatalf("%s → %s refused but not counted", from, to)
				}
			})
		}
	}
	// The DUPLICATE rows name an owner whose ledger is not audited with this one.
	sum, err := db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mustAuditFinds(t, db.now(), map[string]int{"owner_missing": sum.Payouts[PayoutDuplicate].Count}, db.Path())
}

func unbatched(state string) bool {
	return state == "RECEIVED" || state == "CLAIMED" || state == "DUPLICATE"
}
