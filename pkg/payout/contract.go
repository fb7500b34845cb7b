package payout

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Subject prefixes of the outbound contract; the processor's broker configuration may
// change them, these are its defaults.
const (
	ResultsPrefix    = "payouts.results"
	CancelPrefix     = "payouts.cancel"
	DeadLetterPrefix = "payouts.deadletter"
)

// ResultSubject returns the subject an event of state is published to: prefix, ".", and
// the state in lower case, e.g. ResultSubject(ResultsPrefix, "SUCCESS") is
// "payouts.results.success".
func ResultSubject(prefix, state string) string { return prefix + "." + strings.ToLower(state) }

// OutcomeMsgID is the Nats-Msg-Id of the outcome event of payout outDetailNo of merchant
// mchid reaching state: one event per payout and final state, so a republish after a crash
// is deduplicated by JetStream and a consumer may deduplicate on it too.
func OutcomeMsgID(mchid, outDetailNo, state string) string {
	return mchid + "." + outDetailNo + "." + state
}

// NoticeMsgID is the Nats-Msg-Id of a notice about payout outDetailNo of merchant mchid that
// is not an outcome: kind StateWaitUserConfirm with the transfer_bill_no as detail (one per
// bill), or StateCancelRefused with the refusal's code (one per key and code). It names the
// payout and the fact, not the ledger row, so a notice published again by another ledger (one
// that adopted a lost replica's payouts) carries the same id and a consumer drops the repeat.
func NoticeMsgID(mchid, outDetailNo, kind, detail string) string {
	return mchid + "." + outDetailNo + "." + kind + "." + detail
}

// CancelSubject returns the subject a cancel for mchid is published to: prefix "." mchid.
func CancelSubject(prefix, mchid string) string { return prefix + "." + mchid }

// States of events that are not a payout's final state.
const (
	// StateWaitUserConfirm is the subject state of WaitUserConfirmEvent: a bill waits for
	// the payee to confirm receipt in WeChat (docs/transfer-bills.md).
	StateWaitUserConfirm = "WAIT_USER_CONFIRM"
	// StateCancelRefused is the subject state of CancelRefusedEvent.
	StateCancelRefused = "CANCEL_REFUSED"
)

// OutcomeEvent is what upstream systems receive on ResultSubject(ResultsPrefix, State) when
// a payout reaches a final state: SUCCESS, FAIL (FailReason says why, as WeChat gave it;
// unknown reasons are passed on as they come), REJECTED (WeChat definitively refused the
// create; nothing was paid), DUPLICATE (a repeat of a key already received with other
// content was refused) or CANCELLED (bills rail: cancelled before the payee received it;
// nothing was paid). Each (out_detail_no, state) is published exactly once: the processor
// writes it to its ledger's outbox in the transaction that made the payout final, and
// republishes after a crash with the same JetStream message id, which the results stream
// deduplicates. A payout is final once: no other final event follows for its key, with one
// exception: a DUPLICATE names the processor that owns the key ("owner <instance>"); if that
// processor is lost and another adopts its payouts, the adopter publishes the payout's own
// outcome afterwards (docs/replication.md#adoption).
//
// Batch rail payouts carry OutBatchNo, BatchID and DetailID; bills rail payouts carry
// OutBillNo (= out_detail_no) and TransferBillNo, and OutBatchNo names the processor's own
// grouping (WeChat never saw it). Amount is fen.
type OutcomeEvent struct {
	OutDetailNo    string    `json:"out_detail_no"`
	MchID          string    `json:"mchid"`
	State          string    `json:"state"`
	Amount         int64     `json:"amount"`
	OutBatchNo     string    `json:"out_batch_no,omitempty"`
	BatchID        string    `json:"batch_id,omitempty"`
	DetailID       string    `json:"detail_id,omitempty"`
	FailReason     string    `json:"fail_reason,omitempty"`
	At             time.Time `json:"at"`
	OutBillNo      string    `json:"out_bill_no,omitempty"`
	TransferBillNo string    `json:"transfer_bill_no,omitempty"`
}

// WaitUserConfirmEvent is published once per bill on ResultSubject(ResultsPrefix,
// StateWaitUserConfirm) when the bill waits for its payee to confirm receipt: the payee's app opens
// WeChat's confirmation page with MchID, AppID and PackageInfo (docs/transfer-bills.md). The app's
// own success callback is not a payment result: only the OutcomeEvent that follows (SUCCESS, FAIL
// or CANCELLED) is. An unconfirmed bill is closed by WeChat as FAIL (OVERDUE_CLOSE) around ExpireAt
// (its create time + 24 h), sometimes later; ExpireAt is informational. OutBillNo equals
// OutDetailNo. Amount is fen.
type WaitUserConfirmEvent struct {
	OutDetailNo    string    `json:"out_detail_no"`
	MchID          string    `json:"mchid"`
	AppID          string    `json:"appid"`
	OutBillNo      string    `json:"out_bill_no"`
	TransferBillNo string    `json:"transfer_bill_no"`
	PackageInfo    string    `json:"package_info"`
	Amount         int64     `json:"amount"`
	ExpireAt       time.Time `json:"expire_at"`
	At             time.Time `json:"at"`
}

// CancelSchemaV1 is the current value of CancelRequest.Schema.
const CancelSchemaV1 = "paystream.cancel.v1"

// MaxCancelReasonLen bounds CancelRequest.Reason, in characters.
const MaxCancelReasonLen = 64

