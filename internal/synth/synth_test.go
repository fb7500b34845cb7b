package synth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// TestGenerate_batchesUnchanged pins the batch product's output for a seed: tests, soaks and
// benches depend on it, and the bills product must not shift it. The digest is of the lines
// generated before the bills product existed (producer gen --count 3000 --seed 1
// --invalid-rate 0.05 --named-rate 0.05).
func TestGenerate_batchesUnchanged(t *testing.T) {
	for _, product := range []string{"", ProductBatches} {
		o := DefaultOptions()
		o.Count, o.InvalidRate, o.NamedRate, o.Product = 3000, 0.05, 0.05, product
		var buf bytes.Buffer
		if err := Generate(context.Background(), o, &buf); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		if got, want := hex.EncodeToString(sum[:]), "6d3ac8eca3bbefd46b30e217dcb1d1cf0b8d34eb87a455dab8c7c496a0fa4f25"; got != want {
			t.Fatalf("product %q: digest %s, want %s", product, got, want)
		}
	}
}

// TestEach_bills: on the bills product every valid line passes the processor's bills rail
// validation with exactly the default scene's report rows, some carry a perception, the
// simulated payees appear in about their shares, every invalid line is refused, and the
// output is deterministic for a seed.
func TestEach_bills(t *testing.T) {
	o := DefaultOptions()
	o.Product, o.Count, o.InvalidRate, o.NoConfirmRate, o.DeclineRate = ProductBills, 4000, 0.1, 0.05, 0.05
	l := payout.DefaultLimits()
	scenes := payout.DefaultBillScenes()
	var lines [][]byte
	counts := map[string]int{}
	err := Each(context.Background(), o, func(rec Record) error {
		lines = append(lines, rec.Line)
		r, err := payout.Decode(rec.Line)
		if err == nil {
			err = r.ValidateFor(payout.RailBills, l)
		}
		if !rec.Valid {
			if err == nil {
				t.Fatalf("invalid line accepted: %s", rec.Line)
			}
			counts["invalid"]++
			return nil
		}
		if err != nil {
			t.Fatalf("line %s: %v", rec.Line, err)
		}
		if !reflect.DeepEqual(r.SceneReportInfos, rec.Req.SceneReportInfos) {
			t.Fatalf("line and record differ: %+v vs %+v", r.SceneReportInfos, rec.Req.SceneReportInfos)
		}
		scene, ok := scenes[r.SceneID]
		if !ok {
			t.Fatalf("scene %q is not a default bill scene", r.SceneID)
		}
		for i, in := range r.SceneReportInfos {
			if got, want := in.InfoType, scene.ReportInfos[i]; got != want {
				t.Fatalf("row %d info_type %q, want %q", i, got, want)
			}
		}
		counts["scene "+r.SceneID]++
		if r.UserRecvPerception != "" {
			counts["perception"]++
		}
		switch {
		case rec.NeverConfirms():
			counts["noconfirm"]++
		case rec.Declines():
			counts["decline"]++
		case rec.Fails():
			counts["fail"]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	valid := o.Count - counts["invalid"]
	for _, c := range []struct {
		name     string
		min, max int
	}{
		{"invalid", o.Count / 20, o.Count / 5},
		{"scene 1000", valid / 2, valid},
		{"scene 1005", valid / 10, valid / 2},
		{"perception", valid / 3, 2 * valid / 3},
		{"noconfirm", valid / 40, valid / 10},
		{"decline", valid / 40, valid / 10},
		{"fail", 1, valid / 10},
	} {
		if got := counts[c.name]; got < c.min || got > c.max {
			t.Errorf("%s: %d of %d, want %d..%d", c.name, got, o.Count, c.min, c.max)
		}
	}
	i := 0
	err = Each(context.Background(), o, func(rec Record) error {
		if !bytes.Equal(rec.Line, lines[i]) {
			t.Fatalf("line %d differs on a second run with the same seed", i)
		}
		i++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEach_unknownProduct(t *testing.T) {
	o := DefaultOptions()
	o.Product = "cards"
	if err := Each(context.Background(), o, func(Record) error { return nil }); err == nil {
		t.Fatal("no error for an unknown product")
	}
}
