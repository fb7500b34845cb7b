package wechatpay

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Hosts of the APIv3 service (docs/wechatpay.md, its opening). The host is not signed, so a request signed for
// one is valid on the other.
const (
	DefaultBaseURL       = "https://api.mch.weixin.qq.com"
	DefaultBackupBaseURL = "https://api2.mch.weixin.qq.com"
)

// Config holds what a Client must have. Validate names the first missing or wrong field.
//
// Verification needs at least one WeChat Pay key: the public key (WechatPayPublicKeyID and
// WechatPayPublicKey together) and/or platform certificates (serial → key). During a key migration
// configure both: notifications may use either (docs/wechatpay.md §2). The key whose id is sent in
// Wechatpay-Serial also encrypts user_name (docs/wechatpay.md §3): the public key when it is
// configured, else the platform certificate with the greatest serial.
type Config struct {
	// BaseURL is scheme://host[:port] with no path, e.g. DefaultBaseURL. Required.
	BaseURL string
	// BackupBaseURL, when set, receives the same signed request after a connection error
	// on BaseURL (docs/wechatpay.md: the backup host api2.mch.weixin.qq.com).
	BackupBaseURL string
	// MchID is the merchant (or service provider) id that signs requests.
	MchID string
	// MerchantSerialNo is the serial of the merchant API certificate (serial_no, docs/wechatpay.md
	// §1).
	MerchantSerialNo string
	// PrivateKey is the merchant API private key (apiclient_key.pem), RSA-2048 or larger.
	PrivateKey *rsa.PrivateKey
	// WechatPayPublicKeyID is the id of the WeChat Pay public key, "PUB_KEY_ID_…".
	WechatPayPublicKeyID string
	// WechatPayPublicKey is the WeChat Pay public key (docs/wechatpay.md §2).
	WechatPayPublicKey *rsa.PublicKey
	// PlatformCertificates maps a platform certificate serial to its public key (docs/wechatpay.md
	// §2).
	PlatformCertificates map[string]*rsa.PublicKey
	// APIv3Key is the 32-byte APIv3 key that decrypts notifications (docs/wechatpay.md §7).
	// Optional for a client that never reads notifications.
	APIv3Key string
}

// ConfigError names the Config field that failed validation. It never holds a secret.
type ConfigError struct {
	Field string // the Go field name, e.g. "MchID"
	Err   error
}

// Error names the field and the reason.
func (e *ConfigError) Error() string { return fmt.Sprintf("wechatpay config: %s: %v", e.Field, e.Err) }

// Unwrap returns the reason.
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(field, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// minKeyBits is the smallest RSA key the client accepts (APIv3 uses RSA-2048, docs/wechatpay.md
// §1).
const minKeyBits = 2048

// Validate reports the first invalid field as a *ConfigError.
func (c *Config) Validate() error {
	if err := validateBaseURL(c.BaseURL); err != nil {
		return &ConfigError{Field: "BaseURL", Err: err}
	}
	if c.BackupBaseURL != "" {
		if err := validateBaseURL(c.BackupBaseURL); err != nil {
			return &ConfigError{Field: "BackupBaseURL", Err: err}
		}
	}
	switch {
	case c.MchID == "":
		return configErrorf("MchID", "required")
	case c.MerchantSerialNo == "":
		return configErrorf("MerchantSerialNo", "required")
	case c.PrivateKey == nil:
		return configErrorf("PrivateKey", "required")
	case c.PrivateKey.N.BitLen() < minKeyBits:
		return configErrorf("PrivateKey", "RSA key of %d bits, want at least %d", c.PrivateKey.N.BitLen(), minKeyBits)
	case c.WechatPayPublicKey != nil && !strings.HasPrefix(c.WechatPayPublicKeyID, PublicKeyIDPrefix):
		return configErrorf("WechatPayPublicKeyID", "%q must start with %s when WechatPayPublicKey is set", c.WechatPayPublicKeyID, PublicKeyIDPrefix)
	case c.WechatPayPublicKey == nil && c.WechatPayPublicKeyID != "":
		return configErrorf("WechatPayPublicKey", "required when WechatPayPublicKeyID is set")
	case c.WechatPayPublicKey == nil && len(c.PlatformCertificates) == 0:
		return configErrorf("WechatPayPublicKey", "a WeChat Pay public key or a platform certificate is required to verify responses")
	case c.APIv3Key != "" && len(c.APIv3Key) != APIv3KeySize:
		return configErrorf("APIv3Key", "%d bytes, want %d", len(c.APIv3Key), APIv3KeySize)
	}
	for serial, k := range c.PlatformCertificates {
		if serial == "" || strings.HasPrefix(serial, PublicKeyIDPrefix) || k == nil {
			return configErrorf("PlatformCertificates", "serial %q: want a certificate serial and a key", serial)
		}
	}
	return nil
}

func validateBaseURL(s string) error {
	if s == "" {
		return errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q: want scheme://host[:port]", s)
	}
	if strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q: no path, query or user info allowed (the signed URL must be the sent URL)", s)
	}
	return nil
}

// LoadKeyFiles fills PrivateKey, WechatPayPublicKey and PlatformCertificates from PEM files.
// privateKey must be mode 0600 or stricter (LoadPrivateKey). An empty wechatpayPublicKey
// path is skipped. Each platform certificate is keyed by its own serial number in upper-case
// hex, as WeChat Pay sends it in Wechatpay-Serial.
func (c *Config) LoadKeyFiles(privateKey, wechatpayPublicKey string, platformCertificates ...string) error {
	k, err := LoadPrivateKey(privateKey)
	if err != nil {
		return &ConfigError{Field: "PrivateKey", Err: err}
	}
	c.PrivateKey = k
	if wechatpayPublicKey != "" {
		p, err := LoadPublicKey(wechatpayPublicKey)
		if err != nil {
			return &ConfigError{Field: "WechatPayPublicKey", Err: err}
		}
		c.WechatPayPublicKey = p
	}
	for _, path := range platformCertificates {
		serial, p, err := loadCertificate(path)
		if err != nil {
			return &ConfigError{Field: "PlatformCertificates", Err: err}
		}
		if c.PlatformCertificates == nil {
			c.PlatformCertificates = map[string]*rsa.PublicKey{}
		}
		c.PlatformCertificates[serial] = p
	}
	return nil
}

func loadCertificate(path string) (string, *rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", nil, fmt.Errorf("%s: no CERTIFICATE PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return "", nil, fmt.Errorf("%s: certificate key is not RSA", path)
	}
	return strings.ToUpper(cert.SerialNumber.Text(16)), pub, nil
}
