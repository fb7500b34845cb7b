package payout

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Amount rules of the batch API (docs/wechatpay.md §4), in fen.
const (
	// MinAmountDefault is WeChat's default minimum transfer (0.30 yuan); merchants can
	// have it lowered to 10 fen [3P].
	MinAmountDefault = 30
	// MaxAmountDefault is 200 000 yuan, the monthly cap per user
	// (BLOCK_B2C_USERLIMITAMOUNT_BSRULE_MONTH, docs/wechatpay.md §5): no single transfer above it
	// can succeed.
	MaxAmountDefault = 20_000_000
	// NameRequiredFrom is the amount from which user_name is required (2000 yuan, docs/wechatpay.md
	// §4).
	NameRequiredFrom = 200_000
	// NameForbiddenBelow is the amount below which user_name is not allowed (docs/wechatpay.md §4).
	NameForbiddenBelow = 30
)

// Text length limits in characters (docs/wechatpay.md §4, §6).
const (
	MaxNoLen       = 32  // out_detail_no, mchid, sub_mchid, appids: string[1,32], [0-9A-Za-z]
	MaxOpenIDLen   = 128 // openid: string[1,128]
	MaxRemarkLen   = 32  // transfer_remark, batch_name, batch_remark: ≤32 UTF-8 characters
	MaxSceneIDLen  = 36  // transfer_scene_id: string(36)
	MinUserNameLen = 2   // user_name plaintext: 2–30 characters [3P, 2022 doc]
	MaxUserNameLen = 30
	MaxSourceLen   = 64 // source: our own metadata
	MaxSerialLen   = 64 // wechatpay_serial: [0-9A-Za-z_]{1,64} (PUB_KEY_ID_… or a certificate serial)
)

// Sizes of user_name_cipher once Base64-decoded, in bytes: one RSA-OAEP block of a 1024- to
// 4096-bit key (WeChat Pay's keys are 2048-bit, docs/wechatpay.md §3).
const (
	MinNameCipherSize = 128
	MaxNameCipherSize = 512
)

// Partner authorization types (docs/wechatpay.md §6).
const (
	AuthInformation        = "INFORMATION_AUTHORIZATION_TYPE"
	AuthFund               = "FUND_AUTHORIZATION_TYPE"
	AuthInformationAndFund = "INFORMATION_AND_FUND_AUTHORIZATION_TYPE"
)

var (
	authTypes        = []string{AuthInformation, AuthFund, AuthInformationAndFund}
	transferPurposes = []string{"GOODSPAYMENT", "COMMISSION", "REFUND", "REIMBURSEMENT", "FREIGHT", "OTHERS"}
	transferScenes   = []string{"ORDINARY_TRANSFER", "PAYROLL_CARD_TRANSFER"}
)

// Limits are the deployment's business limits for Validate. Amounts are fen.
type Limits struct {
	MinAmount int64 // smallest accepted amount; at least 1
	MaxAmount int64 // largest accepted amount; 0 means no maximum
	// Scenes lists the transfer_scene_id values the merchant has enabled (direct rail). An
	// empty transfer_scene_id (the merchant's default scene) is always accepted. A nil or
	// empty list accepts any scene id of valid form.
	Scenes []string
	// EncryptedNamesOnly refuses a plaintext user_name: names must arrive sealed in
	// user_name_cipher (docs/money-rules.md#secrets: no plaintext name may travel or rest). The processor sets it;
	// producers validate the plaintext before sealing and leave it unset.
	EncryptedNamesOnly bool
	// BillScenes is the table of transfer scenes the merchant may use on the bills rail
	// (transfer_scene_id → its report rules, docs/transfer-bills.md). nil means
	// DefaultBillScenes(); an empty, non-nil map accepts no scene. It is checked at intake because
	// WeChat refuses a bill whose report rows do not fit its scene, and fixing one changes the
	// body.
	BillScenes map[string]BillScene
}

