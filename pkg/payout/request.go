package payout

import (
	"log/slog"
	"time"
)

// SchemaV1 is the current value of Request.Schema.
const SchemaV1 = "paystream.payout.v1"

// Rails: which WeChat API a payout leaves through (docs/wechatpay.md §4 direct, §6 partner;
// docs/transfer-bills.md transfer bills). Request.Rail picks direct or partner; RailBills is chosen
// by the deployment (a merchant with the transfer bills product pays every request as a bill) and
// passed to ValidateFor.
const (
	RailDirect  = "direct"
	RailPartner = "partner"
	RailBills   = "bills"
)

// SceneReportInfo is one row of transfer_scene_report_infos on the bills rail
// (docs/transfer-bills.md): a fact the transfer scene must report, e.g. {"活动名称", "新用户注册有礼"} for
// scene 1000. Limits.BillScenes says which info types each scene requires.
type SceneReportInfo struct {
	InfoType    string `json:"info_type"`
	InfoContent string `json:"info_content"`
}

// Request is one payout request event, the contract with every upstream system. It travels
// as JSON on payouts.requests.<mchid>, with Nats-Msg-Id = MsgID(r).
//
// OutDetailNo is the idempotency key: the same key is paid at most once, forever; the same
// key with different content (AppendContent) is a conflict and is refused. Amount is
// integer fen.
//
// The real name travels only as UserNameCipher: the standard Base64 RSA-OAEP ciphertext made with
// WeChat Pay's public key (docs/wechatpay.md §3), which the processor sends to WeChat unchanged,
// and WechatpaySerial, the id of that key (PUB_KEY_ID_… or a platform certificate serial), which
// must match the Wechatpay-Serial the processor sends. UserName is the plaintext for a producer's
// own use before sealing (NameKey.Seal; Publisher seals it): it is never published, the processor
// refuses it, and it is never logged (see LogValue).
type Request struct {
	Schema      string `json:"schema"`
	OutDetailNo string `json:"out_detail_no"`
	MchID       string `json:"mchid"`
	AppID       string `json:"appid,omitempty"`
	OpenID      string `json:"openid"`
	Amount      int64  `json:"amount"`
	Remark      string `json:"remark"`
	UserName    string `json:"user_name,omitempty"`
	// UserNameCipher is the sealed real name (base64 RSA-OAEP); WechatpaySerial names the key.
	UserNameCipher  string `json:"user_name_cipher,omitempty"`
	WechatpaySerial string `json:"wechatpay_serial,omitempty"`
	SceneID         string `json:"transfer_scene_id,omitempty"`
	// Bills rail only (docs/transfer-bills.md): what the payee sees the money as (one of the
	// scene's allowed values, or empty), and the scene's report rows, each required info type
	// exactly once. Both are sent to WeChat as given and are part of the content.
	UserRecvPerception string            `json:"user_recv_perception,omitempty"`
	SceneReportInfos   []SceneReportInfo `json:"transfer_scene_report_infos,omitempty"`
	BatchName          string            `json:"batch_name,omitempty"`
	BatchRemark        string            `json:"batch_remark,omitempty"`

	// Partner rail (docs/wechatpay.md §6): set SubMchID to pay through
	// /v3/partner-transfer/batches.
	SubMchID          string `json:"sub_mchid,omitempty"`
	SubAppID          string `json:"sub_appid,omitempty"`
	SpAppID           string `json:"sp_appid,omitempty"`
	AuthorizationType string `json:"authorization_type,omitempty"`
	TransferPurpose   string `json:"transfer_purpose,omitempty"`
	TransferScene     string `json:"transfer_scene,omitempty"`

	Source    string    `json:"source,omitempty"`
	CreatedAt time.Time `json:"created_at,omitempty"`
}

// Rail reports which batch API the request is paid through on the batch product: partner
// when it has a sub_mchid, else direct. On the transfer bills product every request is paid
// on RailBills instead, whatever Rail says (see ValidateFor).
func (r *Request) Rail() string {
	if r.SubMchID != "" {
		return RailPartner
	}
	return RailDirect
}

// HasName reports whether r carries a real name, in plain text or sealed.
func (r *Request) HasName() bool { return r.UserName != "" || r.UserNameCipher != "" }

// LogValue redacts the openid and the real name (plain or sealed) so a Request can be
// logged safely.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("out_detail_no", r.OutDetailNo),
		slog.String("mchid", r.MchID),
		slog.Int64("amount", r.Amount),
		slog.Bool("has_user_name", r.HasName()),
	)
}
