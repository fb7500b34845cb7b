package bench

import (
	"testing"
	"time"
)

// TestLagOf: the lag of a copy read is from the first live read that held the copy's last
// payout to the copy read, behind what the live ledger held at its last read before then;
// a whole copy lags 0; a copy the live reads cannot date is not judged.
func TestLagOf(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	live := []position{{ms(0), 0}, {ms(20), 1000}, {ms(40), 1000}, {ms(60), 2000}, {ms(80), 3000}, {ms(1000), 3000}, {ms(1020), 4000}}
	for _, tc := range []struct {
		name       string
		copy       position
		wantLag    time.Duration
		wantBehind int64
		wantOK     bool
	}{
		{name: "behind: from the first live read holding the copy's last payout", copy: position{ms(70), 1000},
			wantLag: 50 * time.Millisecond, wantBehind: 1000, wantOK: true},
		{name: "live ahead at its last read before the copy read", copy: position{ms(1030), 2000},
			wantLag: 970 * time.Millisecond, wantBehind: 2000, wantOK: true},
		{name: "whole copy lags 0 however old its last payout", copy: position{ms(990), 3000}, wantOK: true},
		{name: "copy between live reads", copy: position{ms(70), 1500},
			wantLag: 10 * time.Millisecond, wantBehind: 500, wantOK: true},
		{name: "committed before the first live read", copy: position{ms(70), 0}},
		{name: "ahead of every live read", copy: position{ms(1030), 5000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lag, behind, ok := lagOf(live, tc.copy)
			if lag != tc.wantLag || behind != tc.wantBehind || ok != tc.wantOK {
				t.Fatalf("lagOf = %v, %d, %v; want %v, %d, %v", lag, behind, ok, tc.wantLag, tc.wantBehind, tc.wantOK)
			}
		})
	}
}

// TestLagResult_judge: percentiles by nearest rank over the judged reads only, the most
// payouts behind, and the loss at the worst lag at the measured rate.
func TestLagResult_judge(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	s := func(n int) time.Time { return t0.Add(time.Duration(n) * 100 * time.Millisecond) }
	// The live ledger gains 100 payouts every 100 ms from 100 ms on.
	var live []position
	for i := range 100 {
		live = append(live, position{s(i), int64(i) * 100})
	}
	// Twenty copy reads at 2.1 s … 4.0 s, each holding payout 2000 (live's at 2.0 s): lags
	// 0.1 s … 2.0 s, the last 2000 payouts behind; and one the live reads cannot date.
	var copies []position
	for i := 1; i <= 20; i++ {
		copies = append(copies, position{s(20 + i), 2000})
	}
	copies = append(copies, position{s(50), 0})
	r := LagResult{PerSec: 1000}
	r.judge(live, copies)
	want := LagResult{PerSec: 1000, Samples: 100, Reads: 20, Unjudged: 1, P50: 1.0, P95: 1.9, P99: 2.0, Max: 2.0, MaxBehind: 2000, LossAtMax: 2000}
	if r != want {
		t.Fatalf("judge = %+v\nwant     %+v", r, want)
	}
	r.judge(live, nil)
	if r.Reads != 0 || r.P50 != 0 || r.Max != 0 || r.MaxBehind != 0 {
		t.Fatalf("judge of no reads = %+v, want zeros", r)
	}
}
