package batching

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
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
		{"default", DefaultNames, func(k Key) Key { return k }, "20250301 批量转账 1001", "BP10000000000000000042 共2笔", nil},
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
	if err := DefaultNames.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Names{{"{{.Nope}}", "x"}, {"x", "{{"}} {
		if err := bad.Validate(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
}

func TestNames_RenderBadGroup(t *testing.T) {
	if _, _, err := DefaultNames.Render(Batch{OutBatchNo: "B1", Group: "nope"}, t0); err == nil {
		t.Fatal("rendered a batch whose group is not a group key")
	}
}
