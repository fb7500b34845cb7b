package payout

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// bill returns a valid request for the bills rail: scene 1000 with its two report rows.
func bill() Request {
	return Request{
		Schema: SchemaV1, OutDetailNo: "B0001", MchID: "1900000001", AppID: "wxa0000000000000001",
		OpenID: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", Amount: 1000, Remark: "活动奖励", SceneID: "1000",
		UserRecvPerception: "现金奖励",
		SceneReportInfos: []SceneReportInfo{
			{InfoType: "活动名称", InfoContent: "新用户注册有礼"},
			{InfoType: "奖励说明", InfoContent: "注册完成奖励现金"},
		},
	}
}

// TestRequest_ValidateFor_bills: every rule of the bills rail (docs/transfer-bills.md) breaks alone
// and names exactly its field.
func TestRequest_ValidateFor_bills(t *testing.T) {
	infos := func(rows ...string) func(*Request) {
		return func(r *Request) {
			r.SceneReportInfos = nil
			for i := 0; i < len(rows); i += 2 {
				r.SceneReportInfos = append(r.SceneReportInfos, SceneReportInfo{InfoType: rows[i], InfoContent: rows[i+1]})
			}
		}
	}
	tests := []struct {
		name    string
		req     func(*Request)
		limits  func(*Limits)
		wantErr error
		fields  []string
	}{
		{name: "valid", req: func(*Request) {}},
		{name: "valid without perception", req: func(r *Request) { r.UserRecvPerception = "" }},
		{name: "valid rows in another order", req: infos("奖励说明", "注册完成奖励现金", "活动名称", "新用户注册有礼")},
		{name: "valid scene 1005", req: func(r *Request) {
			r.SceneID, r.UserRecvPerception = "1005", "劳务报酬"
			infos("岗位类型", "外卖骑手", "报酬说明", "3月第1周配送报酬")(r)
		}},
		{name: "valid sealed name at 2000 yuan", req: func(r *Request) { r.Amount = 200000; sealed(r) }},
		{name: "valid batch hints are accepted", req: func(r *Request) { r.BatchName, r.BatchRemark = "三月活动", "x" }},
		{name: "valid 15 and 32 characters", req: func(r *Request) {
			r.SceneReportInfos[0].InfoType = strings.Repeat("型", 15)
			r.SceneReportInfos[0].InfoContent = strings.Repeat("容", 32)
		}, limits: func(l *Limits) {
			l.BillScenes = map[string]BillScene{"1000": {ReportInfos: []string{strings.Repeat("型", 15), "奖励说明"}}}
		}, wantErr: ErrInvalid, fields: []string{"user_recv_perception"}},
		{name: "custom scene table", req: func(r *Request) { r.SceneID, r.UserRecvPerception = "2001", ""; infos("岗位类型", "骑手")(r) },
			limits: func(l *Limits) { l.BillScenes = map[string]BillScene{"2001": {ReportInfos: []string{"岗位类型"}}} }},
		{name: "appid required", req: func(r *Request) { r.AppID = "" }, wantErr: ErrInvalid, fields: []string{"appid"}},
		{name: "scene required", req: func(r *Request) { r.SceneID = "" }, wantErr: ErrInvalid, fields: []string{"transfer_scene_id"}},
		{name: "scene form", req: func(r *Request) { r.SceneID = "10-00" }, wantErr: ErrInvalid, fields: []string{"transfer_scene_id"}},
		{name: "scene not in the table", req: func(r *Request) { r.SceneID = "1001" }, wantErr: ErrInvalid, fields: []string{"transfer_scene_id"}},
		{name: "empty scene table accepts none", req: func(*Request) {}, limits: func(l *Limits) { l.BillScenes = map[string]BillScene{} },
			wantErr: ErrInvalid, fields: []string{"transfer_scene_id"}},
		{name: "l.Scenes does not apply", req: func(*Request) {}, limits: func(l *Limits) { l.Scenes = []string{"1005"} }},
		{name: "rows required", req: infos(), wantErr: ErrInvalid, fields: []string{"transfer_scene_report_infos"}},
		{name: "row missing", req: infos("活动名称", "新用户注册有礼"), wantErr: ErrInvalid, fields: []string{"transfer_scene_report_infos"}},
		{name: "row repeated", req: infos("活动名称", "a", "奖励说明", "b", "活动名称", "c"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[2].info_type"}},
		{name: "row of another scene", req: infos("活动名称", "a", "奖励说明", "b", "岗位类型", "c"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[2].info_type"}},
		{name: "row type replaced", req: infos("活动名称", "a", "报酬说明", "b"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[1].info_type", "transfer_scene_report_infos"}},
		{name: "info_type empty", req: infos("活动名称", "a", "", "b"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[1].info_type", "transfer_scene_report_infos"}},
		{name: "info_type 16 characters", req: infos("活动名称", "a", "奖励说明", "b", strings.Repeat("型", 16), "c"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[2].info_type"}},
		{name: "info_content empty", req: infos("活动名称", "", "奖励说明", "b"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[0].info_content"}},
		{name: "info_content 33 characters", req: infos("活动名称", strings.Repeat("容", 33), "奖励说明", "b"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[0].info_content"}},
		{name: "info_content control character", req: infos("活动名称", "a\nb", "奖励说明", "b"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[0].info_content"}},
		{name: "info_content blank", req: infos("活动名称", "  ", "奖励说明", "b"), wantErr: ErrInvalid,
			fields: []string{"transfer_scene_report_infos[0].info_content"}},
		{name: "perception not of the scene", req: func(r *Request) { r.UserRecvPerception = "劳务报酬" }, wantErr: ErrInvalid,
			fields: []string{"user_recv_perception"}},
		{name: "perception with a scene allowing none", req: func(*Request) {},
			limits: func(l *Limits) {
				l.BillScenes = map[string]BillScene{"1000": {ReportInfos: []string{"活动名称", "奖励说明"}}}
			}, wantErr: ErrInvalid, fields: []string{"user_recv_perception"}},
		{name: "perception control character", req: func(r *Request) { r.UserRecvPerception = "现金\u202e奖励" }, wantErr: ErrInvalid,
			fields: []string{"user_recv_perception"}},
		{name: "sub_mchid refused", req: func(r *Request) { r.SubMchID = "1900000110" }, wantErr: ErrInvalid, fields: []string{"sub_mchid"}},
		{name: "partner field refused", req: func(r *Request) { r.AuthorizationType = AuthFund }, wantErr: ErrInvalid,
			fields: []string{"authorization_type"}},
		{name: "name required at 2000 yuan", req: func(r *Request) { r.Amount = 200000 }, wantErr: ErrInvalid, fields: []string{"user_name"}},
		{name: "name forbidden below 30 fen", req: func(r *Request) { r.Amount = 29; sealed(r) },
			limits: func(l *Limits) { l.MinAmount = 10 }, wantErr: ErrInvalid, fields: []string{"user_name_cipher"}},
		{name: "plaintext name refused when encrypted only", req: func(r *Request) { r.UserName = "张三" },
			limits: func(l *Limits) { l.EncryptedNamesOnly = true }, wantErr: ErrInvalid, fields: []string{"user_name"}},
		{name: "remark required", req: func(r *Request) { r.Remark = "" }, wantErr: ErrInvalid, fields: []string{"remark"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bill()
			tt.req(&r)
			l := DefaultLimits()
			if tt.limits != nil {
				tt.limits(&l)
			}
			err := r.ValidateFor(RailBills, l)
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
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.Field)
			}
			if !slices.Equal(got, tt.fields) {
				t.Fatalf("problems %v, want exactly on %v", ve.Problems, tt.fields)
			}
			assertNoValues(t, err, &r)
		})
	}
}

// assertNoValues fails if err's text holds any text value of r longer than one character
// (the schema and the rail names are allowed: they are the rules, not values).
func assertNoValues(t *testing.T, err error, r *Request) {
	t.Helper()
	values := []string{r.OutDetailNo, r.MchID, r.AppID, r.OpenID, r.Remark, r.SceneID, r.UserName, r.UserNameCipher,
		r.UserRecvPerception, r.SubMchID, r.AuthorizationType, r.BatchName}
	for _, in := range r.SceneReportInfos {
		values = append(values, in.InfoType, in.InfoContent)
	}
	for _, v := range values {
		if len([]rune(strings.TrimSpace(v))) > 1 && strings.Contains(err.Error(), v) {
			t.Fatalf("%q holds the value %q", err, v)
		}
	}
}

// TestRequest_ValidateFor_batchRails: transfer bills fields are refused on the batch API
// rails, each alone, naming its field.
func TestRequest_ValidateFor_batchRails(t *testing.T) {
	tests := []struct {
		name   string
		rail   string
		base   func() Request
		req    func(*Request)
		fields []string
	}{
		{"direct perception", RailDirect, direct, func(r *Request) { r.UserRecvPerception = "现金奖励" }, []string{"user_recv_perception"}},
		{"direct report rows", RailDirect, direct, func(r *Request) { r.SceneReportInfos = bill().SceneReportInfos },
			[]string{"transfer_scene_report_infos"}},
		{"partner perception", RailPartner, partner, func(r *Request) { r.UserRecvPerception = "现金奖励" }, []string{"user_recv_perception"}},
		{"partner report rows", RailPartner, partner, func(r *Request) { r.SceneReportInfos = bill().SceneReportInfos },
			[]string{"transfer_scene_report_infos"}},
		{"direct with sub_mchid", RailDirect, direct, func(r *Request) { r.SubMchID = "1900000110" }, []string{"sub_mchid"}},
		{"unknown rail", "cards", direct, func(*Request) {}, []string{"rail"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.base()
			if err := r.ValidateFor(tt.rail, DefaultLimits()); tt.rail != "cards" && err != nil {
				t.Fatalf("base request: %v", err)
			}
			tt.req(&r)
			err := r.ValidateFor(tt.rail, DefaultLimits())
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *ValidationError", err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.Field)
			}
			if !slices.Equal(got, tt.fields) {
				t.Fatalf("problems %v, want exactly on %v", ve.Problems, tt.fields)
			}
			assertNoValues(t, err, &r)
		})
	}
}

// TestRequest_Validate_isValidateForItsRail: Validate is ValidateFor(r.Rail(), l), so a bill
// request (scene 1000 is not a batch scene here, and it has bill fields) is refused by
// Validate, and a direct request is refused on the bills rail (no report rows).
func TestRequest_Validate_isValidateForItsRail(t *testing.T) {
	l := DefaultLimits()
	l.Scenes = []string{"1001"}
	for _, r := range []Request{bill(), direct(), partner()} {
		got, want := r.Validate(l), r.ValidateFor(r.Rail(), l)
		if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
			t.Fatalf("Validate = %v, ValidateFor(Rail) = %v", got, want)
		}
	}
	b := bill()
	if err := b.Validate(l); err == nil {
		t.Fatal("a bill request passes the batch rules")
	}
	d := direct()
	if err := d.ValidateFor(RailBills, l); err == nil {
		t.Fatal("a direct request passes the bills rules")
	}
}

// TestDefaultBillScenes pins the table and checks each call returns a fresh map.
func TestDefaultBillScenes(t *testing.T) {
	s := DefaultBillScenes()
	if got, want := s["1000"].ReportInfos, []string{"活动名称", "奖励说明"}; !slices.Equal(got, want) {
		t.Fatalf("1000 infos %v, want %v", got, want)
	}
	if got, want := s["1005"].Perceptions, []string{"劳务报酬", "报酬"}; !slices.Equal(got, want) {
		t.Fatalf("1005 perceptions %v, want %v", got, want)
	}
	delete(s, "1000")
	if _, ok := DefaultBillScenes()["1000"]; !ok {
		t.Fatal("DefaultBillScenes shares its map")
	}
	r := bill()
	if err := r.ValidateFor(RailBills, Limits{MinAmount: 1}); err != nil {
		t.Fatalf("nil BillScenes is not the default table: %v", err)
	}
}

// TestRequest_AppendContent_bills pins the encoding of the bill section and checks that it
// is absent without bill fields.
func TestRequest_AppendContent_bills(t *testing.T) {
	r := Request{OutDetailNo: "D1", MchID: "19", OpenID: "o", Amount: 100, Remark: "奖",
		UserRecvPerception: "奖", SceneReportInfos: []SceneReportInfo{{InfoType: "a", InfoContent: "bc"}}}
	head := "00000002" + "4431" + "00000002" + "3139" + "00000000" + "00000001" + "6f" +
		"00000003" + "313030" + "00000003" + "e5a596" + strings.Repeat("00000000", 9) +
		"00" // no name
	want := head +
		"00000003" + "e5a596" + // user_recv_perception "奖"
		"00000001" + // one report row
		"00000001" + "61" + "00000002" + "6263" // "a", "bc"
	if got := hex.EncodeToString(r.AppendContent(nil)); got != want {
		t.Fatalf("AppendContent = %s, want %s", got, want)
	}
	plain := r
	plain.UserRecvPerception, plain.SceneReportInfos = "", []SceneReportInfo{}
	if got := hex.EncodeToString(plain.AppendContent(nil)); got != head {
		t.Fatalf("without bill fields AppendContent = %s, want it to end at the name byte: %s", got, head)
	}
}

// TestMsgID_billFields: perception and report rows are content; moving text between them,
// across rows or across a row's two fields gives another id.
func TestMsgID_billFields(t *testing.T) {
	base := bill()
	id := MsgID(&base)
	differs := []struct {
		name string
		edit func(*Request)
	}{
		{"no perception", func(r *Request) { r.UserRecvPerception = "" }},
		{"other perception", func(r *Request) { r.UserRecvPerception = "活动奖励" }},
		{"no rows", func(r *Request) { r.SceneReportInfos = nil }},
		{"a row less", func(r *Request) { r.SceneReportInfos = r.SceneReportInfos[:1] }},
		{"rows swapped", func(r *Request) {
			r.SceneReportInfos = []SceneReportInfo{r.SceneReportInfos[1], r.SceneReportInfos[0]}
		}},
		{"content changed", func(r *Request) {
			r.SceneReportInfos = slices.Clone(r.SceneReportInfos)
			r.SceneReportInfos[1].InfoContent += "!"
		}},
		{"type/content boundary", func(r *Request) {
			r.SceneReportInfos = []SceneReportInfo{{InfoType: "活动名称新", InfoContent: "用户注册有礼"}, r.SceneReportInfos[1]}
		}},
		{"row boundary", func(r *Request) {
			r.SceneReportInfos = []SceneReportInfo{{InfoType: "活动名称", InfoContent: "新用户注册有礼奖励说明"}, {InfoContent: "注册完成奖励现金"}}
		}},
		{"perception into a row", func(r *Request) {
			r.SceneReportInfos = append([]SceneReportInfo{{InfoType: r.UserRecvPerception}}, r.SceneReportInfos...)
			r.UserRecvPerception = ""
		}},
	}
	seen := map[string]string{id: "base"}
	for _, tt := range differs {
		r := bill()
		tt.edit(&r)
		got := MsgID(&r)
		if prev, ok := seen[got]; ok {
			t.Fatalf("%s: MsgID %s equals that of %s", tt.name, got, prev)
		}
		seen[got] = tt.name
	}
	// An empty list and no list are the same request (both travel as no field).
	a, b := direct(), direct()
	b.SceneReportInfos = []SceneReportInfo{}
	if MsgID(&a) != MsgID(&b) {
		t.Fatal("an empty report list changes MsgID")
	}
}

const billJSON = `{"schema":"paystream.payout.v1","out_detail_no":"B0001","mchid":"1900000001",` +
	`"appid":"wxa0000000000000001","openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","amount":1000,"remark":"活动奖励",` +
	`"transfer_scene_id":"1000","user_recv_perception":"现金奖励","transfer_scene_report_infos":` +
	`[{"info_type":"活动名称","info_content":"新用户注册有礼"}, {"info_content":"注册完成奖励现金","info_type":"奖励说明"}]}`

func TestDecode_bills(t *testing.T) {
	r, err := Decode([]byte(billJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := bill()
	if got := r.UserRecvPerception; got != want.UserRecvPerception {
		t.Fatalf("user_recv_perception = %q, want %q", got, want.UserRecvPerception)
	}
	if !slices.Equal(r.SceneReportInfos, want.SceneReportInfos) {
		t.Fatalf("rows = %+v, want %+v", r.SceneReportInfos, want.SceneReportInfos)
	}
	if err := r.ValidateFor(RailBills, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Decode(out)
	if err != nil || MsgID(&r2) != MsgID(&r) {
		t.Fatalf("round trip: %v, MsgID %s vs %s", err, MsgID(&r2), MsgID(&r))
	}
	empty, err := Decode([]byte(`{"transfer_scene_report_infos":[ ]}`))
	if err != nil || len(empty.SceneReportInfos) != 0 {
		t.Fatalf("empty list: %+v, %v", empty.SceneReportInfos, err)
	}
}

func TestDecode_billsErrors(t *testing.T) {
	const secret = `"info_content":"秘密内容"`
	tests := []struct {
		name      string
		in        string
		wantErr   error
		wantField string
	}{
		{"unknown field in a row", `{"transfer_scene_report_infos":[{"info_type":"a",` + secret + `,"info_kind":"x"}]}`,
			ErrUnknownField, `transfer_scene_report_infos[0]."info_kind"`},
		{"unknown field in the second row", `{"transfer_scene_report_infos":[{"info_type":"a"},{"InfoType":"b"}]}`,
			ErrUnknownField, `transfer_scene_report_infos[1]."InfoType"`},
		{"duplicate key in a row", `{"transfer_scene_report_infos":[{` + secret + `,"info_type":"a",` + secret + `}]}`,
			ErrDuplicateKey, "transfer_scene_report_infos[0].info_content"},
		{"number in a row", `{"transfer_scene_report_infos":[{"info_type":1}]}`, ErrWrongType, "transfer_scene_report_infos[0].info_type"},
		{"null in a row", `{"transfer_scene_report_infos":[{"info_content":null}]}`, ErrWrongType, "transfer_scene_report_infos[0].info_content"},
		{"nested object in a row", `{"transfer_scene_report_infos":[{"info_content":{"a":1}}]}`, ErrWrongType, "transfer_scene_report_infos[0].info_content"},
		{"row not an object", `{"transfer_scene_report_infos":[{"info_type":"a"},"x"]}`, ErrWrongType, "transfer_scene_report_infos[1]"},
		{"row null", `{"transfer_scene_report_infos":[null]}`, ErrWrongType, "transfer_scene_report_infos[0]"},
		{"list null", `{"transfer_scene_report_infos":null}`, ErrWrongType, "transfer_scene_report_infos"},
		{"list an object", `{"transfer_scene_report_infos":{"info_type":"a"}}`, ErrWrongType, "transfer_scene_report_infos"},
		{"list duplicated", `{"transfer_scene_report_infos":[],"transfer_scene_report_infos":[]}`, ErrDuplicateKey, "transfer_scene_report_infos"},
		{"trailing comma in the list", `{"transfer_scene_report_infos":[{"info_type":"a"},]}`, ErrSyntax, ""},
		{"unterminated list", `{"transfer_scene_report_infos":[{"info_type":"a"}`, ErrSyntax, ""},
		{"perception a number", `{"user_recv_perception":1}`, ErrWrongType, "user_recv_perception"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %T, want *DecodeError", err)
			}
			if tt.wantField != "" && de.Field != tt.wantField {
				t.Fatalf("field = %q, want %q", de.Field, tt.wantField)
			}
			if strings.Contains(err.Error(), "秘密") {
				t.Fatalf("error text %q leaks a value", err)
			}
		})
	}
}

// TestDecode_billsBenchLineUnchanged guards the hot path: a batch product line still
// decodes without the bill fields.
func TestDecode_billsBenchLineUnchanged(t *testing.T) {
	r, err := Decode(benchLine)
	if err != nil || r.SceneReportInfos != nil || r.UserRecvPerception != "" {
		t.Fatalf("%+v, %v", r, err)
	}
	if !bytes.Contains(benchLine, []byte(`"transfer_scene_id"`)) {
		t.Fatal("bench line changed")
	}
}

func TestValidateBillScenes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scenes map[string]BillScene
		want   string // a substring of the error; "" for none
	}{
		{name: "the defaults", scenes: DefaultBillScenes()},
		{name: "none", scenes: nil},
		{name: "no report rows", scenes: map[string]BillScene{"1000": {}}, want: "report-infos: at least one"},
		{name: "a type listed twice", scenes: map[string]BillScene{"1000": {ReportInfos: []string{"活动名称", "活动名称"}}}, want: "report-infos[1]: listed twice"},
		{name: "a type too long", scenes: map[string]BillScene{"1000": {ReportInfos: []string{"一二三四五六七八九十一二三四五六"}}}, want: "report-infos[0]"},
		{name: "an empty perception", scenes: map[string]BillScene{"1000": {ReportInfos: []string{"活动名称"}, Perceptions: []string{""}}}, want: "perceptions[0]"},
		{name: "an empty scene id", scenes: map[string]BillScene{"": {ReportInfos: []string{"活动名称"}}}, want: "transfer_scene_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateBillScenes(tc.scenes)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("ValidateBillScenes = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("ValidateBillScenes = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
