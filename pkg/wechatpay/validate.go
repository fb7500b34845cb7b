package wechatpay

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

// user_name thresholds of a batch detail (docs/wechatpay.md §4): required from
// UserNameRequiredFrom, forbidden below UserNameForbiddenBelow, and all or none within one batch.
const (
	UserNameRequiredFrom   Fen = 200000
	UserNameForbiddenBelow Fen = 30
)

// maxTextChars is the limit, in characters, of names and remarks (docs/wechatpay.md §4;
// docs/transfer-bills.md).
const maxTextChars = 32

// outNo matches out_batch_no, out_detail_no and out_bill_no (docs/wechatpay.md §4;
// docs/transfer-bills.md).
var outNo = regexp.MustCompile(`^[0-9A-Za-z]{1,32}$`)

func checkOutNo(field, v string) error {
	if !outNo.MatchString(v) {
		return invalid("%s %q: want 1 to 32 characters of [0-9A-Za-z]", field, v)
	}
	return nil
}

func checkText(field, v string) error {
	if n := utf8.RuneCountInString(v); n == 0 || n > maxTextChars || !utf8.ValidString(v) {
		return invalid("%s: want 1 to %d UTF-8 characters, got %d", field, maxTextChars, n)
	}
	return nil
}

func checkRequired(field, v string) error {
	if v == "" {
		return invalid("%s is required", field)
	}
	return nil
}

// batchDetail is what batch validation needs from a direct or partner detail.
type batchDetail interface {
	fields() (outDetailNo, openID, remark, userName string, amount Fen)
}

func (d TransferDetailInput) fields() (string, string, string, string, Fen) {
	return d.OutDetailNo, d.OpenID, d.TransferRemark, d.UserName, d.TransferAmount
}

func (d PartnerTransferDetailInput) fields() (string, string, string, string, Fen) {
	return d.OutDetailNo, d.OpenID, d.TransferRemark, d.UserName, d.TransferAmount
}

// batchHead is the part of a batch create that both APIs share.
type batchHead struct {
	outBatchNo, name, remark string
	totalAmount              Fen
	totalNum, maxDetails     int
}

// validateBatch checks the rules of docs/wechatpay.md §4, §6 that the client can check offline:
// numbers, texts, the detail cap, computed totals, unique out_detail_no and the user_name rule.
func validateBatch[D batchDetail](h batchHead, details []D) error {
	if err := checkOutNo("out_batch_no", h.outBatchNo); err != nil {
		return err
	}
	if err := checkText("batch_name", h.name); err != nil {
		return err
	}
	if err := checkText("batch_remark", h.remark); err != nil {
		return err
	}
	if len(details) == 0 || len(details) > h.maxDetails {
		return invalid("batch %s has %d details, want 1 to %d", h.outBatchNo, len(details), h.maxDetails)
	}
	var sum Fen
	named := 0
	seen := make(map[string]bool, len(details))
	for i, d := range details {
		no, openID, remark, userName, amount := d.fields()
		if err := checkOutNo(fmt.Sprintf("transfer_detail_list[%d].out_detail_no", i), no); err != nil {
			return err
		}
		if seen[no] {
			return invalid("out_detail_no %s appears twice in batch %s", no, h.outBatchNo)
		}
		seen[no] = true
		if err := checkRequired(fmt.Sprintf("detail %s openid", no), openID); err != nil {
			return err
		}
		if err := checkText(fmt.Sprintf("detail %s transfer_remark", no), remark); err != nil {
			return err
		}
		if amount <= 0 || sum > sum+amount {
			return invalid("detail %s transfer_amount %d fen: want a positive amount", no, amount)
		}
		sum += amount
		if err := checkUserName(no, amount, userName); err != nil {
			return err
		}
		if userName != "" {
			named++
		}
	}
	if named != 0 && named != len(details) {
		return invalid("batch %s: user_name on %d of %d details, want all or none", h.outBatchNo, named, len(details))
	}
	if h.totalNum != len(details) || h.totalAmount != sum {
		return invalid("batch %s totals %d fen / %d details, computed %d fen / %d details", h.outBatchNo, h.totalAmount, h.totalNum, sum, len(details))
	}
	return nil
}

