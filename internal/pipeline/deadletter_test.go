package pipeline

import (
	"bytes"
	"strings"
	"testing"

	"github.com/paystream/paystream/pkg/payout"
)

func TestDeadLetterBody(t *testing.T) {
	const name = "张三丰"
	big := append([]byte(`{"remark":"`), append(bytes.Repeat([]byte("a"), 1<<20-100), `"}`...)...)
	tests := []struct {
		name     string
		data     []byte
		wantBody []byte // nil: only the checks below
		wantNote string // prefix
	}{
		{name: "valid request kept as is", data: []byte(`{"out_detail_no":"A1","amount":100}`), wantBody: []byte(`{"out_detail_no":"A1","amount":100}`)},
		{name: "plaintext name removed", data: []byte(`{"out_detail_no":"A1","user_name":"` + name + `","amount":1.5}`),
			wantBody: []byte(`{"amount":1.5,"out_detail_no":"A1"}`), wantNote: "user_name removed"},
		{name: "escaped key removed too", data: []byte(`{"user\u005fname":"` + name + `"}`), wantBody: []byte(`{}`), wantNote: "user_name removed"},
		{name: "nested and repeated", data: []byte(`{"x":[{"user_name":"` + name + `"}],"user_name":"a","user_name":"` + name + `"}`),
			wantBody: []byte(`{"x":[{}]}`), wantNote: "user_name removed"},
		{name: "cipher is not a name", data: []byte(`{"user_name_cipher":"QUJD","wechatpay_serial":"K"}`),
			wantBody: []byte(`{"user_name_cipher":"QUJD","wechatpay_serial":"K"}`)},
		{name: "broken JSON that may hold a name is withheld", data: []byte(`{"user_name":"` + name + `"`), wantNote: "withheld"},
		{name: "broken JSON with an escape is withheld", data: []byte(`{"\u0075ser_name":"` + name + `",`), wantNote: "withheld"},
		{name: "broken JSON without a name is kept", data: []byte(`{"out_detail_no":"X1"`), wantBody: []byte(`{"out_detail_no":"X1"`)},
		{name: "oversized body is cut", data: big, wantNote: "truncated: 1048489 bytes, first 65536 kept"},
		{name: "cut at a rune boundary", data: []byte(`"` + strings.Repeat("活", 30000)), wantNote: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, note := deadLetterBody(tt.data, 64<<10)
			if tt.wantBody != nil && !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body %s, want %s", body, tt.wantBody)
			}
			if !strings.HasPrefix(note, tt.wantNote) || (tt.wantNote == "" && note != "") {
				t.Errorf("note %q, want %q…", note, tt.wantNote)
			}
			if len(body) > 64<<10 {
				t.Errorf("body of %d bytes over the limit", len(body))
			}
			if bytes.Contains(body, []byte(name)) {
				t.Errorf("the real name rests in the dead letter: %s", body)
			}
			if !bytes.Equal(body, bytes.ToValidUTF8(body, nil)) {
				t.Errorf("body cut inside a character")
			}
		})
	}
}

func TestMerchant_Refuse(t *testing.T) {
	m := Merchant{MchID: "1900000001", SubMchIDs: []string{"1900000101"}}
	const prefix = "payouts.requests"
	tests := []struct {
		name, subject, mchID, subMchID string
		want                           string // substring of the reason; "" = accepted
	}{
		{name: "ours", subject: "payouts.requests.1900000001", mchID: "1900000001"},
		{name: "our sub-merchant", subject: "payouts.requests.1900000001", mchID: "1900000001", subMchID: "1900000101"},
		{name: "another merchant", subject: "payouts.requests.1900000002", mchID: "1900000002", want: "not this processor's merchant"},
		{name: "subject and body disagree", subject: "payouts.requests.1900000003", mchID: "1900000001", want: "the subject must be"},
		{name: "extra subject token", subject: "payouts.requests.1900000001.x", mchID: "1900000001", want: "the subject must be"},
		{name: "unknown sub-merchant", subject: "payouts.requests.1900000001", mchID: "1900000001", subMchID: "1900000102", want: "not among"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := payout.Request{MchID: tt.mchID, SubMchID: tt.subMchID}
			got := m.refuse(prefix, tt.subject, &r)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("refuse = %q, want %q", got, tt.want)
			}
		})
	}
	r := payout.Request{MchID: "1900000001", SubMchID: "1900000101"}
	if got := (Merchant{MchID: "1900000001"}).refuse(prefix, "payouts.requests.1900000001", &r); !strings.Contains(got, "no partner setup") {
		t.Fatalf("partner request without partner setup: %q", got)
	}
}
