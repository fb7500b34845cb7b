package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// outcomes drains the ledger's two outboxes onto the results subjects (payout.ResultSubject):
// final outcomes (payout.OutcomeEvent on payouts.results.<state>) and notices
// (payout.WaitUserConfirmEvent on payouts.results.wait_user_confirm, payout.CancelRefusedEvent
// on payouts.results.cancel_refused). Each row is written in the same transaction as the
// change it reports, so none is lost; a crash between publish and mark republishes with the
// same message id, which JetStream deduplicates.
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
	if err := o.drainOutcomes(ctx); err != nil {
		return err
	}
	return o.drainNotices(ctx)
}

func (o *outcomes) drainOutcomes(ctx context.Context) error {
	for ctx.Err() == nil {
		pending, err := o.db.PendingOutcomes(ctx, 500)
		if err != nil || len(pending) == 0 {
			return err
		}
		ids := make([]int64, 0, len(pending))
		for _, p := range pending {
			err := o.publish(ctx, p.MchID+"."+p.OutDetailNo+"."+p.State, p.State, payout.OutcomeEvent{
				OutDetailNo: p.OutDetailNo, MchID: p.MchID, State: p.State, Amount: p.Amount,
				OutBatchNo: p.OutBatchNo, BatchID: p.BatchID, DetailID: p.DetailID, FailReason: p.FailReason,
				OutBillNo: p.OutBillNo, TransferBillNo: p.TransferBillNo, At: p.At,
			})
			if err != nil {
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

func (o *outcomes) drainNotices(ctx context.Context) error {
	for ctx.Err() == nil {
		pending, err := o.db.PendingNotices(ctx, 500)
		if err != nil || len(pending) == 0 {
			return err
		}
		ids := make([]int64, 0, len(pending))
		for _, n := range pending {
			var ev any
			switch n.Kind {
			case ledger.NoticeWaitUserConfirm:
				ev = payout.WaitUserConfirmEvent{
					OutDetailNo: n.OutDetailNo, MchID: n.MchID, AppID: n.AppID, OutBillNo: n.OutBillNo,
					TransferBillNo: n.TransferBillNo, PackageInfo: n.PackageInfo, Amount: n.Amount, ExpireAt: n.ExpireAt, At: n.At,
				}
			case ledger.NoticeCancelRefused:
				ev = payout.CancelRefusedEvent{OutDetailNo: n.OutDetailNo, MchID: n.MchID, Code: n.Code, State: n.State, Detail: n.Detail, At: n.At}
			default:
				return fmt.Errorf("notice %d: unknown kind %q", n.ID, n.Kind)
			}
			if err := o.publish(ctx, n.MchID+"."+n.OutDetailNo+"."+n.Kind+"."+fmt.Sprint(n.ID), n.Kind, ev); err != nil {
				return fmt.Errorf("publish notice %s %s: %w", n.Kind, n.OutDetailNo, err)
			}
			ids = append(ids, n.ID)
		}
		if err := o.db.MarkNoticesPublished(ctx, ids); err != nil {
			return err
		}
	}
	return nil
}

// publish sends ev as JSON on the results subject of state, with message id id.
func (o *outcomes) publish(ctx context.Context, id, state string, ev any) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	m := message.NewMessage(id, body)
	m.SetContext(ctx)
	return o.pub.Publish(payout.ResultSubject(o.prefix, state), m)
}
