package wechatpay

// Wire models for the partner (服务商) batch API (docs/wechatpay.md §6). Request structs
// declare their fields in alphabetical JSON order, like models.go, so that encoding/json produces
// the same bytes as the official SDK. Amounts are integer fen.

// Partner authorization types (docs/wechatpay.md §6): whose users and whose money a partner batch
// uses.
const (
	AuthorizationInformation        = "INFORMATION_AUTHORIZATION_TYPE"
	AuthorizationFund               = "FUND_AUTHORIZATION_TYPE"
	AuthorizationInformationAndFund = "INFORMATION_AND_FUND_AUTHORIZATION_TYPE"
)

// Partner transfer purposes (docs/wechatpay.md §6).
const (
	PurposeGoodsPayment  = "GOODSPAYMENT"
	PurposeCommission    = "COMMISSION"
	PurposeRefund        = "REFUND"
	PurposeReimbursement = "REIMBURSEMENT"
	PurposeFreight       = "FREIGHT"
	PurposeOthers        = "OTHERS"
)

// Partner transfer scenes (docs/wechatpay.md §6). ORDINARY_TRANSFER is the default.
const (
	SceneOrdinaryTransfer    = "ORDINARY_TRANSFER"
	ScenePayrollCardTransfer = "PAYROLL_CARD_TRANSFER"
)

// PartnerCreateBatchRequest is the body of POST /v3/partner-transfer/batches (docs/wechatpay.md
// §6). It has no appid, transfer_scene_id or notify_url. At most MaxDetailsPartner details;
// total_amount and total_num are computed by the caller, never copied from input.
type PartnerCreateBatchRequest struct {
	AuthorizationType  string                       `json:"authorization_type"`
	BatchName          string                       `json:"batch_name"`
	BatchRemark        string                       `json:"batch_remark"`
	OutBatchNo         string                       `json:"out_batch_no"`
	SpAppID            string                       `json:"sp_appid,omitempty"`
	SubAppID           string                       `json:"sub_appid,omitempty"`
	SubMchID           string                       `json:"sub_mchid"`
	TotalAmount        Fen                          `json:"total_amount"`
	TotalNum           int                          `json:"total_num"`
	TransferDetailList []PartnerTransferDetailInput `json:"transfer_detail_list"`
	TransferPurpose    string                       `json:"transfer_purpose,omitempty"`
	TransferScene      string                       `json:"transfer_scene,omitempty"`
}

// PartnerTransferDetailInput is one detail of a partner batch create (docs/wechatpay.md §6).
// UserName and UserIDCard, when set, are RSA-OAEP ciphertexts (docs/wechatpay.md §3), never
// plaintext.
type PartnerTransferDetailInput struct {
	OpenID         string `json:"openid"`
	OutDetailNo    string `json:"out_detail_no"`
	TransferAmount Fen    `json:"transfer_amount"`
	TransferRemark string `json:"transfer_remark"`
	UserIDCard     string `json:"user_id_card,omitempty"`
	UserName       string `json:"user_name,omitempty"`
}

// PartnerCreateBatchResponse is the 200 answer to a partner batch create (docs/wechatpay.md §6).
type PartnerCreateBatchResponse struct {
	OutBatchNo string `json:"out_batch_no"`
	BatchID    string `json:"batch_id"`
	CreateTime string `json:"create_time"`
}

// PartnerBatchQueryResponse is the answer to a partner batch query (docs/wechatpay.md §6).
// Unlike BatchQueryResponse it is flat: no transfer_batch wrapper. Detail rows come back only when
// the batch is FINISHED.
type PartnerBatchQueryResponse struct {
	SpMchID            string        `json:"sp_mchid"`
	SubMchID           string        `json:"sub_mchid"`
	OutBatchNo         string        `json:"out_batch_no"`
	BatchID            string        `json:"batch_id"`
	SubAppID           string        `json:"sub_appid,omitempty"`
	BatchStatus        string        `json:"batch_status"`
	BatchType          string        `json:"batch_type"`
	AuthorizationType  string        `json:"authorization_type"`
	BatchName          string        `json:"batch_name"`
	BatchRemark        string        `json:"batch_remark"`
	CloseReason        string        `json:"close_reason,omitempty"`
	TotalAmount        Fen           `json:"total_amount"`
	TotalNum           int           `json:"total_num"`
	CreateTime         string        `json:"create_time,omitempty"`
	UpdateTime         string        `json:"update_time,omitempty"`
	SuccessAmount      Fen           `json:"success_amount,omitempty"`
	SuccessNum         int           `json:"success_num,omitempty"`
	FailAmount         Fen           `json:"fail_amount,omitempty"`
	FailNum            int           `json:"fail_num,omitempty"`
	TransferDetailList []DetailBrief `json:"transfer_detail_list,omitempty"`
	SpAppID            string        `json:"sp_appid,omitempty"`
	TransferPurpose    string        `json:"transfer_purpose,omitempty"`
	TransferScene      string        `json:"transfer_scene,omitempty"`
}

// PartnerDetailResponse is the answer to a partner detail query (docs/wechatpay.md §6). It carries
// sp_mchid in place of mchid, and the name ciphertext under "username", as the official SDK spells
// it (the doc spelling is unconfirmed, docs/wechatpay.md §6 [U]).
type PartnerDetailResponse struct {
	SpMchID        string `json:"sp_mchid"`
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
	UserName       string `json:"username,omitempty"`
	InitiateTime   string `json:"initiate_time"`
	UpdateTime     string `json:"update_time"`
}
