package payout

import (
	"log/slog"
	"time"
)

// SchemaV1 is the current value of Request.Schema.
const SchemaV1 = "paystream.payout.v1"

// Rails: which WeChat API a payout leaves through (spec §5 direct, §7 partner).
const (
	RailDirect  = "direct"
	RailPartner = "partner"
)

// Request is one payout request event, the contract with every upstream system. It travels
// as JSON on payouts.requests.<mchid>, with Nats-Msg-Id = OutDetailNo.
//
// OutDetailNo is the idempotency key: the same key is paid at most once, forever. Amount is
// integer fen. UserName is plaintext only inside this event; it is encrypted (RSA-OAEP)
// before it is stored or sent and never logged (see LogValue).
type Request struct {
	Schema      string `json:"schema"`
	OutDetailNo string `json:"out_detail_no"`
	MchID       string `json:"mchid"`
	AppID       string `json:"appid,omitempty"`
	OpenID      string `json:"openid"`
	Amount      int64  `json:"amount"`
	Remark      string `json:"remark"`
	UserName    string `json:"user_name,omitempty"`
	SceneID     string `json:"transfer_scene_id,omitempty"`
	BatchName   string `json:"batch_name,omitempty"`
	BatchRemark string `json:"batch_remark,omitempty"`

	// Partner rail (spec §7): set SubMchID to pay through /v3/partner-transfer/batches.
	SubMchID          string `json:"sub_mchid,omitempty"`
	SubAppID          string `json:"sub_appid,omitempty"`
	SpAppID           string `json:"sp_appid,omitempty"`
	AuthorizationType string `json:"authorization_type,omitempty"`
	TransferPurpose   string `json:"transfer_purpose,omitempty"`
	TransferScene     string `json:"transfer_scene,omitempty"`

	Source    string    `json:"source,omitempty"`
	CreatedAt time.Time `json:"created_at,omitempty"`
}

// Rail reports which API the request is paid through.
func (r *Request) Rail() string {
	if r.SubMchID != "" {
		return RailPartner
	}
	return RailDirect
}

// LogValue redacts the openid and the real name so a Request can be logged safely.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("out_detail_no", r.OutDetailNo),
		slog.String("mchid", r.MchID),
		slog.Int64("amount", r.Amount),
		slog.Bool("has_user_name", r.UserName != ""),
	)
}
