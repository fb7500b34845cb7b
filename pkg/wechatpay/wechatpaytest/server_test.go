package wechatpaytest

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// manual is a server whose clock only moves when the test says.
func manual(t *testing.T, opts ...Option) (*Server, *clock) {
	t.Helper()
	c := newClock()
	srv := NewServer(t, append([]Option{WithClock(c.Now), WithSpeed(1), WithRateLimit(0)}, opts...)...)
	return srv, c
}

func TestServer_SignErrors(t *testing.T) {
	srv, _ := manual(t)
	body := mustJSON(t, batchBody("B1", 2, 100))
	now := srv.now().Unix()
	const uri = "/v3/transfer/batches"
	for _, tc := range []struct {
		name string
		auth string
		send []byte
	}{
		{"wrong key", authHeader(t, PlatformPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri, now, body), body},
		{"stale timestamp", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri, now-301, body), body},
		{"future timestamp", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri, now+301, body), body},
		{"changed body", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri, now, body), append([]byte(" "), body...)},
		{"other uri signed", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri+"?a=1", now, body), body},
		{"other method signed", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "PUT", uri, now, body), body},
		{"wrong mchid", authHeader(t, MerchantPrivateKey(), "1900000002", DefaultMerchantSerial, "POST", uri, now, body), body},
		{"wrong serial", authHeader(t, MerchantPrivateKey(), DefaultMchID, "OTHERSERIAL", "POST", uri, now, body), body},
		{"probe signature", strings.Replace(authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri, now, body), `signature="`, `signature="WECHATPAY/SIGNTEST/`, 1), body},
		{"missing", "", body},
		{"other scheme", "Bearer x", body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := send(t, srv, "POST", uri, tc.send, func(r *http.Request) { r.Header.Set("Authorization", tc.auth) })
			if rep.status != 401 || rep.code() != "SIGN_ERROR" {
				t.Fatalf("HTTP %d %s, want 401 SIGN_ERROR", rep.status, rep.body)
			}
		})
	}
	t.Run("299 s old is fine", func(t *testing.T) {
		rep := send(t, srv, "POST", uri, body, func(r *http.Request) {
			r.Header.Set("Authorization", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "POST", uri, now-299, body))
		})
		if rep.status != 200 {
			t.Fatalf("HTTP %d %s", rep.status, rep.body)
		}
	})
	if got := len(srv.Batches()); got != 1 {
		t.Fatalf("%d batches after the rejected requests, want 1", got)
	}
	if got, want := srv.Stats().SignErrors, 11; got != want {
		t.Fatalf("SignErrors = %d, want %d", got, want)
	}
}