func checkUserName(no string, amount Fen, userName string) error {
	switch {
	case userName == "" && amount >= UserNameRequiredFrom:
		return invalid("%s: user_name is required from %d fen, amount is %d", no, UserNameRequiredFrom, amount)
	case userName != "" && amount < UserNameForbiddenBelow:
		return invalid("%s: user_name is not allowed below %d fen, amount is %d", no, UserNameForbiddenBelow, amount)
	}
	return nil
}

// Validate checks the request offline before it is frozen or sent (docs/wechatpay.md §4): errors
// wrap ErrNotSent and ErrBadInput and name the field.
func (r *CreateBatchRequest) Validate() error {
	if r == nil {
		return invalid("nil CreateBatchRequest")
	}
	if err := checkRequired("appid", r.AppID); err != nil {
		return err
	}
	return validateBatch(batchHead{r.OutBatchNo, r.BatchName, r.BatchRemark, r.TotalAmount, r.TotalNum, MaxDetailsDirect}, r.TransferDetailList)
}

// Validate checks the request offline before it is frozen or sent (docs/wechatpay.md §6): errors
// wrap ErrNotSent and ErrBadInput and name the field.
func (r *PartnerCreateBatchRequest) Validate() error {
	if r == nil {
		return invalid("nil PartnerCreateBatchRequest")
	}
	if err := checkRequired("sub_mchid", r.SubMchID); err != nil {
		return err
	}
	switch r.AuthorizationType {
	case AuthorizationInformation, AuthorizationInformationAndFund:
	case AuthorizationFund:
		if err := checkRequired("sp_appid", r.SpAppID); err != nil {
			return err
		}
	default:
		return invalid("authorization_type %q is not one of the three types", r.AuthorizationType)
	}
	return validateBatch(batchHead{r.OutBatchNo, r.BatchName, r.BatchRemark, r.TotalAmount, r.TotalNum, MaxDetailsPartner}, r.TransferDetailList)
}

// Validate checks a transfer bill create offline (docs/transfer-bills.md).
func (r *CreateTransferBillRequest) Validate() error {
	if r == nil {
		return invalid("nil CreateTransferBillRequest")
	}
	for _, f := range [][2]string{{"appid", r.AppID}, {"transfer_scene_id", r.TransferSceneID}, {"openid", r.OpenID}} {
		if err := checkRequired(f[0], f[1]); err != nil {
			return err
		}
	}
	if err := checkOutNo("out_bill_no", r.OutBillNo); err != nil {
		return err
	}
	if err := checkText("transfer_remark", r.TransferRemark); err != nil {
		return err
	}
	if r.TransferAmount <= 0 {
		return invalid("transfer_amount %d fen: want a positive amount", r.TransferAmount)
	}
	if r.UserName == "" && r.TransferAmount >= UserNameRequiredFrom {
		return invalid("user_name is required from %d fen, amount is %d", UserNameRequiredFrom, r.TransferAmount)
	}
	if len(r.TransferSceneReportInfos) == 0 {
		return invalid("transfer_scene_report_infos is required for scene %s", r.TransferSceneID)
	}
	return nil
}

// maxInstructionAppIDs is the most app ids an abnormal-fund instruction may carry
// (docs/abnormal-funds.md).
const maxInstructionAppIDs = 5

// Validate checks an abnormal-fund instruction offline (docs/abnormal-funds.md).
func (r *CreateTransferInstructionRequest) Validate() error {
	if r == nil {
		return invalid("nil CreateTransferInstructionRequest")
	}
	if n := len(r.OutInstructionNo); n == 0 || n > 64 {
		return invalid("out_instruction_no: want 1 to 64 bytes, got %d", n)
	}
	if n := len(r.AppID); n == 0 || n > maxInstructionAppIDs {
		return invalid("appid: want 1 to %d app ids, got %d", maxInstructionAppIDs, n)
	}
	if r.TransferMode != TransferModeOriginalReceiveUser {
		return invalid("transfer_mode %q: want %s", r.TransferMode, TransferModeOriginalReceiveUser)
	}
	return nil
}
