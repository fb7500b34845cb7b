package wechatpaytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"unicode/utf8"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// user_name rules of a batch detail (docs/wechatpay.md §4).
const (
	userNameRequiredFrom   wechatpay.Fen = 200000
	userNameForbiddenBelow wechatpay.Fen = 30
)

// batchReq is a decoded batch create, direct or partner, with user_name and user_id_card
// decrypted. Two creates with the same out_batch_no are the same batch when their batchReq
// are equal (docs/wechatpay.md §4: compare decoded content, since OAEP ciphertexts are random).
type batchReq struct {
	Partner           bool          `json:"partner,omitempty"`
	AppID             string        `json:"appid,omitempty"`
	OutBatchNo        string        `json:"out_batch_no"`
	BatchName         string        `json:"batch_name"`
	BatchRemark       string        `json:"batch_remark"`
	TotalAmount       wechatpay.Fen `json:"total_amount"`
	TotalNum          int           `json:"total_num"`
	NotifyURL         string        `json:"notify_url,omitempty"`
	TransferSceneID   string        `json:"transfer_scene_id,omitempty"`
	SubMchID          string        `json:"sub_mchid,omitempty"`
	SubAppID          string        `json:"sub_appid,omitempty"`
	AuthorizationType string        `json:"authorization_type,omitempty"`
	SpAppID           string        `json:"sp_appid,omitempty"`
	TransferPurpose   string        `json:"transfer_purpose,omitempty"`
	TransferScene     string        `json:"transfer_scene,omitempty"`
	Details           []detailReq   `json:"details"`
}

// detailReq is one decoded detail. UserName and UserIDCard hold ciphertext until decrypt
// replaces them with plaintext.
type detailReq struct {
	OutDetailNo string        `json:"out_detail_no"`
	OpenID      string        `json:"openid"`
	Amount      wechatpay.Fen `json:"transfer_amount"`
	Remark      string        `json:"transfer_remark"`
	UserName    string        `json:"user_name,omitempty"`
	UserIDCard  string        `json:"user_id_card,omitempty"`
}

func (a *batchReq) equal(b *batchReq) bool { return reflect.DeepEqual(a, b) }

// decodeStrict decodes one JSON value and refuses unknown fields and trailing data: a
// misspelt optional field would otherwise be silently ignored.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return paramError("body: %v", err)
	}
	if dec.More() {
		return paramError("body: data after the JSON value")
	}
	return nil
}

func paramError(format string, args ...any) *wechatpay.APIError {
	return apiError(http.StatusBadRequest, "PARAM_ERROR", format, args...)
}

func invalidRequest(format string, args ...any) *wechatpay.APIError {
	return apiError(http.StatusBadRequest, "INVALID_REQUEST", format, args...)
}

func notFound(format string, args ...any) *wechatpay.APIError {
	return apiError(http.StatusNotFound, "NOT_FOUND", format, args...)
}

