package pipeline

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paystream/paystream/internal/metrics"
)

// watchedStage is a stage of the pipeline whose every piece of work ends in seconds: intake's
// validation, claims and commits, and the sealer. One that stays on a piece of work for
// minutes waits for something that does not come, and holds payouts meanwhile (their messages
// unacked, their keys claimed by this replica, so no other replica takes them).
type watchedStage int

const (
	watchValidate watchedStage = iota // intake decoding, checking and dead-lettering a fetched group
	watchClaim                        // intake claiming a group's keys, or sweeping
	watchCommit                       // intake committing a group, handing it to the sealer and acking it
	watchSeal                         // the sealer batching and sealing what it was handed
	numWatched
)

// String is the name of s in Runtime.Stuck, the log and paystream_stage_busy_seconds.
func (s watchedStage) String() string { return metrics.WatchedStages[s] }

// stuckAfter is how long a watched stage may be on one piece of work before it is reported
// stuck: far above any healthy one (a group of 1000 commits in well under a second; a claim
// waits at most for its acks and a few resolution rounds), short enough that the payouts it
// holds are not left waiting unseen.
const stuckAfter = time.Minute

// watch records since when each watched stage has been on its current piece of work and
// reports one that stays on it past stuckAfter: an ERROR line, a goroutine dump in the
// log (where it waits), the replica not ready, and paystream_stage_busy_seconds. Once a
// stage moves again it says so. The stages call begin and end; check reads.
type watch struct {
	since [numWatched]atomic.Int64 // UnixNano the stage began its current work; 0: waiting for work

	after time.Duration
	now   func() time.Time
	log   *slog.Logger
	dump  func()               // writes every goroutine's stack to the log; nil: none
	gauge *prometheus.GaugeVec // paystream_stage_busy_seconds, by stage name; nil: none
	every time.Duration        // how often run checks
	told  [numWatched]int64    // the since value last reported stuck; only check uses it
}

// begin marks s on a piece of work from now; a nil watch does nothing.
func (w *watch) begin(s watchedStage) {
	if w != nil {
		w.since[s].Store(w.now().UnixNano())
	}
}

// end marks s waiting for work; a nil watch does nothing.
func (w *watch) end(s watchedStage) {
	if w != nil {
		w.since[s].Store(0)
	}
}

// StuckStage is a watched stage on one piece of work for longer than it should ever take.
type StuckStage struct {
	Stage string        // one of metrics.WatchedStages
	For   time.Duration // how long it has been on it
}

// busy returns when s began its current piece of work (0: it waits for work) and how long
// it has been on it at now.
func (w *watch) busy(s watchedStage, now time.Time) (since int64, d time.Duration) {
	if since = w.since[s].Load(); since != 0 {
		d = now.Sub(time.Unix(0, since))
	}
	return since, d
}

// stuck returns the stages on one piece of work for at least w.after at now.
func (w *watch) stuck(now time.Time) []StuckStage {
	var out []StuckStage
	for s := range numWatched {
		if _, d := w.busy(s, now); d >= w.after {
			out = append(out, StuckStage{Stage: s.String(), For: d})
		}
	}
	return out
}

// check reports each stage that became stuck since the last check (once per piece of
// work, with one goroutine dump for all of them), each reported one that moved on, and sets
// every stage's busy gauge.
func (w *watch) check(now time.Time) {
	dumped := false
	for s := range numWatched {
		since, busy := w.busy(s, now)
		if w.gauge != nil {
			w.gauge.WithLabelValues(s.String()).Set(busy.Seconds())
		}
		switch {
		case busy >= w.after && w.told[s] != since:
			w.log.Error("pipeline stage stuck: on one piece of work far longer than it ever takes; the payouts it holds wait (a goroutine dump follows in the log)",
				"stage", s.String(), "for", busy.Round(time.Second))
			if w.dump != nil && !dumped {
				w.dump()
				dumped = true
			}
			w.told[s] = since
		case w.told[s] != 0 && w.told[s] != since:
			w.log.Info("pipeline stage moving again", "stage", s.String())
			w.told[s] = 0
		}
	}
}

// run checks every w.every until ctx is done.
func (w *watch) run(ctx context.Context) error {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.check(w.now())
		}
	}
}