// CancelRequest asks the processor to cancel payout OutDetailNo of merchant MchID. It
// travels as JSON on CancelSubject(CancelPrefix, MchID) with Nats-Msg-Id = CancelMsgID(c)
// (Publisher.Cancel sends it so). Only the bills rail can cancel, and only while WeChat
// allows it (before the payee received the money). A cancel that succeeds ends in the
// payout's OutcomeEvent with state CANCELLED (or another final state if the payout got there
// first); one that cannot be done gets a CancelRefusedEvent. Repeats are harmless. Reason is
// kept in the ledger (≤ MaxCancelReasonLen characters; no personal data).
type CancelRequest struct {
	Schema      string `json:"schema"`
	OutDetailNo string `json:"out_detail_no"`
	MchID       string `json:"mchid"`
	Reason      string `json:"reason,omitempty"`
}

// Validate checks c: schema CancelSchemaV1, out_detail_no and mchid [0-9A-Za-z]{1,32},
// reason valid text of at most MaxCancelReasonLen characters. It returns nil or a
// *ValidationError (matching ErrInvalid) naming every problem's field, never a value.
func (c *CancelRequest) Validate() error {
	var v validator
	if c.Schema != CancelSchemaV1 {
		v.add("schema", "must be "+CancelSchemaV1)
	}
	v.number("out_detail_no", c.OutDetailNo, true)
	v.number("mchid", c.MchID, true)
	v.text("reason", c.Reason, 0, MaxCancelReasonLen)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

// cancelFields are the wire names of CancelRequest.
var cancelFields = [...]string{"schema", "out_detail_no", "mchid", "reason"}

// DecodeCancel parses one CancelRequest as strictly as Decode parses a Request: one JSON
// object of at most MaxMessageSize bytes, valid UTF-8, only the known field names (exact
// case), each at most once, every value a string. Every error is a *DecodeError matching
// ErrMalformed and one specific sentinel. It does not validate: call Validate.
func DecodeCancel(data []byte) (CancelRequest, error) {
	var c CancelRequest
	if len(data) > MaxMessageSize {
		return c, &DecodeError{Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxMessageSize)}
	}
	if !utf8.Valid(data) {
		return c, &DecodeError{Err: ErrInvalidUTF8}
	}
	dst := [...]*string{&c.Schema, &c.OutDetailNo, &c.MchID, &c.Reason}
	s := scanner{src: string(data)}
	var seen [len(cancelFields)]bool
	err := s.object("", func(key string) (int, bool) {
		for i, f := range cancelFields {
			if f == key {
				return i, true
			}
		}
		return 0, false
	}, seen[:], func(i int) error { return s.stringInto(dst[i]) })
	if err != nil {
		return c, err
	}
	if s.skipSpace(); s.pos != len(s.src) {
		return c, &DecodeError{Err: fmt.Errorf("%w: data after the object", ErrSyntax)}
	}
	return c, nil
}

// CancelMsgID returns the Nats-Msg-Id of c: "cancel." + out_detail_no, so JetStream drops
// a repeated cancel of the same payout inside the stream's duplicate window (the processor
// treats a later repeat as a no-op).
func CancelMsgID(c CancelRequest) string { return "cancel." + c.OutDetailNo }

// Cancel refusal codes (CancelRefusedEvent.Code): the processor decides on these, never on
// Detail.
const (
	CancelUnknown      = "UNKNOWN_PAYOUT"     // no payout with this out_detail_no here
	CancelFinal        = "ALREADY_FINAL"      // the payout is final (State says which)
	CancelNotSupported = "RAIL_CANNOT_CANCEL" // paid through the batch API, which cannot cancel
	CancelTooLate      = "WECHAT_REFUSED"     // WeChat refused: the bill is past confirmation
	CancelInvalid      = "INVALID_CANCEL"     // the cancel message itself is not a valid CancelRequest
)

// CancelRefusedEvent is published on ResultSubject(ResultsPrefix, StateCancelRefused) when
// a CancelRequest cannot be carried out. Code is one of the Cancel… codes; State is the
// payout's state when refused (empty when unknown); Detail is a human-readable explanation,
// safe to log, never to branch on. A refused cancel changes nothing: the payout continues to
// its own OutcomeEvent. For CancelInvalid, OutDetailNo and MchID are whatever could be read.
type CancelRefusedEvent struct {
	OutDetailNo string    `json:"out_detail_no"`
	MchID       string    `json:"mchid"`
	Code        string    `json:"code"`
	State       string    `json:"state,omitempty"`
	Detail      string    `json:"detail"`
	At          time.Time `json:"at"`
}

// Headers of dead-lettered messages, published on DeadLetterPrefix + "." + class.
const (
	HeaderReason        = "Paystream-Reason"          // why the message was refused, safe to log
	HeaderReasonClass   = "Paystream-Reason-Class"    // one of the Class… constants
	HeaderOrigSubject   = "Paystream-Orig-Subject"    // where it was published
	HeaderOrigStreamSeq = "Paystream-Orig-Stream-Seq" // its sequence in the payouts stream
	HeaderDeliveries    = "Paystream-Deliveries"      // how many times JetStream had delivered it
	// HeaderBody says what was done to the body: absent when it is the original bytes,
	// otherwise e.g. "user_name removed", "truncated: 1048476 bytes, first 65536 kept" or
	// "withheld: …". The original stays in the payouts stream at HeaderOrigStreamSeq until
	// that stream's max-age.
	HeaderBody = "Paystream-Body"
)

// Dead-letter classes: the last token of the dead-letter subject.
const (
	ClassInvalid   = "invalid"   // not a valid payout request
	ClassConflict  = "conflict"  // its out_detail_no was already received with other content
	ClassMisrouted = "misrouted" // not for a merchant (or sub-merchant) this processor pays for
)
