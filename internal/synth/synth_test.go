package synth

import (
	"bytes"
	"context"
	"reflect"
	"testing"

	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestEach_nameKey: with a NameKey every line, valid or not, carries names only sealed,
// valid lines pass the processor's validation (EncryptedNamesOnly) and decrypt to the
// generated name, and the lines are otherwise those generated without a key.
func TestEach_nameKey(t *testing.T) {
	o := DefaultOptions()
	o.Count, o.NamedRate, o.InvalidRate = 2000, 0.2, 0.2
	var plain []Record
	if err := Each(context.Background(), o, func(r Record) error { plain = append(plain, r); return nil }); err != nil {
		t.Fatal(err)
	}
	o.NameKey = &payout.NameKey{ID: wechatpaytest.DefaultPlatformKeyID, Key: wechatpaytest.PlatformPublicKey()}
	l := payout.DefaultLimits()
	l.EncryptedNamesOnly = true
	var i, named, invalid int
	err := Each(context.Background(), o, func(rec Record) error {
		want := plain[i]
		i++
		if !reflect.DeepEqual(rec.Req, want.Req) || rec.Valid != want.Valid {
			t.Fatalf("record %d differs from the one generated without a key", i)
		}
		if rec.Req.UserName != "" && bytes.Contains(rec.Line, []byte(rec.Req.UserName)) {
			t.Fatalf("line %d holds the plaintext name", i)
		}
		if !rec.Valid {
			invalid++
			return nil
		}
		r, err := payout.DecodeAndValidate(rec.Line, l)
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if rec.Req.UserName == "" {
			return nil
		}
		named++
		name, err := wechatpay.DecryptOAEP(wechatpaytest.PlatformPrivateKey(), r.UserNameCipher)
		if err != nil || name != rec.Req.UserName || r.WechatpaySerial != o.NameKey.ID {
			t.Fatalf("line %d: decrypts to %q (%v) under %q, want the generated name under %q", i, name, err, r.WechatpaySerial, o.NameKey.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if named == 0 || invalid == 0 {
		t.Fatalf("named %d, invalid %d: the test covers nothing", named, invalid)
	}
}
