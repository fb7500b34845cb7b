package ledger

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// railBodies returns create bodies as the rails encode them (wechatpay.MarshalBody, a trailing
// newline and HTML escaping included; the transfer-bills manifest with json.Marshal): direct
// and partner, with names, remarks that need escaping and ciphertexts.
func railBodies(t testing.TB) map[string][]byte {
	t.Helper()
	direct := wechatpay.CreateBatchRequest{AppID: "wxa0000000000000001", BatchName: "活动奖励 <12月>", BatchRemark: "B&R \"quoted\"",
		NotifyURL: "https://example.com/notify?a=1&b=2", OutBatchNo: "B1A2C3", TotalNum: 3, TransferSceneID: "1001"}
	partner := wechatpay.PartnerCreateBatchRequest{AuthorizationType: "INFORMATION_AUTHORIZATION_TYPE", BatchName: "返佣",
		BatchRemark: "\\ back\tslash", OutBatchNo: "P0000000000000000000000000001", SubAppID: "wxsub", SubMchID: "1900000110",
		TotalNum: 3, TransferScene: "ORDINARY_TRANSFER"}
	type entry struct {
		OutDetailNo string `json:"out_detail_no"`
		Amount      int64  `json:"transfer_amount"`
	}
	manifest := struct {
		OutBatchNo  string  `json:"out_batch_no"`
		TotalAmount int64   `json:"total_amount"`
		TotalNum    int     `json:"total_num"`
		Details     []entry `json:"transfer_detail_list"`
	}{OutBatchNo: "M1", TotalNum: 3}
	for i, amount := range []int64{1, 123456789, 30} {
		key := "D" + strconv.Itoa(i) + "x9"
		direct.TotalAmount += wechatpay.Fen(amount)
		direct.TransferDetailList = append(direct.TransferDetailList, wechatpay.TransferDetailInput{OpenID: "o-" + key,
			OutDetailNo: key, TransferAmount: wechatpay.Fen(amount), TransferRemark: "奖励\u2028<b>", UserName: "c2lnbmVk+/=="})
		partner.TotalAmount += wechatpay.Fen(amount)
		partner.TransferDetailList = append(partner.TransferDetailList, wechatpay.PartnerTransferDetailInput{OpenID: "o" + key,
			OutDetailNo: key, TransferAmount: wechatpay.Fen(amount), TransferRemark: "", UserIDCard: "aWQ=", UserName: "bmFtZQ=="})
		manifest.TotalAmount += amount
		manifest.Details = append(manifest.Details, entry{key, amount})
	}
	out := map[string][]byte{}
	for name, v := range map[string]any{"direct": direct, "partner": partner} {
		b, err := wechatpay.MarshalBody(v)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	b, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	out["manifest"] = b
	return out
}

// TestScanBody_RailBodies: the bodies the rails write take scanBody's fast path and read as
// json.Unmarshal reads them; a body outside its shape is left to json.Unmarshal.
func TestScanBody_RailBodies(t *testing.T) {
	for name, body := range railBodies(t) {
		got, ok := scanBody(body)
		var want createBody
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !ok || !reflect.DeepEqual(got, want) || len(got.Details) != 3 || got.TotalAmount == 0 {
			t.Errorf("%s: scanBody = %+v, %v; json.Unmarshal = %+v", name, got, ok, want)
		}
	}
	for _, body := range []string{
		` {"out_batch_no":"B1"}`,                    // white space before
		`{"out_batch_no":"B1","OUT_BATCH_NO":"B2"}`, // a case variant json.Unmarshal matches
		`{"out_batch_no":"B1","out_batch_no":"B2"}`, // twice: json.Unmarshal keeps the last
		`{"total_amount":1.0}`,                      // a float
		`{"total_amount":null}`,                     // null
		`{"out_batch_no":"B\u0031"}`,                // an escape in a value read
		`{"transfer_detail_list":[{"out_detail_no":"a","Transfer_Amount":5}]}`,
		"{\"out_batch_no\":\"B\xff\"}",       // invalid UTF-8 in a value read: json.Unmarshal replaces it
		`{"appid":{"nested":1}}`,             // a nested value to skip
		`{"total_num":99999999999999999999}`, // out of range
	} {
		if _, ok := scanBody([]byte(body)); ok {
			t.Errorf("scanBody(%s) took the fast path", body)
		}
	}
}

// FuzzScanBody: whenever scanBody takes its fast path, json.Unmarshal accepts the body and
// reads the same createBody (so the ledger checks what WeChat would read).
func FuzzScanBody(f *testing.F) {
	for _, b := range railBodies(f) {
		f.Add(b)
	}
	for _, s := range []string{`{}`, `{"out_batch_no":"B","total_amount":-0,"total_num":0,"transfer_detail_list":[]}`,
		`{"x":"\ud800\u00e9\"","y":-1.5e+3,"z":true,"w":false,"transfer_detail_list":[{"out_detail_no":"k","transfer_amount":7,"q":"r"}]}`,
		`{"total_num":9223372036854775807}`, `{"out_batch_no":"ſ"}`, `{"out_batch_no":"B"}` + "\n\t "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := scanBody(body)
		if !ok {
			return
		}
		var want createBody
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("scanBody took %q; json.Unmarshal refuses it: %v", body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: scanBody read %+v, json.Unmarshal %+v", body, got, want)
		}
	})
}
