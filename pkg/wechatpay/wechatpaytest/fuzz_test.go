package wechatpaytest

import (
	"errors"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// FuzzCreateBatch feeds arbitrary bodies to the create endpoint: it never panics, refuses
// with a 4xx code of docs/wechatpay.md §4, or creates a batch whose totals are the details' own.
func FuzzCreateBatch(f *testing.F) {
	f.Add([]byte(`{"appid":"wx","out_batch_no":"B1","batch_name":"n","batch_remark":"r","total_amount":100,"total_num":1,"transfer_detail_list":[{"openid":"o","out_detail_no":"D1","transfer_amount":100,"transfer_remark":"r"}]}`))
	f.Add([]byte(`{"appid":"wx","out_batch_no":"B2","batch_name":"名","batch_remark":"r","total_amount":200,"total_num":2,"transfer_detail_list":[{"openid":"fail-X-1","out_detail_no":"D1","transfer_amount":100,"transfer_remark":"r"},{"openid":"o","out_detail_no":"D1","transfer_amount":100,"transfer_remark":"r"}]}`))
	o := DefaultOptions()
	o.RateLimit = 0
	srv, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, body []byte) {
		c := &call{r: httptest.NewRequest("POST", "/v3/transfer/batches", nil), body: body, now: srv.now(), endpoint: EndpointCreateBatch}
		res, err := srv.createBatch(c)
		if err != nil {
			var ae *wechatpay.APIError
			if !errors.As(err, &ae) || ae.StatusCode != 400 || (ae.Code != "PARAM_ERROR" && ae.Code != "INVALID_REQUEST") {
				t.Fatalf("error %v", err)
			}
			return
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		b := srv.idx.byID[res.(*wechatpay.CreateBatchResponse).BatchID]
		var sum wechatpay.Fen
		for _, d := range b.Req.Details {
			if d.Amount < o.MinAmount || !isOutNo(d.OutDetailNo) {
				t.Fatalf("accepted detail %+v", d)
			}
			sum += d.Amount
		}
		if sum != b.Req.TotalAmount || len(b.Req.Details) != b.Req.TotalNum || b.Req.TotalNum > o.MaxDetailsDirect || !isOutNo(b.Req.OutBatchNo) {
			t.Fatalf("accepted batch %+v", b.Req)
		}
	})
}

// FuzzBatchQuery checks that query parsing accepts only what docs/wechatpay.md §8 allows.
func FuzzBatchQuery(f *testing.F) {
	f.Add("need_query_detail=true&offset=0&limit=100&detail_status=ALL")
	f.Add("need_query_detail=false")
	f.Add("need_query_detail=true&limit=19&detail_status=FAIL")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseBatchQuery(v)
		if err != nil {
			var ae *wechatpay.APIError
			if !errors.As(err, &ae) || ae.Code != "PARAM_ERROR" {
				t.Fatalf("error %v", err)
			}
			return
		}
		if q.Offset < 0 || q.Limit < wechatpay.MinQueryLimit || q.Limit > wechatpay.MaxQueryLimit || q.NeedQueryDetail && q.DetailStatus == "" {
			t.Fatalf("accepted %+v from %q", q, raw)
		}
	})
}
