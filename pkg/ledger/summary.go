package ledger

import (
	"context"
	"fmt"
)

// StateTotal is a count of payouts and their amount in fen.
type StateTotal struct {
	Count  int
	Amount int64
}

// Summary counts batches and payouts by state, FAIL payouts by fail_reason ("" when WeChat's
// reason is missing), the bills rows (rail-bills members) by their payout's state, and
// recorded conflicts. The maps are never nil.
type Summary struct {
	Batches     map[string]int
	Payouts     map[string]StateTotal
	FailReasons map[string]StateTotal
	Bills       map[string]StateTotal
	Conflicts   int
}

// Totals reads the payouts' count and amount by state as the writer keeps them
// (payout_totals): it reads one row a state, never the payouts, so it may be called often
// beside a busy writer. States without payouts are absent; without an error the map is never
// nil.
func (db *DB) Totals(ctx context.Context) (map[string]StateTotal, error) {
	ts := map[string]StateTotal{}
	if err := readTotals(ctx, db.rdb, ts); err != nil {
		return nil, fmt.Errorf("totals: %w", err)
	}
	return ts, nil
}

// readTotals adds payout_totals' non-empty states to ts.
func readTotals(ctx context.Context, q querier, ts map[string]StateTotal) error {
	return eachRow(ctx, q, `SELECT state, count, amount FROM payout_totals WHERE count > 0`, nil, func(scan func(...any) error) error {
		var st string
		var t StateTotal
		err := scan(&st, &t.Count, &t.Amount)
		ts[st] = t
		return err
	})
}

// Summary scans the ledger (O(payouts); meant for a final print or a slow metrics tick).
func (db *DB) Summary(ctx context.Context) (Summary, error) {
	s := Summary{Batches: map[string]int{}, Payouts: map[string]StateTotal{}, FailReasons: map[string]StateTotal{},
		Bills: map[string]StateTotal{}}
	err := eachRow(ctx, db.rdb, `SELECT state, count(*) FROM batches GROUP BY state`, nil, func(scan func(...any) error) error {
		var st string
		var n int
		err := scan(&st, &n)
		s.Batches[st] = n
		return err
	})
	if err == nil {
		// One scan: FAIL rows are grouped by reason too, the others by state only.
		err = eachRow(ctx, db.rdb, `SELECT state, CASE state WHEN 'FAIL' THEN fail_reason ELSE '' END, count(*), sum(amount)
			FROM payouts GROUP BY 1, 2`, nil, func(scan func(...any) error) error {
			var st, reason string
			var t StateTotal
			if err := scan(&st, &reason, &t.Count, &t.Amount); err != nil {
				return err
			}
			sum := s.Payouts[st]
			s.Payouts[st] = StateTotal{Count: sum.Count + t.Count, Amount: sum.Amount + t.Amount}
			if st == PayoutFail {
				s.FailReasons[reason] = t
			}
			return nil
		})
	}
	if err == nil {
		err = eachRow(ctx, db.rdb, `SELECT p.state, count(*), sum(p.amount) FROM bills b JOIN payouts p ON p.seq = b.seq
			GROUP BY p.state`, nil, func(scan func(...any) error) error {
			var st string
			var t StateTotal
			err := scan(&st, &t.Count, &t.Amount)
			s.Bills[st] = t
			return err
		})
	}
	if err == nil {
		err = db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM conflicts`).Scan(&s.Conflicts)
	}
	if err != nil {
		return Summary{}, fmt.Errorf("summary: %w", err)
	}
	return s, nil
}
