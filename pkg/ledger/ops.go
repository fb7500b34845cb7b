package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// OpsSnapshot is what an operator needs to see of one ledger at a glance: the metrics, the
// status page and `processor status` all read it. It is read in one transaction, so its parts
// agree with each other.
type OpsSnapshot struct {
	At         time.Time             // the now it was read for
	Instance   string                // the ledger's instance id
	Payouts    map[string]StateTotal // by payout state
	Batches    []BatchCount          // by rail and state, every batch ever sealed
	Open       []OpenBatch           // non-settled batches, parked ones first, then the oldest; at most limit
	OpenTotal  int                   // every non-settled batch (Open may be cut)
	OldestOpen time.Time             // sealed_at of the oldest non-settled batch; zero when none
	Parked     []ParkedCount         // parked batches and bills, by kind and code (only counts > 0)
	// RecentFailures are the latest payouts that ended FAIL or REJECTED (newest first, in the
	// order they ended; at most limit), each with its reason.
	RecentFailures []PayoutBrief
	// The minute up to At, by the ledger's own timestamps: payouts received (received_at),
	// and payouts that reached SUCCESS (their outcome row's time), with their amount.
	Received1m int
	Paid1m     StateTotal
	// The outboxes: events written but not yet published, and the oldest one's creation time.
	OutboxPending       map[string]int // "outcome", "notice"
	OldestUnpublishedAt time.Time      // zero when both are empty
}

// BatchCount counts batches of one rail in one state.
type BatchCount struct {
	Rail, State string
	Count       int
}

// ParkedCount counts parked batches (Kind "batch") or parked bills (Kind "bill") with one code.
type ParkedCount struct {
	Kind, Code string
	Count      int
}

// OpenBatch is one non-settled batch as an operator sees it (Lookup shows settled ones the
// same way). For a batch on the bill rail, LastErrorCode and LastErrorMessage are those of
// its worst bill when the batch has none (a parked bill first, then the code most of its
// open bills have), and ParkedBills counts its parked bills. Parked: the batch is parked
// (SEALED, never accepted by WeChat, with a code ParkedCode reports), or some of its bills
// are. OpenMembers counts its members not final yet.
type OpenBatch struct {
	OutBatchNo, Rail, State, BatchID   string
	LastErrorCode, LastErrorMessage    string
	Parked                             bool
	ParkedBills                        int
	Attempts, TotalNum, OpenMembers    int
	TotalAmount                        int64
	SealedAt, StateAt, NextAt, Updated time.Time
}

// PayoutBrief is one payout in a list. OpenID is in full: whoever shows it must mask it.
type PayoutBrief struct {
	OutDetailNo, Rail, State, FailReason, OutBatchNo, OpenID string
	Amount                                                   int64
	UpdatedAt                                                time.Time
}

// PayoutView is everything the ledger knows of one payout, for the lookup page. It never holds
// the name cipher or a body; OpenID is in full, and whoever shows it must mask it.
type PayoutView struct {
	PayoutBrief
	MchID, SubMchID, AppID, SceneID, DetailID string
	ReceivedAt                                time.Time
	StreamSeq                                 uint64
	Batch                                     *OpenBatch // nil until sealed (Parked etc. as in OpsSnapshot.Open)
	Bill                                      *BillBrief // transfer bills only
	Outcome                                   *OutcomeBrief
	History                                   []EventBrief // oldest first: the events that touched the payout or its batch
}

// BillBrief is a bill's operator view.
type BillBrief struct {
	OutBillNo, TransferBillNo, LastErrorCode, LastErrorMessage string
	Attempts, CancelAttempts                                   int
	ExpireAt, NextAt, CancelRequestedAt                        time.Time
	CancelClosed                                               bool
}

// OutcomeBrief is the payout's outcome event in the outbox.
type OutcomeBrief struct {
	State       string
	CreatedAt   time.Time
	PublishedAt time.Time // zero until published
}

// EventBrief is one ledger event as a history line. Data is the event's own data (codes,
// reasons, counts, who: never an openid, a name or a body), often JSON.
type EventBrief struct {
	ID                                                 int64
	At                                                 time.Time
	Source, Kind, OutBatchNo, FromState, ToState, Data string
}

