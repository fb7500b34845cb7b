package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// RowOwner is who owns a row committed by CommitIntake: Instance "" is this ledger's own instance
// (it claimed the key); otherwise the owning instance id (the row is recorded DUPLICATE naming it,
// exactly as MarkDuplicate would), with Conflict set when the owner claimed other content.
type RowOwner struct {
	Instance string
	Conflict bool
}

// NextSeq returns the seq the next inserted payout will get: the last committed seq plus one.
// It is kept in memory with every commit (a write that rolls back leaves it as it was), so it
// costs no query. Another write may take it before the caller's: CommitIntake then refuses
// rows that do not start at it.
func (db *DB) NextSeq() int64 { return db.posSeq.Load() + 1 }

// Known reports, for each of keys, whether a payout with that out_detail_no is stored. The
// in-memory key index rules out most absent keys without a read, and every possible hit is
// confirmed by reading its row, so the answer is exact as of the call (a key committed while
// it runs may or may not be reported). Not on a DB from OpenReadOnly (ErrReadOnly, it has no
// key index); ErrClosed after Close.
func (db *DB) Known(ctx context.Context, keys []string) ([]bool, error) {
	if db.wconn == nil {
		return nil, fmt.Errorf("known keys: %w", ErrReadOnly)
	}
	stored, err := db.lookupKeys(ctx, db.rdb, keys)
	// Close empties the key index after setting closed: seen unset here, the index was
	// whole while lookupKeys read it.
	if err == nil && db.closed.Load() {
		err = ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("known keys: %w", err)
	}
	out := make([]bool, len(keys))
	for i, k := range keys {
		_, out[i] = stored[k]
	}
	return out, nil
}

// CommitIntake commits rows that intake has claimed, in ONE transaction, writing each row once
// in its state:
//   - rows[i].Seq must be NextSeq()+i (contiguous, ascending), and every row fresh: valid as
//     for InsertPayouts, its out_detail_no not stored and not twice in rows. The rows' State,
//     OutBatchNo, DetailID, FailReason, ReceivedAt and UpdatedAt are ignored.
//   - owners[i] (len(owners) == len(rows)) says who owns rows[i]. Instance "": this ledger, and
//     the row is stored CLAIMED, or SEALED when it is a member of one of batches. Another
//     instance id (not this ledger's own): the row is stored DUPLICATE with the fail_reason
//     MarkDuplicate writes and its outbox row, and with Conflict also recorded in the conflicts
//     table. Conflict is refused on a row this ledger owns.
//   - each of batches is sealed as SealBatch seals it, after the same checks (out_batch_no,
//     rail cap, TotalNum and TotalAmount the members' count and sum, the body's out_batch_no,
//     totals and transfer_detail_list the members in order, on rail bills one bill body per
//     member naming it): the batch row SEALED and due now, a bills row per member on rail
//     bills, and the same seal event with the same digest. Members must be seqs of rows of this
//     call that this ledger owns, each in one batch at most, of the batch's rail and mchid, and
//     the out_batch_no must not be stored. Members are stored SEALED with the batch's number
//     and their body position.
//
// The events and payout_totals tell the story of InsertPayouts, then MarkClaimed or
// MarkDuplicate, then SealBatch, in few events: one insert event (RECEIVED), one RECEIVED →
// CLAIMED event for the owned rows, one RECEIVED → DUPLICATE event for the others, and a seal
// event (CLAIMED → SEALED) per batch; Audit replays them as it replays the old path's.
// Committed CLAIMED rows seal later through SealBatch. The key index and Position advance as
// InsertPayouts advances them. Anything refused is an error wrapping ErrInvalid, and nothing is
// written. No rows and no batches: nothing to do.
func (db *DB) CommitIntake(ctx context.Context, rows []Payout, owners []RowOwner, batches []Batch) error {
	plan, err := db.planIntake(rows, owners, batches)
	if err == nil && len(rows) > 0 {
		err = db.write(ctx, func(tx *sql.Conn) error { return db.commitIntake(ctx, tx, rows, batches, plan) })
	}
	if err != nil {
		return fmt.Errorf("commit intake: %w", err)
	}
	return nil
}

// intakePlan is what CommitIntake writes, worked out from its arguments alone.
type intakePlan struct {
	states    []rowState     // per row
	details   [][]bodyDetail // per batch: its body's details
	owned     []int64        // seqs of the rows this ledger owns (CLAIMED or SEALED), ascending
	dups      []int64        // seqs of the DUPLICATE rows, ascending
	conflicts []ownerConflict
	totals    []totalDelta // by state, non-empty ones only
}

