package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/pkg/ledger"
)

// breaker is what Runtime reads of a gobreaker.CircuitBreaker[T], whatever its T.
type breaker interface {
	Name() string
	State() gobreaker.State
}

// How often the progress line is written while something happens, and the idle line while
// nothing does.
const (
	progressEvery = 30 * time.Second
	idleEvery     = 10 * time.Minute
)

// progress counts what the pipeline did since its last line, and writes one line every
// `every` when anything happened (backlog, in flight, received, committed, paid), and one
// "idle" line every idleEvery otherwise, so an idle processor does not look hung. The counters
// are atomic: every stage adds to them.
type progress struct {
	cons      jetstream.Consumer // for the backlog; nil: unknown
	inFlight  func() int
	log       *slog.Logger
	every     time.Duration
	idleEvery time.Duration

	received, committed, deadLettered atomic.Int64
	paid, paidFen, failed, finished   atomic.Int64
	steps                             atomic.Int64 // batch steps by the driver (submits, polls)

	lastLine time.Time // only report touches it
}

func (p *progress) run(ctx context.Context) error {
	t := time.NewTicker(p.every)
	defer t.Stop()
	p.lastLine = time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			p.report(ctx, now)
		}
	}
}

// report writes the progress line of the interval ending at now, or the idle line when
// nothing happened and none was written for idleEvery, and starts a new interval.
func (p *progress) report(ctx context.Context, now time.Time) {
	received, committed, dead := p.received.Swap(0), p.committed.Swap(0), p.deadLettered.Swap(0)
	paid, paidFen, failed, finished, steps := p.paid.Swap(0), p.paidFen.Swap(0), p.failed.Swap(0), p.finished.Swap(0), p.steps.Swap(0)
	inFlight := 0
	if p.inFlight != nil {
		inFlight = p.inFlight()
	}
	if received == 0 && committed == 0 && dead == 0 && paid == 0 && failed == 0 && finished == 0 && steps == 0 && inFlight == 0 {
		if now.Sub(p.lastLine) >= p.idleEvery {
			p.log.Info("idle: nothing received or paid", "since", p.lastLine.Round(time.Second))
			p.lastLine = now
		}
		return
	}
	attrs := []any{"in_flight", inFlight, "received", received, "committed", committed, "dead_lettered", dead,
		"paid", paid, "paid_fen", paidFen, "failed", failed, "batches_finished", finished, "interval", p.every}
	if backlog, ok := p.backlog(ctx); ok {
		attrs = append([]any{"backlog", backlog}, attrs...)
	}
	p.log.Info("progress", attrs...)
	p.lastLine = now
}

// backlog is the requests consumer's pending count (messages not yet delivered), when it can
// be read within a second.
func (p *progress) backlog(ctx context.Context) (uint64, bool) {
	if p.cons == nil {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ci, err := p.cons.Info(ctx)
	if err != nil {
		return 0, false
	}
	return ci.NumPending, true
}

// maxFinishedSeen bounds the batches finishes remembers as already reported.
const maxFinishedSeen = 4096

// finishes reports each batch that reached its end (settled: final, every member final) in
// this process once: a line with its sums, paystream_batches_finished_total and the progress
// count. The driver checks after each step and the callback handler after each notification,
// so a batch settled by either is reported; the set of reported batches (the latest
// maxFinishedSeen) keeps the two from reporting one batch twice. Safe for concurrent use.
type finishes struct {
	db   *ledger.DB
	m    *metrics.Metrics
	prog *progress
	log  *slog.Logger

	mu    sync.Mutex
	seen  map[string]bool
	order []string // seen, oldest first
}

// check reads the batch and reports it if it is settled and not reported yet. A read error
// is logged at Debug only: the report is a convenience, never a decision.
func (f *finishes) check(ctx context.Context, outBatchNo string) {
	if outBatchNo == "" {
		return
	}
	b, err := f.db.BatchHead(context.WithoutCancel(ctx), outBatchNo)
	if err != nil {
		f.log.Debug("reading a batch to report its end", "out_batch_no", outBatchNo, "err", err)
		return
	}
	if !b.Settled || !f.first(outBatchNo) {
		return
	}
	f.m.BatchesFinished.WithLabelValues(b.Rail, b.State).Inc()
	if f.prog != nil {
		f.prog.finished.Add(1)
	}
	f.log.Info("batch final", "rail", b.Rail, "out_batch_no", b.OutBatchNo, "batch_id", b.BatchID, "state", b.State,
		"total_num", b.TotalNum, "total_amount", b.TotalAmount, "success_num", b.SuccessNum, "success_amount", b.SuccessAmount,
		"fail_num", b.FailNum, "fail_amount", b.FailAmount, "close_reason", b.CloseReason)
}

// first records outBatchNo as reported and says whether it was not already.
func (f *finishes) first(outBatchNo string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[outBatchNo] {
		return false
	}
	if len(f.order) >= maxFinishedSeen {
		delete(f.seen, f.order[0])
		f.order = f.order[1:]
	}
	f.seen[outBatchNo] = true
	f.order = append(f.order, outBatchNo)
	return true
}