// finalStates is the SQL list of the final payout states (PayoutFinal).
const finalStates = `('DUPLICATE', 'SUCCESS', 'FAIL', 'REJECTED', 'CANCELLED')`

// Ops reads an OpsSnapshot for now, listing at most limit open batches and recent failures
// (limit ≤ 0 lists none; the counts are complete either way). It reads the read-only pool in
// one read transaction, so it never waits for the writer. It never scans the payouts: their
// totals are kept by the writer (payout_totals), the batches are read from an index (one
// entry a batch), the last minute is found by binary search (then its SUCCESS outcomes are
// summed), and each listed batch costs a count of its open members. On a ledger of 100,000
// payouts with 60,000 received in the last minute it takes about 40 ms (BenchmarkOps), most
// of it summing that minute's 40,000 outcomes and counting 20 listed batches' members.
func (db *DB) Ops(ctx context.Context, now time.Time, limit int) (OpsSnapshot, error) {
	tx, err := db.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return OpsSnapshot{}, fmt.Errorf("ops: %w", err)
	}
	defer tx.Rollback()
	s := OpsSnapshot{At: now, Instance: db.instanceID, Payouts: map[string]StateTotal{},
		OutboxPending: map[string]int{"outcome": 0, "notice": 0}}
	for _, step := range []func(context.Context, *sql.Tx, *OpsSnapshot, int) error{
		opsPayouts, opsBatches, opsFailures, opsLastMinute, opsOutboxes,
	} {
		if err := step(ctx, tx, &s, limit); err != nil {
			return OpsSnapshot{}, fmt.Errorf("ops: %w", err)
		}
	}
	return s, nil
}

// opsPayouts reads the payouts by state from payout_totals (kept by the writer, see 0005).
func opsPayouts(ctx context.Context, tx *sql.Tx, s *OpsSnapshot, _ int) error {
	return readTotals(ctx, tx, s.Payouts)
}

// openRow is what decides a non-settled batch's place in the list, read from batches_ops.
type openRow struct {
	no, rail, state, code string
	sealed                int64
	problems              []billProblem // rail bills: its open bills with a code
}

// batchParked reports whether the batch itself is parked: never accepted, with a code that
// waits for an operator.
func (r *openRow) batchParked() bool { return r.state == BatchSealed && ParkedCode(r.code) }

// parkedBills counts the batch's parked bills.
func (r *openRow) parkedBills() int {
	n := 0
	for _, p := range r.problems {
		if p.parked {
			n += p.count
		}
	}
	return n
}

func (r *openRow) parked() bool { return r.batchParked() || r.parkedBills() > 0 }

// billProblem counts the open bills of one batch with one last_error_code, split by whether
// WeChat ever accepted them; message is that of the one updated last.
type billProblem struct {
	code, message string
	count         int
	parked        bool // never accepted and ParkedCode(code)
}

