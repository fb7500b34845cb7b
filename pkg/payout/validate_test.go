package payout

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

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
		// spec §5: out_detail_no string[1,32], [0-9A-Za-z].
		{"spec §5 out_detail_no required", func(r *Request) { r.OutDetailNo = "" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"spec §5 out_detail_no 32 chars ok", func(r *Request) { r.OutDetailNo = strings.Repeat("a", 32) }, direct, nil, nil},
		{"spec §5 out_detail_no 33 chars", func(r *Request) { r.OutDetailNo = strings.Repeat("a", 33) }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"spec §5 out_detail_no dash", func(r *Request) { r.OutDetailNo = "D-1" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"spec §5 out_detail_no underscore", func(r *Request) { r.OutDetailNo = "D_1" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"spec §5 out_detail_no full-width digit", func(r *Request) { r.OutDetailNo = "D１" }, direct, ErrInvalid, []string{"out_detail_no"}},
		{"spec §5 mchid charset", func(r *Request) { r.MchID = "1900 0001" }, direct, ErrInvalid, []string{"mchid"}},
		// spec §5: appid required on the direct rail.
		{"spec §5 appid required", func(r *Request) { r.AppID = "" }, direct, ErrInvalid, []string{"appid"}},
		// spec §5: openid string[1,128].
		{"spec §5 openid required", func(r *Request) { r.OpenID = "" }, direct, ErrInvalid, []string{"openid"}},
		{"spec §5 openid 128 ok", func(r *Request) { r.OpenID = strings.Repeat("o", 128) }, direct, nil, nil},
		{"spec §5 openid 129", func(r *Request) { r.OpenID = strings.Repeat("o", 129) }, direct, ErrInvalid, []string{"openid"}},
		{"spec §5 openid space", func(r *Request) { r.OpenID = "o pen" }, direct, ErrInvalid, []string{"openid"}},
		// spec §5: transfer_amount, minimum 30 fen by default.
		{"spec §5 amount zero", func(r *Request) { r.Amount = 0 }, direct, ErrInvalid, []string{"amount"}},
		{"spec §5 amount negative", func(r *Request) { r.Amount = -100 }, direct, ErrInvalid, []string{"amount"}},
		{"spec §5 amount below the minimum", func(r *Request) { r.Amount = 9 }, direct, ErrInvalid, []string{"amount"}},
		{"spec §5 amount 30 fen", func(r *Request) { r.Amount = 30 }, direct, nil, nil},
		{"amount above max", func(r *Request) { r.Amount = MaxAmountDefault + 1; r.UserName = "张三" }, direct, ErrInvalid, []string{"amount"}},
		// spec §5: transfer_remark string[1,32], ≤32 UTF-8 characters.
		{"spec §5 remark required", func(r *Request) { r.Remark = "" }, direct, ErrInvalid, []string{"remark"}},
		{"spec §5 remark 32 Chinese characters", func(r *Request) { r.Remark = strings.Repeat("奖", 32) }, direct, nil, nil},
		{"spec §5 remark 33 characters", func(r *Request) { r.Remark = strings.Repeat("奖", 33) }, direct, ErrInvalid, []string{"remark"}},
		{"spec §5 remark 32 emoji", func(r *Request) { r.Remark = strings.Repeat("🎁", 32) }, direct, nil, nil},
		{"remark newline", func(r *Request) { r.Remark = "a\nb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark NUL", func(r *Request) { r.Remark = "a\x00b" }, direct, ErrInvalid, []string{"remark"}},
		{"remark bidi override", func(r *Request) { r.Remark = "a\u202eb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark invalid utf-8", func(r *Request) { r.Remark = "a\xffb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark replacement char", func(r *Request) { r.Remark = "a\ufffdb" }, direct, ErrInvalid, []string{"remark"}},
		{"remark blank", func(r *Request) { r.Remark = "   " }, direct, ErrInvalid, []string{"remark"}},
		// spec §5: user_name required ≥ 200000 fen, not allowed < 30 fen, 2–30 characters.
		{"spec §5 name required at 2000 yuan", func(r *Request) { r.Amount = 200000 }, direct, ErrInvalid, []string{"user_name"}},
		{"spec §5 name not required at 1999.99 yuan", func(r *Request) { r.Amount = 199999 }, direct, nil, nil},
		{"spec §5 name given at 2000 yuan", func(r *Request) { r.Amount = 200000; r.UserName = "张三" }, direct, nil, nil},
		{"spec §5 name optional below 2000 yuan", func(r *Request) { r.UserName = "李四" }, direct, nil, nil},
		{"spec §5 name forbidden below 30 fen", func(r *Request) { r.Amount = 29; r.UserName = "张三" }, direct, ErrInvalid, []string{"user_name"}},
		{"spec §5 name one character", func(r *Request) { r.UserName = "张" }, direct, ErrInvalid, []string{"user_name"}},
		{"spec §5 name 30 characters", func(r *Request) { r.UserName = strings.Repeat("张", 30) }, direct, nil, nil},
		{"spec §5 name 31 characters", func(r *Request) { r.UserName = strings.Repeat("张", 31) }, direct, ErrInvalid, []string{"user_name"}},
		{"name surrounding space", func(r *Request) { r.UserName = " 张三" }, direct, ErrInvalid, []string{"user_name"}},
		{"name control", func(r *Request) { r.UserName = "张\t三" }, direct, ErrInvalid, []string{"user_name"}},
		// spec §5: transfer_scene_id string(36), merchant's enabled scenes.
		{"spec §5 scene omitted", func(r *Request) { r.SceneID = "" }, direct, nil, nil},
		{"spec §5 scene unknown", func(r *Request) { r.SceneID = "9999" }, direct, ErrInvalid, []string{"transfer_scene_id"}},
		{"spec §5 batch_name hint 33 chars", func(r *Request) { r.BatchName = strings.Repeat("批", 33) }, direct, ErrInvalid, []string{"batch_name"}},
		{"spec §5 batch_remark hint control", func(r *Request) { r.BatchRemark = "x\x7f" }, direct, ErrInvalid, []string{"batch_remark"}},
		{"partner field on direct", func(r *Request) { r.AuthorizationType = AuthFund }, direct, ErrInvalid, []string{"authorization_type"}},
		// spec §7: partner rail.
		{"spec §7 partner appid forbidden", func(r *Request) { r.AppID = "wxa0000000000000001" }, partner, ErrInvalid, []string{"appid"}},
		{"spec §7 partner scene id forbidden", func(r *Request) { r.SceneID = "1001" }, partner, ErrInvalid, []string{"transfer_scene_id"}},
		{"spec §7 authorization_type required", func(r *Request) { r.AuthorizationType = "" }, partner, ErrInvalid, []string{"authorization_type"}},
		{"spec §7 authorization_type unknown", func(r *Request) { r.AuthorizationType = "FUND" }, partner, ErrInvalid, []string{"authorization_type"}},
		{"spec §7 FUND needs sp_appid", func(r *Request) { r.AuthorizationType = AuthFund; r.SubAppID = "" }, partner, ErrInvalid, []string{"sp_appid"}},
		{"spec §7 FUND with sp_appid", func(r *Request) { r.AuthorizationType = AuthFund; r.SubAppID = ""; r.SpAppID = "wxsp1" }, partner, nil, nil},
		{"spec §7 INFORMATION needs sub_appid", func(r *Request) { r.SubAppID = "" }, partner, ErrInvalid, []string{"sub_appid"}},
		{"spec §7 INFORMATION_AND_FUND needs sub_appid", func(r *Request) { r.AuthorizationType = AuthInformationAndFund; r.SubAppID = "" }, partner, ErrInvalid, []string{"sub_appid"}},
		{"spec §7 transfer_purpose enum", func(r *Request) { r.TransferPurpose = "GIFT" }, partner, ErrInvalid, []string{"transfer_purpose"}},
		{"spec §7 transfer_purpose ok", func(r *Request) { r.TransferPurpose = "COMMISSION" }, partner, nil, nil},
		{"spec §7 transfer_scene enum", func(r *Request) { r.TransferScene = "PAYROLL" }, partner, ErrInvalid, []string{"transfer_scene"}},
		{"spec §7 sub_mchid charset", func(r *Request) { r.SubMchID = "19000-00110" }, partner, ErrInvalid, []string{"sub_mchid"}},
		{"every problem is reported", func(r *Request) { r.OutDetailNo = "x-"; r.OpenID = ""; r.Amount = 0; r.Remark = "" }, direct, ErrInvalid,
			[]string{"out_detail_no", "openid", "amount", "remark"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.base()
			tt.req(&r)
			l := DefaultLimits()
			if r.Amount < MinAmountDefault {
				l.MinAmount = 10 // merchants can lower the minimum (spec §5)
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
	err := r.Validate(DefaultLimits())
	if err == nil {
		t.Fatal("no error")
	}
	for _, leak := range []string{"SECRET", "秘", "王"} {
		if strings.Contains(err.Error(), leak) {
			t.Fatalf("%q leaks %q", err, leak)
		}
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
				if _, known := fields[p.Field]; !known || p.Reason == "" {
					t.Fatalf("problem %+v does not name a known field", p)
				}
			}
			return
		}
		if r.Amount <= 0 || !utf8.ValidString(r.Remark) || utf8.RuneCountInString(r.Remark) > MaxRemarkLen ||
			len(r.OutDetailNo) > MaxNoLen || (r.Amount >= NameRequiredFrom && r.UserName == "") {
			t.Fatalf("Validate accepted %+v", r)
		}
	})
}
