package payout

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// platformKeyFile is the TEST-ONLY WeChat Pay public key the sandbox decrypts names for.
const platformKeyFile = "../wechatpay/wechatpaytest/keys/wechatpay_platform_TEST_ONLY_public_key.pem"

// testNameKey is the TEST-ONLY WeChat Pay public key as a NameKey.
func testNameKey() NameKey {
	return NameKey{ID: wechatpaytest.DefaultPlatformKeyID, Key: wechatpaytest.PlatformPublicKey()}
}

// open decrypts a sealed name with the TEST-ONLY platform private key.
func open(t *testing.T, cipher string) string {
	t.Helper()
	name, err := wechatpay.DecryptOAEP(wechatpaytest.PlatformPrivateKey(), cipher)
	if err != nil {
		t.Fatalf("decrypt user_name_cipher: %v", err)
	}
	return name
}

func TestNameKey_Seal(t *testing.T) {
	k := testNameKey()
	r := direct()
	r.Amount, r.UserName = 250000, "欧阳娜娜"
	if err := k.Seal(&r); err != nil {
		t.Fatal(err)
	}
	if r.UserName != "" {
		t.Fatal("Seal left the plaintext name")
	}
	if got, want := r.WechatpaySerial, wechatpaytest.DefaultPlatformKeyID; got != want {
		t.Fatalf("wechatpay_serial = %q, want %q", got, want)
	}
	if got, want := open(t, r.UserNameCipher), "欧阳娜娜"; got != want {
		t.Fatalf("decrypted name = %q, want %q", got, want)
	}
	l := DefaultLimits()
	l.EncryptedNamesOnly = true
	if err := r.Validate(l); err != nil {
		t.Fatalf("sealed request: %v", err)
	}

	again := direct()
	again.Amount, again.UserName = 250000, "欧阳娜娜"
	if err := k.Seal(&again); err != nil {
		t.Fatal(err)
	}
	if again.UserNameCipher == r.UserNameCipher {
		t.Fatal("two seals of one name gave the same ciphertext; OAEP must be randomized")
	}
	if got, want := MsgID(&again), MsgID(&r); got != want {
		t.Fatalf("MsgID differs between two seals of one request: %s vs %s", got, want)
	}
}

func TestNameKey_Seal_withoutName(t *testing.T) {
	r := direct()
	if err := (NameKey{}).Seal(&r); err != nil {
		t.Fatalf("Seal without a name: %v", err)
	}
	if r.UserNameCipher != "" || r.WechatpaySerial != "" {
		t.Fatalf("Seal without a name set %q %q", r.UserNameCipher, r.WechatpaySerial)
	}
}

func TestNameKey_Seal_errors(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := testNameKey()
	tests := []struct {
		name    string
		key     NameKey
		user    string
		wantErr error
	}{
		{"no key", NameKey{ID: good.ID}, "张三", ErrNameKey},
		{"bad id", NameKey{ID: "PUB KEY", Key: good.Key}, "张三", ErrNameKey},
		{"no id", NameKey{Key: good.Key}, "张三", ErrNameKey},
		{"1024-bit key", NameKey{ID: good.ID, Key: &small.PublicKey}, "张三", ErrNameKey},
		{"name longer than one OAEP block", good, strings.Repeat("秘", 100), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := direct()
			r.UserName = tt.user
			err := tt.key.Seal(&r)
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "张") || strings.Contains(err.Error(), "秘") {
				t.Fatalf("error %q leaks the name", err)
			}
			if r.UserName != tt.user || r.UserNameCipher != "" || r.WechatpaySerial != "" {
				t.Fatal("Seal changed the request on error")
			}
		})
	}
}

func TestLoadNameKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, block *pem.Block) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	smallFile := write("small.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	privFile := "../wechatpay/wechatpaytest/keys/wechatpay_platform_TEST_ONLY_private_key.pem"

	tests := []struct {
		name    string
		id      string
		path    string
		wantErr error
	}{
		{"public key", wechatpaytest.DefaultPlatformKeyID, platformKeyFile, nil},
		{"bad id", "PUB-KEY", platformKeyFile, ErrNameKey},
		{"missing file", wechatpaytest.DefaultPlatformKeyID, filepath.Join(dir, "nope.pem"), ErrNameKey},
		{"private key", wechatpaytest.DefaultPlatformKeyID, privFile, ErrNameKey},
		{"1024-bit key", wechatpaytest.DefaultPlatformKeyID, smallFile, ErrNameKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := LoadNameKey(tt.id, tt.path)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got, want := k.ID, tt.id; got != want {
				t.Fatalf("id = %q, want %q", got, want)
			}
			if !k.Key.Equal(wechatpaytest.PlatformPublicKey()) {
				t.Fatal("loaded another key")
			}
		})
	}
}
