package wechatpay

import (
	"errors"
	"fmt"
)

// Wire models of electronic receipts (电子回单, docs/receipts.md): the signed proof of a transfer a
// payee or an auditor asks for. On the batch API a receipt covers a whole batch (bill-receipt) or
// one detail (electronic-receipts); on transfer bills one bill (elecsign). Each is applied for,
// queried until generated, and downloaded from a URL whose answer is not signed but checked by
// its hash.

// AcceptTypeBatchTransfer is the accept_type of a batch detail's receipt (docs/receipts.md §2).
// The API knows TRANSFER_TO_POCKET and TRANSFER_TO_BANK too, for older products paystream does
// not use.
const AcceptTypeBatchTransfer = "BATCH_TRANSFER"

// States of a batch-API receipt (signature_status, docs/receipts.md §1, §2).
const (
	SignatureAccepted = "ACCEPTED" // applied for, being generated
	SignatureFinished = "FINISHED" // generated: hash and download_url are set
)

// States of a transfer bill's receipt (state, docs/receipts.md §3).
const (
	ElecsignGenerating = "GENERATING"
	ElecsignFinished   = "FINISHED"
	ElecsignFailed     = "FAILED" // fail_reason says why; applying again is pointless
)

// Receipt hash types (hash_type, docs/receipts.md §4). Only HashSHA256 is checked: SM3 is
// documented for bills but needs a library the standard one lacks; DownloadReceipt refuses it.
const (
	HashSHA256 = "SHA256"
	HashSM3    = "SM3"
)

// ReceiptFile is the file part of a generated receipt: the hash of the file and where to fetch it
// for ten minutes (docs/receipts.md §4). Empty until the receipt is generated.
type ReceiptFile struct {
	HashType    string `json:"hash_type,omitempty"`
	HashValue   string `json:"hash_value,omitempty"`
	DownloadURL string `json:"download_url,omitempty"`
}

// BatchReceipt is the answer to applying for or querying a whole batch's receipt
// (POST /v3/transfer/bill-receipt, GET /v3/transfer/bill-receipt/{out_batch_no},
// docs/receipts.md §1). Times are RFC 3339.
type BatchReceipt struct {
	OutBatchNo      string `json:"out_batch_no"`
	SignatureNo     string `json:"signature_no"`
	SignatureStatus string `json:"signature_status,omitempty"` // SignatureAccepted or SignatureFinished
	ReceiptFile
	CreateTime string `json:"create_time,omitempty"`
	UpdateTime string `json:"update_time,omitempty"`
}

// DetailReceiptRequest is the body of POST /v3/transfer-detail/electronic-receipts and the query
// of its GET (docs/receipts.md §2). AcceptType is AcceptTypeBatchTransfer; both numbers are
// required for it.
type DetailReceiptRequest struct {
	AcceptType  string `json:"accept_type"`
	OutBatchNo  string `json:"out_batch_no,omitempty"`
	OutDetailNo string `json:"out_detail_no"`
}

// Validate checks the request against docs/receipts.md §2. Errors wrap ErrBadInput and
// ErrNotSent.
func (r *DetailReceiptRequest) Validate() error {
	switch {
	case r.AcceptType != AcceptTypeBatchTransfer:
		return invalid("detail receipt: accept_type %q: want %s", r.AcceptType, AcceptTypeBatchTransfer)
	case !outNo.MatchString(r.OutBatchNo):
		return invalid("detail receipt: out_batch_no %q: want 1 to 32 characters of [0-9A-Za-z]", r.OutBatchNo)
	case !outNo.MatchString(r.OutDetailNo):
		return invalid("detail receipt: out_detail_no %q: want 1 to 32 characters of [0-9A-Za-z]", r.OutDetailNo)
	}
	return nil
}

// DetailReceipt is the answer to applying for or querying one batch detail's receipt
// (docs/receipts.md §2).
type DetailReceipt struct {
	AcceptType      string `json:"accept_type"`
	OutBatchNo      string `json:"out_batch_no,omitempty"`
	OutDetailNo     string `json:"out_detail_no"`
	SignatureNo     string `json:"signature_no"`
	SignatureStatus string `json:"signature_status,omitempty"` // SignatureAccepted or SignatureFinished
	ReceiptFile
	CreateTime string `json:"create_time,omitempty"`
	UpdateTime string `json:"update_time,omitempty"`
}

