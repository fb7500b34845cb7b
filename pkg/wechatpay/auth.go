package wechatpay

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Response and notification headers (docs/wechatpay.md §2).
const (
	HeaderTimestamp     = "Wechatpay-Timestamp"
	HeaderNonce         = "Wechatpay-Nonce"
	HeaderSignature     = "Wechatpay-Signature"
	HeaderSerial        = "Wechatpay-Serial"
	HeaderSignatureType = "Wechatpay-Signature-Type"
	HeaderRequestID     = "Request-ID"
)

// MaxClockSkew is the verification window: a response or notification is rejected when
// |now − Wechatpay-Timestamp| ≥ MaxClockSkew, in the past or the future (docs/wechatpay.md §2, the SDK's
// consts.FiveMinute: 299 s passes, 300 s fails).
const MaxClockSkew = 300 * time.Second

// Signer computes the Authorization header of a request as the merchant (docs/wechatpay.md §1). It
// is safe for concurrent use.
type Signer struct {
	MchID    string
	SerialNo string
	Key      *rsa.PrivateKey
}

// Authorization signs METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n and returns the header value.
// url is the path plus ?query exactly as sent; body the exact bytes sent.
func (s Signer) Authorization(method, url string, timestamp int64, nonce string, body []byte) (Authorization, error) {
	sig, err := Sign(s.Key, RequestMessage(method, url, timestamp, nonce, body))
	if err != nil {
		return Authorization{}, err
	}
	return Authorization{MchID: s.MchID, NonceStr: nonce, Timestamp: timestamp, SerialNo: s.SerialNo, Signature: sig}, nil
}

const nonceAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewNonce returns 32 random characters from [0-9A-Za-z], as the official SDK does
// (docs/wechatpay.md §1).
func NewNonce() string {
	const n = 32
	out := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(out) < n {
		_, _ = rand.Read(buf) // crypto/rand.Read never fails (Go ≥ 1.24)
		for _, b := range buf {
			// 248 = 4×62: rejecting bytes above it keeps every character equally likely.
			if b < 248 && len(out) < n {
				out = append(out, nonceAlphabet[b%62])
			}
		}
	}
	return string(out)
}

// verifier checks signed responses and notifications (docs/wechatpay.md §2).
type verifier struct {
	publicKeyID  string
	publicKey    *rsa.PublicKey
	certificates map[string]*rsa.PublicKey
	now          func() time.Time
}

// verify checks h and the raw body: signature type, known serial, clock skew, probe and
// signature. Every error wraps ErrUnverified.
func (v *verifier) verify(h http.Header, body []byte) error {
	if t := h.Get(HeaderSignatureType); t != "" && t != AuthScheme {
		return fmt.Errorf("%w: signature type %q", ErrUnverified, t)
	}
	serial := h.Get(HeaderSerial)
	key := v.certificates[serial]
	if strings.HasPrefix(serial, PublicKeyIDPrefix) {
		key = nil
		if serial == v.publicKeyID {
			key = v.publicKey
		}
	}
	if key == nil {
		return fmt.Errorf("%w: unknown %s %q", ErrUnverified, HeaderSerial, serial)
	}
	tsText, nonce, sig := h.Get(HeaderTimestamp), h.Get(HeaderNonce), h.Get(HeaderSignature)
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not Unix seconds", ErrUnverified, HeaderTimestamp, tsText)
	}
	if nonce == "" || sig == "" {
		return fmt.Errorf("%w: missing %s or %s", ErrUnverified, HeaderNonce, HeaderSignature)
	}
	now, limit := v.now().Unix(), int64(MaxClockSkew/time.Second)
	if ts <= now-limit || ts >= now+limit { // compared this way round, nothing overflows
		return fmt.Errorf("%w: timestamp %d is outside now %d ± %s", ErrUnverified, ts, now, MaxClockSkew)
	}
	if err := VerifySignature(key, ResponseMessage(tsText, nonce, body), sig); err != nil {
		return fmt.Errorf("%w: %w", ErrUnverified, err)
	}
	return nil
}
