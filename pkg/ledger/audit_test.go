package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// healthyLedger builds a closed ledger with a settled batch, an open one and loose payouts.
func healthyLedger(t *testing.T, clk *clock) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := Open(ctx, path, WithNow(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	ps := mustSeal(t, db, "B1", "a", 3)
	mustSeal(t, db, "B2", "b", 2)
	mustInsert(t, db, newPayout("loose1", 700), newPayout("loose2", 800))
	if err := db.RecordSubmit(ctx, "B1", SubmitResult{Outcome: SubmitAccepted, BatchID: "wx1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.ApplyBatchStatus(ctx, "B1", SourceQuery, BatchStatus{BatchID: "wx1", Status: BatchFinished,
		SuccessAmount: ps[0].Amount + ps[1].Amount + ps[2].Amount, SuccessNum: 3}, clk.now()); err != nil {
		t.Fatal(err)
	}
	var rows []DetailRow
	for _, p := range ps {
		rows = append(rows, DetailRow{OutDetailNo: p.OutDetailNo, DetailID: "d" + p.OutDetailNo, Status: PayoutSuccess})
	}
	if _, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, rows); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, clk.now(), path)
	return path
}

// tamper runs SQL on the file as someone with sqlite3 would.
func tamper(t *testing.T, path, q string) {
	t.Helper()
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(q); err != nil {
		t.Fatalf("tamper %q: %v", q, err)
	}
}

func TestAudit_Tampering(t *testing.T) {
	tests := []struct {
		name    string
		sql     string
		wantRow string
		check   string
	}{
		{name: "amount changed in a batch", sql: `UPDATE payouts SET amount = 99999 WHERE out_detail_no = 'a1'`,
			wantRow: "payouts seq=2 out_detail_no=a1", check: "event_replay"},
		{name: "amount changed outside a batch", sql: `UPDATE payouts SET amount = 1 WHERE out_detail_no = 'loose2'`,
			wantRow: "payouts seq=7 out_detail_no=loose2", check: "event_replay"},
		{name: "event deleted", sql: `DROP TRIGGER events_append_only_delete; DELETE FROM events WHERE id = 3`,
			wantRow: "events id=4", check: "event_chain"},
		{name: "last event deleted", sql: `DROP TRIGGER events_append_only_delete; DELETE FROM events WHERE id = (SELECT max(id) FROM events)`,
			wantRow: "payouts seq=3 out_detail_no=a2", check: "event_replay"},
		{name: "event edited", sql: `DROP TRIGGER events_append_only_update; UPDATE events SET to_state = 'FAIL' WHERE kind = 'payout_state' AND to_state = 'SUCCESS'`,
			wantRow: "events id=", check: "event_chain"},
		{name: "detail moved to another batch", sql: `UPDATE payouts SET out_batch_no = 'B2', batch_pos = 2 WHERE out_detail_no = 'a2'`,
			wantRow: "payouts seq=3 out_detail_no=a2", check: "event_replay"},
		{name: "success turned into fail", sql: `UPDATE payouts SET state = 'FAIL' WHERE out_detail_no = 'a0'`,
			wantRow: "batches out_batch_no=B1", check: "settled_sums"},
		{name: "batch total edited", sql: `UPDATE batches SET total_amount = total_amount + 1 WHERE out_batch_no = 'B2'`,
			wantRow: "batches out_batch_no=B2", check: "batch_totals"},
		{name: "body edited", sql: `DROP TRIGGER batch_bodies_frozen;
			UPDATE batch_bodies SET body = CAST(replace(CAST(body AS TEXT), 'b1', 'zz') AS BLOB) WHERE out_batch_no = 'B2'`,
			wantRow: "batches out_batch_no=B2", check: "batch_body"},
		{name: "body deleted", sql: `DROP TRIGGER batch_bodies_keep; DELETE FROM batch_bodies WHERE out_batch_no = 'B2'`,
			wantRow: "batches out_batch_no=B2", check: "batch_body"},
		{name: "duplicate key planted", sql: `INSERT INTO payouts SELECT 100, key_hash, out_detail_no, mchid, appid, sub_mchid, openid, remark,
			scene_id, rail, group_key, amount, user_name_cipher, content_hash, stream_seq, 'RECEIVED', NULL, NULL, '', '', received_at, updated_at, ''
			FROM payouts WHERE out_detail_no = 'loose1'`, wantRow: "payouts out_detail_no=loose1", check: "duplicate_keys"},
		{name: "outbox row deleted", sql: `DELETE FROM outcomes WHERE seq = 1`,
			wantRow: "payouts seq=1 out_detail_no=a0", check: "outcomes"},
		{name: "payout totals edited", sql: `UPDATE payout_totals SET amount = amount + 1 WHERE state = 'SUCCESS'`,
			wantRow: "payout_totals state=SUCCESS", check: "payout_totals"},
		{name: "payout totals row deleted", sql: `DELETE FROM payout_totals WHERE state = 'SUCCESS'`,
			wantRow: "payout_totals state=SUCCESS", check: "payout_totals"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			path := healthyLedger(t, clk)
			tamper(t, path, tt.sql)
			r, err := Audit(context.Background(), []string{path}, clk.now())
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() {
				t.Fatal("Audit is clean after tampering")
			}
			found := false
			for _, v := range r.Violations {
				if v.Check == tt.check && strings.HasPrefix(v.Row, tt.wantRow) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %s violation naming %q in %+v", tt.check, tt.wantRow, r.Violations)
			}
			var buf bytes.Buffer
			if err := r.WriteText(&buf); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), tt.wantRow) {
				t.Fatalf("text report does not name %q:\n%s", tt.wantRow, buf.String())
			}
		})
	}
}

