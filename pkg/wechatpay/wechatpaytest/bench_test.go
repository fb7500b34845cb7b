package wechatpaytest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// signedRequest builds a request as the client would send it, signed at srv's time.
func signedRequest(b *testing.B, srv *Server, method, uri string, body []byte) *http.Request {
	r := httptest.NewRequest(method, uri, strings.NewReader(string(body)))
	r.Header.Set("Authorization", authHeader(b, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, method, uri, srv.now().Unix(), body))
	return r
}

func benchServer(b *testing.B) (*Server, *clock) {
	c := newClock()
	o := DefaultOptions()
	o.Now, o.RateLimit = c.Now, 0
	srv, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	return srv, c
}

func serve(b *testing.B, srv *Server, r *http.Request) {
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, r)
	if w.Code != 200 {
		b.Fatalf("HTTP %d %s", w.Code, w.Body)
	}
}

// BenchmarkCreatePartner3000 is the server work of a 3000-detail create: verify, decode,
// validate, commit, encode, sign.
func BenchmarkCreatePartner3000(b *testing.B) {
	srv, _ := benchServer(b)
	direct := batchBody("X", wechatpay.MaxDetailsPartner, 100)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		no := fmt.Sprintf("BENCH%d", i)
		req := &wechatpay.PartnerCreateBatchRequest{
			AuthorizationType: wechatpay.AuthorizationInformation, SubAppID: DefaultAppID, SubMchID: "1900000109",
			OutBatchNo: no, BatchName: "bench", BatchRemark: "bench", TotalAmount: direct.TotalAmount, TotalNum: direct.TotalNum,
		}
		for j, d := range direct.TransferDetailList {
			req.TransferDetailList = append(req.TransferDetailList, wechatpay.PartnerTransferDetailInput{OpenID: d.OpenID, OutDetailNo: fmt.Sprintf("%sD%d", no, j), TransferAmount: d.TransferAmount, TransferRemark: d.TransferRemark})
		}
		r := signedRequest(b, srv, "POST", "/v3/partner-transfer/batches", mustJSON(b, req))
		b.StartTimer()
		serve(b, srv, r)
	}
}

// BenchmarkPage100 is the server work of one 100-row page of a finished 1000-detail batch.
func BenchmarkPage100(b *testing.B) {
	srv, clk := benchServer(b)
	serve(b, srv, signedRequest(b, srv, "POST", "/v3/transfer/batches", mustJSON(b, batchBody("PAGE", 1000, 100))))
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		r := signedRequest(b, srv, "GET", fmt.Sprintf("/v3/transfer/batches/out-batch-no/PAGE?detail_status=ALL&limit=100&need_query_detail=true&offset=%d", i%10*100), nil)
		b.StartTimer()
		serve(b, srv, r)
	}
}

// BenchmarkSign is the RSA signing every answer pays, for subtracting from the above.
func BenchmarkSign(b *testing.B) {
	srv, _ := benchServer(b)
	body := []byte(`{"out_batch_no":"X","batch_id":"1","create_time":"2025-01-15T12:00:00+08:00"}`)
	for b.Loop() {
		if _, err := srv.signature("1736913600", "nonce", body); err != nil {
			b.Fatal(err)
		}
	}
}
