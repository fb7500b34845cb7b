package wechatpay

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// AuthScheme is the Authorization scheme of APIv3 (docs/wechatpay.md §1).
const AuthScheme = "WECHATPAY2-SHA256-RSA2048"

// ProbeSignaturePrefix starts deliberate signature-probe traffic, which must never verify
// (docs/wechatpay.md §2).
const ProbeSignaturePrefix = "WECHATPAY/SIGNTEST/"

// PublicKeyIDPrefix marks a Wechatpay-Serial that names a WeChat Pay public key rather
// than a platform certificate serial (docs/wechatpay.md §2).
const PublicKeyIDPrefix = "PUB_KEY_ID_"

// RequestMessage builds the request signing message METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n
// (docs/wechatpay.md §1). url is the path plus ?query exactly as sent; body the exact bytes sent.
func RequestMessage(method, url string, timestamp int64, nonce string, body []byte) []byte {
	msg := make([]byte, 0, len(method)+len(url)+len(nonce)+len(body)+25)
	msg = append(msg, method...)
	msg = append(msg, '\n')
	msg = append(msg, url...)
	msg = append(msg, '\n')
	msg = strconv.AppendInt(msg, timestamp, 10)
	msg = append(msg, '\n')
	msg = append(msg, nonce...)
	msg = append(msg, '\n')
	msg = append(msg, body...)
	return append(msg, '\n')
}

// ResponseMessage builds the response/notification verification message
// TIMESTAMP\nNONCE\nBODY\n over the raw body bytes (docs/wechatpay.md §2).
func ResponseMessage(timestamp, nonce string, body []byte) []byte {
	msg := make([]byte, 0, len(timestamp)+len(nonce)+len(body)+3)
	msg = append(msg, timestamp...)
	msg = append(msg, '\n')
	msg = append(msg, nonce...)
	msg = append(msg, '\n')
	msg = append(msg, body...)
	return append(msg, '\n')
}

// Sign returns the standard Base64 SHA256withRSA (PKCS#1 v1.5) signature of msg.
// PKCS#1 v1.5 is deterministic, so the result is reproducible byte for byte.
func Sign(key *rsa.PrivateKey, msg []byte) (string, error) {
	h := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, h[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// ErrBadSignature means a signature did not verify.
var ErrBadSignature = errors.New("wechatpay: bad signature")

// VerifySignature checks a Base64 SHA256withRSA signature of msg. Probe signatures
// (ProbeSignaturePrefix) always fail.
func VerifySignature(pub *rsa.PublicKey, msg []byte, signature string) error {
	if strings.HasPrefix(signature, ProbeSignaturePrefix) {
		return fmt.Errorf("%w: signature probe", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return fmt.Errorf("%w: not base64", ErrBadSignature)
	}
	h := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig); err != nil {
		return ErrBadSignature
	}
	return nil
}

// Authorization is the parsed value of an APIv3 Authorization header (docs/wechatpay.md §1).
type Authorization struct {
	MchID     string
	NonceStr  string
	Timestamp int64
	SerialNo  string
	Signature string
}

// String formats the header value with the pairs in the official SDK's order.
func (a Authorization) String() string {
	return fmt.Sprintf(`%s mchid="%s",nonce_str="%s",timestamp="%d",serial_no="%s",signature="%s"`,
		AuthScheme, a.MchID, a.NonceStr, a.Timestamp, a.SerialNo, a.Signature)
}

// ErrBadAuthorization means an Authorization header could not be parsed.
var ErrBadAuthorization = errors.New("wechatpay: malformed Authorization header")

// ParseAuthorization parses an Authorization header value. Pair order is free (docs/wechatpay.md
// §1); every one of the five pairs must be present exactly once.
func ParseAuthorization(h string) (Authorization, error) {
	var a Authorization
	rest, ok := strings.CutPrefix(h, AuthScheme+" ")
	if !ok {
		return a, fmt.Errorf("%w: scheme", ErrBadAuthorization)
	}
	seen := map[string]bool{}
	for _, pair := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' || seen[k] {
			return a, fmt.Errorf("%w: pair %q", ErrBadAuthorization, k)
		}
		seen[k] = true
		v = v[1 : len(v)-1]
		switch k {
		case "mchid":
			a.MchID = v
		case "nonce_str":
			a.NonceStr = v
		case "timestamp":
			ts, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return a, fmt.Errorf("%w: timestamp", ErrBadAuthorization)
			}
			a.Timestamp = ts
		case "serial_no":
			a.SerialNo = v
		case "signature":
			a.Signature = v
		default:
			return a, fmt.Errorf("%w: unknown pair %q", ErrBadAuthorization, k)
		}
	}
	if len(seen) != 5 {
		return a, fmt.Errorf("%w: missing pairs", ErrBadAuthorization)
	}
	return a, nil
}

