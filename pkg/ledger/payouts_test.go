package ledger

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
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
	if err := db.MarkDuplicate(ctx, seqs[2], "Xy12345678", false); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkDuplicate(ctx, seqs[2], "Xy12345678", false); err != nil {
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
	// The owner's ledger is not audited with this one.
	mustAuditFinds(t, db.now(), map[string]int{"owner_missing": 1}, db.Path())
}

func TestDB_MarkDuplicate_Conflict(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	seqs := mustInsert(t, db, newPayout("same", 100), newPayout("other", 200), newPayout("x", 300))
	if err := db.MarkDuplicate(ctx, seqs[0], "Owner00001", false); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call is a no-op
		if err := db.MarkDuplicate(ctx, seqs[1], "Owner00001", true); err != nil {
			t.Fatal(err)
		}
	}
	for _, owner := range []string{"", "a b", "Owner; other content"} {
		if err := db.MarkDuplicate(ctx, seqs[2], owner, false); !errors.Is(err, ErrInvalid) {
			t.Fatalf("MarkDuplicate(owner %q) = %v, want ErrInvalid", owner, err)
		}
	}
	mustState(t, db, "x", PayoutReceived)
	for key, want := range map[string]string{"same": "owner Owner00001", "other": "owner Owner00001; other content"} {
		p, err := db.Payout(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.FailReason; got != want {
			t.Fatalf("%s: fail_reason = %q, want %q", key, got, want)
		}
		owner, conflict, ok := parseOwner(p.FailReason)
		if !ok || owner != "Owner00001" || conflict != (key == "other") {
			t.Fatalf("parseOwner(%q) = %q, %v, %v", p.FailReason, owner, conflict, ok)
		}
	}
	sum, err := db.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sum.Conflicts, 1; got != want {
		t.Fatalf("Summary.Conflicts = %d, want %d", got, want)
	}
	out, err := db.PendingOutcomes(ctx, 10)
	if err != nil || len(out) != 2 || out[1].FailReason != "owner Owner00001; other content" {
		t.Fatalf("PendingOutcomes = %+v, %v; want the conflict's reason on the second", out, err)
	}
	mustAuditFinds(t, db.now(), map[string]int{"owner_missing": 2}, db.Path())
}

func TestParseOwner(t *testing.T) {
	tests := []struct {
		reason, owner string
		conflict, ok  bool
	}{
		{reason: "owner Ab12345678", owner: "Ab12345678", ok: true},
		{reason: "owner Ab12345678; other content", owner: "Ab12345678", conflict: true, ok: true},
		{reason: ""},
		{reason: "owner "},
		{reason: "owner ; other content"},
		{reason: "owner a b"},
		{reason: "OVERDUE_CLOSE"},
	}
	for _, tt := range tests {
		owner, conflict, ok := parseOwner(tt.reason)
		if owner != tt.owner || conflict != tt.conflict || ok != tt.ok {
			t.Fatalf("parseOwner(%q) = %q, %v, %v; want %q, %v, %v", tt.reason, owner, conflict, ok, tt.owner, tt.conflict, tt.ok)
		}
	}
}

