package pipeline

import (
	"context"

	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
)

// rail pays the members of sealed batches through one WeChat Pay product: the batch API
// (direct and partner, rail_batches.go) or transfer bills (rail_bills.go). A batch is the
// unit of sealing, audit and rate budgeting on every rail; what a rail submits for it, how
// it follows it and which states its members reach are the rail's. A rail keeps no state of
// its own: what it has done is in the ledger, so any restart resumes it. A new product (the
// pre-authorised no-confirm mode, say) is one more implementation registered in New.
type rail interface {
	// bodies builds the frozen bodies of a batch about to be sealed, from its members in
	// batch order: the body the ledger keeps with the batch and, on a rail that sends each
	// member on its own, one body per member (nil otherwise). The ledger commits them with
	// the batch before anything is sent, and every attempt resends them byte for byte.
	bodies(b batching.Batch, members []ledger.Payout) (body []byte, each [][]byte, err error)
	// step moves one due batch forward (submit, follow, cancel) and records in the ledger
	// what it learned, including when the batch is next due.
	step(ctx context.Context, b ledger.Batch) error
}