// BillScene is what WeChat requires of a transfer scene on the bills rail (docs/transfer-bills.md).
type BillScene struct {
	// ReportInfos are the info_type values transfer_scene_report_infos must carry: each
	// exactly once, and no others.
	ReportInfos []string
	// Perceptions are the allowed user_recv_perception values; an empty user_recv_perception
	// is always allowed. An empty list allows none, so the field must stay empty.
	Perceptions []string
}

// DefaultBillScenes returns the transfer scenes WeChat documents for the common cases
// (docs/transfer-bills.md): 1000 现金营销 (活动名称 and 奖励说明; perception 现金奖励 or 活动奖励) and
// 1005 佣金报酬 (岗位类型 and 报酬说明; perception 劳务报酬 or 报酬). The map is new on every
// call; callers may change it.
func DefaultBillScenes() map[string]BillScene {
	return map[string]BillScene{
		"1000": {ReportInfos: []string{"活动名称", "奖励说明"}, Perceptions: []string{"现金奖励", "活动奖励"}},
		"1005": {ReportInfos: []string{"岗位类型", "报酬说明"}, Perceptions: []string{"劳务报酬", "报酬"}},
	}
}

// ValidateBillScenes checks a scene table as configured: each transfer_scene_id of 1 to 36
// characters has at least one required info_type, each of 1 to MaxInfoTypeLen characters
// and listed once, and no empty perception. The error names the scene and the problem.
func ValidateBillScenes(scenes map[string]BillScene) error {
	for _, id := range slices.Sorted(maps.Keys(scenes)) {
		sc := scenes[id]
		var v validator
		v.text("transfer_scene_id", id, 1, 36)
		if len(sc.ReportInfos) == 0 {
			v.add("report-infos", "at least one info_type is required (docs/transfer-bills.md)")
		}
		for i, t := range sc.ReportInfos {
			v.text(fmt.Sprintf("report-infos[%d]", i), t, 1, MaxInfoTypeLen)
			if slices.Index(sc.ReportInfos, t) != i {
				v.add(fmt.Sprintf("report-infos[%d]", i), "listed twice")
			}
		}
		for i, p := range sc.Perceptions {
			v.text(fmt.Sprintf("perceptions[%d]", i), p, 1, MaxRemarkLen)
		}
		if len(v.problems) > 0 {
			return fmt.Errorf("scene %q: %w", id, &ValidationError{Problems: v.problems})
		}
	}
	return nil
}

// defaultBillScenes is DefaultBillScenes for Limits with a nil BillScenes; never modified.
var defaultBillScenes = DefaultBillScenes()

// billScenes returns l.BillScenes, or the defaults when nil.
func (l Limits) billScenes() map[string]BillScene {
	if l.BillScenes == nil {
		return defaultBillScenes
	}
	return l.BillScenes
}

// DefaultLimits returns WeChat's defaults: 30 fen to 200 000 yuan, and the old-API scene
// ids 1000 (现金营销), 1001 (old numbering of 现金营销), 1005 (佣金报酬), 1006 (企业报销).
func DefaultLimits() Limits {
	return Limits{
		MinAmount: MinAmountDefault,
		MaxAmount: MaxAmountDefault,
		Scenes:    []string{"1000", "1001", "1005", "1006"},
	}
}

// ErrInvalid matches every *ValidationError.
var ErrInvalid = errors.New("invalid payout request")

// Problem is one broken rule. Reason never contains the field's value.
type Problem struct {
	Field  string // JSON field name, e.g. "remark", "transfer_scene_report_infos[1].info_content"; "rail" for an unknown rail
	Reason string // e.g. "longer than 32 characters"
}

// ValidationError lists every problem Validate (ValidateFor, CancelRequest.Validate)
// found, in field order. It matches
// ErrInvalid; its text is safe to log and to put in a dead-letter header.
type ValidationError struct {
	Problems []Problem
}

