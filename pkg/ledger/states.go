package ledger

import "time"

// Payout states (payouts.state). A payout only moves forward:
//
//	RECEIVED → CLAIMED | DUPLICATE
//	CLAIMED → SEALED
//	SEALED → INIT | WAIT_PAY | PROCESSING | SUCCESS | FAIL | REJECTED
//	INIT → WAIT_PAY | PROCESSING | SUCCESS | FAIL
//	WAIT_PAY → PROCESSING | SUCCESS | FAIL
//	PROCESSING → SUCCESS | FAIL
//
// DUPLICATE, SUCCESS, FAIL and REJECTED are final. INIT…FAIL are WeChat's detail statuses
// (spec §6).
const (
	PayoutReceived   = "RECEIVED"   // committed; cross-replica ownership not yet claimed
	PayoutClaimed    = "CLAIMED"    // this instance owns it; waiting to be batched
	PayoutDuplicate  = "DUPLICATE"  // another owner has the key (final)
	PayoutSealed     = "SEALED"     // member of a sealed batch; detail state not known yet
	PayoutInit       = "INIT"       // WeChat is checking the detail
	PayoutWaitPay    = "WAIT_PAY"   // waiting for the merchant's staff to confirm
	PayoutProcessing = "PROCESSING" // being paid; outcome unknown
	PayoutSuccess    = "SUCCESS"    // paid (final)
	PayoutFail       = "FAIL"       // not paid (final); see FailReason
	PayoutRejected   = "REJECTED"   // its batch was definitively rejected; nothing paid (final)
)

// Batch states (batches.state): SEALED is ours (committed, not yet known to WeChat) and
// REJECTED means the create was definitively refused (PARAM_ERROR); the others are WeChat's
// batch statuses (spec §6). FINISHED, CLOSED and REJECTED are final.
const (
	BatchSealed     = "SEALED"
	BatchWaitPay    = "WAIT_PAY"
	BatchAccepted   = "ACCEPTED"
	BatchProcessing = "PROCESSING"
	BatchFinished   = "FINISHED"
	BatchClosed     = "CLOSED"
	BatchRejected   = "REJECTED"
)

// Per-rail detail caps (spec §5, §7).
const (
	MaxDetailsDirect  = 1000
	MaxDetailsPartner = 3000
)

// Rails, as in payout.RailDirect and payout.RailPartner.
const (
	railDirect  = "direct"
	railPartner = "partner"
)

// QueryHorizon is how long WeChat answers queries for a batch (spec §6: last 30 days).
const QueryHorizon = 30 * 24 * time.Hour

var payoutNext = map[string][]string{
	PayoutReceived:   {PayoutClaimed, PayoutDuplicate},
	PayoutClaimed:    {PayoutSealed},
	PayoutSealed:     {PayoutInit, PayoutWaitPay, PayoutProcessing, PayoutSuccess, PayoutFail, PayoutRejected},
	PayoutInit:       {PayoutWaitPay, PayoutProcessing, PayoutSuccess, PayoutFail},
	PayoutWaitPay:    {PayoutProcessing, PayoutSuccess, PayoutFail},
	PayoutProcessing: {PayoutSuccess, PayoutFail},
}

// payoutLegal reports whether from → to is an edge of the payout state machine.
func payoutLegal(from, to string) bool {
	for _, s := range payoutNext[from] {
		if s == to {
			return true
		}
	}
	return false
}

// PayoutFinal reports whether a payout state is final.
func PayoutFinal(state string) bool {
	switch state {
	case PayoutDuplicate, PayoutSuccess, PayoutFail, PayoutRejected:
		return true
	}
	return false
}

// detailRank orders the states a page may report; -1 for states outside the detail lifecycle.
func detailRank(state string) int {
	switch state {
	case PayoutSealed:
		return 0
	case PayoutInit:
		return 1
	case PayoutWaitPay:
		return 2
	case PayoutProcessing:
		return 3
	case PayoutSuccess, PayoutFail:
		return 4
	}
	return -1
}

// batchRank orders batch states: SEALED < WAIT_PAY/ACCEPTED < PROCESSING < FINISHED/CLOSED/REJECTED.
func batchRank(state string) int {
	switch state {
	case BatchSealed:
		return 0
	case BatchWaitPay, BatchAccepted:
		return 1
	case BatchProcessing:
		return 2
	case BatchFinished, BatchClosed, BatchRejected:
		return 3
	}
	return -1
}

// BatchFinal reports whether a batch state is final.
func BatchFinal(state string) bool { return batchRank(state) == 3 }

// railCap returns the detail cap of a rail (0 for an unknown rail).
func railCap(rail string) int {
	switch rail {
	case railDirect:
		return MaxDetailsDirect
	case railPartner:
		return MaxDetailsPartner
	}
	return 0
}
