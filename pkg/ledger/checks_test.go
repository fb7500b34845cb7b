package ledger

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// inList matches a CHECK's IN over more than two quoted values, the spelling 0010 replaced.
var inList = regexp.MustCompile(`\w+ IN \('[^']*'(,\s*'[^']*'){2,}\)`)

// hotTables are the tables written per payout or per event, whose constraints 0010 spells as
// equalities.
var hotTables = []string{"payouts", "outcomes", "bills", "batches", "events"}

// inLists returns the IN-list spellings left in the hot tables' stored schema.
func inLists(t *testing.T, db *DB) []string {
	t.Helper()
	var found []string
	for _, tb := range hotTables {
		var text string
		if err := db.rdb.QueryRowContext(context.Background(), `SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?`, tb).Scan(&text); err != nil {
			t.Fatalf("schema of %s: %v", tb, err)
		}
		for _, m := range inList.FindAllString(text, -1) {
			found = append(found, tb+": "+m)
		}
	}
	return found
}

// TestMigrate_ChecksInLine: before 0010 the hot tables' CHECKs name lists of values; after
// it none does, and every constraint still takes exactly the values it took.
func TestMigrate_ChecksInLine(t *testing.T) {
	ctx := context.Background()
	before := mustOpenLedger(t, func(d *DB) { d.upTo = len(migrations()) - 1 })
	if got := inLists(t, before); len(got) != 7 {
		t.Fatalf("before 0010: %d IN-list CHECKs (%q), want 7", len(got), got)
	}

	db := mustOpenLedger(t)
	if got := inLists(t, db); len(got) > 0 {
		t.Fatalf("after 0010: IN-list CHECKs left: %q", got)
	}
	mustSeal(t, db, "B1", "b", 1)
	bill := mustSealBills(t, db, "L1", "l", 1)[0]

	errRollback := errors.New("rolled back")
	// try runs q with v and args in a transaction it rolls back, and returns q's error.
	try := func(q string, v string, args ...any) error {
		var execErr error
		err := db.write(ctx, func(tx *sql.Conn) error {
			_, execErr = tx.ExecContext(ctx, q, append([]any{v}, args...)...)
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("%s with %q: %v", q, v, err)
		}
		return execErr
	}
	for _, c := range []struct {
		q     string
		args  []any
		takes []string
	}{
		{`UPDATE payouts SET state = ? WHERE seq = ?`, []any{bill.Seq}, []string{
			PayoutReceived, PayoutClaimed, PayoutDuplicate, PayoutSealed, PayoutInit, PayoutWaitPay, PayoutProcessing,
			PayoutSuccess, PayoutFail, PayoutRejected, PayoutAccepted, PayoutWaitUserConfirm, PayoutTransfering,
			PayoutCanceling, PayoutCancelled}},
		{`UPDATE payouts SET rail = ? WHERE seq = ?`, []any{bill.Seq}, []string{railDirect, railPartner, RailBills}},
		{`UPDATE batches SET state = ? WHERE out_batch_no = ?`, []any{"B1"}, []string{
			BatchSealed, BatchWaitPay, BatchAccepted, BatchProcessing, BatchFinished, BatchClosed, BatchRejected}},
		{`UPDATE batches SET rail = ? WHERE out_batch_no = ?`, []any{"B1"}, []string{railDirect, railPartner, RailBills}},
		{`UPDATE bills SET cancel_closed = ? WHERE seq = ?`, []any{bill.Seq}, []string{cancelOpen, cancelDone, cancelRefused, cancelLocal}},
		{`INSERT INTO outcomes (state, seq, at) VALUES (?, ?, 1)`, []any{bill.Seq}, []string{
			PayoutDuplicate, PayoutSuccess, PayoutFail, PayoutRejected, PayoutCancelled}},
		{`INSERT INTO events (source, at, kind, prev_hash, hash) VALUES (?, 1, 'test', x'', x'')`, nil, []string{
			srcIntake, srcPipeline, string(SourceSubmit), string(SourceQuery), string(SourceCallback), string(SourceOperator)}},
	} {
		for _, v := range c.takes {
			if err := try(c.q, v, c.args...); err != nil {
				t.Errorf("%s with %q: %v, want it taken", c.q, v, err)
			}
		}
		for _, v := range []string{"BOGUS", otherCase(c.takes[1]), c.takes[0] + " "} {
			if err := try(c.q, v, c.args...); err == nil || !strings.Contains(err.Error(), "CHECK constraint failed") {
				t.Errorf("%s with %q: %v, want a CHECK constraint failure", c.q, v, err)
			}
		}
	}
}

// otherCase returns s in lower case, or in upper case if it is lower case already.
func otherCase(s string) string {
	if l := strings.ToLower(s); l != s {
		return l
	}
	return strings.ToUpper(s)
}
