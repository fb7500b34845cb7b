package wechatpay

import (
	"context"
	"crypto/rsa"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestClient_ErrorClasses(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		wantClass Class
		wantErr   error
	}{
		{"system error is ambiguous", 500, `{"code":"SYSTEM_ERROR","message":"系统错误"}`, ClassAmbiguous, ErrSystemError},
		{"429 is ambiguous", 429, `{"code":"FREQUENCY_LIMITED","message":"slow down"}`, ClassAmbiguous, ErrFrequencyLimited},
		{"quota on 429 is ambiguous", 429, `{"code":"QUOTA_EXCEED","message":"x"}`, ClassAmbiguous, ErrQuotaExceed},
		{"param error is rejected", 400, `{"code":"PARAM_ERROR","message":"x"}`, ClassRejected, ErrParamError},
		{"not enough is blocked", 403, `{"code":"NOT_ENOUGH","message":"x"}`, ClassBlocked, ErrNotEnough},
		{"no auth is blocked", 403, `{"code":"NO_AUTH","message":"x"}`, ClassBlocked, ErrNoAuth},
		{"invalid request is blocked", 400, `{"code":"INVALID_REQUEST","message":"x"}`, ClassBlocked, ErrInvalidRequest},
		{"sign error is blocked", 401, `{"code":"SIGN_ERROR","message":"x"}`, ClassBlocked, ErrSignError},
		{"not found is not a failure", 404, `{"code":"NOT_FOUND","message":"x"}`, ClassNotFound, ErrNotFound},
		{"already exists is ambiguous", 400, `{"code":"ALREADY_EXISTS","message":"x"}`, ClassAmbiguous, ErrAlreadyExists},
		{"unknown code is ambiguous", 400, `{"code":"BRAND_NEW_CODE","message":"x"}`, ClassAmbiguous, nil},
		{"5xx with a definite code is ambiguous", 503, `{"code":"PARAM_ERROR","message":"x"}`, ClassAmbiguous, ErrParamError},
		{"non-JSON error body is ambiguous", 502, `<html>bad gateway</html>`, ClassAmbiguous, nil},
		{"non-JSON 400 is ambiguous", 400, `oops`, ClassAmbiguous, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, func(int, *http.Request) (int, string) { return tt.status, tt.body })
			c := newTestClient(t, testConfig(t, f.srv.URL))
			_, err := c.QueryBatchByOutBatchNo(context.Background(), "B1", BatchQuery{})
			if got := Classify(err); got != tt.wantClass {
				t.Fatalf("Classify(%v) = %s, want %s", err, got, tt.wantClass)
			}
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("%v is not an *APIError", err)
			}
			if ae.StatusCode != tt.status || ae.RequestID != "REQ-0" {
				t.Fatalf("APIError status %d request id %q, want %d REQ-0", ae.StatusCode, ae.RequestID, tt.status)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.wantErr)
			}
			if tt.wantErr == nil && !strings.HasPrefix(tt.body, "{") && ae.Code != "" {
				t.Fatalf("non-JSON body gave code %q", ae.Code)
			}
		})
	}
}

