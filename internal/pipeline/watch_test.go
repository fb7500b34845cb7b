package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// TestWatch_ReportsEachStuckPieceOnce: a stage on one piece of work for stuckAfter is
// reported once (an ERROR naming it, one goroutine dump for every stage that got stuck at
// that check, its busy gauge); when it moves on, that is logged; a later piece that gets
// stuck is reported again.
func TestWatch_ReportsEachStuckPieceOnce(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	now := t0
	var log bytes.Buffer
	dumps := 0
	m := metrics.New("")
	w := &watch{after: time.Minute, now: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(&log, nil)),
		dump: func() { dumps++ }, gauge: m.StageBusy}
	busy := func(stage string) float64 { return testutil.ToFloat64(m.StageBusy.WithLabelValues(stage)) }
	count := func(msg string) int { return strings.Count(log.String(), msg) }

	w.begin(watchCommit)
	w.begin(watchSeal)
	now = t0.Add(59 * time.Second)
	w.check(now)
	if got := w.stuck(now); len(got) != 0 || count("stuck") != 0 || dumps != 0 || busy("commit") != 59 || busy("claim") != 0 {
		t.Fatalf("at 59s: stuck %v, log %q, %d dumps, commit busy %v; want nothing reported yet, busy 59", got, log.String(), dumps, busy("commit"))
	}
	now = t0.Add(61 * time.Second)
	w.check(now)
	got := w.stuck(now)
	if len(got) != 2 || got[0] != (StuckStage{"commit", 61 * time.Second}) || got[1].Stage != "seal" {
		t.Fatalf("stuck %v, want commit and seal for 61s", got)
	}
	if count("pipeline stage stuck") != 2 || !strings.Contains(log.String(), "stage=commit for=1m1s") || dumps != 1 {
		t.Fatalf("%d dumps, log:\n%s\nwant both stages reported at ERROR with one dump", dumps, log.String())
	}
	now = t0.Add(5 * time.Minute)
	w.check(now)
	if count("pipeline stage stuck") != 2 || dumps != 1 || busy("seal") != 300 {
		t.Fatalf("the same pieces reported again (%d dumps), or the gauge not kept (%v):\n%s", dumps, busy("seal"), log.String())
	}

	w.end(watchCommit)
	w.check(now)
	if count("pipeline stage moving again") != 1 || !strings.Contains(log.String(), "moving again\" stage=commit") || busy("commit") != 0 {
		t.Fatalf("commit moved on: log\n%s\nbusy %v", log.String(), busy("commit"))
	}
	w.begin(watchCommit) // the next piece of work, stuck too
	now = now.Add(2 * time.Minute)
	w.check(now)
	if count("stage=commit for=2m0s") != 1 || dumps != 2 {
		t.Fatalf("a new stuck piece not reported (%d dumps):\n%s", dumps, log.String())
	}
	var nilWatch *watch // intake and sealer in tests run unwatched
	nilWatch.begin(watchClaim)
	nilWatch.end(watchClaim)
}

// TestWatch_SweepBlockedOnTheSealer: a sweep page is one piece of the claim stage's work,
// open until the sealer takes its owned payouts: while nothing reads the sealer's channel the
// watch reports the claim stage stuck; once the payouts are taken the sweep ends and nothing
// is stuck.
func TestWatch_SweepBlockedOnTheSealer(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	if _, err := db.InsertPayouts(ctx, testRows("R", 3)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	began := make(chan struct{}, 4) // a piece of work began (begin reads the clock)
	w := &watch{after: time.Minute, log: slog.New(slog.DiscardHandler), now: func() time.Time {
		select {
		case began <- struct{}{}:
		default:
		}
		return t0
	}}
	toSealer := make(chan []ledger.Payout) // nobody reads it until the test does
	in := &intake{m: metrics.New(""), prog: &progress{}, cfg: IntakeConfig{FetchBatch: 10}, db: db, claims: claims.New(js, kv, db.InstanceID()),
		pending: newPendingSet(), merchant: Merchant{MchID: "1900000001"}, prefix: payout.DefaultSubjectPrefix,
		claimed: toSealer, log: slog.New(slog.DiscardHandler), watch: w}
	done := make(chan error, 1)
	go func() { done <- in.sweep(ctx) }()

	select {
	case <-began:
	case <-time.After(30 * time.Second):
		t.Fatal("the sweep began no piece of work within 30s")
	}
	// The page cannot end before the sealer takes its payouts, which nobody does yet.
	if got := w.stuck(t0.Add(2 * time.Minute)); len(got) != 1 || got[0] != (StuckStage{"claim", 2 * time.Minute}) {
		t.Fatalf("stuck %v while the page waits for the sealer, want claim for 2m", got)
	}
	var keys []string
	for _, p := range <-toSealer {
		keys = append(keys, p.OutDetailNo)
	}
	if err := <-done; err != nil || strings.Join(keys, ",") != "R0,R1,R2" {
		t.Fatalf("sweep: %v, handed %v to the sealer; want nil and R0,R1,R2", err, keys)
	}
	if got := w.stuck(t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("stuck after the sweep ended: %v", got)
	}
}
