package ledger

import "time"

// Payout states (payouts.state). The state machine is per rail (see legalOn). Common to
// every rail:
//
//	RECEIVED → CLAIMED | DUPLICATE
//	CLAIMED → SEALED
//
// On the batch rails (direct, partner) the states after SEALED are WeChat's detail statuses
// (docs/wechatpay.md §5):
//
//	SEALED → INIT | WAIT_PAY | PROCESSING | SUCCESS | FAIL | REJECTED
//	INIT → WAIT_PAY | PROCESSING | SUCCESS | FAIL
//	WAIT_PAY → PROCESSING | SUCCESS | FAIL
//	PROCESSING → SUCCESS | FAIL
//
// On the bills rail they are WeChat's transfer-bill states (docs/transfer-bills.md), PROCESSING
// meaning the bill's funds are being locked:
//
//	SEALED → ACCEPTED | PROCESSING | WAIT_USER_CONFIRM | TRANSFERING | CANCELING | SUCCESS | FAIL | CANCELLED | REJECTED
//	ACCEPTED → PROCESSING | WAIT_USER_CONFIRM | TRANSFERING | CANCELING | SUCCESS | FAIL | CANCELLED
//	PROCESSING → WAIT_USER_CONFIRM | TRANSFERING | CANCELING | SUCCESS | FAIL | CANCELLED
//	WAIT_USER_CONFIRM → TRANSFERING | CANCELING | SUCCESS | FAIL | CANCELLED
//	TRANSFERING → CANCELING | SUCCESS | FAIL | CANCELLED
//	CANCELING → SUCCESS | FAIL | CANCELLED
//
// DUPLICATE, SUCCESS, FAIL, REJECTED and CANCELLED are final.
const (
	PayoutReceived   = "RECEIVED"   // committed; cross-replica ownership not yet claimed
	PayoutClaimed    = "CLAIMED"    // this instance owns it; waiting to be batched
	PayoutDuplicate  = "DUPLICATE"  // another owner has the key (final)
	PayoutSealed     = "SEALED"     // member of a sealed batch; WeChat's state not known yet
	PayoutInit       = "INIT"       // batch rails: WeChat is checking the detail
	PayoutWaitPay    = "WAIT_PAY"   // batch rails: waiting for the merchant's staff to confirm
	PayoutProcessing = "PROCESSING" // batch rails: being paid; bills rail: funds being locked
	PayoutSuccess    = "SUCCESS"    // paid (final)
	PayoutFail       = "FAIL"       // not paid (final); see FailReason
	PayoutRejected   = "REJECTED"   // its create was definitively refused; nothing paid (final)

	PayoutAccepted        = "ACCEPTED"          // bills rail: WeChat accepted the bill
	PayoutWaitUserConfirm = "WAIT_USER_CONFIRM" // bills rail: waiting for the payee to confirm (package_info)
	PayoutTransfering     = "TRANSFERING"       // bills rail: confirmed, being paid
	PayoutCanceling       = "CANCELING"         // bills rail: a cancel is under way
	PayoutCancelled       = "CANCELLED"         // bills rail: cancelled, nothing paid (final)
)

// Batch states (batches.state): SEALED is ours (committed, not yet known to WeChat) and
// REJECTED means the create was definitively refused (PARAM_ERROR); the others are WeChat's
// batch statuses (docs/wechatpay.md §5). FINISHED, CLOSED and REJECTED are final.
const (
	BatchSealed     = "SEALED"
	BatchWaitPay    = "WAIT_PAY"
	BatchAccepted   = "ACCEPTED"
	BatchProcessing = "PROCESSING"
	BatchFinished   = "FINISHED"
	BatchClosed     = "CLOSED"
	BatchRejected   = "REJECTED"
)

// Per-rail detail caps (docs/wechatpay.md §4, §6); a rail-bills batch is ours only (its members are
// sent as single bills), capped like a direct batch.
const (
	MaxDetailsDirect  = 1000
	MaxDetailsPartner = 3000
	MaxDetailsBills   = 1000
)

