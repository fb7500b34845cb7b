package payout

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const validJSON = `{"schema":"paystream.payout.v1","out_detail_no":"D0001","mchid":"1900000001",` +
	`"appid":"wxa0000000000000001","openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","amount":250000,` +
	`"remark":"活动奖励","user_name":"张三","transfer_scene_id":"1001","source":"crm",` +
	`"created_at":"2025-03-01T10:00:00+08:00"}`

func TestDecode(t *testing.T) {
	r, err := Decode([]byte(validJSON))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Amount, int64(250000); got != want {
		t.Fatalf("amount = %d, want %d", got, want)
	}
	if got, want := r.UserName, "张三"; got != want {
		t.Fatalf("user_name = %q, want %q", got, want)
	}
	if got, want := r.CreatedAt, time.Date(2025, 3, 1, 2, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("created_at = %v, want %v", got, want)
	}
	if err := r.Validate(DefaultLimits()); err != nil {
		t.Fatal(err)
	}
}

// sealedJSON carries a sealed name (user_name_cipher and wechatpay_serial) instead of
// user_name; the cipher is well-formed, not a real ciphertext.
var sealedJSON = strings.Replace(validJSON, `"user_name":"张三"`,
	`"user_name_cipher":"`+cipherOf(256)+`","wechatpay_serial":"`+testSerial+`"`, 1)

func TestDecode_sealedName(t *testing.T) {
	l := DefaultLimits()
	l.EncryptedNamesOnly = true
	r, err := DecodeAndValidate([]byte(sealedJSON), l)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.UserNameCipher, cipherOf(256); got != want {
		t.Fatalf("user_name_cipher = %q, want %q", got, want)
	}
	if got, want := r.WechatpaySerial, testSerial; got != want {
		t.Fatalf("wechatpay_serial = %q, want %q", got, want)
	}
	if r.UserName != "" {
		t.Fatalf("user_name = %q, want empty", r.UserName)
	}
}

func TestDecode_errors(t *testing.T) {
	secret := `"openid":"SECRET_OPENID","user_name":"王秘密"`
	tests := []struct {
		name      string
		in        string
		wantErr   error
		wantField string
	}{
		{"empty", ``, ErrSyntax, ""},
		{"not an object", `[1,2]`, ErrSyntax, ""},
		{"string", `"x"`, ErrSyntax, ""},
		{"truncated", `{"amount":1`, ErrSyntax, ""},
		{"trailing data", `{"amount":1} {}`, ErrSyntax, ""},
		{"trailing garbage", `{"amount":1}x`, ErrSyntax, ""},
		{"bad syntax", `{"amount":1,,}`, ErrSyntax, ""},
		{"too large", `{"remark":"` + strings.Repeat("a", MaxMessageSize) + `"}`, ErrTooLarge, ""},
		{"invalid utf-8", "{\"remark\":\"\xff\"}", ErrInvalidUTF8, ""},
		{"unknown field", `{` + secret + `,"amont":100}`, ErrUnknownField, `"amont"`},
		{"field case differs", `{"Amount":100}`, ErrUnknownField, `"Amount"`},
		{"duplicate key", `{"amount":100,` + secret + `,"amount":1}`, ErrDuplicateKey, "amount"},
		{"duplicate openid", `{` + secret + `,"openid":"x"}`, ErrDuplicateKey, "openid"},
		{"float amount", `{"amount":100.5}`, ErrNotInteger, "amount"},
		{"float amount .0", `{"amount":100.0}`, ErrNotInteger, "amount"},
		{"exponent amount", `{"amount":1e3}`, ErrNotInteger, "amount"},
		{"string amount", `{"amount":"100"}`, ErrWrongType, "amount"},
		{"null amount", `{"amount":null}`, ErrWrongType, "amount"},
		{"amount above int64", `{"amount":9223372036854775808}`, ErrOutOfRange, "amount"},
		{"amount below int64", `{"amount":-9223372036854775809}`, ErrOutOfRange, "amount"},
		{"number for string", `{"openid":12345}`, ErrWrongType, "openid"},
		{"object for string", `{"remark":{"a":1}}`, ErrWrongType, "remark"},
		{"null string", `{"user_name":null}`, ErrWrongType, "user_name"},
		{"null cipher", `{"user_name_cipher":null}`, ErrWrongType, "user_name_cipher"},
		{"number serial", `{"wechatpay_serial":1}`, ErrWrongType, "wechatpay_serial"},
		{"duplicate cipher", `{"user_name_cipher":"QQ==",` + secret + `,"user_name_cipher":"Qg=="}`, ErrDuplicateKey, "user_name_cipher"},
		{"bad time", `{"created_at":"yesterday"}`, ErrWrongType, "created_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v does not match ErrMalformed", err)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %T, want *DecodeError", err)
			}
			if de.Field != tt.wantField {
				t.Fatalf("field = %q, want %q", de.Field, tt.wantField)
			}
			for _, leak := range []string{"SECRET_OPENID", "王秘密"} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error text %q leaks %q", err, leak)
				}
			}
		})
	}
}

