package wechatpaytest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// download GETs a download_url, signed by the test merchant unless unsigned, without checking
// any answer signature: the download's answer is not signed (docs/reconciliation.md §2).
func download(t *testing.T, srv *Server, rawURL string, unsigned bool) reply {
	t.Helper()
	uri := strings.TrimPrefix(rawURL, srv.URL())
	req, err := http.NewRequest(http.MethodGet, srv.URL()+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !unsigned {
		req.Header.Set("Authorization", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, http.MethodGet, uri, srv.now().Unix(), nil))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, body: b, header: resp.Header}
}

// fundFlowServer is a sandbox whose clock starts at 2025-01-15 12:00 CST, with batch B1 (two
// details of 100 fen) paid that day.
func fundFlowServer(t *testing.T, opts ...Option) (*Server, *clock) {
	t.Helper()
	clk := newClock()
	srv := NewServer(t, append([]Option{WithClock(clk.Now)}, opts...)...)
	create(t, srv, batchBody("B1", 2, 100))
	clk.Add(time.Second)
	if n := len(srv.Payments()); n != 2 {
		t.Fatalf("%d payments, want 2", n)
	}
	return srv, clk
}

func TestFundFlow_Download(t *testing.T) {
	srv, clk := fundFlowServer(t)
	clk.Add(22*time.Hour + time.Second) // 2025-01-16 10:00:01
	rep := send(t, srv, "GET", "/v3/bill/fundflowbill?account_type=OPERATION&bill_date=2025-01-15&tar_type=GZIP", nil)
	if rep.status != 200 {
		t.Fatalf("apply: HTTP %d %s", rep.status, rep.body)
	}
	var d wechatpay.BillDownload
	rep.decode(t, &d)
	if !strings.HasPrefix(d.DownloadURL, srv.URL()+"/v3/billdownload/file?token=") || d.HashType != "SHA1" {
		t.Fatalf("answer %+v: want a SHA1 and a URL on %s", d, srv.URL())
	}
	t.Run("unsigned request refused", func(t *testing.T) {
		if r := download(t, srv, d.DownloadURL, true); r.status != 401 || r.code() != "SIGN_ERROR" {
			t.Fatalf("HTTP %d %s, want 401 SIGN_ERROR", r.status, r.body)
		}
	})
	t.Run("gzip file, unsigned answer, hash of the CSV", func(t *testing.T) {
		r := download(t, srv, d.DownloadURL, false)
		if r.status != 200 {
			t.Fatalf("HTTP %d %s", r.status, r.body)
		}
		if sig := r.header.Get("Wechatpay-Signature"); sig != "" {
			t.Fatalf("download answer signed: %q", sig)
		}
		zr, err := gzip.NewReader(bytes.NewReader(r.body))
		if err != nil {
			t.Fatalf("not gzip: %v", err)
		}
		csv, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha1.Sum(csv); hex.EncodeToString(sum[:]) != d.HashValue {
			t.Fatalf("hash_value %s is not the SHA1 of the decompressed file", d.HashValue)
		}
		want := "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额(元),账户结余(元),资金变更提交申请人,备注,业务凭证号\n`2025-01-15 12:00:00,"
		if !strings.HasPrefix(string(csv), want) || !strings.HasSuffix(string(csv), "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\n`2,`0,`0.00,`2,`2.00\n") {
			t.Fatalf("file:\n%s", csv)
		}
	})
	t.Run("unknown token", func(t *testing.T) {
		if r := download(t, srv, srv.URL()+"/v3/billdownload/file?token=nope", false); r.status != 400 || r.code() != "INVALID_REQUEST" {
			t.Fatalf("HTTP %d %s, want 400 INVALID_REQUEST", r.status, r.body)
		}
	})
	t.Run("system error fault", func(t *testing.T) {
		srv.Fail(EndpointBillDownload, SystemError)
		if r := download(t, srv, d.DownloadURL, false); r.status != 500 || r.code() != "SYSTEM_ERROR" {
			t.Fatalf("HTTP %d %s, want 500 SYSTEM_ERROR", r.status, r.body)
		}
	})
	t.Run("expired", func(t *testing.T) {
		clk.Add(BillURLValidity)
		if r := download(t, srv, d.DownloadURL, false); r.status != 400 || r.code() != "INVALID_REQUEST" {
			t.Fatalf("HTTP %d %s, want 400 INVALID_REQUEST", r.status, r.body)
		}
	})
	if got := srv.Stats().Requests[EndpointBillDownload]; got != 5 {
		t.Fatalf("%d downloads counted, want 5", got)
	}
}

func TestFundFlow_Apply(t *testing.T) {
	tests := []struct {
		name, query string
		wantStatus  int
		wantCode    string
	}{
		{"no account type means BASIC", "bill_date=2025-01-15", 400, "NO_STATEMENT_EXIST"},
		{"fees account", "account_type=FEES&bill_date=2025-01-15", 400, "NO_STATEMENT_EXIST"},
		{"bad date", "account_type=OPERATION&bill_date=20250115", 400, "PARAM_ERROR"},
		{"bad account", "account_type=ALL&bill_date=2025-01-15", 400, "PARAM_ERROR"},
		{"bad tar type", "account_type=OPERATION&bill_date=2025-01-15&tar_type=ZIP", 400, "PARAM_ERROR"},
		{"plain", "account_type=OPERATION&bill_date=2025-01-15", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, clk := fundFlowServer(t)
			clk.Add(23 * time.Hour)
			rep := send(t, srv, "GET", "/v3/bill/fundflowbill?"+tt.query, nil)
			if rep.status != tt.wantStatus || rep.code() != tt.wantCode {
				t.Fatalf("HTTP %d %s, want %d %s", rep.status, rep.body, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestFundFlow_DelayOption(t *testing.T) {
	srv, clk := fundFlowServer(t, WithFundFlowDelay(-24*time.Hour))
	clk.Add(time.Second)
	rep := send(t, srv, "GET", "/v3/bill/fundflowbill?account_type=OPERATION&bill_date=2025-01-15", nil)
	if rep.status != 200 {
		t.Fatalf("today's bill with FundFlowDelay -24h: HTTP %d %s", rep.status, rep.body)
	}
	var d wechatpay.BillDownload
	rep.decode(t, &d)
	r := download(t, srv, d.DownloadURL, false)
	if !bytes.HasSuffix(r.body, []byte("\n`2,`0,`0.00,`2,`2.00\n")) {
		t.Fatalf("today's bill:\n%s", r.body)
	}
	o := DefaultOptions()
	o.FundFlowDelay = -25 * time.Hour
	if _, err := New(o); !errors.Is(err, ErrOptions) {
		t.Fatalf("FundFlowDelay -25h: err = %v, want ErrOptions", err)
	}
}