// TestClient_Unverified2xx: a 2xx that fails verification is never believed (docs/wechatpay.md §2).
func TestClient_Unverified2xx(t *testing.T) {
	const body = `{"out_batch_no":"B1","batch_id":"X","create_time":"2025-01-15T12:00:00+08:00"}`
	tests := []struct {
		name   string
		tamper func(h http.Header, f *fakeAPI)
	}{
		{"tampered body", func(h http.Header, f *fakeAPI) { f.sign(h, []byte(strings.Replace(body, "X", "Y", 1))) }},
		{"stale timestamp", func(h http.Header, f *fakeAPI) {
			signHeaders(t, f.keys.platform, f.serial, time.Now().Add(-MaxClockSkew), h, []byte(body))
		}},
		{"future timestamp", func(h http.Header, f *fakeAPI) {
			// A minute beyond the window: the timestamp is whole seconds, so one signed at
			// exactly now+MaxClockSkew is inside the window once the clock ticks a second.
			signHeaders(t, f.keys.platform, f.serial, time.Now().Add(MaxClockSkew+time.Minute), h, []byte(body))
		}},
		{"unknown serial", func(h http.Header, f *fakeAPI) {
			signHeaders(t, f.keys.platform, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", time.Now(), h, []byte(body))
		}},
		{"other public key id", func(h http.Header, f *fakeAPI) {
			signHeaders(t, f.keys.platform, PublicKeyIDPrefix+"999", time.Now(), h, []byte(body))
		}},
		{"signed by the merchant key", func(h http.Header, f *fakeAPI) {
			signHeaders(t, f.keys.merchant, f.serial, time.Now(), h, []byte(body))
		}},
		{"probe", func(h http.Header, f *fakeAPI) {
			f.sign(h, []byte(body))
			h.Set(HeaderSignature, ProbeSignaturePrefix+"cHJvYmU=")
		}},
		{"unsigned", func(h http.Header, _ *fakeAPI) {}},
		{"wrong signature type", func(h http.Header, f *fakeAPI) {
			f.sign(h, []byte(body))
			h.Set(HeaderSignatureType, "WECHATPAY2-SM2-WITH-SM3")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f *fakeAPI
			srv := newRawServer(t, func(w http.ResponseWriter, _ *http.Request) {
				tt.tamper(w.Header(), f)
				w.Write([]byte(body))
			})
			f = newFakeAPI(t, ok200)
			c := newTestClient(t, testConfig(t, srv.URL))
			res, err := c.CreateTransferBatchBody(context.Background(), []byte(`{"out_batch_no":"B1"}`))
			if !errors.Is(err, ErrUnverified) || Classify(err) != ClassAmbiguous || res != nil {
				t.Fatalf("got %+v, %v (class %s); want ErrUnverified, ambiguous", res, err, Classify(err))
			}
		})
	}
}

// TestClient_PlatformCertificate: a response signed under a platform certificate serial
// verifies when that certificate is configured, and its serial is sent (docs/wechatpay.md §2, §3).
func TestClient_PlatformCertificate(t *testing.T) {
	const serial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	f := newFakeAPI(t, ok200)
	f.serial = serial
	cfg := testConfig(t, f.srv.URL)
	cfg.PlatformCertificates = map[string]*rsa.PublicKey{serial: cfg.WechatPayPublicKey}
	cfg.WechatPayPublicKey, cfg.WechatPayPublicKeyID = nil, ""
	c := newTestClient(t, cfg)
	if _, err := c.QueryTransferBillByOutBillNo(context.Background(), "B1"); err != nil {
		t.Fatal(err)
	}
	if got := f.requests()[0].serial; got != serial {
		t.Fatalf("Wechatpay-Serial %q, want %q", got, serial)
	}
}

func TestClient_RequestHeaders(t *testing.T) {
	f := newFakeAPI(t, ok200)
	c := newTestClient(t, testConfig(t, f.srv.URL))
	if _, err := c.CreateTransferBatchBody(context.Background(), []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	r := f.requests()[0]
	if r.accept != "application/json" || r.contentType != "application/json" || r.serial != c.Serial() {
		t.Fatalf("headers Accept %q Content-Type %q Wechatpay-Serial %q", r.accept, r.contentType, r.serial)
	}
}

// TestClient_PathEscaping: path parameters are escaped and the signed URL is the sent URL
// (the fake server verifies the signature over r.URL.RequestURI()).
func TestClient_PathEscaping(t *testing.T) {
	f := newFakeAPI(t, ok200)
	c := newTestClient(t, testConfig(t, f.srv.URL))
	if _, err := c.QueryDetailByDetailID(context.Background(), "a/b c", "d?e"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.requests()[0].uri, "/v3/transfer/batches/batch-id/a%2Fb%20c/details/detail-id/d%3Fe"; got != want {
		t.Fatalf("sent %s, want %s", got, want)
	}
}

// refusedURL returns a loopback URL on which connections are refused.
func refusedURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestClient_Failover(t *testing.T) {
	t.Run("primary refuses connections", func(t *testing.T) {
		f := newFakeAPI(t, ok(`{"out_batch_no":"B1","batch_id":"X"}`))
		cfg := testConfig(t, refusedURL(t))
		cfg.BackupBaseURL = f.srv.URL
		c := newTestClient(t, cfg)
		res, err := c.CreateTransferBatchBody(context.Background(), []byte(`{"out_batch_no":"B1"}`))
		if err != nil {
			t.Fatal(err)
		}
		if res.BatchID != "X" || len(f.requests()) != 1 {
			t.Fatalf("res %+v, backup saw %d requests", res, len(f.requests()))
		}
	})
	t.Run("both refuse: nothing was sent", func(t *testing.T) {
		cfg := testConfig(t, refusedURL(t))
		cfg.BackupBaseURL = refusedURL(t)
		c := newTestClient(t, cfg)
		_, err := c.CreateTransferBatchBody(context.Background(), []byte(`{}`))
		if !errors.Is(err, ErrNotSent) || Classify(err) != ClassNotSent {
			t.Fatalf("err %v class %s, want not sent", err, Classify(err))
		}
	})
	t.Run("reset after sending re-sends the same signed request", func(t *testing.T) {
		primary := newFakeAPI(t, ok200)
		auths := make(chan string, 4) // the handler runs on the server's goroutine
		reset := newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
			auths <- r.Header.Get("Authorization")
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		cfg := testConfig(t, reset.URL)
		cfg.BackupBaseURL = primary.srv.URL
		c := newTestClient(t, cfg)
		if _, err := c.CreateTransferBatchBody(context.Background(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if n := len(auths); n != 1 {
			t.Fatalf("primary saw %d requests, want 1", n)
		}
		if got, want := primary.requests()[0].auth, <-auths; got != want {
			t.Fatalf("backup Authorization %q differs from the primary's %q", got, want)
		}
	})
	t.Run("reset with no backup is ambiguous", func(t *testing.T) {
		reset := newRawServer(t, func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		c := newTestClient(t, testConfig(t, reset.URL))
		_, err := c.CreateTransferBatchBody(context.Background(), []byte(`{}`))
		if err == nil || errors.Is(err, ErrNotSent) || Classify(err) != ClassAmbiguous {
			t.Fatalf("err %v class %s, want ambiguous", err, Classify(err))
		}
	})
}

// blockingServer holds every request until the client gives up.
func blockingServer(t *testing.T) string {
	release := make(chan struct{})
	srv := newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv.URL
}

func TestClient_Context(t *testing.T) {
	t.Run("deadline during the call is ambiguous", func(t *testing.T) {
		c := newTestClient(t, testConfig(t, blockingServer(t)))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := c.CreateTransferBatchBody(ctx, []byte(`{}`))
		if !errors.Is(err, context.DeadlineExceeded) || Classify(err) != ClassAmbiguous {
			t.Fatalf("err %v class %s, want deadline, ambiguous", err, Classify(err))
		}
	})
	t.Run("default timeout applies without a deadline", func(t *testing.T) {
		c := newTestClient(t, testConfig(t, blockingServer(t)), WithTimeout(50*time.Millisecond))
		_, err := c.CreateTransferBatchBody(context.Background(), []byte(`{}`))
		if !errors.Is(err, context.DeadlineExceeded) || Classify(err) != ClassAmbiguous {
			t.Fatalf("err %v class %s, want deadline, ambiguous", err, Classify(err))
		}
	})
	t.Run("cancelled before sending is not sent", func(t *testing.T) {
		f := newFakeAPI(t, ok200)
		c := newTestClient(t, testConfig(t, f.srv.URL))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.CreateTransferBatchBody(ctx, []byte(`{}`))
		if !errors.Is(err, context.Canceled) || Classify(err) != ClassNotSent || len(f.requests()) != 0 {
			t.Fatalf("err %v class %s, server saw %d", err, Classify(err), len(f.requests()))
		}
	})
}

func TestClient_Retries(t *testing.T) {
	t.Run("ambiguous answers are retried with the same body", func(t *testing.T) {
		f := newFakeAPI(t, func(n int, _ *http.Request) (int, string) {
			if n < 2 {
				return 500, `{"code":"SYSTEM_ERROR","message":"x"}`
			}
			return 200, `{"batch_id":"X"}`
		})
		c := newTestClient(t, testConfig(t, f.srv.URL), WithRetries(3), WithBackoff(time.Millisecond, 2*time.Millisecond))
		body := []byte(`{"out_batch_no":"B1"}`)
		res, err := c.CreateTransferBatchBody(context.Background(), body)
		if err != nil || res.BatchID != "X" {
			t.Fatalf("res %+v err %v", res, err)
		}
		reqs := f.requests()
		if len(reqs) != 3 {
			t.Fatalf("server saw %d requests, want 3", len(reqs))
		}
		for i, r := range reqs {
			mustEqualBytes(t, "retried body", r.body, body)
			if i > 0 && r.auth == reqs[i-1].auth {
				t.Fatalf("attempt %d reused the Authorization header", i)
			}
		}
	})
	t.Run("definite answers are not retried", func(t *testing.T) {
		f := newFakeAPI(t, func(int, *http.Request) (int, string) { return 400, `{"code":"PARAM_ERROR","message":"x"}` })
		c := newTestClient(t, testConfig(t, f.srv.URL), WithRetries(3), WithBackoff(time.Millisecond, time.Millisecond))
		if _, err := c.CreateTransferBatchBody(context.Background(), []byte(`{}`)); !errors.Is(err, ErrParamError) {
			t.Fatal(err)
		}
		if n := len(f.requests()); n != 1 {
			t.Fatalf("server saw %d requests, want 1", n)
		}
	})
	t.Run("gives up after n retries", func(t *testing.T) {
		f := newFakeAPI(t, func(int, *http.Request) (int, string) { return 429, `{"code":"FREQUENCY_LIMITED","message":"x"}` })
		c := newTestClient(t, testConfig(t, f.srv.URL), WithRetries(2), WithBackoff(time.Millisecond, time.Millisecond))
		if _, err := c.CreateTransferBatchBody(context.Background(), []byte(`{}`)); !Ambiguous(err) {
			t.Fatalf("err %v, want ambiguous", err)
		}
		if n := len(f.requests()); n != 3 {
			t.Fatalf("server saw %d requests, want 3", n)
		}
	})
}

func TestClient_ResponseTooLarge(t *testing.T) {
	f := newFakeAPI(t, ok(`{"x":"`+strings.Repeat("a", MaxResponseBytes)+`"}`))
	c := newTestClient(t, testConfig(t, f.srv.URL))
	if _, err := c.QueryTransferBillByOutBillNo(context.Background(), "B1"); err == nil || !Ambiguous(err) {
		t.Fatalf("err %v, want an ambiguous error", err)
	}
}

// TestClient_BadInput: refused requests wrap ErrNotSent and ErrBadInput and never reach the server.
func TestClient_BadInput(t *testing.T) {
	f := newFakeAPI(t, ok200)
	c := newTestClient(t, testConfig(t, f.srv.URL))
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
	}{
		{"limit below 20", func() error {
			_, err := c.QueryBatchByOutBatchNo(ctx, "B1", BatchQuery{NeedQueryDetail: true, Limit: 19, DetailStatus: DetailStatusAll})
			return err
		}},
		{"limit above 100", func() error {
			_, err := c.QueryBatchByBatchID(ctx, "B1", BatchQuery{NeedQueryDetail: true, Limit: 101, DetailStatus: DetailStatusAll})
			return err
		}},
		{"unknown detail status", func() error {
			_, err := c.PartnerQueryBatchByOutBatchNo(ctx, "B1", BatchQuery{NeedQueryDetail: true, Limit: 20, DetailStatus: "DONE"})
			return err
		}},
		{"negative offset", func() error {
			_, err := c.PartnerQueryBatchByBatchID(ctx, "B1", BatchQuery{NeedQueryDetail: true, Offset: -1, Limit: 20, DetailStatus: DetailStatusAll})
			return err
		}},
		{"paging without details", func() error {
			_, err := c.QueryBatchByOutBatchNo(ctx, "B1", BatchQuery{Limit: 50})
			return err
		}},
		{"empty path parameter", func() error { _, err := c.QueryDetailByOutDetailNo(ctx, "B1", ""); return err }},
		{"empty bill number", func() error { _, err := c.CancelTransferBill(ctx, ""); return err }},
		{"frozen body not JSON", func() error { _, err := c.CreateTransferBatchBody(ctx, []byte("{")); return err }},
		{"nil request", func() error { _, err := c.CreateTransferBatch(ctx, nil); return err }},
		{"lower-case method", func() error { return c.Do(ctx, "get", "/v3/x", nil, nil) }},
		{"relative path", func() error { return c.Do(ctx, "GET", "v3/x", nil, nil) }},
		{"path that would be re-encoded", func() error { return c.Do(ctx, "GET", "/v3/a b", nil, nil) }},
		{"empty user name", func() error { _, err := c.EncryptUserName(""); return err }},
		{"user name too long", func() error { _, err := c.EncryptUserName(strings.Repeat("名", 80)); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrNotSent) || Classify(err) != ClassNotSent {
				t.Fatalf("err %v class %s, want not sent", err, Classify(err))
			}
		})
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("server saw %d requests, want 0", n)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(*Config)
		wantField string
	}{
		{"valid", func(*Config) {}, ""},
		{"no base url", func(c *Config) { c.BaseURL = "" }, "BaseURL"},
		{"base url with path", func(c *Config) { c.BaseURL = "https://h/v3" }, "BaseURL"},
		{"bad backup", func(c *Config) { c.BackupBaseURL = "ftp://h" }, "BackupBaseURL"},
		{"no mchid", func(c *Config) { c.MchID = "" }, "MchID"},
		{"no serial", func(c *Config) { c.MerchantSerialNo = "" }, "MerchantSerialNo"},
		{"no private key", func(c *Config) { c.PrivateKey = nil }, "PrivateKey"},
		{"public key id without prefix", func(c *Config) { c.WechatPayPublicKeyID = "123" }, "WechatPayPublicKeyID"},
		{"no verifier", func(c *Config) { c.WechatPayPublicKey, c.WechatPayPublicKeyID = nil, "" }, "WechatPayPublicKey"},
		{"short apiv3 key", func(c *Config) { c.APIv3Key = "short" }, "APIv3Key"},
		{"nil certificate", func(c *Config) { c.PlatformCertificates = map[string]*rsa.PublicKey{"AB": nil} }, "PlatformCertificates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, "https://api.mch.weixin.qq.com")
			tt.edit(&cfg)
			err := cfg.Validate()
			var ce *ConfigError
			if tt.wantField == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.As(err, &ce) || ce.Field != tt.wantField {
				t.Fatalf("Validate = %v, want a *ConfigError for %s", err, tt.wantField)
			}
			if _, err := NewClient(cfg); !errors.As(err, &ce) {
				t.Fatalf("NewClient accepted an invalid config: %v", err)
			}
		})
	}
}

func TestConfig_LoadKeyFiles(t *testing.T) {
	dir := t.TempDir()
	copyKey := func(name string, mode os.FileMode) string {
		b, err := os.ReadFile(filepath.Join(vectorDir, name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is filtered by umask
			t.Fatal(err)
		}
		return p
	}
	pub := copyKey("wechatpay_platform_TEST_ONLY_public_key.pem", 0o644)
	t.Run("0600 key loads", func(t *testing.T) {
		cfg := testConfig(t, "https://api.mch.weixin.qq.com")
		cfg.PrivateKey, cfg.WechatPayPublicKey = nil, nil
		if err := cfg.LoadKeyFiles(copyKey("merchant_TEST_ONLY_private_key.pem", 0o600), pub); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if !cfg.PrivateKey.Equal(loadTestKeys(t).merchant) {
			t.Fatal("loaded a different private key")
		}
	})
	t.Run("group-readable key is refused", func(t *testing.T) {
		var cfg Config
		err := cfg.LoadKeyFiles(copyKey("merchant_TEST_ONLY_private_key.pem", 0o640), pub)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "PrivateKey" || cfg.PrivateKey != nil {
			t.Fatalf("LoadKeyFiles = %v, want a PrivateKey *ConfigError", err)
		}
	})
}