// Error joins the problems as "field: reason; field: reason".
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("payout: invalid request: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Field)
		b.WriteString(": ")
		b.WriteString(p.Reason)
	}
	return b.String()
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Has reports whether field has a problem.
func (e *ValidationError) Has(field string) bool {
	return slices.ContainsFunc(e.Problems, func(p Problem) bool { return p.Field == field })
}

// Validate is ValidateFor(r.Rail(), l): the rules of the batch product, on the direct or
// partner rail as r says.
func (r *Request) Validate(l Limits) error { return r.ValidateFor(r.Rail(), l) }

// ValidateFor checks r against the WeChat rules of rail (docs/wechatpay.md §4 direct, §6 partner;
// docs/transfer-bills.md bills) and l. It returns nil or a *ValidationError listing every problem
// with its field name; it never stops at the first. No reason contains a value of the request.
//
// On every rail: numbers [0-9A-Za-z]{1,32}; openid [0-9A-Za-z_-]{1,128}; texts valid UTF-8
// without control or format characters, remark (required) and the batch hints ≤32
// characters; amount within l.
//
// The real name is user_name (plaintext, 2–30 characters; refused when
// l.EncryptedNamesOnly) or user_name_cipher (standard Base64 of MinNameCipherSize to
// MaxNameCipherSize bytes), never both. Whichever is present, a name is required from 2000
// yuan and forbidden below 30 fen (docs/wechatpay.md §4, the same on the bills rail).
// wechatpay_serial ([0-9A-Za-z_]{1,64}) is required with user_name_cipher and refused
// without it.
//
// Rail direct: appid required, transfer_scene_id optional and in l.Scenes, no partner
// field. Rail partner: sub_mchid and authorization_type required (sp_appid for
// FUND_AUTHORIZATION_TYPE, sub_appid for INFORMATION_* types), no appid or
// transfer_scene_id. On both, user_recv_perception and transfer_scene_report_infos are
// refused (transfer bills only).
//
// Rail bills: appid and transfer_scene_id required, the scene in l.BillScenes (l.Scenes
// does not apply); transfer_scene_report_infos holds exactly the scene's info types, each
// once, with info_type 1–15 and info_content 1–32 characters of valid text;
// user_recv_perception empty or one of the scene's; sub_mchid and every other partner field
// refused (partner transfer bills are not supported). The batch hints are accepted and not
// sent (a bill has no batch).
//
// An unknown rail is a problem of the pseudo-field "rail".
func (r *Request) ValidateFor(rail string, l Limits) error {
	var v validator
	if r.Schema != SchemaV1 {
		v.add("schema", "must be "+SchemaV1)
	}
	v.number("out_detail_no", r.OutDetailNo, true)
	v.number("mchid", r.MchID, true)
	v.openID(r.OpenID)
	v.amount(r.Amount, l)
	v.text("remark", r.Remark, 1, MaxRemarkLen)
	v.name(r, l)
	v.text("batch_name", r.BatchName, 0, MaxRemarkLen)
	v.text("batch_remark", r.BatchRemark, 0, MaxRemarkLen)
	v.text("source", r.Source, 0, MaxSourceLen)
	switch rail {
	case RailPartner:
		v.partner(r)
		v.notBills(r)
	case RailDirect:
		v.direct(r, l)
		v.notBills(r)
	case RailBills:
		v.bills(r, l)
	default:
		v.add("rail", "unknown rail")
	}
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

type validator struct{ problems []Problem }

func (v *validator) add(field, reason string) {
	v.problems = append(v.problems, Problem{Field: field, Reason: reason})
}

// number checks a [0-9A-Za-z]{1,32} identifier (docs/wechatpay.md §4).
func (v *validator) number(field, s string, required bool) {
	switch {
	case s == "":
		if required {
			v.add(field, "required")
		}
	case len(s) > MaxNoLen:
		v.add(field, "longer than 32 characters")
	case !isAlnum(s, false):
		v.add(field, "must contain only [0-9A-Za-z]")
	}
}

func (v *validator) openID(s string) {
	switch {
	case s == "":
		v.add("openid", "required")
	case len(s) > MaxOpenIDLen:
		v.add("openid", "longer than 128 characters")
	case !isAlnum(s, true):
		v.add("openid", "must contain only [0-9A-Za-z_-]")
	}
}

func (v *validator) amount(a int64, l Limits) {
	switch {
	case a <= 0:
		v.add("amount", "must be a positive number of fen")
	case a < l.MinAmount:
		v.add("amount", "below the minimum amount")
	case l.MaxAmount > 0 && a > l.MaxAmount:
		v.add("amount", "above the maximum amount")
	}
}

// text checks a free text field: valid UTF-8, no control or format characters, between
// minLen and maxLen characters (a zero minLen makes it optional).
func (v *validator) text(field, s string, minLen, maxLen int) {
	if s == "" {
		if minLen > 0 {
			v.add(field, "required")
		}
		return
	}
	if reason := badText(s); reason != "" {
		v.add(field, reason)
		return
	}
	n := utf8.RuneCountInString(s)
	switch {
	case n < minLen:
		v.add(field, "too short")
	case n > maxLen:
		v.add(field, "longer than "+strconv.Itoa(maxLen)+" characters")
	case strings.TrimSpace(s) == "":
		v.add(field, "blank")
	}
}

// ReasonPlaintextName is the problem reason for a plaintext user_name under
// Limits.EncryptedNamesOnly.
const ReasonPlaintextName = "plaintext real names are refused; publish user_name_cipher (pkg/payout.Publisher encrypts)"

// name checks the real name, plain (user_name) or sealed (user_name_cipher), and the
// wechatpay_serial that goes with a sealed one.
func (v *validator) name(r *Request, l Limits) {
	switch {
	case r.UserName == "" && r.UserNameCipher == "":
		if r.Amount >= NameRequiredFrom {
			v.add("user_name", "required for amounts of 2000 yuan or more")
		}
	case r.UserName == "":
	case l.EncryptedNamesOnly:
		v.add("user_name", ReasonPlaintextName)
	case r.UserNameCipher != "":
		v.add("user_name", "not allowed together with user_name_cipher; send one of them")
	default:
		v.userName(r.UserName, r.Amount)
	}
	if r.UserNameCipher != "" {
		v.nameCipher(r.UserNameCipher, r.Amount)
	}
	switch {
	case r.UserNameCipher == "" && r.WechatpaySerial != "":
		v.add("wechatpay_serial", "only allowed with user_name_cipher")
	case r.UserNameCipher != "" && r.WechatpaySerial == "":
		v.add("wechatpay_serial", "required with user_name_cipher (the id of the key it was encrypted with)")
	case r.WechatpaySerial != "" && !ValidSerial(r.WechatpaySerial):
		v.add("wechatpay_serial", "must be [0-9A-Za-z_]{1,64}")
	}
}

// userName applies docs/wechatpay.md §4 to a plaintext name: forbidden when < 30 fen, 2–30
// characters, no surrounding spaces (WeChat compares it with the real name).
func (v *validator) userName(s string, amount int64) {
	switch {
	case amount > 0 && amount < NameForbiddenBelow:
		v.add("user_name", "not allowed for amounts below 30 fen")
		return
	case strings.TrimSpace(s) != s:
		v.add("user_name", "leading or trailing space")
		return
	}
	v.text("user_name", s, MinUserNameLen, MaxUserNameLen)
}

// nameCipher applies docs/wechatpay.md §4 (forbidden when < 30 fen) and §3 (one Base64 RSA-OAEP
// block) to a sealed name.
func (v *validator) nameCipher(s string, amount int64) {
	switch {
	case amount > 0 && amount < NameForbiddenBelow:
		v.add("user_name_cipher", "not allowed for amounts below 30 fen")
	case len(s) > base64.StdEncoding.EncodedLen(MaxNameCipherSize):
		v.add("user_name_cipher", "longer than one RSA-OAEP block of a 4096-bit key")
	default:
		b, err := nameCipherEncoding.DecodeString(s)
		switch {
		// The length check refuses the \r and \n the decoder would skip.
		case err != nil || base64.StdEncoding.EncodedLen(len(b)) != len(s):
			v.add("user_name_cipher", "must be standard Base64 (RSA-OAEP ciphertext)")
		case len(b) < MinNameCipherSize:
			v.add("user_name_cipher", "shorter than one RSA-OAEP block of a 1024-bit key")
		case len(b) > MaxNameCipherSize:
			v.add("user_name_cipher", "longer than one RSA-OAEP block of a 4096-bit key")
		}
	}
}

// nameCipherEncoding decodes user_name_cipher: padded standard Base64, canonical padding bits.
var nameCipherEncoding = base64.StdEncoding.Strict()

// ValidSerial reports whether s has the form of a WeChat Pay public key id (PUB_KEY_ID_…)
// or platform certificate serial: [0-9A-Za-z_]{1,64}.
func ValidSerial(s string) bool {
	if s == "" || len(s) > MaxSerialLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
		default:
			return false
		}
	}
	return true
}