func TestDecode_unknownKeyIsQuotedAndCut(t *testing.T) {
	_, err := Decode([]byte(`{"` + strings.Repeat("k", 100) + `\n":1}`))
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v", err)
	}
	if strings.ContainsAny(err.Error(), "\n\r") || len(de.Field) > 50 {
		t.Fatalf("field %q not quoted and cut", de.Field)
	}
}

func TestDecodeAndValidate(t *testing.T) {
	_, err := DecodeAndValidate([]byte(`{"schema":"paystream.payout.v1","amount":5}`), DefaultLimits())
	var ve *ValidationError
	if !errors.As(err, &ve) || !ve.Has("amount") || !ve.Has("openid") {
		t.Fatalf("err = %v, want problems with amount and openid", err)
	}
	if _, err := DecodeAndValidate([]byte(`{"amount":5.5}`), DefaultLimits()); !errors.Is(err, ErrNotInteger) {
		t.Fatalf("err = %v, want ErrNotInteger", err)
	}
}

// FuzzDecode: Decode never panics, every error is a *DecodeError naming a known field (or
// none) and matching ErrMalformed, a decoded request survives a JSON round trip with its
// MsgID, and NewMessage publishes it unless it holds a plaintext name.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(validJSON))
	f.Add([]byte(sealedJSON))
	f.Add([]byte(`{"amount":1e400}`))
	f.Add([]byte(`{"remark":"\ud800"}`))
	f.Add([]byte(`{"amount":-0}`))
	f.Add([]byte(billJSON))
	f.Add([]byte(`{"transfer_scene_report_infos":[{"info_type":"\u6d3b","info_content":"a\ud800"},{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %#v, want *DecodeError", err)
			}
			if _, known := fields[de.Field]; de.Field != "" && !known && !strings.HasPrefix(de.Field, `"`) &&
				!strings.HasPrefix(de.Field, "transfer_scene_report_infos[") {
				t.Fatalf("field %q neither known nor quoted", de.Field)
			}
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if r2.Amount != r.Amount || r2.OpenID != r.OpenID || r2.Remark != r.Remark || !r2.CreatedAt.Equal(r.CreatedAt) ||
			r2.UserName != r.UserName || r2.UserNameCipher != r.UserNameCipher || r2.WechatpaySerial != r.WechatpaySerial ||
			r2.UserRecvPerception != r.UserRecvPerception || !slices.Equal(r2.SceneReportInfos, r.SceneReportInfos) {
			t.Fatalf("round trip changed the request: %+v vs %+v", r, r2)
		}
		if got, want := MsgID(&r2), MsgID(&r); got != want {
			t.Fatalf("round trip changed MsgID: %s vs %s", got, want)
		}
		msg, err := NewMessage(r)
		if r.UserName != "" {
			if !errors.Is(err, ErrPlaintextName) {
				t.Fatalf("NewMessage with a plaintext name: err = %v, want ErrPlaintextName", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg.Payload, out) || msg.UUID != MsgID(&r) {
			t.Fatalf("NewMessage = %s %s, want %s %s", msg.UUID, msg.Payload, MsgID(&r), out)
		}
	})
}

// TestStringDests: each kindString field of fieldList decodes into the Request field whose
// JSON name it is (encoding/json, reading the struct tags, is the judge), and only those have
// a destination.
func TestStringDests(t *testing.T) {
	for i, f := range fieldList {
		var r Request
		dst := stringDests(&r)[i]
		if (dst != nil) != (f.kind == kindString) {
			t.Fatalf("field %s (kind %d): destination %v", f.name, f.kind, dst)
		}
		if dst == nil {
			continue
		}
		*dst = "marker"
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range m {
			if (v == "marker") != (k == f.name) {
				t.Fatalf("field %s decodes into the Request field named %q (%v)", f.name, k, v)
			}
		}
		if m[f.name] != "marker" {
			t.Fatalf("field %s: not decoded into its own field: %s", f.name, b)
		}
	}
}

// TestDecode_NoRequestOnTheHeap: Decode of a valid request allocates once, the copy of the
// message its strings share: the Request stays on the stack (it went to the heap, 376 bytes a
// message, while fields were set through functions).
func TestDecode_NoRequestOnTheHeap(t *testing.T) {
	data := []byte(validJSON)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := Decode(data); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Fatalf("%v allocations per Decode of a valid request, want 1 (the message's copy)", n)
	}
}
