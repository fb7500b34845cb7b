package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

const vectorDir = "../../testdata/testvectors"

type signingVector struct {
	Name          string `json:"name"`
	Method        string `json:"method"`
	URL           string `json:"url"`
	Timestamp     int64  `json:"timestamp"`
	NonceStr      string `json:"nonce_str"`
	Body          string `json:"body"`
	SignMessage   string `json:"sign_message"`
	Authorization string `json:"authorization"`
}

type apiVectors struct {
	Parameters struct {
		MchID                string `json:"mchid"`
		MerchantSerialNo     string `json:"merchant_serial_no"`
		WechatPayPublicKeyID string `json:"wechatpay_public_key_id"`
	} `json:"parameters"`
	RequestSigning []signingVector `json:"request_signing"`
}

func loadAPIVectors(t *testing.T) apiVectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v apiVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// copyFile copies a test key into dir with mode (git does not keep 0600).
func copyFile(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func runAPICmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"api"}, args...), func(string) string { return "" }, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestAPI_DryRunVectors: for every request_signing vector, processor api --dry-run prints
// the vector's signing message and Authorization header byte for byte.
func TestAPI_DryRunVectors(t *testing.T) {
	v := loadAPIVectors(t)
	if len(v.RequestSigning) == 0 {
		t.Fatal("no request_signing vectors")
	}
	dir := t.TempDir()
	key := copyFile(t, dir, "merchant_TEST_ONLY_private_key.pem", 0o600)
	for i, vec := range v.RequestSigning {
		t.Run(vec.Name, func(t *testing.T) {
			args := []string{"--dry-run", "--timestamp", strconv.FormatInt(vec.Timestamp, 10), "--nonce", vec.NonceStr,
				"--mchid", v.Parameters.MchID, "--serial-no", v.Parameters.MerchantSerialNo, "--private-key", key,
				vec.Method, vec.URL}
			if vec.Body != "" {
				data := vec.Body // alternate literal and @file so both forms are checked
				if i%2 == 0 {
					data = "@" + filepath.Join(dir, vec.Name+".json")
					if err := os.WriteFile(data[1:], []byte(vec.Body), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				args = append(args, "--data", data)
			}
			code, out, errOut := runAPICmd(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if want := "Authorization: " + vec.Authorization + "\n"; !strings.Contains(out, want) {
				t.Fatalf("output\n%s\nlacks %s", out, want)
			}
			if want := fmt.Sprintf("%q\n", vec.SignMessage); !strings.Contains(out, want) {
				t.Fatalf("output\n%s\nlacks the signing message %s", out, want)
			}
		})
	}
}

func TestAPI_Send(t *testing.T) {
	v := loadAPIVectors(t)
	dir := t.TempDir()
	key := copyFile(t, dir, "merchant_TEST_ONLY_private_key.pem", 0o600)
	pub := copyFile(t, dir, "wechatpay_platform_TEST_ONLY_public_key.pem", 0o644)
	b, err := os.ReadFile(filepath.Join(vectorDir, "wechatpay_platform_TEST_ONLY_private_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	platform, err := wechatpay.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		calls.Add(1)
		if strings.Contains(r.URL.Path, "flaky") && calls.Load()%2 == 1 { // every other call fails, the first included
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"code":"SYSTEM_ERROR","message":"系统错误"}`)
			return
		}
		if strings.Contains(r.URL.Path, "missing") {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":"NOT_FOUND","message":"记录不存在"}`)
			return
		}
		body := `{"out_bill_no":"B1","state":"SUCCESS"}`
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		sig, err := wechatpay.Sign(platform, wechatpay.ResponseMessage(ts, "n1", []byte(body)))
		if err != nil {
			t.Error(err)
		}
		w.Header().Set(wechatpay.HeaderTimestamp, ts)
		w.Header().Set(wechatpay.HeaderNonce, "n1")
		w.Header().Set(wechatpay.HeaderSignature, sig)
		w.Header().Set(wechatpay.HeaderSerial, v.Parameters.WechatPayPublicKeyID)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	common := []string{"--mchid", v.Parameters.MchID, "--serial-no", v.Parameters.MerchantSerialNo, "--private-key", key,
		"--wechatpay-public-key", pub, "--wechatpay-public-key-id", v.Parameters.WechatPayPublicKeyID, "--base-url", srv.URL}

	code, out, errOut := runAPICmd(t, append(common, "GET", "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/B1")...)
	if code != 0 || !strings.Contains(out, `"state": "SUCCESS"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = runAPICmd(t, append(common, "GET", srv.URL+"/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/missing")...)
	if code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("exit %d, stderr %q; want 1 and class not_found", code, errOut)
	}
	// An ambiguous answer is asked again (logged), unless --retries 0; a definite one is not.
	calls.Store(0)
	code, out, errOut = runAPICmd(t, append(common, "--retries", "1", "GET", "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/flaky")...)
	if code != 0 || !strings.Contains(out, `"state": "SUCCESS"`) || !strings.Contains(errOut, "SYSTEM_ERROR") || calls.Load() != 2 {
		t.Fatalf("exit %d after %d calls, stdout %q, stderr %q; want the retry's answer and the first logged", code, calls.Load(), out, errOut)
	}
	calls.Store(0)
	code, _, errOut = runAPICmd(t, append(common, "--retries", "0", "GET", "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/flaky")...)
	if code != 1 || !strings.Contains(errOut, "SYSTEM_ERROR") || calls.Load() != 1 {
		t.Fatalf("--retries 0: exit %d after %d calls, stderr %q; want 1 after one call", code, calls.Load(), errOut)
	}
	calls.Store(0)
	if code, _, _ = runAPICmd(t, append(common, "GET", "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/missing")...); code != 1 || calls.Load() != 1 {
		t.Fatalf("NOT_FOUND: exit %d after %d calls, want 1 after one call", code, calls.Load())
	}
}

func TestAPI_Usage(t *testing.T) {
	dir := t.TempDir()
	key := copyFile(t, dir, "merchant_TEST_ONLY_private_key.pem", 0o600)
	loose := copyFile(t, t.TempDir(), "merchant_TEST_ONLY_private_key.pem", 0o644)
	signer := []string{"--mchid", "1900000001", "--serial-no", "S"}
	tests := []struct {
		name string
		args []string
	}{
		{"no arguments", nil},
		{"unknown flag", []string{"--nope", "GET", "/v3/x"}},
		{"path only", append(signer, "--private-key", key, "GET")},
		{"no mchid", []string{"--dry-run", "--private-key", key, "GET", "/v3/x"}},
		{"relative path", append(signer, "--dry-run", "--private-key", key, "GET", "v3/x")},
		{"group-readable key", append(signer, "--dry-run", "--private-key", loose, "GET", "/v3/x")},
		{"timestamp without dry run", append(signer, "--private-key", key, "--timestamp", "1", "GET", "/v3/x")},
		{"missing data file", append(signer, "--dry-run", "--private-key", key, "POST", "/v3/x", "--data", "@/nonexistent")},
		{"no public key to verify with", append(signer, "--private-key", key, "GET", "/v3/x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, out, errOut := runAPICmd(t, tt.args...); code != 2 {
				t.Fatalf("exit %d (stdout %q, stderr %q), want 2", code, out, errOut)
			}
		})
	}
}