func (v *validator) direct(r *Request, l Limits) {
	if r.SubMchID != "" {
		v.add("sub_mchid", "not allowed on the direct rail")
	}
	v.number("appid", r.AppID, true)
	switch {
	case r.SceneID == "":
	case len(r.SceneID) > MaxSceneIDLen || !isAlnum(r.SceneID, false):
		v.add("transfer_scene_id", "must be [0-9A-Za-z]{1,36}")
	case len(l.Scenes) > 0 && !slices.Contains(l.Scenes, r.SceneID):
		v.add("transfer_scene_id", "unknown transfer scene")
	}
	v.noPartnerFields(r, "partner field without sub_mchid")
}

// noPartnerFields refuses every partner field but sub_mchid with reason.
func (v *validator) noPartnerFields(r *Request, reason string) {
	for _, f := range [...]struct{ name, val string }{
		{"sub_appid", r.SubAppID}, {"sp_appid", r.SpAppID}, {"authorization_type", r.AuthorizationType},
		{"transfer_purpose", r.TransferPurpose}, {"transfer_scene", r.TransferScene},
	} {
		if f.val != "" {
			v.add(f.name, reason)
		}
	}
}

// Field names and limits of the bills rail (docs/transfer-bills.md).
const (
	fieldPerception  = "user_recv_perception"
	fieldReportInfos = "transfer_scene_report_infos"
	// MaxInfoTypeLen and MaxInfoContentLen bound a report row's info_type and info_content,
	// in characters.
	MaxInfoTypeLen    = 15
	MaxInfoContentLen = 32
)