// opsBatches counts the batches by rail and state and lists the non-settled ones, parked
// first, then the oldest.
func opsBatches(ctx context.Context, tx *sql.Tx, s *OpsSnapshot, limit int) error {
	counts := map[[2]string]int{}
	var open []*openRow
	err := eachRow(ctx, tx, `SELECT rail, state, settled, last_error_code, sealed_at, out_batch_no FROM batches INDEXED BY batches_ops`,
		nil, func(scan func(...any) error) error {
			var r openRow
			var settled bool
			if err := scan(&r.rail, &r.state, &settled, &r.code, &r.sealed, &r.no); err != nil {
				return err
			}
			counts[[2]string{r.rail, r.state}]++
			if !settled {
				open = append(open, &r)
			}
			return nil
		})
	if err != nil {
		return fmt.Errorf("batches: %w", err)
	}
	for k, n := range counts {
		s.Batches = append(s.Batches, BatchCount{Rail: k[0], State: k[1], Count: n})
	}
	slices.SortFunc(s.Batches, func(a, b BatchCount) int { return cmp.Or(cmp.Compare(a.Rail, b.Rail), cmp.Compare(a.State, b.State)) })
	problems, err := billProblems(ctx, tx, "")
	if err != nil {
		return err
	}
	parked := map[ParkedCount]int{}
	for _, r := range open {
		r.problems = problems[r.no]
		if r.batchParked() {
			parked[ParkedCount{Kind: "batch", Code: r.code}]++
		}
		for _, p := range r.problems {
			if p.parked {
				parked[ParkedCount{Kind: "bill", Code: p.code}] += p.count
			}
		}
		if s.OldestOpen.IsZero() || fromMS(r.sealed).Before(s.OldestOpen) {
			s.OldestOpen = fromMS(r.sealed)
		}
	}
	for k, n := range parked {
		k.Count = n
		s.Parked = append(s.Parked, k)
	}
	slices.SortFunc(s.Parked, func(a, b ParkedCount) int { return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Code, b.Code)) })
	s.OpenTotal = len(open)
	slices.SortFunc(open, func(a, b *openRow) int {
		return cmp.Or(-cmpBool(a.parked(), b.parked()), cmp.Compare(a.sealed, b.sealed), cmp.Compare(a.no, b.no))
	})
	for _, r := range open[:min(max(limit, 0), len(open))] {
		ob, err := openBatch(ctx, tx, r)
		if err != nil {
			return err
		}
		s.Open = append(s.Open, ob)
	}
	return nil
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// billProblems returns, by batch (only outBatchNo's when not ""), the open bills that carry
// a last_error_code, grouped by code and by whether WeChat ever accepted them; the unsettled
// bills come from the partial index bills_due.
func billProblems(ctx context.Context, tx *sql.Tx, outBatchNo string) (map[string][]billProblem, error) {
	out := map[string][]billProblem{}
	// With a single max() aggregate, SQLite takes the bare column last_error_message from the
	// row holding the max (https://www.sqlite.org/lang_select.html#bare_columns_in_an_aggregate_query).
	err := eachRow(ctx, tx, `SELECT b.out_batch_no, b.last_error_code, b.transfer_bill_no = '', count(*), b.last_error_message,
		max(b.updated_at) FROM bills b JOIN payouts p ON p.seq = b.seq
		WHERE b.settled = 0 AND b.last_error_code != '' AND p.state NOT IN `+finalStates+` AND (? = '' OR b.out_batch_no = ?)
		GROUP BY b.out_batch_no, b.last_error_code, b.transfer_bill_no = ''`, []any{outBatchNo, outBatchNo},
		func(scan func(...any) error) error {
			var no string
			var p billProblem
			var neverAccepted bool
			var upd int64
			if err := scan(&no, &p.code, &neverAccepted, &p.count, &p.message, &upd); err != nil {
				return err
			}
			p.parked = neverAccepted && ParkedCode(p.code)
			out[no] = append(out[no], p)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("bill problems: %w", err)
	}
	return out, nil
}

// openBatch reads the rest of r's batch (one row, and a count of its open members) into an
// OpenBatch.
func openBatch(ctx context.Context, tx *sql.Tx, r *openRow) (OpenBatch, error) {
	b := OpenBatch{OutBatchNo: r.no, Rail: r.rail, State: r.state, LastErrorCode: r.code, Parked: r.parked(),
		ParkedBills: r.parkedBills(), SealedAt: fromMS(r.sealed)}
	var stateAt, next, upd int64
	var settled bool
	err := tx.QueryRowContext(ctx, `SELECT batch_id, attempts, total_num, total_amount, last_error_message, state_at, next_at,
		updated_at, settled FROM batches WHERE out_batch_no = ?`, r.no).Scan(&b.BatchID, &b.Attempts, &b.TotalNum, &b.TotalAmount,
		&b.LastErrorMessage, &stateAt, &next, &upd, &settled)
	if err != nil {
		return OpenBatch{}, fmt.Errorf("batch %s: %w", r.no, err)
	}
	b.StateAt, b.NextAt, b.Updated = fromMS(stateAt), fromMS(next), fromMS(upd)
	if b.LastErrorCode == "" && len(r.problems) > 0 {
		w := slices.MinFunc(r.problems, func(x, y billProblem) int {
			return cmp.Or(-cmpBool(x.parked, y.parked), cmp.Compare(y.count, x.count), cmp.Compare(x.code, y.code))
		})
		b.LastErrorCode, b.LastErrorMessage = w.code, w.message
	}
	if settled {
		return b, nil
	}
	q := `SELECT count(*) FROM payouts WHERE out_batch_no = ? AND state NOT IN ` + finalStates
	if r.rail == RailBills { // only its unsettled bills' payouts are read
		q = `SELECT count(*) FROM bills b JOIN payouts p ON p.seq = b.seq WHERE b.out_batch_no = ? AND b.settled = 0
			AND p.state NOT IN ` + finalStates
	}
	if err := tx.QueryRowContext(ctx, q, r.no).Scan(&b.OpenMembers); err != nil {
		return OpenBatch{}, fmt.Errorf("batch %s: open members: %w", r.no, err)
	}
	return b, nil
}

// opsFailures lists the latest payouts that ended FAIL or REJECTED, walking the outcomes
// back from the newest.
func opsFailures(ctx context.Context, tx *sql.Tx, s *OpsSnapshot, limit int) error {
	if limit <= 0 {
		return nil
	}
	err := eachRow(ctx, tx, `SELECT p.out_detail_no, p.rail, p.state, p.fail_reason, coalesce(p.out_batch_no, ''), p.openid,
		p.amount, p.updated_at FROM outcomes o JOIN payouts p ON p.seq = o.seq
		WHERE o.state IN ('FAIL', 'REJECTED') ORDER BY o.id DESC LIMIT ?`, []any{limit}, func(scan func(...any) error) error {
		var p PayoutBrief
		var upd int64
		if err := scan(&p.OutDetailNo, &p.Rail, &p.State, &p.FailReason, &p.OutBatchNo, &p.OpenID, &p.Amount, &upd); err != nil {
			return err
		}
		p.UpdatedAt = fromMS(upd)
		s.RecentFailures = append(s.RecentFailures, p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recent failures: %w", err)
	}
	return nil
}

// opsLastMinute counts the payouts received and paid in the minute up to s.At. Payouts are
// numbered (seq, contiguous: InsertPayouts appends) and outcomes written (id) in the
// ledger's time order, so the first row of the minute is found by binary search on each.
func opsLastMinute(ctx context.Context, tx *sql.Tx, s *OpsSnapshot, _ int) error {
	since := ms(s.At.Add(-time.Minute))
	first, last, err := firstSince(ctx, tx, "payouts", "received_at", since)
	if err != nil {
		return fmt.Errorf("received in the last minute: %w", err)
	}
	s.Received1m = int(last - first + 1)
	if first, _, err = firstSince(ctx, tx, "outcomes", "at", since); err == nil {
		err = tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(p.amount), 0) FROM outcomes o JOIN payouts p ON p.seq = o.seq
			WHERE o.id >= ? AND o.state = 'SUCCESS'`, first).Scan(&s.Paid1m.Count, &s.Paid1m.Amount)
	}
	if err != nil {
		return fmt.Errorf("paid in the last minute: %w", err)
	}
	return nil
}

// firstSince returns the lowest rowid of table whose column col (growing with the rowid) is
// at least since, and the highest rowid; first is last+1 when no row is that recent. A
// binary search: O(log rows) index probes.
func firstSince(ctx context.Context, tx *sql.Tx, table, col string, since int64) (first, last int64, err error) {
	var lo, hi sql.NullInt64
	// Two statements: SQLite reads a lone min() or max() off the b-tree's edge, but scans
	// for both at once.
	if err := tx.QueryRowContext(ctx, `SELECT max(rowid) FROM `+table).Scan(&hi); err != nil || !hi.Valid {
		return 1, 0, err
	}
	if err := tx.QueryRowContext(ctx, `SELECT min(rowid) FROM `+table).Scan(&lo); err != nil {
		return 0, 0, err
	}
	a, b := lo.Int64, hi.Int64+1
	for a < b {
		m := a + (b-a)/2
		var id, at int64
		if err := tx.QueryRowContext(ctx, `SELECT rowid, `+col+` FROM `+table+` WHERE rowid >= ? ORDER BY rowid LIMIT 1`, m).Scan(&id, &at); err != nil {
			return 0, 0, err
		}
		if at >= since {
			b = m
		} else {
			a = id + 1
		}
	}
	return a, hi.Int64, nil
}

// errStop ends an eachUntil walk.
var errStop = errors.New("stop")

// eachUntil is eachRow that stops, without error, once fn reports no more.
func eachUntil(ctx context.Context, q querier, query string, args []any, fn func(scan func(...any) error) (more bool, err error)) error {
	err := eachRow(ctx, q, query, args, func(scan func(...any) error) error {
		more, err := fn(scan)
		if err == nil && !more {
			return errStop
		}
		return err
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// opsOutboxes counts the unpublished rows of both outboxes (their partial indexes) and finds
// the oldest.
func opsOutboxes(ctx context.Context, tx *sql.Tx, s *OpsSnapshot, _ int) error {
	for _, o := range []struct{ kind, table string }{{"outcome", "outcomes"}, {"notice", "notices"}} {
		var n int
		var oldest int64
		if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(min(at), 0) FROM `+o.table+` WHERE published_at = 0`).Scan(&n, &oldest); err != nil {
			return fmt.Errorf("%s outbox: %w", o.kind, err)
		}
		s.OutboxPending[o.kind] = n
		if at := fromMS(oldest); !at.IsZero() && (s.OldestUnpublishedAt.IsZero() || at.Before(s.OldestUnpublishedAt)) {
			s.OldestUnpublishedAt = at
		}
	}
	return nil
}

// Lookup returns what the ledger knows of the payout with this out_detail_no, read in one
// read transaction: the payout, its batch (as in OpsSnapshot.Open, settled or not), its bill
// (rail bills), its outcome row, and its history: the events of its batch that concern the
// whole batch or name the payout, and the intake events that name it (insert, claim,
// duplicate, a cancel requested before sealing), oldest first. It never reads the name
// cipher or a body. ErrNotFound when the payout has never been received here.
func (db *DB) Lookup(ctx context.Context, outDetailNo string) (PayoutView, error) {
	v, err := db.lookup(ctx, outDetailNo)
	if err != nil {
		return PayoutView{}, fmt.Errorf("lookup %s: %w", outDetailNo, err)
	}
	return v, nil
}

func (db *DB) lookup(ctx context.Context, key string) (PayoutView, error) {
	tx, err := db.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return PayoutView{}, err
	}
	defer tx.Rollback()
	q, args := `SELECT seq, out_detail_no, mchid, appid, sub_mchid, openid, scene_id, rail, amount, stream_seq, state,
		coalesce(out_batch_no, ''), detail_id, fail_reason, received_at, updated_at FROM payouts WHERE out_detail_no = ?`, []any{key}
	if db.keys != nil { // the writer's key index; without it (read-only) a scan
		seqs := db.keys.candidates(nil, keyHash(key))
		q, args = q+` AND seq IN (`+placeholders(len(seqs))+`)`, append(args, int64Args(seqs)...)
	}
	var v PayoutView
	var seq, streamSeq, recv, upd int64
	err = tx.QueryRowContext(ctx, q+` LIMIT 1`, args...).Scan(&seq, &v.OutDetailNo, &v.MchID, &v.AppID, &v.SubMchID, &v.OpenID,
		&v.SceneID, &v.Rail, &v.Amount, &streamSeq, &v.State, &v.OutBatchNo, &v.DetailID, &v.FailReason, &recv, &upd)
	if errors.Is(err, sql.ErrNoRows) {
		return PayoutView{}, ErrNotFound
	}
	if err != nil {
		return PayoutView{}, err
	}
	v.StreamSeq, v.ReceivedAt, v.UpdatedAt = uint64(streamSeq), fromMS(recv), fromMS(upd)
	if v.OutBatchNo != "" {
		r := openRow{no: v.OutBatchNo}
		if err := tx.QueryRowContext(ctx, `SELECT rail, state, last_error_code, sealed_at FROM batches WHERE out_batch_no = ?`,
			v.OutBatchNo).Scan(&r.rail, &r.state, &r.code, &r.sealed); err != nil {
			return PayoutView{}, fmt.Errorf("batch %s: %w", v.OutBatchNo, err)
		}
		problems, err := billProblems(ctx, tx, v.OutBatchNo)
		if err != nil {
			return PayoutView{}, err
		}
		r.problems = problems[v.OutBatchNo]
		b, err := openBatch(ctx, tx, &r)
		if err != nil {
			return PayoutView{}, err
		}
		v.Batch = &b
	}
	if v.Bill, err = billBrief(ctx, tx, seq); err != nil {
		return PayoutView{}, err
	}
	var o OutcomeBrief
	var at, pub int64
	switch err := tx.QueryRowContext(ctx, `SELECT state, at, published_at FROM outcomes WHERE seq = ?`, seq).Scan(&o.State, &at, &pub); {
	case err == nil:
		o.CreatedAt, o.PublishedAt = fromMS(at), fromMS(pub)
		v.Outcome = &o
	case !errors.Is(err, sql.ErrNoRows):
		return PayoutView{}, fmt.Errorf("outcome: %w", err)
	}
	if v.History, err = history(ctx, tx, seq, v.OutBatchNo); err != nil {
		return PayoutView{}, err
	}
	return v, nil
}

