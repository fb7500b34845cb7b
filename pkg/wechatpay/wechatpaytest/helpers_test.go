package wechatpaytest

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 15, 12, 0, 0, 0, cst)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// reply is a verified answer of the sandbox.
type reply struct {
	status int
	body   []byte
	header http.Header
}

func (r reply) code() string {
	var e wechatpay.APIError
	json.Unmarshal(r.body, &e)
	return e.Code
}

func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// authHeader is an Authorization signed with key for the given message parts.
func authHeader(t testing.TB, key *rsa.PrivateKey, mchID, serial, method, uri string, ts int64, body []byte) string {
	t.Helper()
	nonce := randomString(32)
	sig, err := wechatpay.Sign(key, wechatpay.RequestMessage(method, uri, ts, nonce, body))
	if err != nil {
		t.Fatal(err)
	}
	return wechatpay.Authorization{MchID: mchID, NonceStr: nonce, Timestamp: ts, SerialNo: serial, Signature: sig}.String()
}

// send signs method, uri and body with the test merchant key at the server's time, sends
// them after applying edits, and verifies the answer's signature (docs/wechatpay.md §2).
func send(t testing.TB, srv *Server, method, uri string, body []byte, edits ...func(*http.Request)) reply {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL()+uri, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, method, uri, srv.now().Unix(), body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Wechatpay-Serial", DefaultPlatformKeyID)
	for _, e := range edits {
		e(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, uri, err)
	}
	verifyReply(t, srv, resp.Header, b)
	return reply{status: resp.StatusCode, body: b, header: resp.Header}
}

// verifyReply checks the docs/wechatpay.md §2 signature of an answer.
func verifyReply(t testing.TB, srv *Server, h http.Header, body []byte) {
	t.Helper()
	if got := h.Get("Wechatpay-Serial"); got != DefaultPlatformKeyID {
		t.Fatalf("Wechatpay-Serial = %q, want %q", got, DefaultPlatformKeyID)
	}
	ts, err := strconv.ParseInt(h.Get("Wechatpay-Timestamp"), 10, 64)
	if err != nil || ts != srv.now().Unix() && ts != srv.now().Unix()-1 {
		t.Fatalf("Wechatpay-Timestamp = %q, want about %d", h.Get("Wechatpay-Timestamp"), srv.now().Unix())
	}
	msg := wechatpay.ResponseMessage(h.Get("Wechatpay-Timestamp"), h.Get("Wechatpay-Nonce"), body)
	if err := wechatpay.VerifySignature(PlatformPublicKey(), msg, h.Get("Wechatpay-Signature")); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	if h.Get("Request-ID") == "" {
		t.Fatal("no Request-ID")
	}
}

// batchBody is a valid direct create of n details of amount fen each.
func batchBody(outBatchNo string, n int, amount wechatpay.Fen) *wechatpay.CreateBatchRequest {
	r := &wechatpay.CreateBatchRequest{
		AppID: DefaultAppID, OutBatchNo: outBatchNo, BatchName: "2025年1月推广佣金", BatchRemark: "1月佣金结算",
		TotalNum: n, TransferDetailList: make([]wechatpay.TransferDetailInput, n),
	}
	for i := range n {
		r.TransferDetailList[i] = wechatpay.TransferDetailInput{
			OpenID: fmt.Sprintf("o-user%d", i), OutDetailNo: fmt.Sprintf("%sD%d", outBatchNo, i),
			TransferAmount: amount, TransferRemark: "推广佣金",
		}
		r.TotalAmount += amount
	}
	return r
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// create posts a batch and fails the test unless the answer is 200.
func create(t testing.TB, srv *Server, r *wechatpay.CreateBatchRequest) wechatpay.CreateBatchResponse {
	t.Helper()
	rep := send(t, srv, "POST", "/v3/transfer/batches", mustJSON(t, r))
	if rep.status != 200 {
		t.Fatalf("create %s: HTTP %d %s", r.OutBatchNo, rep.status, rep.body)
	}
	var out wechatpay.CreateBatchResponse
	rep.decode(t, &out)
	return out
}

// queryBatch gets a batch by out_batch_no with the given raw query.
func queryBatch(t testing.TB, srv *Server, outBatchNo, query string) (reply, wechatpay.BatchQueryResponse) {
	t.Helper()
	rep := send(t, srv, "GET", "/v3/transfer/batches/out-batch-no/"+outBatchNo+"?"+query, nil)
	var out wechatpay.BatchQueryResponse
	if rep.status == 200 {
		rep.decode(t, &out)
	}
	return rep, out
}

// checkFor polls f until it returns nil or the timeout passes.
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	testingutil.WaitFor(t, timeout, func() (bool, string) {
		err := f()
		return err == nil, fmt.Sprint(err)
	})
}
