package wechatpay

// Wire models for the old 商家转账到零钱 batch API (docs/wechatpay.md §4–§6). Field names are the exact
// wire names. Request structs declare their fields in alphabetical JSON order so that
// encoding/json produces the same bytes as the official SDK (which serialises a sorted map).
// Amounts are integer fen.

// Fen is an amount of money in fen (0.01 CNY). It is never a float.
type Fen int64

// Per-API detail caps (docs/wechatpay.md §4, §6). A batch never holds more than MaxDetailsPartner
// details.
const (
	MaxDetailsDirect  = 1000
	MaxDetailsPartner = 3000
)

// Query paging bounds (docs/wechatpay.md §8): limit must be within [MinQueryLimit, MaxQueryLimit].
const (
	MinQueryLimit = 20
	MaxQueryLimit = 100
)

// Batch statuses (docs/wechatpay.md §5).
const (
	BatchWaitPay    = "WAIT_PAY"
	BatchAccepted   = "ACCEPTED"
	BatchProcessing = "PROCESSING"
	BatchFinished   = "FINISHED"
	BatchClosed     = "CLOSED"
)

// Detail statuses (docs/wechatpay.md §5).
const (
	DetailInit       = "INIT"
	DetailWaitPay    = "WAIT_PAY"
	DetailProcessing = "PROCESSING"
	DetailSuccess    = "SUCCESS"
	DetailFail       = "FAIL"
)

// Detail status filters for batch queries (docs/wechatpay.md §5).
const (
	DetailStatusAll     = "ALL"
	DetailStatusSuccess = "SUCCESS"
	DetailStatusFail    = "FAIL"
	DetailStatusWaitPay = "WAIT_PAY"
)

// CreateBatchRequest is the body of POST /v3/transfer/batches (docs/wechatpay.md §4).
// total_amount and total_num must equal the sum and count of TransferDetailList; callers
// compute them (pkg/batching), never copy them from input.
type CreateBatchRequest struct {
	AppID              string                `json:"appid"`
	BatchName          string                `json:"batch_name"`
	BatchRemark        string                `json:"batch_remark"`
	NotifyURL          string                `json:"notify_url,omitempty"`
	OutBatchNo         string                `json:"out_batch_no"`
	TotalAmount        Fen                   `json:"total_amount"`
	TotalNum           int                   `json:"total_num"`
	TransferDetailList []TransferDetailInput `json:"transfer_detail_list"`
	TransferSceneID    string                `json:"transfer_scene_id,omitempty"`
}

// TransferDetailInput is one detail of a batch create (docs/wechatpay.md §4). UserName, when set,
// is the RSA-OAEP ciphertext (docs/wechatpay.md §3), never plaintext.
type TransferDetailInput struct {
	OpenID         string `json:"openid"`
	OutDetailNo    string `json:"out_detail_no"`
	TransferAmount Fen    `json:"transfer_amount"`
	TransferRemark string `json:"transfer_remark"`
	UserName       string `json:"user_name,omitempty"`
}

// CreateBatchResponse is the 200 answer to a batch create (docs/wechatpay.md §4). BatchStatus is
// optional.
type CreateBatchResponse struct {
	OutBatchNo  string `json:"out_batch_no"`
	BatchID     string `json:"batch_id"`
	CreateTime  string `json:"create_time"`
	BatchStatus string `json:"batch_status,omitempty"`
}

// BatchQuery holds the query parameters of a batch query (docs/wechatpay.md §8). With
// NeedQueryDetail, DetailStatus is required and Limit must be within [MinQueryLimit,
// MaxQueryLimit].
type BatchQuery struct {
	NeedQueryDetail bool
	Offset          int
	Limit           int
	DetailStatus    string
}

// TransferBatch is the batch part of a batch query answer (docs/wechatpay.md §5).
type TransferBatch struct {
	MchID           string `json:"mchid"`
	OutBatchNo      string `json:"out_batch_no"`
	BatchID         string `json:"batch_id"`
	AppID           string `json:"appid"`
	BatchStatus     string `json:"batch_status"`
	BatchType       string `json:"batch_type"`
	BatchName       string `json:"batch_name"`
	BatchRemark     string `json:"batch_remark"`
	CloseReason     string `json:"close_reason,omitempty"`
	TotalAmount     Fen    `json:"total_amount"`
	TotalNum        int    `json:"total_num"`
	CreateTime      string `json:"create_time,omitempty"`
	UpdateTime      string `json:"update_time,omitempty"`
	SuccessAmount   Fen    `json:"success_amount,omitempty"`
	SuccessNum      int    `json:"success_num,omitempty"`
	FailAmount      Fen    `json:"fail_amount,omitempty"`
	FailNum         int    `json:"fail_num,omitempty"`
	TransferSceneID string `json:"transfer_scene_id,omitempty"`
}

// DetailBrief is one row of a batch query's transfer_detail_list (docs/wechatpay.md §5).
type DetailBrief struct {
	DetailID     string `json:"detail_id"`
	OutDetailNo  string `json:"out_detail_no"`
	DetailStatus string `json:"detail_status"`
}

// BatchQueryResponse is the answer to GET /v3/transfer/batches/{batch-id|out-batch-no}/…
// (docs/wechatpay.md §5). Detail rows come back only when the batch is FINISHED.
type BatchQueryResponse struct {
	TransferBatch      TransferBatch `json:"transfer_batch"`
	TransferDetailList []DetailBrief `json:"transfer_detail_list,omitempty"`
}

// DetailResponse is the answer to a detail query (docs/wechatpay.md §5). UserName is a ciphertext
// encrypted with the merchant's key.
type DetailResponse struct {
	MchID          string `json:"mchid"`
	OutBatchNo     string `json:"out_batch_no"`
	BatchID        string `json:"batch_id"`
	AppID          string `json:"appid"`
	OutDetailNo    string `json:"out_detail_no"`
	DetailID       string `json:"detail_id"`
	DetailStatus   string `json:"detail_status"`
	TransferAmount Fen    `json:"transfer_amount"`
	TransferRemark string `json:"transfer_remark"`
	FailReason     string `json:"fail_reason,omitempty"`
	OpenID         string `json:"openid"`
	UserName       string `json:"user_name,omitempty"`
	InitiateTime   string `json:"initiate_time"`
	UpdateTime     string `json:"update_time"`
}