// notBills refuses the fields only the bills rail has.
func (v *validator) notBills(r *Request) {
	if r.UserRecvPerception != "" {
		v.add(fieldPerception, "transfer bills only (not allowed on this rail)")
	}
	if len(r.SceneReportInfos) > 0 {
		v.add(fieldReportInfos, "transfer bills only (not allowed on this rail)")
	}
}

// bills applies docs/transfer-bills.md and the scene table of l.
func (v *validator) bills(r *Request, l Limits) {
	const partnerReason = "not allowed on the bills rail (partner transfer bills are not supported)"
	if r.SubMchID != "" {
		v.add("sub_mchid", partnerReason)
	}
	v.noPartnerFields(r, partnerReason)
	v.number("appid", r.AppID, true)
	scene, known := l.billScenes()[r.SceneID]
	switch {
	case r.SceneID == "":
		v.add("transfer_scene_id", "required on the bills rail")
	case len(r.SceneID) > MaxSceneIDLen || !isAlnum(r.SceneID, false):
		v.add("transfer_scene_id", "must be [0-9A-Za-z]{1,36}")
	case !known:
		v.add("transfer_scene_id", "unknown transfer scene (not in the bill scene table)")
	}
	switch {
	case r.UserRecvPerception == "":
	case badText(r.UserRecvPerception) != "":
		v.add(fieldPerception, badText(r.UserRecvPerception))
	case known && !slices.Contains(scene.Perceptions, r.UserRecvPerception):
		v.add(fieldPerception, "not allowed for this transfer scene")
	}
	v.reportInfos(r.SceneReportInfos, scene, known)
}