// Rails, as in payout.RailDirect, payout.RailPartner and payout.RailBills.
const (
	railDirect  = "direct"
	railPartner = "partner"
	// RailBills is the transfer-bills rail (docs/transfer-bills.md): one bill per member.
	RailBills = "bills"
)

// BillConfirmWindow is how long WeChat waits for a payee to confirm a bill before closing it
// as FAIL OVERDUE_CLOSE (sometimes later); a bill's ExpireAt is its create_time plus this.
const BillConfirmWindow = 24 * time.Hour

// QueryHorizon is how long WeChat answers queries for a batch (docs/wechatpay.md §10: last 30
// days).
const QueryHorizon = 30 * 24 * time.Hour

var payoutNext = map[string][]string{
	PayoutReceived:   {PayoutClaimed, PayoutDuplicate},
	PayoutClaimed:    {PayoutSealed},
	PayoutSealed:     {PayoutInit, PayoutWaitPay, PayoutProcessing, PayoutSuccess, PayoutFail, PayoutRejected},
	PayoutInit:       {PayoutWaitPay, PayoutProcessing, PayoutSuccess, PayoutFail},
	PayoutWaitPay:    {PayoutProcessing, PayoutSuccess, PayoutFail},
	PayoutProcessing: {PayoutSuccess, PayoutFail},
}

var billNext = map[string][]string{
	PayoutReceived: {PayoutClaimed, PayoutDuplicate},
	PayoutClaimed:  {PayoutSealed},
	PayoutSealed: {PayoutAccepted, PayoutProcessing, PayoutWaitUserConfirm, PayoutTransfering, PayoutCanceling,
		PayoutSuccess, PayoutFail, PayoutCancelled, PayoutRejected},
	PayoutAccepted: {PayoutProcessing, PayoutWaitUserConfirm, PayoutTransfering, PayoutCanceling,
		PayoutSuccess, PayoutFail, PayoutCancelled},
	PayoutProcessing:      {PayoutWaitUserConfirm, PayoutTransfering, PayoutCanceling, PayoutSuccess, PayoutFail, PayoutCancelled},
	PayoutWaitUserConfirm: {PayoutTransfering, PayoutCanceling, PayoutSuccess, PayoutFail, PayoutCancelled},
	PayoutTransfering:     {PayoutCanceling, PayoutSuccess, PayoutFail, PayoutCancelled},
	PayoutCanceling:       {PayoutSuccess, PayoutFail, PayoutCancelled},
}

// payoutLegal reports whether from → to is an edge of the batch rails' payout state machine.
func payoutLegal(from, to string) bool { return legalOn(railDirect, from, to) }

// legalOn reports whether from → to is an edge of rail's payout state machine.
func legalOn(rail, from, to string) bool {
	next := payoutNext
	if rail == RailBills {
		next = billNext
	}
	for _, s := range next[from] {
		if s == to {
			return true
		}
	}
	return false
}

// PayoutFinal reports whether a payout state is final.
func PayoutFinal(state string) bool {
	switch state {
	case PayoutDuplicate, PayoutSuccess, PayoutFail, PayoutRejected, PayoutCancelled:
		return true
	}
	return false
}

// billRank orders the bills rail's member states: SEALED < ACCEPTED < PROCESSING <
// WAIT_USER_CONFIRM < TRANSFERING < CANCELING < finals; -1 outside the bill lifecycle. A
// state reported below the current one is stale.
func billRank(state string) int {
	switch state {
	case PayoutSealed:
		return 0
	case PayoutAccepted:
		return 1
	case PayoutProcessing:
		return 2
	case PayoutWaitUserConfirm:
		return 3
	case PayoutTransfering:
		return 4
	case PayoutCanceling:
		return 5
	case PayoutSuccess, PayoutFail, PayoutCancelled, PayoutRejected:
		return 6
	}
	return -1
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

// batchRank orders batch states: SEALED < WAIT_PAY/ACCEPTED < PROCESSING <
// FINISHED/CLOSED/REJECTED.
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
	case RailBills:
		return MaxDetailsBills
	}
	return 0
}
