package wechatpay

// Wire models for the new 商家转账 transfer bills (docs/transfer-bills.md). Unlike the batch
// requests, CreateTransferBillRequest declares its fields in the official SDK's order, which
// is what the SDK sends (golden vector transfer_bill_create_sdk_json_body).

// Transfer bill states (docs/transfer-bills.md). Final: BillSuccess, BillFail, BillCancelled.
const (
	BillAccepted        = "ACCEPTED"
	BillProcessing      = "PROCESSING"
	BillWaitUserConfirm = "WAIT_USER_CONFIRM"
	BillTransfering     = "TRANSFERING"
	BillSuccess         = "SUCCESS"
	BillFail            = "FAIL"
	BillCanceling       = "CANCELING"
	BillCancelled       = "CANCELLED"
)

// BillFinal reports whether a transfer bill state is final (docs/transfer-bills.md;
// docs/wechatpay.md §11). Only a final FAIL or CANCELLED frees the payee for a new
// out_bill_no.
func BillFinal(state string) bool {
	return state == BillSuccess || state == BillFail || state == BillCancelled
}

// CreateTransferBillRequest is the body of POST /v3/fund-app/mch-transfer/transfer-bills
// (docs/transfer-bills.md). OutBillNo is the idempotency key. UserName, when set, is the RSA-OAEP
// ciphertext (docs/wechatpay.md §3); it is required at 200000 fen or more.
type CreateTransferBillRequest struct {
	AppID                    string                    `json:"appid"`
	OutBillNo                string                    `json:"out_bill_no"`
	TransferSceneID          string                    `json:"transfer_scene_id"`
	OpenID                   string                    `json:"openid"`
	UserName                 string                    `json:"user_name,omitempty"`
	TransferAmount           Fen                       `json:"transfer_amount"`
	TransferRemark           string                    `json:"transfer_remark"`
	NotifyURL                string                    `json:"notify_url,omitempty"`
	UserRecvPerception       string                    `json:"user_recv_perception,omitempty"`
	TransferSceneReportInfos []TransferSceneReportInfo `json:"transfer_scene_report_infos"`
}

// TransferSceneReportInfo is one row of transfer_scene_report_infos: the facts a scene must
// report (docs/transfer-bills.md; scene 1000 needs 活动名称 and 奖励说明).
type TransferSceneReportInfo struct {
	InfoType    string `json:"info_type"`
	InfoContent string `json:"info_content"`
}

// CreateTransferBillResponse is the 200 answer to a transfer bill create (docs/transfer-bills.md).
// PackageInfo is what the user's WeChat needs to confirm receipt.
type CreateTransferBillResponse struct {
	OutBillNo      string `json:"out_bill_no"`
	TransferBillNo string `json:"transfer_bill_no"`
	CreateTime     string `json:"create_time"`
	State          string `json:"state"`
	PackageInfo    string `json:"package_info,omitempty"`
}

// TransferBill is the answer to a transfer bill query by out_bill_no or transfer_bill_no
// (docs/transfer-bills.md). UserName is a ciphertext encrypted with the merchant's key.
type TransferBill struct {
	MchID          string `json:"mch_id"`
	OutBillNo      string `json:"out_bill_no"`
	TransferBillNo string `json:"transfer_bill_no"`
	AppID          string `json:"appid"`
	State          string `json:"state"`
	TransferAmount Fen    `json:"transfer_amount"`
	TransferRemark string `json:"transfer_remark"`
	FailReason     string `json:"fail_reason,omitempty"`
	OpenID         string `json:"openid,omitempty"`
	UserName       string `json:"user_name,omitempty"`
	CreateTime     string `json:"create_time"`
	UpdateTime     string `json:"update_time"`
}

// CancelTransferBillResponse is the answer to a cancel (docs/transfer-bills.md): State is CANCELING
// or CANCELLED. It only acknowledges the request; the final state comes from a query.
type CancelTransferBillResponse struct {
	OutBillNo      string `json:"out_bill_no"`
	TransferBillNo string `json:"transfer_bill_no"`
	State          string `json:"state"`
	UpdateTime     string `json:"update_time"`
}