func TestServer_CreateValidation(t *testing.T) {
	srv, _ := manual(t, WithBalance(1_000_000_000))
	enc := func(name string) string {
		ct, err := wechatpay.EncryptOAEP(nil, PlatformPublicKey(), name)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	for _, tc := range []struct {
		name   string
		edit   func(r *wechatpay.CreateBatchRequest)
		raw    string // sent instead of the request when not empty
		serial string
		want   string // code; "" = 200
	}{
		{name: "valid"},
		{name: "batch_name of 32 Chinese characters", edit: func(r *wechatpay.CreateBatchRequest) { r.BatchName = strings.Repeat("佣", 32) }},
		{name: "batch_name of 33 characters", edit: func(r *wechatpay.CreateBatchRequest) { r.BatchName = strings.Repeat("佣", 33) }, want: "PARAM_ERROR"},
		{name: "empty batch_remark", edit: func(r *wechatpay.CreateBatchRequest) { r.BatchRemark = "" }, want: "PARAM_ERROR"},
		{name: "remark of 33 characters", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].TransferRemark = strings.Repeat("a", 33)
		}, want: "PARAM_ERROR"},
		{name: "out_batch_no with a dash", edit: func(r *wechatpay.CreateBatchRequest) { r.OutBatchNo = "B-1" }, want: "PARAM_ERROR"},
		{name: "out_batch_no of 33", edit: func(r *wechatpay.CreateBatchRequest) { r.OutBatchNo = strings.Repeat("B", 33) }, want: "PARAM_ERROR"},
		{name: "out_detail_no with an underscore", edit: func(r *wechatpay.CreateBatchRequest) { r.TransferDetailList[1].OutDetailNo = "D_1" }, want: "PARAM_ERROR"},
		{name: "duplicate out_detail_no", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[1].OutDetailNo = r.TransferDetailList[0].OutDetailNo
		}, want: "PARAM_ERROR"},
		{name: "total_amount off by one", edit: func(r *wechatpay.CreateBatchRequest) { r.TotalAmount++ }, want: "PARAM_ERROR"},
		{name: "total_num off by one", edit: func(r *wechatpay.CreateBatchRequest) { r.TotalNum++ }, want: "PARAM_ERROR"},
		{name: "no details", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList, r.TotalNum, r.TotalAmount = []wechatpay.TransferDetailInput{}, 0, 0
		}, want: "PARAM_ERROR"},
		{name: "1001 details", edit: func(r *wechatpay.CreateBatchRequest) { *r = *batchBody(r.OutBatchNo, 1001, 100) }, want: "PARAM_ERROR"},
		{name: "1000 details", edit: func(r *wechatpay.CreateBatchRequest) { *r = *batchBody(r.OutBatchNo, 1000, 100) }},
		{name: "29 fen", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].TransferAmount, r.TotalAmount = 29, r.TotalAmount-71
		}, want: "PARAM_ERROR"},
		{name: "negative amount", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].TransferAmount, r.TotalAmount = -100, r.TotalAmount-200
		}, want: "PARAM_ERROR"},
		{name: "no appid", edit: func(r *wechatpay.CreateBatchRequest) { r.AppID = "" }, want: "PARAM_ERROR"},
		{name: "empty openid", edit: func(r *wechatpay.CreateBatchRequest) { r.TransferDetailList[0].OpenID = "" }, want: "PARAM_ERROR"},
		{name: "http notify_url", edit: func(r *wechatpay.CreateBatchRequest) { r.NotifyURL = "http://example.com/n" }, want: "PARAM_ERROR"},
		{name: "notify_url with a query", edit: func(r *wechatpay.CreateBatchRequest) { r.NotifyURL = "https://example.com/n?a=1" }, want: "PARAM_ERROR"},
		{name: "loopback http notify_url", edit: func(r *wechatpay.CreateBatchRequest) { r.NotifyURL = "http://127.0.0.1:1/n" }},
		{name: "user_name missing at 2000 yuan", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].TransferAmount, r.TotalAmount = 200000, r.TotalAmount+199900
		}, want: "PARAM_ERROR"},
		{name: "user_name at 2000 yuan", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].TransferAmount, r.TotalAmount = 200000, r.TotalAmount+199900
			r.TransferDetailList[0].UserName, r.TransferDetailList[1].UserName = enc("张三"), enc("李四")
		}},
		{name: "user_name on some details only", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].UserName = enc("张三")
		}, want: "PARAM_ERROR"},
		{name: "user_name below 30 fen", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].TransferAmount, r.TotalAmount = 20, r.TotalAmount-80
			r.TransferDetailList[0].UserName, r.TransferDetailList[1].UserName = enc("张三"), enc("李四")
		}, want: "PARAM_ERROR"},
		{name: "user_name that does not decrypt", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].UserName, r.TransferDetailList[1].UserName = enc("张三"), "bm90IGEgY2lwaGVydGV4dA=="
		}, want: "PARAM_ERROR"},
		{name: "user_name under a wrong Wechatpay-Serial", serial: "PUB_KEY_ID_OTHER", edit: func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[0].UserName, r.TransferDetailList[1].UserName = enc("张三"), enc("李四")
		}, want: "PARAM_ERROR"},
		{name: "unknown field", raw: `{"appid":"wx","out_batch_no":"B","batch_name":"n","batch_remark":"r","total_amount":100,"total_num":1,"transfer_detail_list":[{"openid":"o","out_detail_no":"D","transfer_amount":100,"transfer_remark":"r"}],"notify_uri":"x"}`, want: "PARAM_ERROR"},
		{name: "fractional amount", raw: `{"appid":"wx","out_batch_no":"B","batch_name":"n","batch_remark":"r","total_amount":100,"total_num":1,"transfer_detail_list":[{"openid":"o","out_detail_no":"D","transfer_amount":99.5,"transfer_remark":"r"}]}`, want: "PARAM_ERROR"},
		{name: "not JSON", raw: `{"appid":`, want: "PARAM_ERROR"},
		{name: "two JSON values", raw: `{} {}`, want: "PARAM_ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := batchBody(fmt.Sprintf("V%d", len(srv.Batches())), 2, 100)
			if tc.edit != nil {
				tc.edit(r)
			}
			body := mustJSON(t, r)
			if tc.raw != "" {
				body = []byte(tc.raw)
			}
			before := len(srv.Batches())
			rep := send(t, srv, "POST", "/v3/transfer/batches", body, func(h *http.Request) {
				if tc.serial != "" {
					h.Header.Set("Wechatpay-Serial", tc.serial)
				}
			})
			if got := rep.code(); got != tc.want {
				t.Fatalf("HTTP %d %s, want code %q", rep.status, rep.body, tc.want)
			}
			created := len(srv.Batches()) - before
			if want := map[bool]int{true: 1, false: 0}[tc.want == ""]; created != want {
				t.Fatalf("%d batches created, want %d", created, want)
			}
		})
	}
}

