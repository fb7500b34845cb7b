package batching

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/paystream/paystream/pkg/payout"
)

func TestTrimChars(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 2, "ab"},
		{"abc", 3, "abc"},
		{"abc", 0, ""},
		{"批量转账", 3, "批量转"},
		{"🎁🎁🎁", 1, "🎁"},
		{"", 5, ""},
	}
	for _, tt := range tests {
		if got := TrimChars(tt.in, tt.n); got != tt.want {
			t.Errorf("TrimChars(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestNames_Render(t *testing.T) {
	k := Key{Rail: "direct", MchID: "1900000001", SceneID: "1001"}
	tests := []struct {
		name       string
		names      Names
		key        func(Key) Key
		wantName   string
		wantRemark string
		wantErr    error
	}{
		{"default", DefaultNames, func(k Key) Key { return k }, "20250301 批量转账 共2笔", "BP10000000000000000042", nil},
		{"fields", Names{"{{.Count}}/{{.Total}}/{{.Yuan}}", "{{.Rail}} {{.MchID}}"}, func(k Key) Key { return k },
			"2/12350/123.50", "direct 1900000001", nil},
		{"hints win", DefaultNames, func(k Key) Key { k.BatchName, k.BatchRemark = "三月活动", "返现"; return k }, "三月活动", "返现", nil},
		{"docs/wechatpay.md §4 trimmed to 32 characters", Names{strings.Repeat("奖", 40), "{{.Count}}"}, func(k Key) Key { return k },
			strings.Repeat("奖", 32), "2", nil},
		{"control characters replaced", Names{"a\nb", "x"}, func(k Key) Key { return k }, "a b", "x", nil},
		{"empty falls back to out_batch_no", Names{"  ", "x"}, func(k Key) Key { return k }, "BP10000000000000000042", "x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Batch{OutBatchNo: OutBatchNo("P1", 42), Group: tt.key(k).String(), Items: []Item{{Seq: 42, Amount: 12345}, {Seq: 43, Amount: 5}}}
			name, remark, err := tt.names.Render(b, t0)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if name != tt.wantName || remark != tt.wantRemark {
				t.Fatalf("got %q %q, want %q %q", name, remark, tt.wantName, tt.wantRemark)
			}
			if utf8.RuneCountInString(name) > MaxNameLen || utf8.RuneCountInString(remark) > MaxNameLen {
				t.Fatal("longer than 32 characters")
			}
			// RenderKey takes the parsed key and never reads the group string.
			b.Group = ""
			keyName, keyRemark, err := tt.names.RenderKey(tt.key(k), b, t0)
			if err != nil {
				t.Fatalf("RenderKey: %v", err)
			}
			if got, want := keyName+"|"+keyRemark, name+"|"+remark; got != want {
				t.Fatalf("RenderKey = %q, want Render's %q", got, want)
			}
		})
	}
}

func TestNames_Validate(t *testing.T) {
	tests := []struct {
		name    string
		names   Names
		wantErr error
	}{
		{"default", DefaultNames, nil},
		{"configs/processor.yaml", Names{"{{.Date}} payouts", "payouts {{.Count}}"}, nil},
		{"empty falls back to out_batch_no", Names{"", ""}, nil},
		{"out_batch_no alone fits", Names{"{{.OutBatchNo}}", "{{.MchID}}"}, nil},
		{"yuan and count fit", Names{"{{.Yuan}}元 共{{.Count}}笔", "x"}, nil},
		{"old default remark: out_batch_no and count overflow", Names{"x", "{{.OutBatchNo}} 共{{.Count}}笔"}, ErrNameTooLong},
		{"a 36-character scene overflows", Names{"{{.Date}} 批量转账 {{.Scene}}", "x"}, ErrNameTooLong},
		{"fixed text overflows", Names{strings.Repeat("奖", MaxNameLen+1), "x"}, ErrNameTooLong},
		{"32 fixed characters fit", Names{strings.Repeat("奖", MaxNameLen), "x"}, nil},
		{"unknown field", Names{"{{.Nope}}", "x"}, ErrTemplate},
		{"does not parse", Names{"x", "{{"}, ErrTemplate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.names.Validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestDefaultNames_fit: for every instance id length, the smallest and largest sequence and
// every count a batch can have, the default name and remark render whole (never cut): the
// remark is the out_batch_no, the name carries the count.
func TestDefaultNames_fit(t *testing.T) {
	k := Key{Rail: "partner", MchID: "1900000001", SubMchID: "1900000002", TransferScene: "PAYROLL_CARD_TRANSFER"}
	for idLen := 1; idLen <= MaxInstanceIDLen; idLen++ {
		for _, seq := range []int64{1, math.MaxInt64} {
			no := OutBatchNo(strings.Repeat("Z", idLen), seq)
			for _, count := range []int{1, 9, 10, 999, 1000, MaxDetailsBills, 2999, 3000} {
				b := Batch{OutBatchNo: no, Group: k.String(), Items: make([]Item, count)}
				for i := range b.Items {
					b.Items[i] = Item{Seq: seq, Amount: payout.MaxAmountDefault}
				}
				name, remark, err := DefaultNames.Render(b, t0)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := remark, no; got != want {
					t.Fatalf("remark = %q, want the whole out_batch_no %q", got, want)
				}
				if got, want := name, fmt.Sprintf("20250301 批量转账 共%d笔", count); got != want {
					t.Fatalf("name = %q, want %q", got, want)
				}
			}
		}
	}
}

func TestWidest(t *testing.T) {
	d := Widest()
	if got, want := len(d.OutBatchNo), 32; got != want {
		t.Fatalf("widest out_batch_no has %d characters, want %d", got, want)
	}
	if got, want := d.Count, 3000; got != want {
		t.Fatalf("widest count = %d, want %d (docs/wechatpay.md §6)", got, want)
	}
}

func TestNames_RenderBadGroup(t *testing.T) {
	if _, _, err := DefaultNames.Render(Batch{OutBatchNo: "B1", Group: "nope"}, t0); err == nil {
		t.Fatal("rendered a batch whose group is not a group key")
	}
}
