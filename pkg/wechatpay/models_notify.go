package wechatpay

// Wire models for callback notifications (docs/wechatpay.md §7).

// Notification event types (docs/wechatpay.md §7; docs/abnormal-funds.md).
const (
	EventBatchFinished       = "MCHTRANSFER.BATCH.FINISHED"
	EventBatchClosed         = "MCHTRANSFER.BATCH.CLOSED"
	EventBillFinished        = "MCHTRANSFER.BILL.FINISHED"
	EventAbnormalFundSuccess = "ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS"
)

// ResourceTypeEncrypt is the resource_type of every notification (docs/wechatpay.md §7).
const ResourceTypeEncrypt = "encrypt-resource"

// AlgorithmAEADAES256GCM is the only resource algorithm (docs/wechatpay.md §7).
const AlgorithmAEADAES256GCM = "AEAD_AES_256_GCM"

// Notification is the envelope WeChat Pay POSTs to notify_url (docs/wechatpay.md §7). Deduplicate
// on ID: notifications are retried and duplicates are normal. Callbacks are hints; queries are
// truth.
type Notification struct {
	ID           string               `json:"id"`
	CreateTime   string               `json:"create_time"`
	EventType    string               `json:"event_type"`
	ResourceType string               `json:"resource_type"`
	Summary      string               `json:"summary"`
	Resource     NotificationResource `json:"resource"`
}

// NotificationResource is the encrypted part of a Notification: AES-256-GCM under the APIv3 key,
// Nonce as IV, AssociatedData as AAD, Base64 Ciphertext with the tag appended (docs/wechatpay.md
// §7).
type NotificationResource struct {
	OriginalType   string `json:"original_type"`
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
}

// BatchFinishedResource is the plaintext of MCHTRANSFER.BATCH.FINISHED and MCHTRANSFER.BATCH.CLOSED
// (docs/wechatpay.md §7). It holds batch totals only, no per-detail data: page the details with a
// batch query (docs/wechatpay.md §5).
type BatchFinishedResource struct {
	MchID         string `json:"mchid,omitempty"`
	OutBatchNo    string `json:"out_batch_no"`
	BatchID       string `json:"batch_id"`
	BatchStatus   string `json:"batch_status"`
	TotalNum      int    `json:"total_num"`
	TotalAmount   Fen    `json:"total_amount"`
	SuccessAmount Fen    `json:"success_amount,omitempty"`
	SuccessNum    int    `json:"success_num,omitempty"`
	FailAmount    Fen    `json:"fail_amount,omitempty"`
	FailNum       int    `json:"fail_num,omitempty"`
	CloseReason   string `json:"close_reason,omitempty"`
	UpdateTime    string `json:"update_time"`
}

// BatchClosedResource is the plaintext of MCHTRANSFER.BATCH.CLOSED; it is the same shape as
// BatchFinishedResource, with CloseReason set.
type BatchClosedResource = BatchFinishedResource

// BillFinishedResource is the plaintext of MCHTRANSFER.BILL.FINISHED (docs/wechatpay.md §7): a
// transfer bill reached SUCCESS, FAIL or CANCELLED.
type BillFinishedResource struct {
	OutBillNo      string `json:"out_bill_no"`
	TransferBillNo string `json:"transfer_bill_no"`
	State          string `json:"state"`
	MchID          string `json:"mch_id"`
	TransferAmount Fen    `json:"transfer_amount"`
	OpenID         string `json:"openid"`
	FailReason     string `json:"fail_reason,omitempty"`
	CreateTime     string `json:"create_time"`
	UpdateTime     string `json:"update_time"`
}