func TestServer_Idempotency(t *testing.T) {
	srv, _ := manual(t)
	enc := func(name string) string {
		ct, _ := wechatpay.EncryptOAEP(nil, PlatformPublicKey(), name)
		return ct
	}
	r := batchBody("IDEM1", 2, 300000)
	r.TransferDetailList[0].UserName, r.TransferDetailList[1].UserName = enc("张三"), enc("李四")
	first := create(t, srv, r)

	t.Run("same bytes", func(t *testing.T) {
		if got := create(t, srv, r); got.BatchID != first.BatchID {
			t.Fatalf("batch_id %s, want %s", got.BatchID, first.BatchID)
		}
	})
	t.Run("names encrypted again", func(t *testing.T) {
		r2 := *r
		r2.TransferDetailList = append([]wechatpay.TransferDetailInput(nil), r.TransferDetailList...)
		r2.TransferDetailList[0].UserName, r2.TransferDetailList[1].UserName = enc("张三"), enc("李四")
		if got := create(t, srv, &r2); got.BatchID != first.BatchID {
			t.Fatalf("batch_id %s, want %s", got.BatchID, first.BatchID)
		}
	})
	for _, tc := range []struct {
		name string
		edit func(r *wechatpay.CreateBatchRequest)
	}{
		{"other name", func(r *wechatpay.CreateBatchRequest) { r.TransferDetailList[1].UserName = enc("王五") }},
		{"other remark", func(r *wechatpay.CreateBatchRequest) { r.BatchRemark = "other" }},
		{"other amount", func(r *wechatpay.CreateBatchRequest) {
			r.TransferDetailList[1].TransferAmount++
			r.TotalAmount++
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r2 := *r
			r2.TransferDetailList = append([]wechatpay.TransferDetailInput(nil), r.TransferDetailList...)
			tc.edit(&r2)
			rep := send(t, srv, "POST", "/v3/transfer/batches", mustJSON(t, &r2))
			if rep.status != 400 || rep.code() != "INVALID_REQUEST" {
				t.Fatalf("HTTP %d %s, want 400 INVALID_REQUEST", rep.status, rep.body)
			}
		})
	}
	if got := len(srv.Batches()); got != 1 {
		t.Fatalf("%d batches, want 1", got)
	}
}