// planIntake checks CommitIntake's arguments against each other (everything but what is
// stored) and plans the rows' states. Errors wrap ErrInvalid.
func (db *DB) planIntake(rows []Payout, owners []RowOwner, batches []Batch) (*intakePlan, error) {
	switch {
	case len(owners) != len(rows):
		return nil, invalidf("%d owners for %d rows", len(owners), len(rows))
	case len(rows) > MaxGroup:
		return nil, invalidf("%d rows in one group, max %d", len(rows), MaxGroup)
	}
	p := &intakePlan{states: make([]rowState, len(rows)), details: make([][]bodyDetail, len(batches))}
	bySeq := make([]member, len(rows)) // rows[i] is bySeq[i]: the seqs are contiguous (checked below)
	keys := make(map[string]bool, len(rows))
	for i := range rows {
		r, o := &rows[i], owners[i]
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("row %d: %w: %w", i, ErrInvalid, err)
		}
		switch {
		case r.Seq != rows[0].Seq+int64(i):
			return nil, invalidf("row %d has seq %d, want %d: seqs must be contiguous", i, r.Seq, rows[0].Seq+int64(i))
		case keys[r.OutDetailNo]:
			return nil, invalidf("row %d: out_detail_no %s twice in the group", i, r.OutDetailNo)
		case o.Instance == "" && o.Conflict:
			return nil, invalidf("row %d: a conflict on a key this ledger owns", i)
		case o.Instance == db.instanceID:
			return nil, invalidf("row %d: owner %s is this ledger: pass \"\"", i, o.Instance)
		}
		keys[r.OutDetailNo] = true
		m := member{seq: r.Seq, key: r.OutDetailNo, amount: r.Amount, state: PayoutClaimed, rail: r.Rail, mchID: r.MchID}
		if o.Instance != "" {
			reason, err := duplicateReason(o.Instance, o.Conflict)
			if err != nil {
				return nil, fmt.Errorf("row %d: %w", i, err)
			}
			m.state = PayoutDuplicate
			p.states[i].failReason = reason
		}
		p.states[i].state = m.state
		bySeq[i] = m
	}
	memberOf := func(seq int64) *member {
		if len(bySeq) == 0 || seq < bySeq[0].seq || seq-bySeq[0].seq >= int64(len(bySeq)) {
			return nil
		}
		return &bySeq[seq-bySeq[0].seq]
	}
	numbers := make(map[string]bool, len(batches))
	for j, b := range batches {
		if err := checkBatch(b); err != nil {
			return nil, fmt.Errorf("batch %s: %w", b.OutBatchNo, err)
		}
		if numbers[b.OutBatchNo] {
			return nil, invalidf("batch %s twice", b.OutBatchNo)
		}
		numbers[b.OutBatchNo] = true
		details, err := bodyDetails(b)
		if err == nil {
			err = checkMembers(b, details, memberOf)
		}
		if err != nil {
			return nil, fmt.Errorf("batch %s: %w", b.OutBatchNo, err)
		}
		p.details[j] = details
		for pos, s := range b.Members {
			p.states[s-rows[0].Seq] = rowState{state: PayoutSealed, batch: b.OutBatchNo, pos: pos}
		}
	}
	at := map[string]int{} // state → index in p.totals
	for i, st := range p.states {
		seq := rows[i].Seq
		if st.state == PayoutDuplicate {
			p.dups = append(p.dups, seq)
			if owners[i].Conflict {
				p.conflicts = append(p.conflicts, ownerConflict{seq: seq, owner: owners[i].Instance})
			}
		} else {
			p.owned = append(p.owned, seq)
		}
		j, ok := at[st.state]
		if !ok {
			j, at[st.state] = len(p.totals), len(p.totals)
			p.totals = append(p.totals, totalDelta{state: st.state})
		}
		p.totals[j].count++
		p.totals[j].amount += rows[i].Amount
	}
	return p, nil
}

// commitIntake checks plan against what is stored (the next seq, the keys, the batch numbers)
// and writes it.
func (db *DB) commitIntake(ctx context.Context, tx *sql.Conn, rows []Payout, batches []Batch, plan *intakePlan) error {
	if next := db.NextSeq(); rows[0].Seq != next {
		return invalidf("rows start at seq %d, the next is %d", rows[0].Seq, next)
	}
	keys := make([]string, len(rows))
	for i := range rows {
		keys[i] = rows[i].OutDetailNo
	}
	stored, err := db.lookupKeys(ctx, tx, keys)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if s, ok := stored[k]; ok {
			return invalidf("out_detail_no %s is stored (seq %d)", k, s.seq)
		}
	}
	if len(batches) > 0 {
		numbers := make([]any, len(batches))
		for i, b := range batches {
			numbers[i] = b.OutBatchNo
		}
		var no string
		err := tx.QueryRowContext(ctx, `SELECT out_batch_no FROM batches WHERE out_batch_no IN (`+placeholders(len(numbers))+`) LIMIT 1`,
			numbers...).Scan(&no)
		switch {
		case err == nil:
			return invalidf("batch %s is stored", no)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
	}
	now := ms(db.now())
	// Batches first: the members' rows refer to them.
	for _, b := range batches {
		if err := db.insertBatch(ctx, tx, b, now); err != nil {
			return err
		}
	}
	if err := db.storeRows(ctx, tx, rows, plan.states, now); err != nil {
		return err
	}
	if err := eachSeqChunk(plan.dups, func(part []int64) error { return db.writeOutcomes(ctx, tx, now, part) }); err != nil {
		return err
	}
	if len(plan.conflicts) > 0 {
		if err := db.recordOwnerConflicts(ctx, tx, now, plan.conflicts); err != nil {
			return err
		}
	}
	for j, b := range batches {
		if b.Rail == RailBills {
			if err := db.insertBills(ctx, tx, b, plan.details[j], now); err != nil {
				return err
			}
		}
	}
	if err := db.addTotals(ctx, tx, plan.totals...); err != nil {
		return err
	}
	if err := db.appendInsert(ctx, tx, rows, now); err != nil {
		return err
	}
	for _, mv := range []struct {
		seqs []int64
		to   string
	}{{plan.owned, PayoutClaimed}, {plan.dups, PayoutDuplicate}} {
		if len(mv.seqs) == 0 {
			continue
		}
		if err := db.appendEvent(ctx, tx, event{At: now, Source: srcIntake, Kind: kindPayoutState,
			Seqs: encodeSeqs(mv.seqs), From: PayoutReceived, To: mv.to}); err != nil {
			return err
		}
	}
	for _, b := range batches {
		if err := db.appendSeal(ctx, tx, b, now); err != nil {
			return err
		}
	}
	return nil
}