// isOutNo reports whether s is 1 to 32 characters of [0-9A-Za-z] (docs/wechatpay.md §4).
func isOutNo(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// textOK reports whether s is valid UTF-8 of min to max characters.
func textOK(s string, min, max int) bool {
	n := utf8.RuneCountInString(s)
	return utf8.ValidString(s) && n >= min && n <= max
}

// notifyURLOK checks notify_url (docs/wechatpay.md §7, §4): absolute, ≤256 characters, no query,
// HTTPS; plain HTTP is accepted for loopback hosts so tests can receive callbacks.
func notifyURLOK(s string) error {
	if len(s) > 256 {
		return errors.New("longer than 256 characters")
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not carry a query")
	}
	if u.Scheme == "https" {
		return nil
	}
	if ip := net.ParseIP(u.Hostname()); u.Scheme == "http" && (u.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
		return nil
	}
	return errors.New("must be https")
}

// validate checks a batch create the way WeChat does (docs/wechatpay.md §4, §6). Messages name
// fields and indexes, never openids or names.
func (s *Server) validateBatch(r *batchReq) error {
	maxDetails := s.opts.MaxDetailsDirect
	if r.Partner {
		maxDetails = s.opts.MaxDetailsPartner
		if err := validatePartner(r); err != nil {
			return err
		}
	} else {
		if !textOK(r.AppID, 1, 32) {
			return paramError("appid: want 1 to 32 characters")
		}
		if r.NotifyURL != "" {
			if err := notifyURLOK(r.NotifyURL); err != nil {
				return paramError("notify_url: %v", err)
			}
		}
		if len(r.TransferSceneID) > 36 {
			return paramError("transfer_scene_id: longer than 36 characters")
		}
	}
	switch {
	case !isOutNo(r.OutBatchNo):
		return paramError("out_batch_no: want 1 to 32 characters of [0-9A-Za-z]")
	case !textOK(r.BatchName, 1, 32):
		return paramError("batch_name: want 1 to 32 UTF-8 characters")
	case !textOK(r.BatchRemark, 1, 32):
		return paramError("batch_remark: want 1 to 32 UTF-8 characters")
	case len(r.Details) == 0 || len(r.Details) > maxDetails:
		return paramError("transfer_detail_list: %d details, want 1 to %d", len(r.Details), maxDetails)
	case r.TotalNum != len(r.Details):
		return paramError("total_num: %d, but transfer_detail_list has %d details", r.TotalNum, len(r.Details))
	}
	seen := make(map[string]struct{}, len(r.Details))
	var sum wechatpay.Fen
	named := r.Details[0].UserName != ""
	for i := range r.Details {
		d := &r.Details[i]
		f := func(field string) string { return fmt.Sprintf("transfer_detail_list[%d].%s", i, field) }
		switch {
		case !isOutNo(d.OutDetailNo):
			return paramError("%s: want 1 to 32 characters of [0-9A-Za-z]", f("out_detail_no"))
		case !textOK(d.Remark, 1, 32):
			return paramError("%s: want 1 to 32 UTF-8 characters", f("transfer_remark"))
		case !textOK(d.OpenID, 1, 128):
			return paramError("%s: want 1 to 128 characters", f("openid"))
		case d.Amount < s.opts.MinAmount:
			return paramError("%s: %d fen is below the minimum of %d fen", f("transfer_amount"), d.Amount, s.opts.MinAmount)
		case d.Amount > math.MaxInt64-sum:
			return paramError("%s: total overflows", f("transfer_amount"))
		case (d.UserName != "") != named:
			return paramError("%s: user_name must be given for all details of a batch or for none", f("user_name"))
		case d.UserName == "" && d.Amount >= userNameRequiredFrom:
			return paramError("%s: required from %d fen", f("user_name"), userNameRequiredFrom)
		case d.UserName != "" && d.Amount < userNameForbiddenBelow:
			return paramError("%s: not allowed below %d fen", f("user_name"), userNameForbiddenBelow)
		case d.UserIDCard != "" && d.UserName == "":
			return paramError("%s: user_id_card needs user_name", f("user_id_card"))
		}
		if _, dup := seen[d.OutDetailNo]; dup {
			return paramError("%s: %s repeats an earlier detail of this batch", f("out_detail_no"), d.OutDetailNo)
		}
		seen[d.OutDetailNo] = struct{}{}
		sum += d.Amount
	}
	if sum != r.TotalAmount {
		return paramError("total_amount: %d fen, but the details add up to %d fen", r.TotalAmount, sum)
	}
	return nil
}

func validatePartner(r *batchReq) error {
	switch {
	case !textOK(r.SubMchID, 1, 32):
		return paramError("sub_mchid: want 1 to 32 characters")
	case r.AuthorizationType != wechatpay.AuthorizationInformation &&
		r.AuthorizationType != wechatpay.AuthorizationFund &&
		r.AuthorizationType != wechatpay.AuthorizationInformationAndFund:
		return paramError("authorization_type: want INFORMATION_AUTHORIZATION_TYPE, FUND_AUTHORIZATION_TYPE or INFORMATION_AND_FUND_AUTHORIZATION_TYPE")
	case r.AuthorizationType != wechatpay.AuthorizationInformation && r.SpAppID == "":
		return paramError("sp_appid: required for %s", r.AuthorizationType)
	case r.AuthorizationType != wechatpay.AuthorizationFund && r.SubAppID == "":
		return paramError("sub_appid: required for %s", r.AuthorizationType)
	}
	switch r.TransferPurpose {
	case "", wechatpay.PurposeGoodsPayment, wechatpay.PurposeCommission, wechatpay.PurposeRefund,
		wechatpay.PurposeReimbursement, wechatpay.PurposeFreight, wechatpay.PurposeOthers:
	default:
		return paramError("transfer_purpose: unknown value")
	}
	switch r.TransferScene {
	case "", wechatpay.SceneOrdinaryTransfer, wechatpay.ScenePayrollCardTransfer:
	default:
		return paramError("transfer_scene: unknown value")
	}
	return nil
}

// decrypt replaces the ciphertexts of r by their plaintexts (docs/wechatpay.md §3). It requires the
// request's Wechatpay-Serial to name the platform key, as WeChat does.
func (s *Server) decrypt(r *batchReq, serial string) error {
	if r.Details[0].UserName == "" {
		return nil
	}
	if serial != s.opts.PlatformKeyID {
		return paramError("Wechatpay-Serial: %q does not name the key that encrypts user_name; want %s", serial, s.opts.PlatformKeyID)
	}
	for i := range r.Details {
		d := &r.Details[i]
		name, err := s.decryptField(d.UserName)
		if err != nil || !textOK(name, 2, 30) {
			return paramError("transfer_detail_list[%d].user_name: not an OAEP ciphertext of a 2 to 30 character name under %s", i, s.opts.PlatformKeyID)
		}
		d.UserName = name
		if d.UserIDCard != "" {
			if d.UserIDCard, err = s.decryptField(d.UserIDCard); err != nil {
				return paramError("transfer_detail_list[%d].user_id_card: not an OAEP ciphertext", i)
			}
		}
	}
	return nil
}

func (s *Server) decryptField(ct string) (string, error) {
	return wechatpay.DecryptOAEP(s.opts.PlatformKey, ct)
}