func TestServer_Lifecycle(t *testing.T) {
	srv, clk := manual(t)
	r := batchBody("LIFE1", 250, 100)
	r.TransferDetailList[7].OpenID = "fail-ACCOUNT_FROZEN-u7"
	r.TransferDetailList[9].OpenID = "fail-OPENID_INVALID-u9"
	res := create(t, srv, r)
	if res.BatchStatus != wechatpay.BatchAccepted || len(res.BatchID) == 0 {
		t.Fatalf("create answer %+v", res)
	}
	status := func() wechatpay.BatchQueryResponse {
		t.Helper()
		rep, out := queryBatch(t, srv, "LIFE1", "need_query_detail=true&offset=0&limit=100&detail_status=ALL")
		if rep.status != 200 {
			t.Fatalf("HTTP %d %s", rep.status, rep.body)
		}
		return out
	}
	detail := func(no string) reply {
		return send(t, srv, "GET", "/v3/transfer/batches/out-batch-no/LIFE1/details/out-detail-no/"+no, nil)
	}
	if got := status(); got.TransferBatch.BatchStatus != wechatpay.BatchAccepted || got.TransferDetailList != nil {
		t.Fatalf("at once: %+v", got)
	}
	if rep := detail("LIFE1D0"); rep.status != 404 || rep.code() != "NOT_FOUND" {
		t.Fatalf("detail before acceptance: HTTP %d %s, want 404 NOT_FOUND", rep.status, rep.body)
	}
	clk.Add(DefaultAcceptDelay)
	if got := status(); got.TransferBatch.BatchStatus != wechatpay.BatchProcessing || got.TransferDetailList != nil {
		t.Fatalf("after acceptance: %+v", got.TransferBatch)
	}
	var d wechatpay.DetailResponse
	detail("LIFE1D0").decode(t, &d)
	if d.DetailStatus != wechatpay.DetailProcessing {
		t.Fatalf("detail while processing: %+v", d)
	}
	if got := srv.Paid(); len(got) != 0 {
		t.Fatalf("paid before the process delay: %v", got)
	}
	clk.Add(DefaultProcessDelay)
	got := status()
	tb := got.TransferBatch
	if tb.BatchStatus != wechatpay.BatchFinished || tb.SuccessNum != 248 || tb.FailNum != 2 || tb.SuccessAmount != 24800 || tb.FailAmount != 200 {
		t.Fatalf("finished: %+v", tb)
	}
	detail("LIFE1D7").decode(t, &d)
	if d.DetailStatus != wechatpay.DetailFail || d.FailReason != "ACCOUNT_FROZEN" {
		t.Fatalf("detail 7: %+v", d)
	}
	var byID wechatpay.DetailResponse
	send(t, srv, "GET", "/v3/transfer/batches/batch-id/"+res.BatchID+"/details/detail-id/"+d.DetailID, nil).decode(t, &byID)
	if byID != d {
		t.Fatalf("detail by id %+v, by number %+v", byID, d)
	}

	t.Run("paging", func(t *testing.T) {
		seen := map[string]bool{}
		for offset := 0; ; offset += 100 {
			rep, page := queryBatch(t, srv, "LIFE1", fmt.Sprintf("need_query_detail=true&offset=%d&limit=100&detail_status=ALL", offset))
			if rep.status != 200 {
				t.Fatalf("HTTP %d %s", rep.status, rep.body)
			}
			for _, row := range page.TransferDetailList {
				if seen[row.OutDetailNo] {
					t.Fatalf("%s on two pages", row.OutDetailNo)
				}
				seen[row.OutDetailNo] = true
			}
			if len(page.TransferDetailList) < 100 {
				break
			}
		}
		if len(seen) != 250 {
			t.Fatalf("%d details over all pages, want 250", len(seen))
		}
		_, fails := queryBatch(t, srv, "LIFE1", "need_query_detail=true&limit=20&detail_status=FAIL")
		if n := len(fails.TransferDetailList); n != 2 || fails.TransferDetailList[0].OutDetailNo != "LIFE1D7" {
			t.Fatalf("FAIL filter: %+v", fails.TransferDetailList)
		}
		_, wait := queryBatch(t, srv, "LIFE1", "need_query_detail=true&detail_status=WAIT_PAY")
		if wait.TransferDetailList != nil {
			t.Fatalf("WAIT_PAY filter of a finished batch: %+v", wait.TransferDetailList)
		}
	})
	t.Run("query errors", func(t *testing.T) {
		for _, tc := range []struct{ query, want string }{
			{"", "PARAM_ERROR"},
			{"need_query_detail=yes", "PARAM_ERROR"},
			{"need_query_detail=true", ""}, // detail_status is optional: ALL
			{"need_query_detail=true&detail_status=ALL&limit=19", "PARAM_ERROR"},
			{"need_query_detail=true&detail_status=ALL&limit=101", "PARAM_ERROR"},
			{"need_query_detail=true&detail_status=ALL&offset=-1", "PARAM_ERROR"},
			{"need_query_detail=true&detail_status=PROCESSING", "PARAM_ERROR"},
			{"need_query_detail=false", ""},
		} {
			rep, _ := queryBatch(t, srv, "LIFE1", tc.query)
			if got := rep.code(); got != tc.want {
				t.Errorf("?%s: HTTP %d %s, want %q", tc.query, rep.status, rep.body, tc.want)
			}
		}
		for uri, want := range map[string]string{
			"/v3/transfer/batches/out-batch-no/NOPE?need_query_detail=false":                     "NOT_FOUND",
			"/v3/transfer/batches/batch-id/123?need_query_detail=false":                          "NOT_FOUND",
			"/v3/transfer/batches/out-batch-no/LIFE1/details/out-detail-no/NOPE":                 "NOT_FOUND",
			"/v3/transfer/batches/batch-id/" + res.BatchID + "/details/detail-id/" + res.BatchID: "NOT_FOUND",
			"/v3/transfer/batches/out-batch-no/A-B?need_query_detail=false":                      "PARAM_ERROR",
			"/v3/no/such/api": "NOT_FOUND",
		} {
			if rep := send(t, srv, "GET", uri, nil); rep.code() != want {
				t.Errorf("%s: HTTP %d %s, want %s", uri, rep.status, rep.body, want)
			}
		}
	})
	t.Run("30 days", func(t *testing.T) {
		clk.Add(QueryWindow)
		rep, _ := queryBatch(t, srv, "LIFE1", "need_query_detail=false")
		if rep.status != 400 || rep.code() != "INVALID_REQUEST" {
			t.Fatalf("HTTP %d %s, want 400 INVALID_REQUEST", rep.status, rep.body)
		}
	})
	paid := srv.Paid()
	if len(paid) != 248 || paid["LIFE1D0"] != 1 || paid["LIFE1D7"] != 0 {
		t.Fatalf("Paid has %d entries: D0 %d, D7 %d", len(paid), paid["LIFE1D0"], paid["LIFE1D7"])
	}
}

