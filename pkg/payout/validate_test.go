package payout

import (
	"bytes"
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// cipherOf returns a well-formed user_name_cipher of n bytes (not a real ciphertext:
// Validate checks the form only).
func cipherOf(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xA5}, n)) }

// testSerial is the TEST-ONLY WeChat Pay public key id (wechatpaytest.DefaultPlatformKeyID).
const testSerial = "PUB_KEY_ID_0119000000012025011500000000000001"

// sealed gives r a well-formed sealed name.
func sealed(r *Request) { r.UserNameCipher, r.WechatpaySerial = cipherOf(256), testSerial }

func direct() Request {
	return Request{
		Schema: SchemaV1, OutDetailNo: "D0001", MchID: "1900000001", AppID: "wxa0000000000000001",
		OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", Amount: 1000, Remark: "活动奖励", SceneID: "1001",
	}
}

func partner() Request {
	return Request{
		Schema: SchemaV1, OutDetailNo: "P0001", MchID: "1900000109", SubMchID: "1900000110",
		SubAppID: "wxa0000000000000009", AuthorizationType: AuthInformation,
		OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", Amount: 1000, Remark: "佣金",
	}
}

func TestRequest_Validate(t *testing.T) {
	tests := []struct {
		name    string
		req     func(*Request)
		base    func() Request
		wantErr error    // nil or ErrInvalid
		fields  []string // fields that must be named
	}{
		{"valid direct", func(*Request) {}, direct, nil, nil},
		{"valid partner", func(*Request) {}, partner, nil, nil},
		{"unknown schema", func(r *Request) { r.Schema = "paystream.payout.v0" }, direct, ErrInvalid, []string{"schema"}},
		// docs/wechatpay.md §4: out_detail_no string[1,32], [0-9A-Za-z].
		{"docs/wechatpay.md §4 out_detail_no required", func(r *Request) { r.OutDetailNo = "" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"docs/wechatpay.md §4 out_detail_no 32 chars ok", func(r *Request) { r.OutDetailNo = strings.Repeat("a", 32) }, direct, nil, nil},
		{"docs/wechatpay.md §4 out_detail_no 33 chars", func(r *Request) { r.OutDetailNo = strings.Repeat("a", 33) }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"docs/wechatpay.md §4 out_detail_no dash", func(r *Request) { r.OutDetailNo = "D-1" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"docs/wechatpay.md §4 out_detail_no underscore", func(r *Request) { r.OutDetailNo = "D_1" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"docs/wechatpay.md §4 out_detail_no full-width digit", func(r *Request) { r.OutDetailNo = "D１" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"docs/wechatpay.md §4 mchid charset", func(r *Request) { r.MchID = "1900 0001" }, direct, ErrInvalid, []string{"mchid"}},
		// docs/wechatpay.md §4: appid required on the direct rail.
		{"docs/wechatpay.md §4 appid required", func(r *Request) { r.AppID = "" }, direct, ErrInvalid, []string{"appid"}},
		// docs/wechatpay.md §4: openid string[1,128].
		{"docs/wechatpay.md §4 openid required", func(r *Request) { r.OpenID = "" }, direct, ErrInvalid, []string{"openid"}},
		{"docs/wechatpay.md §4 openid 128 ok", func(r *Request) { r.OpenID = strings.Repeat("o", 128) }, direct, nil, nil},
		{"docs/wechatpay.md §4 openid 129", func(r *Request) { r.OpenID = strings.Repeat("o", 129) }, direct, ErrInvalid, []string{"openid"}},
		{"docs/wechatpay.md §4 openid space", func(r *Request) { r.OpenID = "o pen" }, direct, ErrInvalid, []string{"openid"}},
		// docs/wechatpay.md §4: transfer_amount, minimum 30 fen by default.
		{"docs/wechatpay.md §4 amount zero", func(r *Request) { r.Amount = 0 }, direct, ErrInvalid, []string{"amount"}},
		{"docs/wechatpay.md §4 amount negative", func(r *Request) { r.Amount = -100 }, direct, ErrInvalid, []string{"amount"}},
		{"docs/wechatpay.md §4 amount below the minimum", func(r *Request) { r.Amount = 9 }, direct, ErrInvalid, []string{"amount"}},
		{"docs/wechatpay.md §4 amount 30 fen", func(r *Request) { r.Amount = 30 }, direct, nil, nil},
		{"amount above max", func(r *Request) { r.Amount = MaxAmountDefault + 1; r.UserName = "张三" }, direct, ErrInvalid, []string{"amount"}},
		// docs/wechatpay.md §4: transfer_remark string[1,32], ≤32 UTF-8 characters.
		{"docs/wechatpay.md §4 remark required", func(r *Request) { r.Remark = "" }, direct, ErrInvalid, []string{"remark"}},
		{"docs/wechatpay.md §4 remark 32 Chinese characters", func(r *Request) { r.Remark = strings.Repeat("奖", 32) }, direct, nil, nil},
		{"docs/wechatpay.md §4 remark 33 characters", func(r *Request) { r.Remark = strings.Repeat("奖", 33) }, direct, ErrInvalid, []string{"remark"}},
		{"docs/wechatpay.md §4 remark 32 emoji", func(r *Request) { r.Remark = strings.Repeat("🎁", 32) }, direct, nil, nil},
		{"remark newline", func(r *Request) { r.Remark = "a\nb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark NUL", func(r *Request) { r.Remark = "a\x00b" }, direct, ErrInvalid, []string{"remark"}},
		{"remark bidi override", func(r *Request) { r.Remark = "a\u202eb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark invalid utf-8", func(r *Request) { r.Remark = "a\xffb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark replacement char", func(r *Request) { r.Remark = "a\ufffdb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark blank", func(r *Request) { r.Remark = "   " }, direct, ErrInvalid, []string{"remark"}},
		// docs/wechatpay.md §4: user_name required ≥ 200000 fen, not allowed < 30 fen, 2–30
		// characters.
		{"docs/wechatpay.md §4 name required at 2000 yuan", func(r *Request) { r.Amount = 200000 }, direct, ErrInvalid, []string{"user_name"}},
		{"docs/wechatpay.md §4 name not required at 1999.99 yuan", func(r *Request) { r.Amount = 199999 }, direct, nil, nil},
		{"docs/wechatpay.md §4 name given at 2000 yuan", func(r *Request) { r.Amount = 200000; r.UserName = "张三" }, direct, nil, nil},
		{"docs/wechatpay.md §4 name optional below 2000 yuan", func(r *Request) { r.UserName = "李四" }, direct, nil, nil},
		{"docs/wechatpay.md §4 name forbidden below 30 fen", func(r *Request) { r.Amount = 29; r.UserName = "张三" }, direct, ErrInvalid, []string{"user_name"}},
		{"docs/wechatpay.md §4 name one character", func(r *Request) { r.UserName = "张" }, direct, ErrInvalid, []string{"user_name"}},
		{"docs/wechatpay.md §4 name 30 characters", func(r *Request) { r.UserName = strings.Repeat("张", 30) }, direct, nil, nil},
		{"docs/wechatpay.md §4 name 31 characters", func(r *Request) { r.UserName = strings.Repeat("张", 31) }, direct, ErrInvalid, []string{"user_name"}},
		{"name surrounding space", func(r *Request) { r.UserName = " 张三" }, direct, ErrInvalid, []string{"user_name"}},
		{"name control", func(r *Request) { r.UserName = "张\t三" }, direct, ErrInvalid, []string{"user_name"}},
		// The sealed name (user_name_cipher, docs/wechatpay.md §3) follows the same amount rules.
		{"docs/wechatpay.md §4 sealed name at 2000 yuan", func(r *Request) { r.Amount = 200000; sealed(r) }, direct, nil, nil},
		{"sealed name below 2000 yuan", sealed, direct, nil, nil},
		{"docs/wechatpay.md §4 sealed name forbidden below 30 fen", func(r *Request) { r.Amount = 29; sealed(r) }, direct, ErrInvalid, []string{"user_name_cipher"}},
		{"plaintext and sealed name", func(r *Request) { sealed(r); r.UserName = "张三" }, direct, ErrInvalid, []string{"user_name"}},
		{"sealed name on the partner rail", sealed, partner, nil, nil},
		{"cipher without serial", func(r *Request) { sealed(r); r.WechatpaySerial = "" }, direct, ErrInvalid, []string{"wechatpay_serial"}},
		{"serial without cipher", func(r *Request) { r.WechatpaySerial = testSerial }, direct, ErrInvalid, []string{"wechatpay_serial"}},
		{"serial with a plaintext name", func(r *Request) { r.UserName = "张三"; r.WechatpaySerial = testSerial }, direct, ErrInvalid, []string{"wechatpay_serial"}},
		{"certificate serial", func(r *Request) { sealed(r); r.WechatpaySerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1" }, direct, nil, nil},
		{"serial charset", func(r *Request) { sealed(r); r.WechatpaySerial = "PUB-KEY-ID" }, direct, ErrInvalid, []string{"wechatpay_serial"}},
		{"serial 64 characters", func(r *Request) { sealed(r); r.WechatpaySerial = strings.Repeat("A", 64) }, direct, nil, nil},
		{"serial 65 characters", func(r *Request) { sealed(r); r.WechatpaySerial = strings.Repeat("A", 65) }, direct, ErrInvalid, []string{"wechatpay_serial"}},
		{"cipher not base64", func(r *Request) { sealed(r); r.UserNameCipher = strings.Repeat("!", 344) }, direct, ErrInvalid, []string{"user_name_cipher"}},
		{"cipher unpadded", func(r *Request) {
			sealed(r)
			r.UserNameCipher = strings.TrimRight(r.UserNameCipher, "=")
		}, direct, ErrInvalid, []string{"user_name_cipher"}},
		{"cipher with a newline", func(r *Request) {
			sealed(r)
			r.UserNameCipher = r.UserNameCipher[:76] + "\n" + r.UserNameCipher[76:]
		}, direct, ErrInvalid, []string{"user_name_cipher"}},
		{"cipher with non-canonical padding bits", func(r *Request) {
			sealed(r)
			r.UserNameCipher = strings.Repeat("A", 341) + "B=="
		}, direct, ErrInvalid, []string{"user_name_cipher"}},
		{"cipher 127 bytes", func(r *Request) { sealed(r); r.UserNameCipher = cipherOf(127) }, direct, ErrInvalid, []string{"user_name_cipher"}},
		{"cipher 128 bytes (1024-bit key)", func(r *Request) { sealed(r); r.UserNameCipher = cipherOf(128) }, direct, nil, nil},
		{"cipher 512 bytes (4096-bit key)", func(r *Request) { sealed(r); r.UserNameCipher = cipherOf(512) }, direct, nil, nil},
		{"cipher 513 bytes", func(r *Request) { sealed(r); r.UserNameCipher = cipherOf(513) }, direct, ErrInvalid, []string{"user_name_cipher"}},
		// docs/wechatpay.md §4: transfer_scene_id string(36), merchant's enabled scenes.
		{"docs/wechatpay.md §4 scene omitted", func(r *Request) { r.SceneID = "" }, direct, nil, nil},
		{"docs/wechatpay.md §4 scene unknown", func(r *Request) { r.SceneID = "9999" }, direct, ErrInvalid, []string{"transfer_scene_id"}},
		{"docs/wechatpay.md §4 batch_name hint 33 chars", func(r *Request) { r.BatchName = strings.Repeat("批", 33) }, direct, ErrInvalid, []string{"batch_name"}},
		{"docs/wechatpay.md §4 batch_remark hint control", func(r *Request) { r.BatchRemark = "x\x7f" }, direct, ErrInvalid, []string{"batch_remark"}},
		{"partner field on direct", func(r *Request) { r.AuthorizationType = AuthFund }, direct, ErrInvalid, []string{"authorization_type"}},
		// docs/wechatpay.md §6: partner rail.
		{"docs/wechatpay.md §6 partner appid forbidden", func(r *Request) { r.AppID = "wxa0000000000000001" }, partner, ErrInvalid, []string{"appid"}},
		{"docs/wechatpay.md §6 partner scene id forbidden", func(r *Request) { r.SceneID = "1001" }, partner, ErrInvalid, []string{"transfer_scene_id"}},
		{"docs/wechatpay.md §6 authorization_type required", func(r *Request) { r.AuthorizationType = "" }, partner, ErrInvalid, []string{"authorization_type"}},
		{"docs/wechatpay.md §6 authorization_type unknown", func(r *Request) { r.AuthorizationType = "FUND" }, partner, ErrInvalid, []string{"authorization_type"}},
		{"docs/wechatpay.md §6 FUND needs sp_appid", func(r *Request) { r.AuthorizationType = AuthFund; r.SubAppID = "" }, partner, ErrInvalid, []string{"sp_appid"}},
		{"docs/wechatpay.md §6 FUND with sp_appid", func(r *Request) { r.AuthorizationType = AuthFund; r.SubAppID = ""; r.SpAppID = "wxsp1" }, partner, nil, nil},
		{"docs/wechatpay.md §6 INFORMATION needs sub_appid", func(r *Request) { r.SubAppID = "" }, partner, ErrInvalid, []string{"sub_appid"}},
		{"docs/wechatpay.md §6 INFORMATION_AND_FUND needs sub_appid", func(r *Request) { r.AuthorizationType = AuthInformationAndFund; r.SubAppID = "" }, partner, ErrInvalid, []string{"sub_appid"}},
		{"docs/wechatpay.md §6 transfer_purpose enum", func(r *Request) { r.TransferPurpose = "GIFT" }, partner, ErrInvalid, []string{"transfer_purpose"}},
		{"docs/wechatpay.md §6 transfer_purpose ok", func(r *Request) { r.TransferPurpose = "COMMISSION" }, partner, nil, nil},
		{"docs/wechatpay.md §6 transfer_scene enum", func(r *Request) { r.TransferScene = "PAYROLL" }, partner, ErrInvalid, []string{"transfer_scene"}},
		{"docs/wechatpay.md §6 sub_mchid charset", func(r *Request) { r.SubMchID = "19000-00110" }, partner, ErrInvalid, []string{"sub_mchid"}},
		{"every problem is reported", func(r *Request) { r.OutDetailNo = "x-"; r.OpenID = ""; r.Amount = 0; r.Remark = "" }, direct, ErrInvalid,
			[]string{"out_detail_no", "openid", "amount", "remark"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.base()
			tt.req(&r)
			l := DefaultLimits()
			if r.Amount < MinAmountDefault {
				l.MinAmount = 10 // merchants can lower the minimum (docs/wechatpay.md §4)
			}
			err := r.Validate(l)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %T, want *ValidationError", err)
			}
			for _, f := range tt.fields {
				if !ve.Has(f) {
					t.Errorf("problems %v do not name %s", ve.Problems, f)
				}
			}
			if len(ve.Problems) != len(tt.fields) {
				t.Errorf("problems = %v, want exactly %v", ve.Problems, tt.fields)
			}
		})
	}
}

func TestValidationError_doesNotLeakValues(t *testing.T) {
	r := direct()
	r.OpenID = "SECRET OPENID"
	r.UserName = "王\n秘密"
	r.Remark = strings.Repeat("秘", 40)
	r.UserNameCipher = "SECRETCIPHER\n"
	r.WechatpaySerial = "SECRET-SERIAL"
	for _, l := range []Limits{DefaultLimits(), {MinAmount: 1, EncryptedNamesOnly: true}} {
		err := r.Validate(l)
		if err == nil {
			t.Fatal("no error")
		}
		for _, leak := range []string{"SECRET", "秘", "王"} {
			if strings.Contains(err.Error(), leak) {
				t.Fatalf("%q leaks %q", err, leak)
			}
		}
	}
}

// TestRequest_Validate_encryptedNamesOnly: with Limits.EncryptedNamesOnly (the processor's
// setting) a plaintext user_name is refused whatever else holds; a sealed name is accepted.
func TestRequest_Validate_encryptedNamesOnly(t *testing.T) {
	tests := []struct {
		name    string
		req     func(*Request)
		wantErr error
		fields  []string
	}{
		{"plaintext name", func(r *Request) { r.UserName = "张三" }, ErrInvalid, []string{"user_name"}},
		{"plaintext name at 2000 yuan", func(r *Request) { r.Amount = 200000; r.UserName = "张三" }, ErrInvalid, []string{"user_name"}},
		{"plaintext name with a cipher", func(r *Request) { sealed(r); r.UserName = "张三" }, ErrInvalid, []string{"user_name"}},
		{"sealed name", func(r *Request) { r.Amount = 200000; sealed(r) }, nil, nil},
		{"no name", func(*Request) {}, nil, nil},
		{"no name at 2000 yuan", func(r *Request) { r.Amount = 200000 }, ErrInvalid, []string{"user_name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := direct()
			tt.req(&r)
			l := DefaultLimits()
			l.EncryptedNamesOnly = true
			err := r.Validate(l)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %T, want *ValidationError", err)
			}
			if got, want := len(ve.Problems), len(tt.fields); got != want {
				t.Fatalf("problems = %v, want exactly %v", ve.Problems, tt.fields)
			}
			for i, f := range tt.fields {
				if got := ve.Problems[i].Field; got != f {
					t.Fatalf("problem %d on %s, want %s", i, got, f)
				}
			}
			if r.UserName != "" && ve.Problems[0].Reason != ReasonPlaintextName {
				t.Fatalf("reason = %q, want %q", ve.Problems[0].Reason, ReasonPlaintextName)
			}
		})
	}
}

func TestRequest_LogValue(t *testing.T) {
	r := direct()
	r.UserName = "张三"
	if s := r.LogValue().String(); strings.Contains(s, r.OpenID) || strings.Contains(s, "张三") {
		t.Fatalf("LogValue %s leaks openid or name", s)
	}
}

// FuzzValidate: Validate never panics, and every problem names a field of the request.
// A nil error implies the WeChat rules hold.
func FuzzValidate(f *testing.F) {
	f.Add([]byte(validJSON), int64(30), int64(MaxAmountDefault))
	f.Add([]byte(`{"schema":"paystream.payout.v1","amount":200000,"user_name":" "}`), int64(1), int64(0))
	f.Add([]byte(billJSON), int64(30), int64(MaxAmountDefault))
	f.Fuzz(func(t *testing.T, data []byte, minAmount, maxAmount int64) {
		r, err := Decode(data)
		if err != nil {
			return
		}
		l := Limits{MinAmount: minAmount, MaxAmount: maxAmount, Scenes: DefaultLimits().Scenes}
		err = r.Validate(l)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("err = %#v, want a non-empty *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if !knownProblemField(p.Field) || p.Reason == "" {
					t.Fatalf("problem %+v does not name a known field", p)
				}
			}
			return
		}
		// The bills rail's problems name known fields too.
		if err := r.ValidateFor(RailBills, l); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("bills: err = %#v, want a non-empty *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if !knownProblemField(p.Field) || p.Reason == "" {
					t.Fatalf("bills: problem %+v does not name a known field", p)
				}
			}
		}
		if r.Amount <= 0 || !utf8.ValidString(r.Remark) || utf8.RuneCountInString(r.Remark) > MaxRemarkLen ||
			len(r.OutDetailNo) > MaxNoLen || (r.Amount >= NameRequiredFrom && !r.HasName()) ||
			(r.UserName != "" && r.UserNameCipher != "") || (r.UserNameCipher != "") != (r.WechatpaySerial != "") {
			t.Fatalf("Validate accepted %+v", r)
		}
		// EncryptedNamesOnly refuses exactly the plaintext names on top of the rest.
		l.EncryptedNamesOnly = true
		err = r.Validate(l)
		var ve *ValidationError
		if got, want := err != nil, r.UserName != ""; got != want {
			t.Fatalf("EncryptedNamesOnly: err = %v for user_name set %v", err, want)
		}
		if err != nil && (!errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Reason != ReasonPlaintextName) {
			t.Fatalf("EncryptedNamesOnly: err = %v, want only the plaintext name refused", err)
		}
	})
}

// knownProblemField reports whether a problem's field is a wire name of Request or a report
// row's field.
func knownProblemField(f string) bool {
	if _, known := fields[f]; known {
		return true
	}
	return regexp.MustCompile(`^transfer_scene_report_infos\[\d+\]\.info_(type|content)$`).MatchString(f)
}
