package ledger

import (
	"context"
	"errors"
	"time"
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
	// RecentFailures are the latest payouts that ended FAIL or REJECTED (newest first, at most limit),
	// each with its reason.
	RecentFailures []PayoutBrief
	// Last minute, by the ledger's own timestamps: payouts received, and payouts that reached
	// SUCCESS (with their amount).
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

// OpenBatch is one non-settled batch as an operator sees it. For a batch on the bill rail,
// LastErrorCode and LastErrorMessage are those of its worst bill when the batch has none, and
// ParkedBills counts its parked bills.
type OpenBatch struct {
	OutBatchNo, Rail, State, BatchID   string
	LastErrorCode, LastErrorMessage    string
	Parked                             bool // ParkedCode(LastErrorCode) and never accepted by WeChat
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

// EventBrief is one ledger event as a history line.
type EventBrief struct {
	At                                         time.Time
	Source, Kind, OutBatchNo, FromState, ToState string
}

// errNotImplemented marks the operator API while it is being written.
var errNotImplemented = errors.New("ledger: not implemented yet")

// Ops reads an OpsSnapshot for now, listing at most limit open batches and recent failures.
func (db *DB) Ops(ctx context.Context, now time.Time, limit int) (OpsSnapshot, error) {
	return OpsSnapshot{}, errNotImplemented
}

// Lookup returns what the ledger knows of the payout with this out_detail_no; ErrNotFound
// when it has never been received here.
func (db *DB) Lookup(ctx context.Context, outDetailNo string) (PayoutView, error) {
	return PayoutView{}, errNotImplemented
}

// RetryNow is an operator's "try again now" for a parked or waiting batch: the batch (and
// its parked bills) become due at now, with an event of source operator naming by. ErrNotFound
// for an unknown batch; ErrIllegalTransition for a settled one.
func (db *DB) RetryNow(ctx context.Context, outBatchNo, by string, now time.Time) error {
	return errNotImplemented
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
