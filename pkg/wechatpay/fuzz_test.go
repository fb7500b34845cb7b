package wechatpay

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

// FuzzHandleResponse feeds arbitrary status, headers and body to the response path: it must
// never panic, and a 2xx must never be believed unless its signature verifies.
func FuzzHandleResponse(f *testing.F) {
	v := loadVectors(f)
	for _, vec := range v.ResponseVerification {
		h := vec.Headers
		f.Add(200, h[HeaderTimestamp], h[HeaderNonce], h[HeaderSignature], h[HeaderSerial], []byte(vec.Body))
	}
	f.Add(500, "", "", "", "", []byte(`{"code":"SYSTEM_ERROR","message":"x"}`))
	f.Add(404, "", "", "", "", []byte(`<html>`))
	c := newTestClient(f, testConfig(f, "https://api.mch.weixin.qq.com"),
		WithClock(func() time.Time { return time.Unix(v.Parameters.FixedNowUnix, 0) }))
	f.Fuzz(func(t *testing.T, status int, ts, nonce, sig, serial string, body []byte) {
		h := http.Header{}
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderNonce, nonce)
		h.Set(HeaderSignature, sig)
		h.Set(HeaderSerial, serial)
		resp := &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(body))}
		var out BatchQueryResponse
		err := c.handle(resp, "GET", "/v3/x", &out)
		if err == nil && (status < 200 || status > 299 || c.Verify(h, body) != nil) {
			t.Fatalf("status %d accepted without a verified signature", status)
		}
		if err != nil && Classify(err) == ClassOK {
			t.Fatalf("error %v classified ok", err)
		}
	})
}

// FuzzParseNotification: arbitrary headers and bodies never panic, and nothing unverified
// is returned; a verified envelope decodes through every typed helper without panicking.
func FuzzParseNotification(f *testing.F) {
	v := loadVectors(f)
	for _, vec := range v.AEADNotifications {
		h := vec.Notification.Headers
		f.Add(h[HeaderTimestamp], h[HeaderNonce], h[HeaderSignature], h[HeaderSerial], []byte(vec.Notification.Body))
	}
	c := newTestClient(f, testConfig(f, "https://api.mch.weixin.qq.com"),
		WithClock(func() time.Time { return time.Unix(v.AEADNotifications[0].Notification.VerifyNow, 0) }))
	key := v.Parameters.APIv3Key
	f.Fuzz(func(t *testing.T, ts, nonce, sig, serial string, body []byte) {
		h := http.Header{}
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderNonce, nonce)
		h.Set(HeaderSignature, sig)
		h.Set(HeaderSerial, serial)
		n, err := c.ParseNotification(h, body)
		if err != nil {
			return
		}
		if c.Verify(h, body) != nil {
			t.Fatal("ParseNotification returned an unverified notification")
		}
		n.BatchResource(key)
		n.BillResource(key)
		n.InstructionResource(key)
	})
}

// FuzzParseAuthorization: any header value parses or fails cleanly, and what parses
// formats back to a value that parses to the same thing.
func FuzzParseAuthorization(f *testing.F) {
	for _, vec := range loadVectors(f).RequestSigning {
		f.Add(vec.Authorization)
	}
	f.Add(AuthScheme + ` mchid="1",mchid="1"`)
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthorization(s)
		if err != nil {
			return
		}
		b, err := ParseAuthorization(a.String())
		if err != nil && !bytes.ContainsAny([]byte(a.MchID+a.NonceStr+a.SerialNo+a.Signature), `",=`) {
			t.Fatalf("%q parsed to %+v, which does not round-trip: %v", s, a, err)
		}
		if err == nil && b != a {
			t.Fatalf("round trip %+v != %+v", b, a)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	k := loadTestKeys(b)
	s := Signer{MchID: "1900000001", SerialNo: "S", Key: k.merchant}
	body := bytes.Repeat([]byte("x"), 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Authorization("POST", pathBatches, 1736913600, "nonce", body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	v := loadVectors(b)
	vec := v.ResponseVerification[0]
	c := newTestClient(b, testConfig(b, "https://api.mch.weixin.qq.com"),
		WithClock(func() time.Time { return time.Unix(vec.VerifyNow, 0) }))
	h, body := headerOf(vec.Headers), []byte(vec.Body)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}
