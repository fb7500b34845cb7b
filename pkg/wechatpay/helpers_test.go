package wechatpay

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const vectorDir = "../../testdata/testvectors"

// vectors mirrors testdata/testvectors/vectors.json.
type vectors struct {
	Parameters struct {
		MchID                string `json:"mchid"`
		MerchantSerialNo     string `json:"merchant_serial_no"`
		WechatPayPublicKeyID string `json:"wechatpay_public_key_id"`
		APIv3Key             string `json:"apiv3_key"`
		FixedNowUnix         int64  `json:"fixed_now_unix"`
	} `json:"parameters"`
	RequestSigning []struct {
		Name          string `json:"name"`
		Method        string `json:"method"`
		URL           string `json:"url"`
		Timestamp     int64  `json:"timestamp"`
		NonceStr      string `json:"nonce_str"`
		Body          string `json:"body"`
		SignMessage   string `json:"sign_message"`
		Signature     string `json:"signature"`
		Authorization string `json:"authorization"`
	} `json:"request_signing"`
	ResponseVerification []struct {
		Name                   string            `json:"name"`
		VerifyNow              int64             `json:"verify_now"`
		Headers                map[string]string `json:"headers"`
		Body                   string            `json:"body"`
		BodyThatWasSigned      *string           `json:"body_that_was_signed"`
		VerifyMessage          string            `json:"verify_message"`
		ExpectedSignatureValid bool              `json:"expected_signature_valid"`
		ExpectedValid          bool              `json:"expected_valid"`
	} `json:"response_verification"`
	AEADNotifications []struct {
		Name              string `json:"name"`
		APIv3Key          string `json:"apiv3_key"`
		Nonce             string `json:"nonce"`
		AssociatedData    string `json:"associated_data"`
		Ciphertext        string `json:"ciphertext"`
		ExpectedPlaintext string `json:"expected_plaintext"`
		Negative          struct {
			WrongAssociatedData string `json:"wrong_associated_data"`
			WrongKey            string `json:"wrong_key"`
		} `json:"negative"`
		Notification struct {
			Headers       map[string]string `json:"headers"`
			Body          string            `json:"body"`
			VerifyNow     int64             `json:"verify_now"`
			ExpectedValid bool              `json:"expected_valid"`
		} `json:"notification"`
	} `json:"aead_notifications"`
	RSAOAEPUserName []struct {
		Name       string `json:"name"`
		Plaintext  string `json:"plaintext"`
		Ciphertext string `json:"ciphertext"`
	} `json:"rsa_oaep_user_name"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// testKeys are the TEST-ONLY keys of testdata/testvectors.
type testKeys struct {
	merchant, platform *rsa.PrivateKey
}

var (
	keysOnce sync.Once
	keys     testKeys
	keysErr  error
)

func loadTestKeys(t testing.TB) testKeys {
	t.Helper()
	keysOnce.Do(func() {
		parse := func(name string) *rsa.PrivateKey {
			b, err := os.ReadFile(filepath.Join(vectorDir, name))
			if err != nil {
				keysErr = err
				return nil
			}
			k, err := ParsePrivateKey(b)
			if err != nil {
				keysErr = err
			}
			return k
		}
		keys = testKeys{merchant: parse("merchant_TEST_ONLY_private_key.pem"), platform: parse("wechatpay_platform_TEST_ONLY_private_key.pem")}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keys
}

// testConfig returns a valid Config for baseURL with the test keys and vector parameters.
func testConfig(t testing.TB, baseURL string) Config {
	v := loadVectors(t)
	k := loadTestKeys(t)
	return Config{
		BaseURL:              baseURL,
		MchID:                v.Parameters.MchID,
		MerchantSerialNo:     v.Parameters.MerchantSerialNo,
		PrivateKey:           k.merchant,
		WechatPayPublicKeyID: v.Parameters.WechatPayPublicKeyID,
		WechatPayPublicKey:   &k.platform.PublicKey,
		APIv3Key:             v.Parameters.APIv3Key,
	}
}

func newTestClient(t testing.TB, cfg Config, opts ...Option) *Client {
	t.Helper()
	c, err := NewClient(cfg, append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// received is one request as the fake WeChat Pay server saw it.
type received struct {
	method, uri, auth, serial, accept, contentType string
	body                                           []byte
}

// fakeAPI is a loopback WeChat Pay: it verifies each request's Authorization with the
// merchant public key (a mismatch fails the test), then answers with reply, signing 2xx
// answers with the platform TEST key.
type fakeAPI struct {
	t      testing.TB
	srv    *httptest.Server
	keys   testKeys
	serial string
	now    func() time.Time // the server's clock for Wechatpay-Timestamp

	mu    sync.Mutex
	reqs  []received
	reply func(n int, r *http.Request) (status int, body string)
}

func newFakeAPI(t testing.TB, reply func(n int, r *http.Request) (int, string)) *fakeAPI {
	f := &fakeAPI{t: t, keys: loadTestKeys(t), serial: loadVectors(t).Parameters.WechatPayPublicKeyID, now: time.Now, reply: reply}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	auth, err := ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		f.t.Errorf("server: %v", err)
	} else if err := VerifySignature(&f.keys.merchant.PublicKey, RequestMessage(r.Method, r.URL.RequestURI(), auth.Timestamp, auth.NonceStr, body), auth.Signature); err != nil {
		f.t.Errorf("server: request %s %s does not verify: %v", r.Method, r.URL.RequestURI(), err)
	}
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, received{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get(HeaderSerial), r.Header.Get("Accept"), r.Header.Get("Content-Type"), body})
	f.mu.Unlock()
	status, resp := f.reply(n, r)
	if status >= 200 && status < 300 {
		f.sign(w.Header(), []byte(resp))
	}
	w.Header().Set(HeaderRequestID, "REQ-"+strconv.Itoa(n))
	w.WriteHeader(status)
	io.WriteString(w, resp)
}

// sign sets the WeChat Pay signature headers for body, as the platform would.
func (f *fakeAPI) sign(h http.Header, body []byte) {
	signHeaders(f.t, f.keys.platform, f.serial, f.now(), h, body)
}

func signHeaders(t testing.TB, key *rsa.PrivateKey, serial string, now time.Time, h http.Header, body []byte) {
	ts := strconv.FormatInt(now.Unix(), 10)
	nonce := NewNonce()
	sig, err := Sign(key, ResponseMessage(ts, nonce, body))
	if err != nil {
		t.Fatal(err)
	}
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderNonce, nonce)
	h.Set(HeaderSignature, sig)
	h.Set(HeaderSerial, serial)
}

func (f *fakeAPI) requests() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.reqs...)
}

// ok answers every request with a signed 200 and body.
func ok(body string) func(int, *http.Request) (int, string) {
	return func(int, *http.Request) (int, string) { return http.StatusOK, body }
}

func headerOf(m map[string]string) http.Header {
	h := http.Header{}
	for k, v := range m {
		h.Set(k, v)
	}
	return h
}

func mustEqualBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// newRawServer is an httptest server whose handler writes exactly what the test says.
func newRawServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