func TestServer_NotFoundLag(t *testing.T) {
	srv, clk := manual(t, WithNotFoundLag(10*time.Second))
	create(t, srv, batchBody("LAG1", 1, 100))
	if rep, _ := queryBatch(t, srv, "LAG1", "need_query_detail=false"); rep.status != 404 || rep.code() != "NOT_FOUND" {
		t.Fatalf("HTTP %d %s, want 404 NOT_FOUND", rep.status, rep.body)
	}
	clk.Add(10 * time.Second)
	if rep, _ := queryBatch(t, srv, "LAG1", "need_query_detail=false"); rep.status != 200 {
		t.Fatalf("after the lag: HTTP %d %s", rep.status, rep.body)
	}
}

func TestServer_DoublePaymentIsVisible(t *testing.T) {
	srv, clk := manual(t)
	a, b := batchBody("DBL1", 2, 100), batchBody("DBL2", 2, 100)
	b.TransferDetailList[0].OutDetailNo = a.TransferDetailList[0].OutDetailNo // re-batched under a new number
	create(t, srv, a)
	create(t, srv, b)
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	if got := srv.Paid()["DBL1D0"]; got != 2 {
		t.Fatalf("DBL1D0 paid %d times, want 2", got)
	}
	if got := srv.DoublePaid(); len(got) != 1 || got[0] != "DBL1D0" {
		t.Fatalf("DoublePaid = %v", got)
	}
}

func TestServer_Balance(t *testing.T) {
	srv, clk := manual(t, WithBalance(1000))
	r := batchBody("BAL1", 3, 400)
	rep := send(t, srv, "POST", "/v3/transfer/batches", mustJSON(t, r))
	if rep.status != 403 || rep.code() != "NOT_ENOUGH" {
		t.Fatalf("HTTP %d %s, want 403 NOT_ENOUGH", rep.status, rep.body)
	}
	if n := len(srv.Batches()); n != 0 {
		t.Fatalf("%d batches after NOT_ENOUGH", n)
	}
	srv.TopUp(500)
	create(t, srv, r) // the same number, after the top-up
	if bal, held, _ := srv.Balance(); bal != 1500 || held != 1200 {
		t.Fatalf("balance %d held %d, want 1500 and 1200", bal, held)
	}
	if rep := send(t, srv, "POST", "/v3/transfer/batches", mustJSON(t, batchBody("BAL2", 1, 400))); rep.code() != "NOT_ENOUGH" {
		t.Fatalf("the held amount was spent twice: HTTP %d %s", rep.status, rep.body)
	}
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	for range 3 { // settles are idempotent however often state is read
		if bal, held, _ := srv.Balance(); bal != 300 || held != 0 {
			t.Fatalf("balance %d held %d, want 300 and 0", bal, held)
		}
	}
}