// EncryptOAEP encrypts a sensitive field such as user_name with RSAES-OAEP, SHA-1 and MGF1-SHA-1,
// empty label, and returns standard Base64 (docs/wechatpay.md §3). rnd is the randomness source
// (nil for crypto/rand). The output is random: compare by decrypting.
func EncryptOAEP(rnd io.Reader, pub *rsa.PublicKey, plaintext string) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	ct, err := rsa.EncryptOAEP(sha1.New(), rnd, pub, []byte(plaintext), nil)
	if err != nil {
		return "", fmt.Errorf("encrypt sensitive field: %w", err)
	}
	return base64.StdEncoding.EncodeToString(ct), nil
}

// DecryptOAEP reverses EncryptOAEP with the matching private key.
func DecryptOAEP(key *rsa.PrivateKey, ciphertext string) (string, error) {
	ct, err := base64.StdEncoding.DecodeString(ciphertext)
	if err != nil {
		return "", fmt.Errorf("decrypt sensitive field: %w", err)
	}
	pt, err := rsa.DecryptOAEP(sha1.New(), nil, key, ct, nil)
	if err != nil {
		return "", fmt.Errorf("decrypt sensitive field: %w", err)
	}
	return string(pt), nil
}

// APIv3KeySize is the length of the APIv3 key in bytes (32 ASCII characters, docs/wechatpay.md §7).
const APIv3KeySize = 32

// DecryptAEAD decrypts a notification resource: AES-256-GCM with the APIv3 key, the nonce
// bytes as IV, associatedData as AAD, and Base64 ciphertext‖tag (docs/wechatpay.md §7).
func DecryptAEAD(apiv3Key, nonce, associatedData, ciphertext string) ([]byte, error) {
	aead, err := newGCM(apiv3Key)
	if err != nil {
		return nil, err
	}
	ct, err := base64.StdEncoding.DecodeString(ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w", err)
	}
	if len(nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("decrypt resource: nonce is %d bytes, want %d", len(nonce), aead.NonceSize())
	}
	pt, err := aead.Open(nil, []byte(nonce), ct, []byte(associatedData))
	if err != nil {
		return nil, fmt.Errorf("decrypt resource: %w", err)
	}
	return pt, nil
}

// EncryptAEAD is the inverse of DecryptAEAD; the sandbox uses it to build notifications.
func EncryptAEAD(apiv3Key, nonce, associatedData string, plaintext []byte) (string, error) {
	aead, err := newGCM(apiv3Key)
	if err != nil {
		return "", err
	}
	if len(nonce) != aead.NonceSize() {
		return "", fmt.Errorf("encrypt resource: nonce is %d bytes, want %d", len(nonce), aead.NonceSize())
	}
	return base64.StdEncoding.EncodeToString(aead.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))), nil
}

func newGCM(apiv3Key string) (cipher.AEAD, error) {
	if len(apiv3Key) != APIv3KeySize {
		return nil, fmt.Errorf("apiv3 key is %d bytes, want %d", len(apiv3Key), APIv3KeySize)
	}
	block, err := aes.NewCipher([]byte(apiv3Key))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// ParsePrivateKey parses an RSA private key from PEM (PKCS#8 "PRIVATE KEY", as
// apiclient_key.pem, or PKCS#1 "RSA PRIVATE KEY").
func ParsePrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("private key: no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("private key: not RSA")
		}
		return rk, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("private key: unexpected PEM type %q", block.Type)
}

// ParsePublicKey parses an RSA public key from PEM: PKIX "PUBLIC KEY" (the WeChat Pay
// public key) or the public key of a "CERTIFICATE" (a platform certificate).
func ParsePublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("public key: no PEM block")
	}
	var pub any
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		pub = k
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		pub = c.PublicKey
	default:
		return nil, fmt.Errorf("public key: unexpected PEM type %q", block.Type)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("public key: not RSA")
	}
	return rk, nil
}

// LoadPrivateKey reads and parses a private key file. A file readable or writable by
// group or other is refused: a merchant key must be mode 0600 or stricter.
func LoadPrivateKey(path string) (*rsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("private key %s: mode %04o lets group/other read it; run chmod 600 %s", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKey reads and parses a public key or certificate file.
func LoadPublicKey(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
