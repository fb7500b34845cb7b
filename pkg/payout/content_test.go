package payout

import (
	"bytes"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRequest_AppendContent pins the canonical encoding: other producers and the processor
// reproduce it byte for byte.
func TestRequest_AppendContent(t *testing.T) {
	r := Request{OutDetailNo: "D1", MchID: "19", OpenID: "o", Amount: 100, Remark: "奖", UserName: "张三",
		Schema: SchemaV1, Source: "crm", CreatedAt: time.Unix(1, 0), WechatpaySerial: "S"}
	want := "00000002" + "4431" + // out_detail_no "D1"
		"00000002" + "3139" + // mchid "19"
		"00000000" + // appid ""
		"00000001" + "6f" + // openid "o"
		"00000003" + "313030" + // amount 100, decimal
		"00000003" + "e5a596" + // remark "奖"
		strings.Repeat("00000000", 9) + // transfer_scene_id … transfer_scene, all ""
		"01" // a name is present
	if got := hex.EncodeToString(r.AppendContent(nil)); got != want {
		t.Fatalf("AppendContent = %s, want %s", got, want)
	}
	prefix := []byte("prefix")
	if got := r.AppendContent(prefix[:len(prefix):len(prefix)]); !bytes.HasPrefix(got, prefix) {
		t.Fatal("AppendContent does not append")
	}
}

func TestMsgID(t *testing.T) {
	base := direct()
	id := MsgID(&base)
	if !regexp.MustCompile(`^D0001\.[0-9a-f]{24}$`).MatchString(id) {
		t.Fatalf("MsgID = %q, want out_detail_no.<24 hex digits>", id)
	}
	// Pinned: a change of the encoding changes every id, and re-publishes after an upgrade
	// would no longer be duplicates.
	if got, want := id, "D0001.be3f61620942ba5b95157d69"; got != want {
		t.Fatalf("MsgID(direct()) = %s, want %s", got, want)
	}

	same := []struct {
		name string
		edit func(*Request)
	}{
		{"schema", func(r *Request) { r.Schema = "" }},
		{"source", func(r *Request) { r.Source = "other" }},
		{"created_at", func(r *Request) { r.CreatedAt = time.Now() }},
		{"sealed instead of plaintext", func(r *Request) { r.UserName = "" }},
		{"another ciphertext", func(r *Request) { r.UserNameCipher = cipherOf(128) }},
		{"another key id", func(r *Request) { r.WechatpaySerial = "OTHER" }},
	}
	named := direct()
	named.UserName = "张三"
	namedID := MsgID(&named)
	for _, tt := range same {
		t.Run("same "+tt.name, func(t *testing.T) {
			r := named
			sealed(&r)
			tt.edit(&r)
			if got := MsgID(&r); got != namedID {
				t.Fatalf("MsgID = %s, want %s", got, namedID)
			}
		})
	}

	differs := []struct {
		name string
		edit func(*Request)
	}{
		{"out_detail_no", func(r *Request) { r.OutDetailNo = "D0002" }},
		{"mchid", func(r *Request) { r.MchID = "1900000002" }},
		{"appid", func(r *Request) { r.AppID = "wxa2" }},
		{"openid", func(r *Request) { r.OpenID = "o2" }},
		{"amount", func(r *Request) { r.Amount++ }},
		{"remark", func(r *Request) { r.Remark = "佣金" }},
		{"transfer_scene_id", func(r *Request) { r.SceneID = "1005" }},
		{"batch_name", func(r *Request) { r.BatchName = "b" }},
		{"batch_remark", func(r *Request) { r.BatchRemark = "b" }},
		{"sub_mchid", func(r *Request) { r.SubMchID = "1900000110" }},
		{"sub_appid", func(r *Request) { r.SubAppID = "wxs" }},
		{"sp_appid", func(r *Request) { r.SpAppID = "wxsp" }},
		{"authorization_type", func(r *Request) { r.AuthorizationType = AuthFund }},
		{"transfer_purpose", func(r *Request) { r.TransferPurpose = "COMMISSION" }},
		{"transfer_scene", func(r *Request) { r.TransferScene = "ORDINARY_TRANSFER" }},
		{"a name", func(r *Request) { r.UserName = "张三" }},
		{"a sealed name", sealed},
		{"field boundary", func(r *Request) { r.Remark, r.SceneID = r.Remark+r.SceneID, "" }},
	}
	for _, tt := range differs {
		t.Run("differs "+tt.name, func(t *testing.T) {
			r := base
			tt.edit(&r)
			if got := MsgID(&r); got == id {
				t.Fatalf("MsgID unchanged: %s", got)
			}
		})
	}
}

// TestRequest_AppendContent_leavesNameOut: neither the name nor its ciphertext reaches the
// content (a digest of it would open the name to a dictionary attack).
func TestRequest_AppendContent_leavesNameOut(t *testing.T) {
	r := direct()
	r.UserName = "欧阳娜娜"
	if bytes.Contains(r.AppendContent(nil), []byte(r.UserName)) {
		t.Fatal("content holds the plaintext name")
	}
	r.UserName = ""
	sealed(&r)
	if bytes.Contains(r.AppendContent(nil), []byte(r.UserNameCipher[:16])) {
		t.Fatal("content holds the ciphertext")
	}
}