// billBrief reads the bill of payout seq; nil when it has none.
func billBrief(ctx context.Context, tx *sql.Tx, seq int64) (*BillBrief, error) {
	var b BillBrief
	var expire, next, cancelAt int64
	var closed string
	err := tx.QueryRowContext(ctx, `SELECT out_bill_no, transfer_bill_no, last_error_code, last_error_message, attempts,
		cancel_attempts, expire_at, next_at, cancel_requested_at, cancel_closed FROM bills WHERE seq = ?`, seq).Scan(&b.OutBillNo,
		&b.TransferBillNo, &b.LastErrorCode, &b.LastErrorMessage, &b.Attempts, &b.CancelAttempts, &expire, &next, &cancelAt, &closed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("bill: %w", err)
	}
	b.ExpireAt, b.NextAt, b.CancelRequestedAt, b.CancelClosed = fromMS(expire), fromMS(next), fromMS(cancelAt), closed != cancelOpen
	return &b, nil
}

const eventBriefCols = `id, at, source, kind, out_batch_no, seqs, from_state, to_state, data`

// history returns the events that touched payout seq, oldest first: those of its batch
// (index events_batch) that concern the whole batch (no seqs) or name seq, and the intake
// events (index events_intake) that name it, from its insert event on, up to its batch's seal
// (after which its events carry the batch).
func history(ctx context.Context, tx *sql.Tx, seq int64, batch string) ([]EventBrief, error) {
	var out []EventBrief
	add := func(scan func(...any) error) (EventBrief, bool, error) {
		var e EventBrief
		var at int64
		var seqs string
		if err := scan(&e.ID, &at, &e.Source, &e.Kind, &e.OutBatchNo, &seqs, &e.FromState, &e.ToState, &e.Data); err != nil {
			return e, false, err
		}
		e.At = fromMS(at)
		if seqs != "" && !seqsHave(seqs, seq) {
			return e, false, nil
		}
		out = append(out, e)
		return e, true, nil
	}
	upTo := int64(1<<63 - 1)
	if batch != "" {
		err := eachRow(ctx, tx, `SELECT `+eventBriefCols+` FROM events INDEXED BY events_batch WHERE out_batch_no != ''
			AND out_batch_no = ? ORDER BY id`,
			[]any{batch}, func(scan func(...any) error) error {
				e, _, err := add(scan)
				if e.Kind == kindSeal && e.ID < upTo {
					upTo = e.ID
				}
				return err
			})
		if err != nil {
			return nil, fmt.Errorf("batch events: %w", err)
		}
	}
	// Insert events name ascending seq ranges: the payout's is the last one starting at or
	// below seq.
	var from int64
	err := eachUntil(ctx, tx, `SELECT id, seqs FROM events INDEXED BY events_intake WHERE out_batch_no = '' AND kind = 'insert'
		ORDER BY id DESC`, nil, func(scan func(...any) error) (bool, error) {
		var seqs string
		if err := scan(&from, &seqs); err != nil {
			return false, err
		}
		lo, _ := firstSeq(seqs)
		return lo > seq, nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert event: %w", err)
	}
	err = eachRow(ctx, tx, `SELECT `+eventBriefCols+` FROM events INDEXED BY events_intake WHERE out_batch_no = ''
		AND id BETWEEN ? AND ? ORDER BY id`, []any{from, upTo}, func(scan func(...any) error) error {
		_, _, err := add(scan)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("intake events: %w", err)
	}
	slices.SortFunc(out, func(a, b EventBrief) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// firstSeq returns the first seq of an encodeSeqs string.
func firstSeq(s string) (int64, error) {
	end := strings.IndexAny(s, ",-")
	if end < 0 {
		end = len(s)
	}
	return strconv.ParseInt(s[:end], 10, 64)
}

// seqsHave reports whether the encodeSeqs string s names seq, without expanding its runs.
func seqsHave(s string, seq int64) bool {
	for run := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(run, "-")
		a, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			return false
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(hi, 10, 64); err != nil {
				return false
			}
		}
		if a <= seq && seq <= b {
			return true
		}
	}
	return false
}

// MaxOperator is the longest operator name RetryNow records, in characters.
const MaxOperator = 64

// RetryNow is an operator's "try again now" for a parked or waiting batch, in one
// transaction: the batch becomes due at now (its next_at only moves earlier); on rail bills
// its unsettled bills WeChat never accepted (parked, or waiting for a create retry) become
// due at now and the batch's next_at is their earliest, as always. One event (source
// operator, kind retry_now) records by, the bills made due and when. Nothing else changes:
// not the state, the attempts, the number or the body, so the next submit is the same
// request as before. ErrNotFound for an unknown batch; ErrIllegalTransition for a settled
// one; ErrInvalid when by is empty or over MaxOperator characters.
func (db *DB) RetryNow(ctx context.Context, outBatchNo, by string, now time.Time) error {
	if by == "" || utf8.RuneCountInString(by) > MaxOperator || !utf8.ValidString(by) {
		return fmt.Errorf("retry now %s: %w: operator: want 1 to %d characters of valid text", outBatchNo, ErrInvalid, MaxOperator)
	}
	err := db.write(ctx, func(tx *sql.Conn) error {
		var rail, state string
		var settled bool
		err := tx.QueryRowContext(ctx, `SELECT rail, state, settled FROM batches WHERE out_batch_no = ?`, outBatchNo).Scan(&rail, &state, &settled)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return err
		case settled:
			return fmt.Errorf("%w: batch %s is %s and settled: nothing to retry", ErrIllegalTransition, outBatchNo, state)
		}
		at, upd := ms(now), ms(db.now())
		var bills int64
		if rail == RailBills {
			r, err := tx.ExecContext(ctx, `UPDATE bills SET next_at = ?, updated_at = ? WHERE out_batch_no = ? AND settled = 0
				AND transfer_bill_no = '' AND next_at > ?`, at, upd, outBatchNo, at)
			if err != nil {
				return err
			}
			if bills, err = r.RowsAffected(); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE batches SET updated_at = ?,
				next_at = coalesce((SELECT min(next_at) FROM bills WHERE out_batch_no = ? AND settled = 0), min(next_at, ?))
				WHERE out_batch_no = ?`, upd, outBatchNo, at, outBatchNo)
			if err != nil {
				return err
			}
		} else if _, err := tx.ExecContext(ctx, `UPDATE batches SET next_at = min(next_at, ?), updated_at = ? WHERE out_batch_no = ?`,
			at, upd, outBatchNo); err != nil {
			return err
		}
		return db.appendEvent(ctx, tx, event{At: upd, Source: string(SourceOperator), Kind: kindRetryNow, OutBatchNo: outBatchNo,
			From: state, To: state, Data: jsonString(map[string]any{"by": by, "next_at": at, "bills": bills})})
	})
	if err != nil {
		return fmt.Errorf("retry now %s: %w", outBatchNo, err)
	}
	return nil
}

// ParkedCode reports whether a last_error_code means the batch or bill waits for an operator:
// WeChat refused it for a reason only a person can fix (balance, authorisation, account,
// quota, keys, appid), or no rail in this processor drives it. The one definition of
// "parked"; the pipeline checks it agrees with its own classification.
func ParkedCode(code string) bool {
	switch code {
	case "NOT_ENOUGH", "NO_AUTH", "ACCOUNTERROR", "QUOTA_EXCEED", "SIGN_ERROR", "APPID_MCHID_NOT_MATCH",
		"INVALID_REQUEST", "PARAM_ERROR", "RAIL_NOT_CONFIGURED":
		return true
	}
	return false
}
