package ledger

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodeSeqs: decodeSeqs never panics, and what it accepts re-encodes to a string that
// decodes to the same seqs (events store seqs in this form; Audit parses them back).
func FuzzDecodeSeqs(f *testing.F) {
	for _, s := range []string{"", "1", "1-4,9,12-13", "5-3", "1-", "-1", "9223372036854775807", "1,,2", "3-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seqs, err := decodeSeqs(s)
		if err != nil {
			return
		}
		again, err := decodeSeqs(encodeSeqs(seqs))
		if err != nil {
			t.Fatalf("re-encoded %q: %v", encodeSeqs(seqs), err)
		}
		if len(again) != len(seqs) {
			t.Fatalf("%q: %d seqs, re-decoded %d", s, len(seqs), len(again))
		}
		for i := range seqs {
			if again[i] != seqs[i] {
				t.Fatalf("%q: seq %d is %d, re-decoded %d", s, i, seqs[i], again[i])
			}
		}
	})
}

// FuzzPayoutValidate: validate never panics and accepts only keys of 1-32 [0-9A-Za-z].
func FuzzPayoutValidate(f *testing.F) {
	f.Add("abc123", int64(100), "direct", "")
	f.Add("", int64(1), "partner", "")
	f.Add("a-b", int64(-5), "card", "张三")
	f.Fuzz(func(t *testing.T, key string, amount int64, rail, cipher string) {
		p := newPayout("x", 1)
		p.OutDetailNo, p.Amount, p.Rail, p.UserNameCipher = key, amount, rail, cipher
		err := p.validate()
		okKey := len(key) >= 1 && len(key) <= 32 && strings.Trim(key, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") == ""
		if err == nil && (!okKey || amount <= 0 || (rail != "direct" && rail != "partner")) {
			t.Fatalf("validate accepted key=%q amount=%d rail=%q", key, amount, rail)
		}
		if err == nil && cipher != "" && len(cipher) < minCipherLen {
			t.Fatalf("validate accepted a %d-byte user_name_cipher", len(cipher))
		}
	})
}

func TestEncodeSeqs(t *testing.T) {
	tests := []struct {
		name string
		seqs []int64
		want string
	}{
		{name: "empty", want: ""},
		{name: "one", seqs: []int64{7}, want: "7"},
		{name: "runs", seqs: []int64{1, 2, 3, 4, 9, 12, 13}, want: "1-4,9,12-13"},
		{name: "body order kept", seqs: []int64{5, 3, 4}, want: "5,3-4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := encodeSeqs(tt.seqs); got != tt.want {
				t.Fatalf("encodeSeqs(%v) = %q, want %q", tt.seqs, got, tt.want)
			}
		})
	}
}

// FuzzCheckBill: checkBill never panics and accepts a bill body only if it names the
// member's out_detail_no and amount (SealBatch freezes what it accepts).
func FuzzCheckBill(f *testing.F) {
	for _, s := range []string{`{"out_bill_no":"k1","transfer_amount":100}`, `{"out_bill_no":"k1","transfer_amount":100.0}`,
		`{"out_bill_no":"k1","transfer_amount":"100"}`, `{"out_bill_no":"K1","transfer_amount":100}`, `null`, `[]`, ``,
		`{"out_bill_no":"k1","transfer_amount":100,"out_bill_no":"k2"}`} {
		f.Add([]byte(s))
	}
	m := member{seq: 1, key: "k1", amount: 100}
	f.Fuzz(func(t *testing.T, body []byte) {
		if checkBill(body, m) != nil {
			return
		}
		var bb billBody
		if err := json.Unmarshal(body, &bb); err != nil || bb.OutBillNo != m.key || bb.Amount != m.amount {
			t.Fatalf("checkBill accepted %q (%+v, %v)", body, bb, err)
		}
	})
}