func TestAudit_CrossFileAndStuck(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	dbA := mustOpenPath(t, a, WithNow(clk.now))
	dbB := mustOpenPath(t, b, WithNow(clk.now))
	mustSeal(t, dbA, "A1", "shared", 1)
	mustSeal(t, dbA, "A2", "claimedByA", 1)
	mustSeal(t, dbB, "B1", "shared", 1)
	lost := newPayout("claimedByA0", 100)
	lost.Seq = mustInsert(t, dbB, lost)[0]
	if err := dbB.MarkDuplicate(ctx, lost.Seq, dbA.InstanceID(), false); err != nil {
		t.Fatal(err)
	}
	mustSeal(t, dbB, "W1", "w", 1)
	if err := dbB.RecordSubmit(ctx, "W1", SubmitResult{Outcome: SubmitAccepted, BatchID: "x", BatchStatus: BatchWaitPay}); err != nil {
		t.Fatal(err)
	}
	mustPublishAll(t, dbB)
	mustAuditClean(t, clk.now(), a)
	mustAuditFinds(t, clk.now(), map[string]int{"owner_missing": 1}, b) // A's ledger is not given
	r, err := Audit(ctx, []string{a, b}, clk.now().Add(31*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range r.Violations {
		got = append(got, v.Check+" "+v.File+" "+v.Row)
	}
	want := []string{
		"stuck " + b + " batches out_batch_no=W1",
		"cross_file_keys " + b + " payouts seq=1 out_detail_no=shared0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// WAIT_PAY too long, B1 never accepted, and W1 and B1 near the horizon.
	mustAuditFinds(t, clk.now().Add(28*24*time.Hour), map[string]int{"stuck": 4, "owner_missing": 1}, b)
}

func TestAudit_StuckIntake(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := mustOpenLedger(t, WithNow(clk.now))
	seqs := mustInsert(t, db, newPayout("received", 100), newPayout("claimed", 100), newPayout("late", 100))
	if err := db.MarkClaimed(ctx, seqs[1:2]); err != nil {
		t.Fatal(err)
	}
	mustSeal(t, db, "S1", "sealed", 1)
	clk.add(9 * time.Minute)
	if err := db.MarkClaimed(ctx, seqs[2:3]); err != nil { // received long ago, claimed just now
		t.Fatal(err)
	}
	mustAuditClean(t, clk.now(), db.Path())
	r := mustAuditFinds(t, clk.now().Add(2*time.Minute), map[string]int{"stuck_intake": 2}, db.Path())
	mustViolations(t, r, "stuck_intake",
		"payouts seq=1 out_detail_no=received: RECEIVED for 11m0s (over 10m0s): nothing is working on it",
		"payouts seq=2 out_detail_no=claimed: CLAIMED for 11m0s (over 10m0s): nothing is working on it")
}

func TestAudit_FailReason(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	ps := mustSeal(t, db, "B1", "f", 3)
	if _, err := db.ApplyDetailPage(ctx, "B1", SourceQuery, 0, []DetailRow{
		{OutDetailNo: ps[0].OutDetailNo, DetailID: "d0", Status: PayoutFail},
		{OutDetailNo: ps[1].OutDetailNo, DetailID: "d1", Status: PayoutFail, FailReason: "TRANSFER_QUOTA_EXCEED"},
		{OutDetailNo: ps[2].OutDetailNo, DetailID: "d2", Status: PayoutSuccess},
	}); err != nil {
		t.Fatal(err)
	}
	r := mustAuditFinds(t, db.now(), map[string]int{"fail_reason": 1}, db.Path())
	if got, want := r.Violations[0].Row, "payouts seq=1 out_detail_no=f0"; got != want {
		t.Fatalf("fail_reason row = %q, want %q", got, want)
	}
}

func TestAudit_DuplicateOwnership(t *testing.T) {
	ctx := context.Background()
	// Every case: B holds key k as DUPLICATE, naming an owner (A by default).
	tests := []struct {
		name       string
		owner      func(t *testing.T, a, b *DB) // A's side of k
		ownerID    func(a, b *DB) string        // default A's instance
		conflict   bool
		edit       string // SQL run on B's file afterwards
		files      string // "AB" or "B"
		after      time.Duration
		want       map[string]int
		wantDetail string
	}{
		{name: "owner sealed it", owner: sealK, files: "AB", after: time.Hour, want: map[string]int{}},
		{name: "owner paid it, conflict form", owner: sealK, conflict: true, files: "AB", after: time.Hour, want: map[string]int{}},
		{name: "owner still claiming it", owner: insertK, files: "AB", after: 5 * time.Minute, want: map[string]int{}},
		{name: "owner stranded it", owner: insertK, files: "AB", after: 2 * time.Hour,
			want: map[string]int{"stuck_intake": 1, "duplicate_unfinished": 1}, wantDetail: "never finished it: RECEIVED for 2h0m0s"},
		{name: "owner stranded it, conflict form", owner: insertK, conflict: true, files: "AB", after: 2 * time.Hour,
			want: map[string]int{"stuck_intake": 1, "duplicate_unfinished": 1}, wantDetail: "never finished it: RECEIVED for 2h0m0s"},
		{name: "owner has no row", owner: func(*testing.T, *DB, *DB) {}, files: "AB", after: time.Minute,
			want: map[string]int{"duplicate_unfinished": 1}, wantDetail: "never finished it: no row"},
		{name: "owner has the number for another merchant", owner: func(t *testing.T, a, _ *DB) {
			p := newPayout("k", 100)
			p.MchID = "1900000002"
			mustInsert(t, a, p)
		}, files: "AB", after: time.Minute, want: map[string]int{"duplicate_unfinished": 1}, wantDetail: "never finished it: no row"},
		{name: "owner's row is DUPLICATE too", owner: func(t *testing.T, a, b *DB) {
			seq := mustInsert(t, a, newPayout("k", 100))[0]
			if err := a.MarkDuplicate(ctx, seq, b.InstanceID(), false); err != nil {
				t.Fatal(err)
			}
		}, files: "AB", after: time.Minute, want: map[string]int{"duplicate_unfinished": 2}, wantDetail: "DUPLICATE there too"},
		{name: "owner is the row's own instance", owner: sealK, ownerID: func(_, b *DB) string { return b.InstanceID() },
			files: "AB", after: time.Minute, want: map[string]int{"duplicate_unfinished": 1}, wantDetail: "this ledger's own instance"},
		{name: "owner's ledger not given", owner: sealK, files: "B", after: time.Minute,
			want: map[string]int{"owner_missing": 1}, wantDetail: "whose ledger is not among the files audited"},
		{name: "owner's ledger not given, conflict form", owner: sealK, conflict: true, files: "B", after: time.Minute,
			want: map[string]int{"owner_missing": 1}, wantDetail: "whose ledger is not among the files audited"},
		{name: "no owner named", owner: sealK, edit: `UPDATE payouts SET fail_reason = 'lost' WHERE state = 'DUPLICATE'`,
			files: "AB", after: time.Minute, want: map[string]int{"owner_missing": 1}, wantDetail: `fail_reason "lost" names no owner`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			dir := t.TempDir()
			a := mustOpenPath(t, filepath.Join(dir, "a.db"), WithNow(clk.now))
			b := mustOpenPath(t, filepath.Join(dir, "b.db"), WithNow(clk.now))
			tt.owner(t, a, b)
			owner := a.InstanceID()
			if tt.ownerID != nil {
				owner = tt.ownerID(a, b)
			}
			seq := mustInsert(t, b, newPayout("k", 100))[0]
			if err := b.MarkDuplicate(ctx, seq, owner, tt.conflict); err != nil {
				t.Fatal(err)
			}
			mustPublishAll(t, b)
			if tt.edit != "" {
				tamper(t, b.Path(), tt.edit)
			}
			files := []string{b.Path()}
			if tt.files == "AB" {
				files = []string{a.Path(), b.Path()}
			}
			r := mustAuditFinds(t, clk.now().Add(tt.after), tt.want, files...)
			for _, v := range r.Violations {
				if v.Check != "stuck_intake" && !strings.Contains(v.Detail, tt.wantDetail) {
					t.Fatalf("violation %+v: want a detail containing %q", v, tt.wantDetail)
				}
			}
		})
	}
}

// insertK records key k as received (and never claimed).
func insertK(t *testing.T, db, _ *DB) { mustInsert(t, db, newPayout("k", 100)) }

// sealK records key k in a sealed batch.
func sealK(t *testing.T, db, _ *DB) {
	p := newPayout("k", 100)
	p.Seq = mustInsert(t, db, p)[0]
	if err := db.ClaimAndSeal(context.Background(), batchFor("BK", []Payout{p})); err != nil {
		t.Fatal(err)
	}
}

func TestAudit_ForeignMerchant(t *testing.T) {
	ctx := context.Background()
	foreign := newPayout("f", 100)
	foreign.MchID, foreign.GroupKey = "1900000002", "1900000002/direct"
	tests := []struct {
		name     string
		merchant string
		want     map[string]int
	}{
		{name: "bound to our merchant", merchant: "1900000109", want: map[string]int{"foreign_merchant": 2}},
		{name: "bound to the other merchant", merchant: "1900000002", want: map[string]int{"foreign_merchant": 2}},
		{name: "not bound", merchant: "", want: map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			db := mustOpenPath(t, path) // rows written before the binding are checked too
			mustSeal(t, db, "B1", "m", 1)
			p := foreign
			p.Seq = mustInsert(t, db, p)[0]
			if err := db.ClaimAndSeal(ctx, batchFor("F1", []Payout{p})); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			mustOpenPath(t, path, WithMerchant(tt.merchant))
			r := mustAuditFinds(t, time.Now(), tt.want, path)
			for _, v := range r.Violations {
				if !strings.Contains(v.Detail, "in a ledger bound to merchant "+tt.merchant) {
					t.Fatalf("detail %q does not name the merchant", v.Detail)
				}
			}
		})
	}
}

func TestAudit_ExamplesCapped(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	n := MaxExamples + 5
	var paths []string
	for _, f := range []string{"a", "b"} {
		db := mustOpenPath(t, filepath.Join(dir, f+".db"), WithNow(clk.now))
		ps := make([]Payout, n)
		for i := range ps {
			ps[i] = newPayout(fmt.Sprintf("%s%d", f, i), 100)
		}
		mustInsert(t, db, ps...)
		paths = append(paths, db.Path())
	}
	r := mustAuditFinds(t, clk.now().Add(time.Hour), map[string]int{"stuck_intake": 2 * n}, paths...)
	listed := map[string]int{}
	for _, v := range r.Violations {
		listed[v.File]++
	}
	for _, p := range paths {
		if got, want := listed[p], MaxExamples; got != want {
			t.Fatalf("%s: %d violations listed, want %d", p, got, want)
		}
	}
	for _, c := range r.Checks {
		if c.Name == "stuck_intake" {
			if got, want := c.Omitted, 10; got != want {
				t.Fatalf("Omitted = %d, want %d", got, want)
			}
		} else if c.Omitted != 0 {
			t.Fatalf("check %s: Omitted = %d, want 0", c.Name, c.Omitted)
		}
	}
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"50 VIOLATIONS (10 more not listed)", "\n50 violations\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, buf.String())
		}
	}
	// Counted but none listed is still not OK.
	if (&Report{Checks: []Check{{Name: "x", Violations: 3, Omitted: 3}}}).OK() {
		t.Fatal("OK() with 3 violations counted and none listed")
	}
}

func TestAudit_Unreadable(t *testing.T) {
	dir := t.TempDir()
	if _, err := Audit(context.Background(), []string{filepath.Join(dir, "missing.db")}, time.Now()); err == nil {
		t.Fatal("Audit of a missing file succeeded")
	}
	empty := filepath.Join(dir, "empty.db")
	tamper(t, empty, `CREATE TABLE x (y)`)
	if _, err := Audit(context.Background(), []string{empty}, time.Now()); err == nil {
		t.Fatal("Audit of a non-ledger succeeded")
	}
}
