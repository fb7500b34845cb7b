package batching

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/payout"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

func mustNew(t testing.TB, cfg Config) *Batcher {
	t.Helper()
	if cfg.InstanceID == "" {
		cfg.InstanceID = "P1"
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func item(seq int64, group string, amount int64, at time.Time) Item {
	return Item{Seq: seq, OutDetailNo: fmt.Sprintf("D%d", seq), Amount: amount, Group: group, Rail: payout.RailDirect, At: at}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{"defaults", Config{InstanceID: "P1"}, nil},
		{"max caps", Config{InstanceID: "abcdefABCD12", CapDirect: 1000, CapPartner: 3000}, nil},
		{"no instance", Config{}, ErrConfig},
		{"instance too long", Config{InstanceID: "abcdefABCD123"}, ErrConfig},
		{"instance charset", Config{InstanceID: "p-1"}, ErrConfig},
		{"docs/wechatpay.md §4 direct cap above 1000", Config{InstanceID: "P1", CapDirect: 1001}, ErrConfig},
		{"docs/wechatpay.md §6 partner cap above 3000", Config{InstanceID: "P1", CapPartner: 3001}, ErrConfig},
		{"bills cap 1000", Config{InstanceID: "P1", CapBills: MaxDetailsBills}, nil},
		{"bills cap 1", Config{InstanceID: "P1", CapBills: 1}, nil},
		{"bills cap above 1000", Config{InstanceID: "P1", CapBills: MaxDetailsBills + 1}, ErrConfig},
		{"negative bills cap", Config{InstanceID: "P1", CapBills: -1}, ErrConfig},
		{"negative cap", Config{InstanceID: "P1", CapDirect: -1}, ErrConfig},
		{"negative wait", Config{InstanceID: "P1", MaxWait: -time.Second}, ErrConfig},
		{"negative amount", Config{InstanceID: "P1", MaxBatchAmount: -1}, ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestCheckCap(t *testing.T) {
	tests := []struct {
		name    string
		rail    string
		n       int
		wantErr string // "" for none; else a part of the message
	}{
		{"direct 1", payout.RailDirect, 1, ""},
		{"direct 1000", payout.RailDirect, 1000, ""},
		{"direct 0", payout.RailDirect, 0, "outside 1..1000 (docs/wechatpay.md §4)"},
		{"direct above 1000", payout.RailDirect, 1001, "outside 1..1000 (docs/wechatpay.md §4)"},
		{"partner 3000", payout.RailPartner, 3000, ""},
		{"partner above 3000", payout.RailPartner, 3001, "outside 1..3000 (docs/wechatpay.md §6)"},
		{"partner negative", payout.RailPartner, -1, "outside 1..3000"},
		{"bills 1000", payout.RailBills, MaxDetailsBills, ""},
		{"bills above 1000", payout.RailBills, MaxDetailsBills + 1, "outside 1..1000"},
		{"unknown rail", "cheques", 1, `unknown rail "cheques"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCap(tt.rail, tt.n)
			if got, want := err != nil, tt.wantErr != ""; got != want {
				t.Fatalf("CheckCap(%q, %d) = %v, want error %v", tt.rail, tt.n, err, want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckCap(%q, %d) = %q, want it to say %q", tt.rail, tt.n, err, tt.wantErr)
			}
		})
	}
}

// TestNew_capMessage: New states the rule of CheckCap, after ErrConfig and the value.
func TestNew_capMessage(t *testing.T) {
	_, err := New(Config{InstanceID: "P1", CapPartner: 3001})
	if got, want := fmt.Sprint(err), "batching: invalid config: partner cap 3001 outside 1..3000 (docs/wechatpay.md §6)"; got != want {
		t.Fatalf("New = %q, want %q", got, want)
	}
}

func TestBatcher_sealsWhenFull(t *testing.T) {
	b := mustNew(t, Config{CapDirect: 3, CapPartner: 4})
	var sealed []Batch
	for i := range int64(7) {
		sealed = append(sealed, b.Add(item(i+1, "g", 100, t0))...)
	}
	p := item(8, "p", 100, t0)
	p.Rail = payout.RailPartner
	for range 4 {
		sealed = append(sealed, b.Add(p)...)
		p.Seq++
	}
	if got, want := len(sealed), 3; got != want {
		t.Fatalf("sealed %d batches, want %d", got, want)
	}
	for i, want := range []int{3, 3, 4} {
		if got := sealed[i].TotalNum(); got != want {
			t.Fatalf("batch %d holds %d, want %d", i, got, want)
		}
	}
	if got, want := sealed[1].OutBatchNo, OutBatchNo("P1", 4); got != want {
		t.Fatalf("out_batch_no = %s, want %s", got, want)
	}
	if got, want := b.Len(), 1; got != want {
		t.Fatalf("Len = %d, want %d", got, want)
	}
}

// TestBatcher_Cap: each rail has its cap, bills defaulting to MaxDetailsBills; an unknown
// rail gets the smallest.
func TestBatcher_Cap(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		rail string
		want int
	}{
		{"direct default", Config{}, payout.RailDirect, 1000},
		{"partner default", Config{}, payout.RailPartner, 3000},
		{"bills default", Config{}, payout.RailBills, MaxDetailsBills},
		{"bills configured", Config{CapBills: 200, CapDirect: 500}, payout.RailBills, 200},
		{"direct not bills", Config{CapBills: 200, CapDirect: 500}, payout.RailDirect, 500},
		{"unknown rail", Config{CapBills: 200, CapDirect: 500}, "cards", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustNew(t, tt.cfg).Cap(tt.rail); got != tt.want {
				t.Fatalf("Cap(%s) = %d, want %d", tt.rail, got, tt.want)
			}
		})
	}
}

// TestBatcher_sealsBillsAtTheirCap: a bills group seals at CapBills, not at the direct cap.
func TestBatcher_sealsBillsAtTheirCap(t *testing.T) {
	b := mustNew(t, Config{CapDirect: 5, CapBills: 3})
	var sealed []Batch
	for i := range int64(7) {
		it := item(i+1, "bills", 100, t0)
		it.Rail = payout.RailBills
		sealed = append(sealed, b.Add(it)...)
	}
	if got, want := len(sealed), 2; got != want {
		t.Fatalf("sealed %d batches, want %d", got, want)
	}
	if got, want := sealed[0].TotalNum(), 3; got != want || sealed[0].Rail != payout.RailBills {
		t.Fatalf("batch holds %d on %s, want %d on bills", got, sealed[0].Rail, want)
	}
}

func TestBatcher_Due(t *testing.T) {
	b := mustNew(t, Config{MaxWait: time.Minute})
	if _, ok := b.NextDue(); ok {
		t.Fatal("NextDue on an empty batcher")
	}
	b.Add(item(1, "a", 100, t0))
	b.Add(item(2, "b", 100, t0.Add(30*time.Second)))
	b.Add(item(3, "a", 100, t0.Add(50*time.Second)))
	next, ok := b.NextDue()
	if !ok || !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("NextDue = %v %v, want %v", next, ok, t0.Add(time.Minute))
	}
	if got := b.Due(t0.Add(time.Minute - time.Nanosecond)); len(got) != 0 {
		t.Fatalf("sealed %d batches before max wait", len(got))
	}
	got := b.Due(t0.Add(time.Minute))
	if len(got) != 1 || got[0].Group != "a" || got[0].TotalNum() != 2 {
		t.Fatalf("Due sealed %+v, want group a with 2 items", got)
	}
	if next, _ := b.NextDue(); !next.Equal(t0.Add(90 * time.Second)) {
		t.Fatalf("NextDue = %v, want group b's", next)
	}
	flushed := b.Flush()
	if len(flushed) != 1 || flushed[0].Group != "b" || b.Len() != 0 {
		t.Fatalf("Flush = %+v, Len %d", flushed, b.Len())
	}
}

func TestBatcher_maxBatchAmount(t *testing.T) {
	b := mustNew(t, Config{MaxBatchAmount: 1000})
	var sealed []Batch
	for i, amount := range []int64{400, 600, 1, 5000, 999} {
		sealed = append(sealed, b.Add(item(int64(i+1), "g", amount, t0))...)
	}
	sealed = append(sealed, b.Flush()...)
	var totals []int64
	for _, s := range sealed {
		totals = append(totals, s.TotalAmount())
	}
	// 400+600 fills it exactly; 1 would exceed; 5000 is alone over the maximum.
	if got, want := fmt.Sprint(totals), "[1000 1 5000 999]"; got != want {
		t.Fatalf("totals = %s, want %s", got, want)
	}
}

func TestBatcher_totalNeverOverflows(t *testing.T) {
	b := mustNew(t, Config{})
	b.Add(item(1, "g", math.MaxInt64, t0))
	if got := b.Add(item(2, "g", 1, t0)); len(got) != 1 || got[0].TotalAmount() != math.MaxInt64 {
		t.Fatalf("sealed %+v, want the first batch alone", got)
	}
}

func TestOutBatchNo(t *testing.T) {
	tests := []struct {
		instance string
		seq      int64
		want     string
	}{
		{"P1", 42, "BP10000000000000000042"},
		{"abcdefABCD12", math.MaxInt64, "BabcdefABCD129223372036854775807"},
	}
	for _, tt := range tests {
		got := OutBatchNo(tt.instance, tt.seq)
		if got != tt.want || !payout.ValidNo(got) {
			t.Fatalf("OutBatchNo(%s, %d) = %s, want %s, valid docs/wechatpay.md §4", tt.instance, tt.seq, got, tt.want)
		}
	}
	if OutBatchNo("A1", 23) == OutBatchNo("A", 123) {
		t.Fatal("instance and sequence are ambiguous")
	}
}

func TestKey(t *testing.T) {
	r := payout.Request{MchID: "1900000001", AppID: "wxa1", SceneID: "1001", UserName: "张三", BatchName: "三月 & 活动=1"}
	k := KeyOf(&r)
	got, err := ParseKey(k.String())
	if err != nil || got != k {
		t.Fatalf("ParseKey(%q) = %+v, %v; want %+v", k.String(), got, err, k)
	}
	anon := r
	anon.UserName = ""
	if GroupKey(&anon) == GroupKey(&r) {
		t.Fatal("docs/wechatpay.md §4: requests with and without user_name share a group")
	}
	p := payout.Request{MchID: "1900000001", SubMchID: "19", AuthorizationType: payout.AuthFund, SpAppID: "wxsp"}
	if got := KeyOf(&p).Rail; got != payout.RailPartner {
		t.Fatalf("rail = %s", got)
	}
	// Stored ledgers hold keys encoded by url.Values.Encode; String must stay byte-identical.
	full := Key{Rail: "partner", MchID: "19", AppID: "wx&1", SceneID: "1001", SubMchID: "s", SubAppID: "sa", SpAppID: "sp",
		AuthorizationType: "FUND", TransferPurpose: "GOODS", TransferScene: "X=1", Named: true, BatchName: "三月 活动", BatchRemark: "r"}
	for _, k := range []Key{k, anonKey(k), full, {}, {Rail: "direct", Named: true}} {
		v := url.Values{}
		for _, f := range keyFields {
			if s := *f.ptr(&k); s != "" {
				v.Set(f.name, s)
			}
		}
		if k.Named {
			v.Set("named", "1")
		}
		if got, want := k.String(), v.Encode(); got != want {
			t.Fatalf("String() = %q, url.Values encoding %q", got, want)
		}
	}
	for _, bad := range []string{"", "rail=direct&evil=1", "%zz"} {
		if _, err := ParseKey(bad); err == nil {
			t.Fatalf("ParseKey(%q) accepted", bad)
		}
	}
}

// TestKeyFor_bills: on the bills rail only rail, mchid and appid group requests (each bill
// has its own body), the key round-trips, and KeyOf is KeyFor(r.Rail()).
func TestKeyFor_bills(t *testing.T) {
	r := payout.Request{MchID: "1900000001", AppID: "wxa1", SceneID: "1000", UserName: "张三", BatchName: "三月",
		UserRecvPerception: "现金奖励", SceneReportInfos: []payout.SceneReportInfo{{InfoType: "活动名称", InfoContent: "x"}}}
	k := KeyFor(payout.RailBills, &r)
	if want := (Key{Rail: payout.RailBills, MchID: "1900000001", AppID: "wxa1"}); k != want {
		t.Fatalf("KeyFor(bills) = %+v, want %+v", k, want)
	}
	if got, want := k.String(), "appid=wxa1&mchid=1900000001&rail=bills"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got, err := ParseKey(k.String()); err != nil || got != k {
		t.Fatalf("ParseKey = %+v, %v; want %+v", got, err, k)
	}
	other := r
	other.SceneID, other.UserName, other.BatchName, other.UserRecvPerception = "1005", "", "", ""
	if GroupKeyFor(payout.RailBills, &other) != GroupKeyFor(payout.RailBills, &r) {
		t.Fatal("bills with other scenes, names or hints do not share a group")
	}
	if GroupKeyFor(payout.RailDirect, &other) == GroupKeyFor(payout.RailDirect, &r) {
		t.Fatal("direct requests with other scenes share a group")
	}
	otherApp := r
	otherApp.AppID = "wxa2"
	if GroupKeyFor(payout.RailBills, &otherApp) == GroupKeyFor(payout.RailBills, &r) {
		t.Fatal("bills of two appids share a group")
	}
	if KeyOf(&r) != KeyFor(r.Rail(), &r) || GroupKey(&r) != GroupKeyFor(payout.RailDirect, &r) {
		t.Fatal("KeyOf is not KeyFor(r.Rail())")
	}
}

func anonKey(k Key) Key {
	k.Named = false
	return k
}

// FuzzBatcher drives a Batcher with an arbitrary sequence of adds, clock steps, Due and
// Flush calls and checks the invariants of the package comment.
func FuzzBatcher(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 250, 251, 252, 253}, uint8(3), uint8(5), int64(0))
	f.Add([]byte(strings.Repeat("\x01\x02\x03\xfe", 50)), uint8(1), uint8(2), int64(500))
	f.Fuzz(func(t *testing.T, ops []byte, capDirect, capPartner uint8, maxAmount int64) {
		cfg := Config{InstanceID: "F", CapDirect: int(capDirect)%10 + 1, CapPartner: int(capPartner)%20 + 1, CapBills: int(capDirect)%7 + 1,
			MaxWait: 3 * time.Second, MaxBatchAmount: max(maxAmount, 0)}
		b := mustNew(t, cfg)
		now := t0
		added := map[string]Item{}
		var sealed []Batch
		for i, op := range ops {
			switch {
			case op >= 250: // flush
				sealed = append(sealed, b.Flush()...)
			case op >= 240: // advance the clock, then Due
				now = now.Add(time.Duration(op-239) * time.Second)
				sealed = append(sealed, b.Due(now)...)
			default:
				it := item(int64(i+1), fmt.Sprintf("g%d", op%5), int64(op)*37+1, now)
				switch op % 5 {
				case 4:
					it.Rail = payout.RailPartner
				case 3:
					it.Rail = payout.RailBills
				}
				added[it.OutDetailNo] = it
				sealed = append(sealed, b.Add(it)...)
			}
		}
		sealed = append(sealed, b.Flush()...)
		if b.Len() != 0 {
			t.Fatalf("Len = %d after Flush", b.Len())
		}
		seen := map[string]bool{}
		numbers := map[string]bool{}
		for _, s := range sealed {
			if numbers[s.OutBatchNo] || !payout.ValidNo(s.OutBatchNo) {
				t.Fatalf("out_batch_no %q repeated or invalid", s.OutBatchNo)
			}
			numbers[s.OutBatchNo] = true
			if n := s.TotalNum(); n == 0 || n > b.Cap(s.Rail) || n > 3000 {
				t.Fatalf("batch %s holds %d, cap %d", s.OutBatchNo, n, b.Cap(s.Rail))
			}
			var sum int64
			for _, it := range s.Items {
				if it.Group != s.Group || it.Rail != s.Rail {
					t.Fatalf("batch %s mixes groups", s.OutBatchNo)
				}
				if seen[it.OutDetailNo] {
					t.Fatalf("%s in two batches", it.OutDetailNo)
				}
				seen[it.OutDetailNo] = true
				sum += it.Amount
			}
			if sum != s.TotalAmount() {
				t.Fatalf("total %d, sum %d", s.TotalAmount(), sum)
			}
			if cfg.MaxBatchAmount > 0 && sum > cfg.MaxBatchAmount && s.TotalNum() > 1 {
				t.Fatalf("batch %s total %d over %d", s.OutBatchNo, sum, cfg.MaxBatchAmount)
			}
		}
		if len(seen) != len(added) {
			t.Fatalf("%d items added, %d batched", len(added), len(seen))
		}
	})
}

// BenchmarkBatcher reports the cost per request of batching n requests over 6 groups; it
// should stay flat from 10k to 1M (O(n)).
func BenchmarkBatcher(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			groups := make([]string, 6)
			for i := range groups {
				groups[i] = fmt.Sprintf("appid=wxa%d&mchid=1900000001&rail=direct", i)
			}
			b.ReportAllocs()
			var batches int
			for b.Loop() {
				bt := mustNew(b, Config{MaxWait: time.Minute})
				now := t0
				for i := range n {
					now = now.Add(time.Millisecond)
					it := Item{Seq: int64(i + 1), OutDetailNo: "D", Amount: 100, Group: groups[i%len(groups)], Rail: payout.RailDirect, At: now}
					batches += len(bt.Add(it))
					if i%1000 == 0 {
						batches += len(bt.Due(now))
					}
				}
				batches += len(bt.Flush())
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/request")
			b.ReportMetric(float64(batches)/float64(b.N), "batches/op")
		})
	}
}
