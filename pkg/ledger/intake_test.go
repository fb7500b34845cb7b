package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Roles of a row in an intake group.
const (
	roleMember   = iota // owned, sealed into the group's batch
	roleClaimed         // owned, left CLAIMED
	roleDup             // owned by another instance
	roleConflict        // owned by another instance, with other content
)

// intakeGroup is an intake group and its claims' outcome, ready for CommitIntake.
type intakeGroup struct {
	rows    []Payout
	owners  []RowOwner
	batches []Batch
	roles   []int
}

// newIntakeGroup returns fresh rows (keys prefix0.., seqs from next) on rail, in roles shuffled
// with a fixed seed; the members form batch no (rail bills: with bill bodies), in row order.
// Rows of other owners name owner.
func newIntakeGroup(next int64, rail, prefix, no, owner string, roles []int) intakeGroup {
	g := intakeGroup{roles: slices.Clone(roles)}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(g.roles), func(i, j int) { g.roles[i], g.roles[j] = g.roles[j], g.roles[i] })
	var members []Payout
	for i, role := range g.roles {
		p := railPayout(rail, fmt.Sprintf("%s%d", prefix, i), int64(100+i))
		p.Seq = next + int64(i)
		var o RowOwner
		switch role {
		case roleMember:
			members = append(members, p)
		case roleDup, roleConflict:
			o = RowOwner{Instance: owner, Conflict: role == roleConflict}
		}
		g.rows, g.owners = append(g.rows, p), append(g.owners, o)
	}
	if len(members) > 0 {
		b := batchFor(no, members)
		if rail == RailBills {
			b = billBatchFor(no, members)
		}
		g.batches = []Batch{b}
	}
	return g
}

// railPayout returns a valid request on rail.
func railPayout(rail, key string, amount int64) Payout {
	switch rail {
	case RailBills:
		return newBillPayout(key, amount)
	case railPartner:
		p := newPayout(key, amount)
		p.Rail, p.GroupKey, p.SubMchID = railPartner, "1900000109/partner", "1900000200"
		return p
	}
	return newPayout(key, amount)
}

// roleSeqs returns the seqs of g's rows in role.
func (g intakeGroup) roleSeqs(role int) []int64 {
	var seqs []int64
	for i, r := range g.roles {
		if r == role {
			seqs = append(seqs, g.rows[i].Seq)
		}
	}
	return seqs
}

