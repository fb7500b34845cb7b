package ledger

import (
	"context"
	"fmt"
)

// MemberStates returns the state of every member of batch outBatchNo, keyed by
// out_detail_no, read in one statement on the read pool (a snapshot: concurrent writes may
// move members on right after). An unknown batch, or one without members, gives an empty
// map. The driver reads it once per paging pass to skip work for members already final.
func (db *DB) MemberStates(ctx context.Context, outBatchNo string) (map[string]string, error) {
	states := map[string]string{}
	err := eachRow(ctx, db.rdb, `SELECT out_detail_no, state FROM payouts WHERE out_batch_no = ?`, []any{outBatchNo},
		func(scan func(...any) error) error {
			var key, state string
			if err := scan(&key, &state); err != nil {
				return err
			}
			states[key] = state
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("member states %s: %w", outBatchNo, err)
	}
	return states, nil
}
