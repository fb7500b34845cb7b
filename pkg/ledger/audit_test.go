package ledger

import (
	"bytes"
	"context"
	"database/sql"
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
		{name: "body edited", sql: `UPDATE batches SET body = CAST(replace(CAST(body AS TEXT), 'b1', 'zz') AS BLOB) WHERE out_batch_no = 'B2'`,
			wantRow: "batches out_batch_no=B2", check: "batch_body"},
		{name: "duplicate key planted", sql: `INSERT INTO payouts SELECT 100, key_hash, out_detail_no, mchid, appid, sub_mchid, openid, remark,
			scene_id, rail, group_key, amount, user_name_cipher, content_hash, stream_seq, 'RECEIVED', NULL, NULL, '', '', received_at, updated_at
			FROM payouts WHERE out_detail_no = 'loose1'`, wantRow: "payouts out_detail_no=loose1", check: "duplicate_keys"},
		{name: "outbox row deleted", sql: `DELETE FROM outcomes WHERE seq = 1`,
			wantRow: "payouts seq=1 out_detail_no=a0", check: "outcomes"},
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
	mustInsert(t, dbA, newPayout("shared", 100), newPayout("onlyA", 100), newPayout("claimedByA", 100))
	mustInsert(t, dbB, newPayout("shared", 100), newPayout("claimedByA", 100))
	lost, err := dbB.Payout(ctx, "claimedByA")
	if err != nil {
		t.Fatal(err)
	}
	if err := dbB.MarkDuplicate(ctx, lost.Seq, "A"); err != nil {
		t.Fatal(err)
	}
	mustSeal(t, dbB, "W1", "w", 1)
	if err := dbB.RecordSubmit(ctx, "W1", SubmitResult{Outcome: SubmitAccepted, BatchID: "x", BatchStatus: BatchWaitPay}); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, clk.now(), a)
	mustAuditClean(t, clk.now(), b)
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
		"cross_file_keys " + b + " payouts seq=1 out_detail_no=shared",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	r, err = Audit(ctx, []string{b}, clk.now().Add(28*24*time.Hour))
	if err != nil || len(r.Violations) != 2 {
		t.Fatalf("near the horizon: %+v, %v; want WAIT_PAY and horizon violations", r, err)
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