// commitOldWay records g as intake did before CommitIntake: InsertPayouts, MarkDuplicate for
// every row of another owner, ClaimAndSeal for the batches, MarkClaimed for the rest.
func commitOldWay(t *testing.T, db *DB, g intakeGroup) {
	t.Helper()
	ctx := context.Background()
	ps := slices.Clone(g.rows)
	for i := range ps {
		ps[i].Seq = 0
	}
	for i, s := range mustInsert(t, db, ps...) {
		if s != g.rows[i].Seq {
			t.Fatalf("old way: row %d got seq %d, want %d", i, s, g.rows[i].Seq)
		}
	}
	for i, o := range g.owners {
		if o.Instance != "" {
			if err := db.MarkDuplicate(ctx, g.rows[i].Seq, o.Instance, o.Conflict); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, b := range g.batches {
		if err := db.ClaimAndSeal(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if seqs := g.roleSeqs(roleClaimed); len(seqs) > 0 {
		if err := db.MarkClaimed(ctx, seqs); err != nil {
			t.Fatal(err)
		}
	}
}

// dumpLedger returns the content of the ledger at path that intake writes, table by table,
// as text. Events of kinds insert and seal are listed whole but for id and hashes; state
// changes as each payout's history, so that grouping them otherwise does not count. With
// full, every event whole and every table's rows are listed too.
func dumpLedger(t *testing.T, path string, full bool) map[string][]string {
	t.Helper()
	ctx := context.Background()
	rdb, err := openReader(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	out := map[string][]string{}
	queries := map[string]string{
		"payouts":       `SELECT * FROM payouts ORDER BY seq`,
		"batches":       `SELECT * FROM batches ORDER BY out_batch_no`,
		"bills":         `SELECT * FROM bills ORDER BY out_bill_no`,
		"conflicts":     `SELECT * FROM conflicts ORDER BY id`,
		"outcomes":      `SELECT * FROM outcomes ORDER BY id`,
		"payout_totals": `SELECT * FROM payout_totals WHERE count != 0 ORDER BY state`,
		"events":        `SELECT at, source, kind, out_batch_no, seqs, from_state, to_state, data, digest FROM events WHERE kind IN ('insert', 'seal') ORDER BY id`,
	}
	if full {
		queries["events"] = `SELECT * FROM events ORDER BY id`
		queries["meta"] = `SELECT * FROM meta ORDER BY key`
	}
	for name, q := range queries {
		rows, err := rdb.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals, ptrs := make([]any, len(cols)), make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out[name] = append(out[name], fmt.Sprint(vals...))
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			t.Fatal(err)
		}
	}
	history := map[int64][]string{}
	err = eachRow(ctx, rdb, `SELECT at, source, kind, out_batch_no, seqs, from_state, to_state FROM events ORDER BY id`, nil,
		func(s func(...any) error) error {
			var e event
			if err := s(&e.At, &e.Source, &e.Kind, &e.OutBatchNo, &e.Seqs, &e.From, &e.To); err != nil {
				return err
			}
			seqs, err := decodeSeqs(e.Seqs)
			if e.Kind == kindInsert && len(seqs) == 2 {
				seqs, err = decodeSeqs(fmt.Sprintf("%d-%d", seqs[0], seqs[1]))
			}
			for _, s := range seqs {
				history[s] = append(history[s], fmt.Sprintf("%d %s %s %s %s→%s", e.At, e.Source, e.Kind, e.OutBatchNo, e.From, e.To))
			}
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	for seq, h := range history {
		out["history"] = append(out["history"], fmt.Sprintf("seq=%d: %s", seq, strings.Join(h, "; ")))
	}
	slices.Sort(out["history"])
	return out
}

// mustSameDump fails where got and want differ.
func mustSameDump(t *testing.T, got, want map[string][]string) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if !slices.Equal(got[name], want[name]) {
			t.Errorf("%s differs:\n got %d rows %.2000q\nwant %d rows %.2000q", name, len(got[name]), got[name], len(want[name]), want[name])
		}
	}
	if len(got) != len(want) {
		t.Errorf("tables %d, want %d", len(got), len(want))
	}
}

// openOwner opens the ledger of the instance that owns a group's duplicates, holding them
// (CLAIMED, and with other content where the group has a conflict) so that an audit of both
// ledgers finds every duplicate paid by its owner.
func openOwner(t *testing.T, c *clock) *DB {
	return mustOpenLedger(t, WithNow(c.now))
}

// holdDuplicates commits g's rows of other owners in the owner's ledger, as the owner's intake
// would.
func holdDuplicates(t *testing.T, owner *DB, g intakeGroup) {
	t.Helper()
	var rows []Payout
	for i, r := range g.roles {
		if r == roleDup || r == roleConflict {
			p := g.rows[i]
			if r == roleConflict {
				p = newPayout(p.OutDetailNo, p.Amount+1)
				p.Rail, p.GroupKey, p.SceneID, p.BillInfo = g.rows[i].Rail, g.rows[i].GroupKey, g.rows[i].SceneID, g.rows[i].BillInfo
			}
			p.Seq = owner.NextSeq() + int64(len(rows))
			rows = append(rows, p)
		}
	}
	if err := owner.CommitIntake(context.Background(), rows, make([]RowOwner, len(rows)), nil); err != nil {
		t.Fatal(err)
	}
}

func repeatRole(role, n int) []int { return slices.Repeat([]int{role}, n) }

func TestDB_CommitIntake(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		rail  string
		roles []int
	}{
		{name: "full direct batch, claimed rest, duplicates", rail: railDirect,
			roles: slices.Concat(repeatRole(roleMember, MaxDetailsDirect), repeatRole(roleClaimed, 7), []int{roleDup, roleDup, roleConflict})},
		{name: "bills batch, claimed rest, duplicates", rail: RailBills,
			roles: slices.Concat(repeatRole(roleMember, 5), repeatRole(roleClaimed, 2), []int{roleDup, roleConflict})},
		{name: "partner batch alone", rail: railPartner, roles: repeatRole(roleMember, 3)},
		{name: "claimed only", rail: railDirect, roles: repeatRole(roleClaimed, 4)},
		{name: "duplicates only", rail: railDirect, roles: []int{roleConflict, roleDup}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			db, old, owner := mustOpenLedger(t, WithNow(c.now)), mustOpenLedger(t, WithNow(c.now)), openOwner(t, c)
			// Both hold a sealed batch and a CLAIMED row already, committed the old way.
			for _, d := range []*DB{db, old} {
				mustSeal(t, d, "OLD", "old", 2)
				mustInsert(t, d, newPayout("waiting", 5))
			}
			g := newIntakeGroup(db.NextSeq(), tt.rail, "g", "B1", owner.InstanceID(), tt.roles)
			if err := db.CommitIntake(ctx, g.rows, g.owners, g.batches); err != nil {
				t.Fatal(err)
			}
			commitOldWay(t, old, g)
			holdDuplicates(t, owner, g)

			mustSameDump(t, dumpLedger(t, db.Path(), false), dumpLedger(t, old.Path(), false))
			for i, p := range g.rows {
				got, err := db.Payout(ctx, p.OutDetailNo)
				if err != nil {
					t.Fatal(err)
				}
				want := map[int]string{roleMember: PayoutSealed, roleClaimed: PayoutClaimed, roleDup: PayoutDuplicate, roleConflict: PayoutDuplicate}[g.roles[i]]
				if got.State != want || got.Seq != p.Seq {
					t.Fatalf("row %d = seq %d %s, want seq %d %s", i, got.Seq, got.State, p.Seq, want)
				}
				switch g.roles[i] {
				case roleDup:
					want = "owner " + owner.InstanceID()
				case roleConflict:
					want = "owner " + owner.InstanceID() + "; other content"
				default:
					want = ""
				}
				if got.FailReason != want {
					t.Fatalf("row %d fail_reason = %q, want %q", i, got.FailReason, want)
				}
			}
			for _, b := range g.batches {
				got, err := db.Batch(ctx, b.OutBatchNo)
				if err != nil {
					t.Fatal(err)
				}
				if got.State != BatchSealed || !slices.Equal(got.Members, b.Members) || string(got.Body) != string(b.Body) ||
					!got.NextAt.Equal(c.now()) || len(got.Bills) != len(b.Bills) {
					t.Fatalf("batch %s = %+v, want sealed with its members in order, due now", b.OutBatchNo, got)
				}
				ps, err := db.queryPayouts(ctx, `SELECT `+payoutCols+` FROM payouts WHERE out_batch_no = ? ORDER BY batch_pos`, b.OutBatchNo)
				if err != nil || len(ps) != len(b.Members) {
					t.Fatalf("members by batch_pos = %d, %v", len(ps), err)
				}
				for pos, p := range ps {
					if p.Seq != b.Members[pos] || p.OutBatchNo != b.OutBatchNo {
						t.Fatalf("batch_pos %d holds seq %d in %s, want seq %d", pos, p.Seq, p.OutBatchNo, b.Members[pos])
					}
					if b.Rail == RailBills {
						if bill := mustBill(t, db, p.OutDetailNo); bill.Seq != p.Seq || bill.OutBatchNo != b.OutBatchNo || string(bill.Body) != string(b.Bills[pos]) {
							t.Fatalf("bill %s = %+v", p.OutDetailNo, bill)
						}
					}
				}
			}
			sum, err := db.Summary(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var wantDup, wantConflicts int
			for _, r := range g.roles {
				wantDup += map[bool]int{true: 1}[r == roleDup || r == roleConflict]
				wantConflicts += map[bool]int{true: 1}[r == roleConflict]
			}
			if sum.Payouts[PayoutDuplicate].Count != wantDup || sum.Conflicts != wantConflicts {
				t.Fatalf("summary: %d DUPLICATE, %d conflicts; want %d, %d", sum.Payouts[PayoutDuplicate].Count, sum.Conflicts, wantDup, wantConflicts)
			}
			if next := db.NextSeq(); next != g.rows[len(g.rows)-1].Seq+1 {
				t.Fatalf("NextSeq = %d, want %d", next, g.rows[len(g.rows)-1].Seq+1)
			}
			mustAuditClean(t, c.now(), db.Path(), owner.Path())
			mustAuditClean(t, c.now(), old.Path(), owner.Path())
		})
	}
}

// TestDB_CommitIntake_ThenSeal: rows committed CLAIMED seal later through SealBatch and
// ClaimAndSeal, and a group after them continues the seqs.
func TestDB_CommitIntake_ThenSeal(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	g := newIntakeGroup(db.NextSeq(), railDirect, "c", "", "", repeatRole(roleClaimed, 5))
	if err := db.CommitIntake(ctx, g.rows, g.owners, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.SealBatch(ctx, batchFor("S1", g.rows[:3])); err != nil {
		t.Fatalf("SealBatch of CLAIMED rows: %v", err)
	}
	if err := db.ClaimAndSeal(ctx, batchFor("S2", g.rows[3:])); err != nil {
		t.Fatalf("ClaimAndSeal of CLAIMED rows: %v", err)
	}
	for _, p := range g.rows {
		mustState(t, db, p.OutDetailNo, PayoutSealed)
	}
	g2 := newIntakeGroup(db.NextSeq(), railDirect, "d", "S3", "", repeatRole(roleMember, 2))
	if g2.rows[0].Seq != 6 {
		t.Fatalf("next group starts at seq %d, want 6", g2.rows[0].Seq)
	}
	if err := db.CommitIntake(ctx, g2.rows, g2.owners, g2.batches); err != nil {
		t.Fatal(err)
	}
	mustAuditClean(t, db.now(), db.Path())
}

func TestDB_CommitIntake_Refusals(t *testing.T) {
	ctx := context.Background()
	const owner = "Owner00001"
	roles := []int{roleMember, roleMember, roleMember, roleClaimed, roleDup, roleConflict}
	type args struct {
		rows    []Payout
		owners  []RowOwner
		batches []Batch
	}
	// members returns a direct batch of rows.
	members := func(no string, ps ...Payout) Batch { return batchFor(no, ps) }
	tests := []struct {
		name    string
		rail    string
		edit    func(db *DB, a *args)
		wantErr error
		wantMsg string
	}{
		{name: "valid", edit: func(*DB, *args) {}},
		{name: "seq not the next", edit: func(_ *DB, a *args) {
			for i := range a.rows {
				a.rows[i].Seq++
			}
			a.batches[0] = members("B1", a.rows[:3]...)
		}, wantErr: ErrInvalid, wantMsg: "the next is 4"},
		{name: "seqs not contiguous", edit: func(_ *DB, a *args) { a.rows[5].Seq++ }, wantErr: ErrInvalid, wantMsg: "contiguous"},
		{name: "a stored key", edit: func(_ *DB, a *args) { a.rows[3].OutDetailNo = "old1" }, wantErr: ErrInvalid, wantMsg: "old1 is stored"},
		{name: "a key twice", edit: func(_ *DB, a *args) { a.rows[4].OutDetailNo = a.rows[3].OutDetailNo }, wantErr: ErrInvalid, wantMsg: "twice in the group"},
		{name: "an owner short", edit: func(_ *DB, a *args) { a.owners = a.owners[:5] }, wantErr: ErrInvalid, wantMsg: "5 owners for 6 rows"},
		{name: "invalid row", edit: func(_ *DB, a *args) { a.rows[3].Amount = 0 }, wantErr: ErrInvalid, wantMsg: "amount 0"},
		{name: "owner not an instance id", edit: func(_ *DB, a *args) { a.owners[4].Instance = "no-id" }, wantErr: ErrInvalid, wantMsg: "not an instance id"},
		{name: "owner is this ledger", edit: func(db *DB, a *args) { a.owners[4].Instance = db.InstanceID() }, wantErr: ErrInvalid, wantMsg: "is this ledger"},
		{name: "conflict on an owned row", edit: func(_ *DB, a *args) { a.owners[3].Conflict = true }, wantErr: ErrInvalid, wantMsg: "conflict on a key this ledger owns"},
		{name: "member not owned", edit: func(_ *DB, a *args) { a.batches[0] = members("B1", a.rows[0], a.rows[1], a.rows[4]) },
			wantErr: ErrInvalid, wantMsg: "is DUPLICATE"},
		{name: "member not in rows", edit: func(_ *DB, a *args) {
			waiting := newPayout("waiting", 5)
			waiting.Seq = 3
			a.batches[0] = members("B1", a.rows[0], a.rows[1], waiting)
		}, wantErr: ErrInvalid, wantMsg: "member seq=3: no such payout"},
		{name: "member in two batches", edit: func(_ *DB, a *args) { a.batches = append(a.batches, members("B2", a.rows[3], a.rows[2])) },
			wantErr: ErrInvalid, wantMsg: `in batch "B1"`},
		{name: "member twice in a batch", edit: func(_ *DB, a *args) { a.batches[0] = members("B1", a.rows[0], a.rows[1], a.rows[1]) },
			wantErr: ErrInvalid, wantMsg: `in batch "B1"`},
		{name: "wrong rail", edit: func(_ *DB, a *args) { a.batches[0].Rail = railPartner }, wantErr: ErrInvalid, wantMsg: "batch is partner/"},
		{name: "wrong mchid", edit: func(_ *DB, a *args) { a.batches[0].MchID = "1900000999" }, wantErr: ErrInvalid, wantMsg: "batch is direct/1900000999"},
		{name: "body in another order", edit: func(_ *DB, a *args) {
			a.batches[0].Body = bodyFor("B1", []Payout{a.rows[1], a.rows[0], a.rows[2]})
		}, wantErr: ErrInvalid, wantMsg: "body detail 0"},
		{name: "totals not the members'", edit: func(_ *DB, a *args) {
			ps := slices.Clone(a.rows[:3])
			ps[0].Amount += 10
			b := members("B1", ps...)
			b.Members = a.batches[0].Members
			a.batches[0] = b
		}, wantErr: ErrInvalid, wantMsg: "members sum to"},
		{name: "total_num not the members' count", edit: func(_ *DB, a *args) { a.batches[0].TotalNum-- }, wantErr: ErrInvalid, wantMsg: "total_num 2 but 3 members"},
		{name: "body totals not the batch's", edit: func(_ *DB, a *args) { a.batches[0].TotalAmount++ }, wantErr: ErrInvalid, wantMsg: "body has"},
		{name: "over the cap", edit: func(_ *DB, a *args) { a.batches[0].TotalNum = MaxDetailsDirect + 1 }, wantErr: ErrInvalid, wantMsg: "want 1..1000"},
		{name: "bad out_batch_no", edit: func(_ *DB, a *args) { a.batches[0] = members("B-1", a.rows[:3]...) }, wantErr: ErrInvalid, wantMsg: "out_batch_no: want"},
		{name: "out_batch_no stored", edit: func(_ *DB, a *args) { a.batches[0] = members("OLD", a.rows[:3]...) }, wantErr: ErrInvalid, wantMsg: "batch OLD is stored"},
		{name: "out_batch_no twice", edit: func(_ *DB, a *args) { a.batches = append(a.batches, members("B1", a.rows[3])) }, wantErr: ErrInvalid, wantMsg: "batch B1 twice"},
		{name: "no rows, a batch", edit: func(_ *DB, a *args) { a.rows, a.owners = nil, nil }, wantErr: ErrInvalid, wantMsg: "no such payout"},
		{name: "bills: valid", rail: RailBills, edit: func(*DB, *args) {}},
		{name: "bills: a bill for another amount", rail: RailBills, edit: func(_ *DB, a *args) {
			p := a.rows[1]
			p.Amount++
			a.batches[0].Bills[1] = billBodyFor(p)
		}, wantErr: ErrInvalid, wantMsg: "bill body is"},
		{name: "bills: a bill body short", rail: RailBills, edit: func(_ *DB, a *args) { a.batches[0].Bills = a.batches[0].Bills[:2] },
			wantErr: ErrInvalid, wantMsg: "2 bill bodies for 3 members"},
		{name: "bill bodies on rail direct", edit: func(_ *DB, a *args) { a.batches[0].Bills = [][]byte{nil, nil, nil} },
			wantErr: ErrInvalid, wantMsg: "bill bodies on rail direct"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := mustOpenLedger(t)
			mustSeal(t, db, "OLD", "old", 2)           // seqs 1, 2
			mustInsert(t, db, newPayout("waiting", 5)) // seq 3
			if err := db.MarkClaimed(ctx, []int64{3}); err != nil {
				t.Fatal(err)
			}
			rail := tt.rail
			if rail == "" {
				rail = railDirect
			}
			g := fixedGroup(db.NextSeq(), rail, owner, roles)
			a := args{rows: slices.Clone(g.rows), owners: slices.Clone(g.owners)}
			for _, b := range g.batches {
				b.Members, b.Bills = slices.Clone(b.Members), slices.Clone(b.Bills)
				a.batches = append(a.batches, b)
			}
			tt.edit(db, &a)
			keys := []string{"waiting"}
			for _, p := range g.rows {
				keys = append(keys, p.OutDetailNo)
			}
			knownBefore, err := db.Known(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			before, next := dumpLedger(t, db.Path(), true), db.NextSeq()
			err = db.CommitIntake(ctx, a.rows, a.owners, a.batches)
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Fatalf("CommitIntake = %v, want %v saying %q", err, tt.wantErr, tt.wantMsg)
			}
			if tt.wantErr == nil {
				mustAuditFinds(t, db.now(), map[string]int{"owner_missing": 2}, db.Path())
				return
			}
			mustSameDump(t, dumpLedger(t, db.Path(), true), before)
			knownAfter, err := db.Known(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			if got := db.NextSeq(); got != next || !slices.Equal(knownAfter, knownBefore) {
				t.Fatalf("after a refusal NextSeq = %d (was %d), Known = %v (was %v)", got, next, knownAfter, knownBefore)
			}
			// The refusal left the ledger's memory as it was: the group commits.
			if err := db.CommitIntake(ctx, g.rows, g.owners, g.batches); err != nil {
				t.Fatalf("CommitIntake after a refusal: %v", err)
			}
			mustAuditFinds(t, db.now(), map[string]int{"owner_missing": 2}, db.Path())
		})
	}
}

// fixedGroup is newIntakeGroup without the shuffle: rows in roles' order, keys g0...
func fixedGroup(next int64, rail, owner string, roles []int) intakeGroup {
	g := intakeGroup{roles: roles}
	var members []Payout
	for i, role := range roles {
		p := railPayout(rail, fmt.Sprintf("g%d", i), int64(100+i))
		p.Seq = next + int64(i)
		o := RowOwner{}
		if role == roleDup || role == roleConflict {
			o = RowOwner{Instance: owner, Conflict: role == roleConflict}
		}
		if role == roleMember {
			members = append(members, p)
		}
		g.rows, g.owners = append(g.rows, p), append(g.owners, o)
	}
	if rail == RailBills {
		g.batches = []Batch{billBatchFor("B1", members)}
	} else {
		g.batches = []Batch{batchFor("B1", members)}
	}
	return g
}

// TestDB_CommitIntake_RollbackKeepsMemory: a commit that fails after writing rows (an injected
// failure of its last statement) rolls back, and the ledger's memory with it: NextSeq, the
// key index and the event chain are as before, and the same group commits afterwards.
func TestDB_CommitIntake_RollbackKeepsMemory(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	mustInsert(t, db, newPayout("first", 5))
	err := db.write(ctx, func(tx *sql.Conn) error {
		_, err := tx.ExecContext(ctx, `CREATE TEMP TRIGGER fail_seal BEFORE INSERT ON events WHEN NEW.kind = 'seal'
			BEGIN SELECT RAISE(ABORT, 'injected failure'); END`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	g := newIntakeGroup(db.NextSeq(), railDirect, "r", "R1", "", slices.Concat(repeatRole(roleMember, 3), repeatRole(roleClaimed, 2)))
	keys := []string{"first"}
	for _, p := range g.rows {
		keys = append(keys, p.OutDetailNo)
	}
	lastSeq, lastEvent := db.Position()
	if err := db.CommitIntake(ctx, g.rows, g.owners, g.batches); err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("CommitIntake = %v, want the injected failure", err)
	}
	known, err := db.Known(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if s, e := db.Position(); db.NextSeq() != 2 || s != lastSeq || e != lastEvent || !slices.Equal(known, []bool{true, false, false, false, false, false}) {
		t.Fatalf("after the rollback NextSeq = %d, Position = %d/%d (was %d/%d), Known = %v", db.NextSeq(), s, e, lastSeq, lastEvent, known)
	}
	for _, p := range g.rows {
		if c := db.keys.candidates(nil, keyHash(p.OutDetailNo)); len(c) > 0 {
			t.Fatalf("after the rollback the key index names seqs %v for %s", c, p.OutDetailNo)
		}
	}
	if err := db.write(ctx, func(tx *sql.Conn) error {
		_, err := tx.ExecContext(ctx, `DROP TRIGGER temp.fail_seal`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.CommitIntake(ctx, g.rows, g.owners, g.batches); err != nil {
		t.Fatal(err)
	}
	if known, err := db.Known(ctx, keys); err != nil || slices.Contains(known, false) {
		t.Fatalf("Known = %v, %v; want all stored", known, err)
	}
	if db.NextSeq() != 7 {
		t.Fatalf("NextSeq = %d, want 7", db.NextSeq())
	}
	mustAuditClean(t, db.now(), db.Path())
}

func TestDB_NextSeq(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path)
	if got := db.NextSeq(); got != 1 {
		t.Fatalf("NextSeq of a new ledger = %d, want 1", got)
	}
	mustInsert(t, db, newPayout("a", 1), newPayout("b", 2))
	if got := db.NextSeq(); got != 3 {
		t.Fatalf("NextSeq after InsertPayouts of 2 = %d, want 3", got)
	}
	g := newIntakeGroup(3, railDirect, "c", "C1", "Owner00001", []int{roleMember, roleClaimed, roleDup})
	if err := db.CommitIntake(ctx, g.rows, g.owners, g.batches); err != nil {
		t.Fatal(err)
	}
	if got := db.NextSeq(); got != 6 {
		t.Fatalf("NextSeq after CommitIntake of 3 = %d, want 6", got)
	}
	if err := db.CommitIntake(ctx, g.rows, g.owners, g.batches); !errors.Is(err, ErrInvalid) {
		t.Fatalf("CommitIntake of the same seqs again = %v, want ErrInvalid", err)
	}
	if got := db.NextSeq(); got != 6 {
		t.Fatalf("NextSeq after a refused commit = %d, want 6", got)
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := ro.NextSeq(); got != 6 {
		t.Fatalf("NextSeq read-only = %d, want 6", got)
	}
	db.Close()
	if got := mustOpenPath(t, path).NextSeq(); got != 6 {
		t.Fatalf("NextSeq after reopening = %d, want 6", got)
	}
}

func TestDB_Known(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	mustInsert(t, db, newPayout("a", 1))
	g := newIntakeGroup(db.NextSeq(), railDirect, "d", "", "Owner00001", []int{roleDup})
	if err := db.CommitIntake(ctx, g.rows, g.owners, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		keys []string
		want []bool
	}{
		{name: "none", keys: nil, want: []bool{}},
		{name: "stored", keys: []string{"a", "d0"}, want: []bool{true, true}},
		{name: "absent", keys: []string{"b", "d1", "A"}, want: []bool{false, false, false}},
		{name: "mixed and repeated", keys: []string{"b", "a", "a", "d0", "zz"}, want: []bool{false, true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.Known(ctx, tt.keys)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Known(%q) = %v, %v; want %v", tt.keys, got, err, tt.want)
			}
		})
	}
}

// TestDB_Known_ConfirmsByReading stores a key whose index tag another key shares: the index
// names the stored row for both, and only reading it tells them apart.
func TestDB_Known_ConfirmsByReading(t *testing.T) {
	ctx := context.Background()
	seen := map[uint64]string{}
	var stored, other string
	for i := 0; other == ""; i++ {
		k := fmt.Sprintf("t%d", i)
		tag := tagOf(keyHash(k))
		if s, ok := seen[tag]; ok {
			stored, other = s, k
		}
		seen[tag] = k
	}
	db := mustOpenLedger(t)
	seq := mustInsert(t, db, newPayout(stored, 1))[0]
	if c := db.keys.candidates(nil, keyHash(other)); !slices.Equal(c, []int64{seq}) {
		t.Fatalf("candidates of %s = %v, want the seq of %s (%d)", other, c, stored, seq)
	}
	got, err := db.Known(ctx, []string{other, stored})
	if err != nil || !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("Known(%s, %s) = %v, %v; want [false true]", other, stored, got, err)
	}
	// CommitIntake tells them apart the same way.
	p := newPayout(other, 2)
	p.Seq = db.NextSeq()
	if err := db.CommitIntake(ctx, []Payout{p}, []RowOwner{{}}, nil); err != nil {
		t.Fatalf("CommitIntake of a key sharing a stored key's tag: %v", err)
	}
	mustAuditClean(t, db.now(), db.Path())
}

func TestDB_Known_ClosedAndReadOnly(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	mustInsert(t, db, newPayout("a", 1))
	ro, err := OpenReadOnly(ctx, db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Known(ctx, []string{"a"}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Known read-only = %v, want ErrReadOnly", err)
	}
	db.Close()
	if got, err := db.Known(ctx, []string{"a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Known after Close = %v, %v; want ErrClosed", got, err)
	}
}
