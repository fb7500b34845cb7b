package pipeline

import "sync"

// pendingSet holds the seqs of RECEIVED payouts that intake or the sweep is claiming or
// has handed to the sealer, until the sealer has sealed them. A payout in the set is being
// worked on: a redelivery of its key is not claimed again, and the sweep leaves it alone. A
// RECEIVED payout outside the set is one nothing is working on (its claim failed, or the
// process stopped): the sweep claims it.
//
// Whoever reads payout states to decide what to claim (intake's ledger insert, the sweep's
// scan) holds mu across that read and its check of the set; the sealer removes seqs only
// after their seal has committed. So a payout is either still in the set or read as
// SEALED, never read as RECEIVED and missing from the set once sealed.
type pendingSet struct {
	mu   sync.Mutex
	seqs map[int64]bool
}

func newPendingSet() *pendingSet { return &pendingSet{seqs: map[int64]bool{}} }

// drop removes seqs from the set.
func (p *pendingSet) drop(seqs ...int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range seqs {
		delete(p.seqs, s)
	}
}
