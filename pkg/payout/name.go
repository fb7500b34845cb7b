package payout

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// Sizes of a NameKey's RSA modulus, in bytes. 2048 bits is what WeChat Pay issues
// (docs/wechatpay.md §3); below it the key is weak and a 30-character name may not fit one OAEP block.
const (
	MinNameKeySize = 256
	MaxNameKeySize = MaxNameCipherSize
)

// ErrNameKey matches every error about a NameKey itself (missing, malformed id, wrong
// size), as opposed to a failure to encrypt with a good one.
var ErrNameKey = errors.New("payout: bad WeChat Pay public key")

// NameKey is WeChat Pay's public key, which seals real names: ID is its id as WeChat names
// it in the Wechatpay-Serial header (PUB_KEY_ID_… for a WeChat Pay public key, or the serial
// of a platform certificate), Key the RSA key, Rand the OAEP randomness (nil: crypto/rand).
// A NameKey is safe for concurrent use when Rand is (crypto/rand is).
type NameKey struct {
	ID   string
	Key  *rsa.PublicKey
	Rand io.Reader
}

// LoadNameKey reads the WeChat Pay public key from pemPath (PEM "PUBLIC KEY", or the
// "CERTIFICATE" of a platform certificate) and returns it as the NameKey id. The key must be
// RSA of 2048 to 4096 bits and id must be [0-9A-Za-z_]{1,64}; errors about them match
// ErrNameKey.
func LoadNameKey(id, pemPath string) (NameKey, error) {
	pub, err := wechatpay.LoadPublicKey(pemPath)
	if err != nil {
		return NameKey{}, fmt.Errorf("%w: %w", ErrNameKey, err)
	}
	k := NameKey{ID: id, Key: pub}
	if err := k.check(); err != nil {
		return NameKey{}, fmt.Errorf("%s: %w", pemPath, err)
	}
	return k, nil
}

// check reports what is wrong with k, matching ErrNameKey, or nil.
func (k NameKey) check() error {
	switch {
	case k.Key == nil:
		return fmt.Errorf("%w: no key", ErrNameKey)
	case !ValidSerial(k.ID):
		return fmt.Errorf("%w: id must be [0-9A-Za-z_]{1,64} (PUB_KEY_ID_… or a certificate serial)", ErrNameKey)
	case k.Key.Size() < MinNameKeySize || k.Key.Size() > MaxNameKeySize:
		return fmt.Errorf("%w: RSA key of %d bits, want 2048 to 4096", ErrNameKey, k.Key.N.BitLen())
	}
	return nil
}

// Seal encrypts r.UserName with k exactly as the batch body carries it (RSA-OAEP with SHA-1 and
// MGF1-SHA-1, standard Base64, docs/wechatpay.md §3) into r.UserNameCipher, sets r.WechatpaySerial
// to k.ID and clears r.UserName. Without a plaintext name it does nothing. The ciphertext is
// random: sealing the same name twice gives two different values. Errors never contain the name; a
// bad key matches ErrNameKey, and r is unchanged on error.
func (k NameKey) Seal(r *Request) error {
	if r.UserName == "" {
		return nil
	}
	if err := k.check(); err != nil {
		return err
	}
	c, err := wechatpay.EncryptOAEP(k.Rand, k.Key, r.UserName)
	if err != nil {
		return fmt.Errorf("payout: seal user_name of %s: %w", r.OutDetailNo, err)
	}
	r.UserNameCipher, r.WechatpaySerial, r.UserName = c, k.ID, ""
	return nil
}
