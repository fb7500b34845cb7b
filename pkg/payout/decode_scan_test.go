package payout

import (
	"encoding/json"
	"slices"
	"testing"
)

// FuzzDecode_agreesWithEncodingJSON checks Decode's hand-written scanner against
// encoding/json: what Decode accepts is valid JSON, and every string field holds what
// encoding/json decodes from it (escapes, surrogates); what encoding/json calls invalid,
// Decode refuses.
func FuzzDecode_agreesWithEncodingJSON(f *testing.F) {
	f.Add([]byte(validJSON))
	f.Add([]byte(`{"remark":"a\u00e9\ud83d\ude00\ud800x\/\"\\\b\f\n\r\t"}`))
	f.Add([]byte(`{"remark":"\ud800\u0041"}`))
	f.Add([]byte(` { "amount" : -0 , "openid" : "o" } `))
	f.Add([]byte(`{"amount":01}`))
	f.Add([]byte(`{"\u0061mount":5}`))
	f.Add([]byte(sealedJSON))
	f.Add([]byte(`{"user_name_cipher":"QUJD\u0044\/+==","wechatpay_serial":"PUB_KEY_ID_\u0031"}`))
	f.Add([]byte(`{"user_name_cipher":"QUJD\r\nRA==","user_name":"\u5f20\u4e09"}`))
	f.Add([]byte(billJSON))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Decode accepted invalid JSON %q", data)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		for name, raw := range m {
			f, dst := fieldList[fields[name]], stringDests(&r)[fields[name]]
			if f.kind == kindInfos {
				var want []SceneReportInfo
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatalf("%s: encoding/json: %v", name, err)
				}
				if !slices.Equal(r.SceneReportInfos, want) {
					t.Fatalf("%s = %q, encoding/json says %q", name, r.SceneReportInfos, want)
				}
			}
			if f.kind != kindString {
				continue
			}
			var want string
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("%s: encoding/json: %v", name, err)
			}
			if got := *dst; got != want {
				t.Fatalf("%s = %q, encoding/json says %q", name, got, want)
			}
		}
	})
}

func TestDecode_escapes(t *testing.T) {
	r, err := Decode([]byte(`{"remark":"a\u00e9\ud83d\ude00\ud800x\"","openid":"\u006f1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Remark, "aé😀\uFFFDx\""; got != want {
		t.Fatalf("remark = %q, want %q", got, want)
	}
	if got, want := r.OpenID, "o1"; got != want {
		t.Fatalf("openid = %q, want %q", got, want)
	}
}
