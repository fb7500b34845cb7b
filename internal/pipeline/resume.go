package pipeline

import (
	"context"
	"fmt"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/pkg/ledger"
)

// resumeClaims claims every payout this replica committed but had not claimed when it last
// stopped (a crash between the ledger commit and the claim). Its message may since have been
// redelivered to another replica: then that replica owns it and the row here becomes a
// DUPLICATE. It runs before the sealer loads the CLAIMED payouts and before intake starts, so
// every owned payout reaches the batcher exactly once.
func resumeClaims(ctx context.Context, db *ledger.DB, store *claims.Store, page int) error {
	for {
		rows, err := db.PayoutsInState(ctx, ledger.PayoutReceived, page)
		if err != nil || len(rows) == 0 {
			return err
		}
		keys := make([]string, len(rows))
		for i, r := range rows {
			keys[i] = claims.Key(r.MchID, r.OutDetailNo)
		}
		owners, err := store.Claim(ctx, keys)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		var mine []int64
		for i, r := range rows {
			if owners[i] == store.Instance() {
				mine = append(mine, r.Seq)
			} else if err := db.MarkDuplicate(ctx, r.Seq, owners[i]); err != nil {
				return err
			}
		}
		if err := db.MarkClaimed(ctx, mine); err != nil {
			return err
		}
	}
}