func TestDB_PayoutsAfter(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	var ps []Payout
	for i := range 7 {
		ps = append(ps, newPayout(fmt.Sprintf("p%d", i), 100))
	}
	seqs := mustInsert(t, db, ps...)
	if err := db.MarkClaimed(ctx, []int64{seqs[1], seqs[4]}); err != nil {
		t.Fatal(err)
	}
	mustSeal(t, db, "S1", "s", 3)
	tests := []struct {
		name     string
		state    string
		after    int64
		limit    int
		wantSeqs string
	}{
		{name: "first page", state: PayoutReceived, after: 0, limit: 2, wantSeqs: "[1 3]"},
		{name: "second page", state: PayoutReceived, after: 3, limit: 2, wantSeqs: "[4 6]"},
		{name: "last page", state: PayoutReceived, after: 6, limit: 2, wantSeqs: "[7]"},
		{name: "past the end", state: PayoutReceived, after: 7, limit: 2, wantSeqs: "[]"},
		{name: "claimed", state: PayoutClaimed, after: 2, limit: 10, wantSeqs: "[5]"},
		{name: "another state scans", state: PayoutSealed, after: 8, limit: 10, wantSeqs: "[9 10]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.PayoutsAfter(ctx, tt.state, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			seqs := []int64{}
			for _, p := range got {
				if p.State != tt.state {
					t.Fatalf("seq %d in state %s, want %s", p.Seq, p.State, tt.state)
				}
				seqs = append(seqs, p.Seq)
			}
			if got, want := fmt.Sprint(seqs), tt.wantSeqs; got != want {
				t.Fatalf("seqs = %s, want %s", got, want)
			}
		})
	}
	// RECEIVED and CLAIMED pages come from the partial index, not a walk of the table.
	for _, st := range []string{PayoutReceived, PayoutClaimed} {
		var plan []string
		if err := eachRow(ctx, db.rdb, `EXPLAIN QUERY PLAN `+payoutsAfterQuery(st), []any{st, 0, 10}, func(scan func(...any) error) error {
			var id, parent, unused int
			var detail string
			err := scan(&id, &parent, &unused, &detail)
			plan = append(plan, detail)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(plan, "; "), "SEARCH payouts USING INDEX payouts_open (state=? AND seq>?)"; got != want {
			t.Fatalf("%s plan = %q, want %q", st, got, want)
		}
	}
}

// TestDB_InsertRefused: an INSERT that SQLite refuses (here a trigger) fails the whole group,
// in a full cached chunk and in the tail, and leaves nothing behind: not a row, not a key.
func TestDB_InsertRefused(t *testing.T) {
	ctx := context.Background()
	for _, at := range []int{100, insertChunk + 100} { // in the first (cached) chunk, in the tail
		t.Run(fmt.Sprint("row ", at), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			db := mustOpenPath(t, path)
			group := make([]Payout, insertChunk+200)
			for i := range group {
				group[i] = newPayout(fmt.Sprintf("refuse%04d", i), 100)
			}
			raw, err := sql.Open("sqlite3", path)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE INSERT ON payouts WHEN NEW.out_detail_no = '`+
				group[at].OutDetailNo+`' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
				t.Fatal(err)
			}
			next := db.NextSeq()
			if _, err := db.InsertPayouts(ctx, group); err == nil || !strings.Contains(err.Error(), "refused by the test") {
				t.Fatalf("InsertPayouts: %v, want the trigger's refusal", err)
			}
			var rows int
			if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM payouts`).Scan(&rows); err != nil || rows != 0 || db.NextSeq() != next {
				t.Fatalf("after the refusal: %d rows (%v), next seq %d; want 0 rows, %d", rows, err, db.NextSeq(), next)
			}
			if _, err := raw.ExecContext(ctx, `DROP TRIGGER refuse`); err != nil {
				t.Fatal(err)
			}
			if seqs := mustInsert(t, db, group...); seqs[0] != next {
				t.Fatalf("the group again starts at seq %d, want %d", seqs[0], next)
			}
		})
	}
}

// TestDB_InsertRowsArgumentTypes: insertRows hands arguments to the driver unconverted, so it
// takes only the types the driver binds as they are and refuses the rest before SQLite runs.
func TestDB_InsertRowsArgumentTypes(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	if err := db.write(ctx, func(tx *sql.Conn) error {
		_, err := tx.ExecContext(ctx, `CREATE TEMP TABLE args (k TEXT PRIMARY KEY, v ANY)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	q := `INSERT INTO args (k, v) VALUES (?, ?)`
	for _, tt := range []struct {
		value any
		ok    bool
	}{{"text", true}, {int64(7), true}, {[]byte("blob"), true}, {nil, true}, {7, false}, {uint64(7), false}, {true, false}} {
		err := db.write(ctx, func(tx *sql.Conn) error {
			return db.insertRows(ctx, tx, false, q, []any{fmt.Sprintf("k%T", tt.value), tt.value})
		})
		if (err == nil) != tt.ok || (!tt.ok && !errors.Is(err, ErrInvalid)) {
			t.Errorf("insertRows with a %T: %v, want ok=%v", tt.value, err, tt.ok)
		}
	}
}

// TestRowDigests_Golden: a row's digest is part of the hash chain of every ledger ever
// written, so its encoding never changes. The expected value was computed by the original
// implementation (a sha256.Hash written field by field); a changed field order, length
// prefix or number format fails here.
func TestRowDigests_Golden(t *testing.T) {
	ps := []Payout{
		{Seq: 1, OutDetailNo: "D1", MchID: "1900000109", AppID: "wxa1", OpenID: "o1", Remark: "活动奖励", SceneID: "1001",
			Rail: "direct", GroupKey: "g", Amount: 100, ContentHash: []byte{1, 2, 3}, StreamSeq: 7},
		{Seq: 1234567890123, OutDetailNo: "D2", MchID: "1900000109", AppID: "wxa1", SubMchID: "1900000110", OpenID: "o2",
			SceneID: "1001", Rail: "partner", GroupKey: "g2", Amount: math.MaxInt64, UserNameCipher: "c1pher",
			ContentHash: make([]byte, 32), StreamSeq: math.MaxUint64, BillInfo: []byte(`{"a":1}`)},
	}
	if got, want := hex.EncodeToString(rowDigests(ps)), "e057a0bb99735cb05d41837f2f2d44f8"; got != want {
		t.Errorf("rowDigests = %s, want %s", got, want)
	}
}