func TestServer_WaitPay(t *testing.T) {
	t.Run("confirm", func(t *testing.T) {
		srv, clk := manual(t, WithNoPasswordLimit(500))
		r := batchBody("WP1", 3, 100)
		r.TransferDetailList[1].TransferAmount, r.TotalAmount = 600, r.TotalAmount+500
		create(t, srv, r)
		clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
		b := srv.Batches()[0]
		if b.Status != wechatpay.BatchWaitPay || b.WaitPayNum != 1 || b.SuccessNum != 2 {
			t.Fatalf("before confirmation: %+v", b)
		}
		if _, err := srv.Confirm("WP1", "WP1D0"); err != ErrNotWaiting {
			t.Fatalf("Confirm of a paid detail: %v", err)
		}
		if n, err := srv.Confirm("WP1", ""); n != 1 || err != nil {
			t.Fatalf("Confirm = %d, %v", n, err)
		}
		clk.Add(DefaultProcessDelay)
		if b := srv.Batches()[0]; b.Status != wechatpay.BatchFinished || b.SuccessNum != 3 {
			t.Fatalf("after confirmation: %+v", b)
		}
	})
	t.Run("reject", func(t *testing.T) {
		srv, _ := manual(t, WithNoPasswordLimit(50))
		create(t, srv, batchBody("WP2", 2, 100))
		if n, err := srv.Reject("WP2", ""); n != 0 || err != ErrNotWaiting {
			t.Fatalf("Reject before acceptance = %d, %v", n, err)
		}
	})
	t.Run("timeout closes", func(t *testing.T) {
		srv, clk := manual(t, WithNoPasswordLimit(50), func(o *Options) { o.WaitPayTimeout = time.Hour })
		create(t, srv, batchBody("WP3", 2, 100))
		clk.Add(DefaultAcceptDelay + time.Hour)
		if b := srv.Batches()[0]; b.Status != wechatpay.BatchClosed || b.CloseReason != "OVERDUE_CLOSE" || b.FailNum != 2 {
			t.Fatalf("after the timeout: %+v", b)
		}
		if n := len(srv.Payments()); n != 0 {
			t.Fatalf("%d payments from a closed batch", n)
		}
	})
}

func TestServer_RateLimit(t *testing.T) {
	srv, _ := manual(t, WithRateLimit(3))
	codes := map[string]int{}
	for range 5 {
		rep, _ := queryBatch(t, srv, "NONE", "need_query_detail=false")
		codes[rep.code()]++
	}
	if codes["NOT_FOUND"] != 3 || codes["FREQUENCY_LIMITED"] != 2 {
		t.Fatalf("codes %v, want 3 NOT_FOUND and 2 FREQUENCY_LIMITED", codes)
	}
	if got := srv.Stats().RateLimited; got != 2 {
		t.Fatalf("RateLimited = %d", got)
	}
}

func TestServer_State(t *testing.T) {
	srv, clk := manual(t)
	create(t, srv, batchBody("ST1", 2, 100))
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	create(t, srv, batchBody("ST2", 2, 100))
	path := filepath.Join(t.TempDir(), "state.json")
	if err := srv.SaveState(path); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Now = clk.Now
	again, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.LoadState(path); err != nil {
		t.Fatal(err)
	}
	if got := again.Paid(); len(got) != 2 {
		t.Fatalf("reloaded Paid = %v", got)
	}
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	if got := again.Paid(); len(got) != 4 || got["ST2D1"] != 1 {
		t.Fatalf("reloaded server did not finish ST2: %v", got)
	}
	if b := again.Batches(); len(b) != 2 || b[1].Status != wechatpay.BatchFinished {
		t.Fatalf("reloaded batches %+v", b)
	}
}

// TestClientConfig_PlatformCertificate checks the certificate-serial mode's config.
func TestClientConfig_PlatformCertificate(t *testing.T) {
	srv := NewServer(t, func(o *Options) { o.PlatformKeyID = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1" })
	c := srv.ClientConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if k := c.PlatformCertificates["5157F09EFDC096DE15EBE81A47057A7232F1B8E1"]; k == nil || !k.Equal(&PlatformPrivateKey().PublicKey) || c.WechatPayPublicKey != nil {
		t.Fatalf("config %+v", c)
	}
}
