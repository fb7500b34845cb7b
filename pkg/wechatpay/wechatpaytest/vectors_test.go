package wechatpaytest

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// vectors is the part of testdata/testvectors/vectors.json the sandbox is checked against.
type vectors struct {
	Parameters struct {
		MchID          string `json:"mchid"`
		MerchantSerial string `json:"merchant_serial_no"`
		PublicKeyID    string `json:"wechatpay_public_key_id"`
		APIv3Key       string `json:"apiv3_key"`
		FixedNow       int64  `json:"fixed_now_unix"`
	} `json:"parameters"`
	RequestSigning []struct {
		Name          string `json:"name"`
		Method        string `json:"method"`
		URL           string `json:"url"`
		Body          string `json:"body"`
		Authorization string `json:"authorization"`
	} `json:"request_signing"`
	ResponseVerification []struct {
		Name           string            `json:"name"`
		Headers        map[string]string `json:"headers"`
		Body           string            `json:"body"`
		SignatureValid bool              `json:"expected_signature_valid"`
	} `json:"response_verification"`
	AEAD []struct {
		Name         string `json:"name"`
		Notification struct {
			Headers map[string]string `json:"headers"`
			Body    string            `json:"body"`
		} `json:"notification"`
	} `json:"aead_notifications"`
	OAEP []struct {
		Name       string `json:"name"`
		Plaintext  string `json:"plaintext"`
		Ciphertext string `json:"ciphertext"`
	} `json:"rsa_oaep_user_name"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("../../../testdata/testvectors/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVectors checks the sandbox against the golden vectors the official SDK produced: its
// defaults are the vectors' parameters, it accepts every SDK-signed request, it signs
// answers and notifications byte for byte as WeChat Pay's key did, and it decrypts names.
func TestVectors(t *testing.T) {
	v := loadVectors(t)
	o := DefaultOptions()
	if p := v.Parameters; p.MchID != o.MchID || p.MerchantSerial != o.MerchantSerial || p.PublicKeyID != o.PlatformKeyID || p.APIv3Key != o.APIv3Key {
		t.Fatalf("defaults differ from the vectors' parameters %+v", p)
	}
	now := time.Unix(v.Parameters.FixedNow, 0)
	o.Now = func() time.Time { return now }
	o.RateLimit = 0
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	t.Run("requests", func(t *testing.T) {
		for _, r := range v.RequestSigning {
			t.Run(r.Name, func(t *testing.T) {
				req := httptest.NewRequest(r.Method, r.URL, strings.NewReader(r.Body))
				req.Header.Set("Authorization", r.Authorization)
				req.Header.Set("Wechatpay-Serial", o.PlatformKeyID)
				w := httptest.NewRecorder()
				srv.Handler().ServeHTTP(w, req)
				rep := reply{status: w.Code, body: w.Body.Bytes()}
				verifyReply(t, srv, w.Header(), rep.body)
				if rep.code() == "SIGN_ERROR" {
					t.Fatalf("SDK-signed request refused: %s", rep.body)
				}
				if strings.HasSuffix(r.Name, "_sdk_json_body") && rep.status != 200 {
					t.Fatalf("SDK create refused: HTTP %d %s", rep.status, rep.body)
				}
			})
		}
	})
	t.Run("answer signatures", func(t *testing.T) {
		n := 0
		for _, r := range v.ResponseVerification {
			if !r.SignatureValid || strings.HasPrefix(r.Headers["Wechatpay-Signature"], "WECHATPAY/") {
				continue
			}
			n++
			got, err := srv.signature(r.Headers["Wechatpay-Timestamp"], r.Headers["Wechatpay-Nonce"], []byte(r.Body))
			if err != nil || got != r.Headers["Wechatpay-Signature"] {
				t.Errorf("%s: signature %q, %v; want the vector's", r.Name, got, err)
			}
		}
		for _, r := range v.AEAD {
			n++
			h := r.Notification.Headers
			if got, _ := srv.signature(h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], []byte(r.Notification.Body)); got != h["Wechatpay-Signature"] {
				t.Errorf("%s notification: signature differs from the vector's", r.Name)
			}
		}
		if n < 5 {
			t.Fatalf("only %d signature vectors checked", n)
		}
	})
	t.Run("user_name", func(t *testing.T) {
		for _, r := range v.OAEP {
			if got, err := srv.decryptField(r.Ciphertext); err != nil || got != r.Plaintext {
				t.Errorf("%s: decrypted %q, %v", r.Name, got, err)
			}
		}
	})
}
