package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
)

// sealer groups claimed payouts into batches (pkg/batching) and seals each one in the
// ledger: out_batch_no, exact members and the frozen bodies its rail builds are committed
// together, before anything is sent (docs/money-rules.md#commit-first). It owns the batcher; timers stay in this loop.
type sealer struct {
	b       *batching.Batcher
	rails   map[string]rail // by ledger rail name
	db      *ledger.DB
	in      <-chan []ledger.Payout
	sealed  func() // wakes the driver
	pending *pendingSet
	now     func() time.Time
	log     *slog.Logger
	watch   *watch // nil: unwatched (tests)

	open map[int64]ledger.Payout // claimed payouts waiting in the batcher, by ledger seq
}

// resume feeds the batcher with every payout left CLAIMED (committed by intake and not yet in a
// batch when the processor stopped), oldest first. It runs
// before intake starts, so no payout also arrives on s.in.
func (s *sealer) resume(ctx context.Context) error {
	for {
		ps, err := s.db.PayoutsInState(ctx, ledger.PayoutClaimed, 10000)
		if err != nil {
			return fmt.Errorf("resume claimed payouts: %w", err)
		}
		fresh := ps[:0]
		for _, p := range ps {
			if _, ok := s.open[p.Seq]; !ok {
				fresh = append(fresh, p)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		if err := s.add(ctx, fresh); err != nil {
			return err
		}
	}
}

func (s *sealer) run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(s.untilDue())
		select {
		case <-ctx.Done():
			return nil // open groups stay CLAIMED (or RECEIVED, from the sweep) in the ledger; the next start resumes (sweeps) them
		case ps := <-s.in:
			s.watch.begin(watchSeal)
			err := s.add(context.WithoutCancel(ctx), ps)
			s.watch.end(watchSeal)
			if err != nil {
				return err
			}
		case <-timer.C:
			s.watch.begin(watchSeal)
			err := s.seal(context.WithoutCancel(ctx), s.b.Due(s.now()))
			s.watch.end(watchSeal)
			if err != nil {
				return err
			}
		}
	}
}

func (s *sealer) untilDue() time.Duration {
	at, ok := s.b.NextDue()
	if !ok {
		return time.Hour
	}
	return max(at.Sub(s.now()), time.Millisecond)
}

func (s *sealer) add(ctx context.Context, ps []ledger.Payout) error {
	now := s.now()
	var full []batching.Batch
	for _, p := range ps {
		s.open[p.Seq] = p
		full = append(full, s.b.Add(batching.Item{
			Seq: p.Seq, OutDetailNo: p.OutDetailNo, Amount: p.Amount, Group: p.GroupKey, Rail: p.Rail, At: now,
		})...)
	}
	return s.seal(ctx, full)
}

func (s *sealer) seal(ctx context.Context, batches []batching.Batch) error {
	for _, b := range batches {
		members := make([]ledger.Payout, len(b.Items))
		for i, it := range b.Items {
			members[i] = s.open[it.Seq]
		}
		lb, err := sealable(s.rails, b, members)
		if err != nil {
			return err
		}
		if err := s.db.ClaimAndSeal(ctx, lb); err != nil {
			return fmt.Errorf("seal batch %s: %w", b.OutBatchNo, err)
		}
		for _, seq := range lb.Members {
			delete(s.open, seq)
		}
		s.pending.drop(lb.Members...)
		s.log.Info("batch sealed", "out_batch_no", b.OutBatchNo, "details", b.TotalNum(), "amount", b.TotalAmount())
		s.sealed()
	}
	return nil
}

// sealable is the ledger batch of b, whose members are its items' rows in order: its number,
// totals computed from the items, and the frozen bodies its rail builds.
func sealable(rails map[string]rail, b batching.Batch, members []ledger.Payout) (ledger.Batch, error) {
	r, ok := rails[b.Rail]
	if !ok {
		return ledger.Batch{}, fmt.Errorf("build batch %s: no rail %q", b.OutBatchNo, b.Rail)
	}
	body, each, err := r.bodies(b, members)
	if err != nil {
		return ledger.Batch{}, fmt.Errorf("build batch %s: %w", b.OutBatchNo, err)
	}
	seqs := make([]int64, len(b.Items))
	for i, it := range b.Items {
		seqs[i] = it.Seq
	}
	return ledger.Batch{
		OutBatchNo: b.OutBatchNo, Rail: b.Rail, GroupKey: b.Group, MchID: members[0].MchID,
		Members: seqs, TotalAmount: b.TotalAmount(), TotalNum: b.TotalNum(), Body: body, Bills: each,
	}, nil
}
