package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/paystream/paystream/pkg/ledger"
)

// OutcomeEvent is what upstream systems receive on payouts.results.<state> when a payout
// reaches a final state: SUCCESS, FAIL, REJECTED or DUPLICATE. Published exactly once per
// (out_detail_no, state) thanks to the JetStream message id.
type OutcomeEvent struct {
	OutDetailNo string    `json:"out_detail_no"`
	MchID       string    `json:"mchid"`
	State       string    `json:"state"`
	Amount      int64     `json:"amount"`
	OutBatchNo  string    `json:"out_batch_no,omitempty"`
	BatchID     string    `json:"batch_id,omitempty"`
	DetailID    string    `json:"detail_id,omitempty"`
	FailReason  string    `json:"fail_reason,omitempty"`
	At          time.Time `json:"at"`
}

// outcomes drains the ledger's outbox onto the results subjects. The outbox row is written
// in the same transaction that made the payout final, so no outcome is lost; a crash between
// publish and mark republishes with the same message id, which JetStream deduplicates.
type outcomes struct {
	db     *ledger.DB
	pub    message.Publisher
	prefix string // payouts.results
	wake   <-chan struct{}
	every  time.Duration
	log    *slog.Logger
}

func (o *outcomes) run(ctx context.Context) error {
	t := time.NewTicker(o.every)
	defer t.Stop()
	for {
		if err := o.drain(ctx); err != nil && ctx.Err() == nil {
			o.log.Warn("publishing outcomes", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
		case <-t.C:
		}
	}
}

func (o *outcomes) drain(ctx context.Context) error {
	for ctx.Err() == nil {
		pending, err := o.db.PendingOutcomes(ctx, 500)
		if err != nil || len(pending) == 0 {
			return err
		}
		ids := make([]int64, 0, len(pending))
		for _, p := range pending {
			body, err := json.Marshal(OutcomeEvent{
				OutDetailNo: p.OutDetailNo, MchID: p.MchID, State: p.State, Amount: p.Amount,
				OutBatchNo: p.OutBatchNo, BatchID: p.BatchID, DetailID: p.DetailID, FailReason: p.FailReason, At: p.At,
			})
			if err != nil {
				return err
			}
			m := message.NewMessage(p.MchID+"."+p.OutDetailNo+"."+p.State, body)
			m.SetContext(ctx)
			if err := o.pub.Publish(o.prefix+"."+strings.ToLower(p.State), m); err != nil {
				return fmt.Errorf("publish outcome %s: %w", p.OutDetailNo, err)
			}
			ids = append(ids, p.ID)
		}
		if err := o.db.MarkPublished(ctx, ids); err != nil {
			return err
		}
	}
	return nil
}
