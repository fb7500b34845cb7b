package wechatpay

// Wire models for abnormal in-transit funds (在途异常资金, docs/abnormal-funds.md). Not on the
// payout path.

// TransferModeOriginalReceiveUser is the only transfer_mode (docs/abnormal-funds.md): pay back to
// the user who was to receive the money.
const TransferModeOriginalReceiveUser = "TRANSFER_TO_ORIGINAL_RECEIVE_USER"

// Receipt states of an abnormal-fund receipt (docs/abnormal-funds.md).
const (
	ReceiptStatePending   = "RECEIPT_STATE_PENDING"
	ReceiptStateProgress  = "RECEIPT_STATE_PROGRESS"
	ReceiptStateCompleted = "RECEIPT_STATE_COMPLETED"
)

// CreateTransferInstructionRequest is the body of POST
// /v3/abnormal-fund-processing/receipts/{receipt_id}/transfer-instructions
// (docs/abnormal-funds.md). OutInstructionNo is unique per receipt; AppID holds at most five app
// ids.
type CreateTransferInstructionRequest struct {
	OutInstructionNo string   `json:"out_instruction_no"`
	AppID            []string `json:"appid"`
	TransferMode     string   `json:"transfer_mode"`
	NotifyURL        string   `json:"notify_url,omitempty"`
}

// TransferInstructionResponse is the answer to an instruction create or query, and the
// plaintext of an ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS notification (docs/abnormal-funds.md).
type TransferInstructionResponse struct {
	ProductName    string               `json:"product_name"`
	ReceiptID      string               `json:"receipt_id"`
	TransferAmount ReceiptAmount        `json:"transfer_amount"`
	ReceiptState   string               `json:"receipt_state"`
	CreateTime     string               `json:"create_time,omitempty"`
	LastUpdateTime string               `json:"last_update_time,omitempty"`
	Instruction    *TransferInstruction `json:"instruction,omitempty"`
}

// ReceiptAmount is the amount of an abnormal-fund receipt: Total in fen, Currency "CNY".
type ReceiptAmount struct {
	Total    Fen    `json:"total"`
	Currency string `json:"currency"`
}

// TransferInstruction is the instruction part of a TransferInstructionResponse
// (docs/abnormal-funds.md).
type TransferInstruction struct {
	OutInstructionNo string     `json:"out_instruction_no"`
	Commander        *Commander `json:"commander,omitempty"`
	TransferMode     string     `json:"transfer_mode"`
	SuccessTime      string     `json:"success_time,omitempty"`
	AppID            []string   `json:"appid,omitempty"`
	NotifyURL        string     `json:"notify_url,omitempty"`
}

// Commander tells who issued an abnormal-fund instruction (operator MERCHANT and its mchid).
type Commander struct {
	Operator string `json:"operator"`
	MchID    string `json:"mchid,omitempty"`
}