// reportInfos checks each row's form and, when the scene is known, that the rows are
// exactly the scene's info types, each once. Reasons name rows by index, never by content.
func (v *validator) reportInfos(infos []SceneReportInfo, scene BillScene, known bool) {
	if len(infos) == 0 {
		if known && len(scene.ReportInfos) > 0 {
			v.add(fieldReportInfos, "required for this transfer scene")
		}
		return
	}
	found := make([]bool, len(scene.ReportInfos))
	for i, in := range infos {
		row := fieldReportInfos + "[" + strconv.Itoa(i) + "]"
		n := len(v.problems)
		v.text(row+".info_type", in.InfoType, 1, MaxInfoTypeLen)
		if len(v.problems) == n && known {
			switch j := slices.Index(scene.ReportInfos, in.InfoType); {
			case j < 0:
				v.add(row+".info_type", "not an info type of this transfer scene")
			case found[j]:
				v.add(row+".info_type", "repeated info type")
			default:
				found[j] = true
			}
		}
		v.text(row+".info_content", in.InfoContent, 1, MaxInfoContentLen)
	}
	missing := 0
	for _, f := range found {
		if !f {
			missing++
		}
	}
	if missing > 0 {
		v.add(fieldReportInfos, "missing "+strconv.Itoa(missing)+" of the "+strconv.Itoa(len(found))+" info types this transfer scene requires")
	}
}

// partner applies docs/wechatpay.md §6.
func (v *validator) partner(r *Request) {
	v.number("sub_mchid", r.SubMchID, true)
	if r.AppID != "" {
		v.add("appid", "not allowed on the partner rail (use sub_appid or sp_appid)")
	}
	if r.SceneID != "" {
		v.add("transfer_scene_id", "not allowed on the partner rail")
	}
	v.oneOf("authorization_type", r.AuthorizationType, authTypes, true)
	v.oneOf("transfer_purpose", r.TransferPurpose, transferPurposes, false)
	v.oneOf("transfer_scene", r.TransferScene, transferScenes, false)
	v.number("sp_appid", r.SpAppID, r.AuthorizationType == AuthFund)
	v.number("sub_appid", r.SubAppID, strings.HasPrefix(r.AuthorizationType, "INFORMATION_"))
}

func (v *validator) oneOf(field, s string, allowed []string, required bool) {
	switch {
	case s == "":
		if required {
			v.add(field, "required")
		}
	case !slices.Contains(allowed, s):
		v.add(field, "must be one of "+strings.Join(allowed, ", "))
	}
}

// badText returns why s is not acceptable text, or "". U+FFFD is refused because
// encoding/json produces it from invalid input (lone surrogates).
func badText(s string) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for _, c := range s {
		switch {
		case c == utf8.RuneError:
			return "invalid UTF-8 (U+FFFD)"
		case unicode.IsControl(c), unicode.Is(unicode.Cf, c), unicode.Is(unicode.Co, c):
			return "control or format character"
		}
	}
	return ""
}

// ValidNo reports whether s is a valid WeChat number (out_detail_no, out_batch_no, mchid):
// [0-9A-Za-z]{1,32} (docs/wechatpay.md §4).
func ValidNo(s string) bool { return s != "" && len(s) <= MaxNoLen && isAlnum(s, false) }

// isAlnum reports whether s is only [0-9A-Za-z], plus '_' and '-' when openID is set.
func isAlnum(s string, openID bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case openID && (c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