// BillReceipt is the answer to applying for or querying a transfer bill's receipt
// (POST /v3/fund-app/mch-transfer/elecsign/out-bill-no, GET …/out-bill-no/{out_bill_no},
// docs/receipts.md §3). OutBillNo is not documented for the direct merchant's answer [U] and may
// be empty.
type BillReceipt struct {
	OutBillNo string `json:"out_bill_no,omitempty"`
	State     string `json:"state"` // ElecsignGenerating, ElecsignFinished or ElecsignFailed
	ReceiptFile
	FailReason string `json:"fail_reason,omitempty"`
	CreateTime string `json:"create_time,omitempty"`
	UpdateTime string `json:"update_time,omitempty"`
}

// Rails a receipt is asked for on (ReceiptRef.Rail).
const (
	// ReceiptRailBatch is the batch API (商家转账到零钱): a detail's receipt when
	// ReceiptRef.OutDetailNo is set, the whole batch's otherwise.
	ReceiptRailBatch = "batch"
	// ReceiptRailBill is transfer bills (商家转账, user confirmation): ReceiptRef.OutBillNo.
	ReceiptRailBill = "bill"
)

// ReceiptRef names the transfer a receipt proves: on ReceiptRailBatch OutBatchNo and, for one
// detail, OutDetailNo; on ReceiptRailBill OutBillNo.
type ReceiptRef struct {
	Rail        string
	OutBatchNo  string
	OutDetailNo string
	OutBillNo   string
}

// String names the transfer, e.g. "detail D1 of batch B1".
func (r ReceiptRef) String() string {
	switch {
	case r.Rail == ReceiptRailBill:
		return "bill " + r.OutBillNo
	case r.OutDetailNo != "":
		return fmt.Sprintf("detail %s of batch %s", r.OutDetailNo, r.OutBatchNo)
	}
	return "batch " + r.OutBatchNo
}

func (r ReceiptRef) validate() error {
	switch r.Rail {
	case ReceiptRailBatch:
		if !outNo.MatchString(r.OutBatchNo) || (r.OutDetailNo != "" && !outNo.MatchString(r.OutDetailNo)) || r.OutBillNo != "" {
			return invalid("receipt: batch rail wants out_batch_no, an optional out_detail_no and no out_bill_no")
		}
	case ReceiptRailBill:
		if !outNo.MatchString(r.OutBillNo) || r.OutBatchNo != "" || r.OutDetailNo != "" {
			return invalid("receipt: bill rail wants out_bill_no only")
		}
	default:
		return invalid("receipt: rail %q: want %s or %s", r.Rail, ReceiptRailBatch, ReceiptRailBill)
	}
	return nil
}

// ErrReceiptRefused marks an application WeChat Pay refused because no receipt can exist for the
// transfer (docs/receipts.md §5): it did not succeed, it was sent without the payee's real name,
// it is too old, or WeChat Pay does not know it. Applying again cannot help. The error is a
// *ReceiptRefusal.
var ErrReceiptRefused = errors.New("wechatpay: no receipt can be made")

// ErrReceiptFailed marks a transfer bill's receipt WeChat Pay accepted and then failed to
// generate (state FAILED); its fail_reason is in the message. Applying again is pointless.
var ErrReceiptFailed = errors.New("wechatpay: receipt generation failed")

// ErrReceiptPending marks a receipt still being generated when the caller stopped waiting. It is
// not a failure: ask again later (the application stands for 90 days, docs/receipts.md §3).
var ErrReceiptPending = errors.New("wechatpay: receipt still being generated")

// ErrReceiptHash marks a downloaded receipt whose hash is not the hash_value of its query: the file
// is not the one WeChat Pay described and must not be kept.
var ErrReceiptHash = errors.New("wechatpay: receipt file hash mismatch")

// ReceiptRefusal is why WeChat Pay will not make a receipt: its answer (an *APIError) and the
// precondition it most likely means, for a person to act on.
type ReceiptRefusal struct {
	Ref    ReceiptRef
	Reason string
	Err    error
}

// Error names the transfer, the reason and WeChat Pay's answer.
func (e *ReceiptRefusal) Error() string {
	return fmt.Sprintf("no receipt for %s: %s (%v)", e.Ref, e.Reason, e.Err)
}

// Unwrap returns ErrReceiptRefused and the answer, so errors.Is matches both and the code.
func (e *ReceiptRefusal) Unwrap() []error { return []error{ErrReceiptRefused, e.Err} }
