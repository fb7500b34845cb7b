package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/pkg/ledger"
)

// Headers of dead-lettered messages.
const (
	HeaderReason        = "Paystream-Reason"          // why the message was refused, safe to log
	HeaderReasonClass   = "Paystream-Reason-Class"    // invalid | conflict
	HeaderOrigSubject   = "Paystream-Orig-Subject"    // where it was published
	HeaderOrigStreamSeq = "Paystream-Orig-Stream-Seq" // its sequence in the payouts stream
)

// deadLetters publishes refused requests, with their reason, to <subject>.<class> through
// watermill (one message at a time is fine here: bad input is rare), then terminates the
// original so it is never redelivered. The message id makes a repeated dead-letter of the
// same stream sequence a no-op.
type deadLetters struct {
	pub     message.Publisher
	subject string
	log     *slog.Logger
}

func (d *deadLetters) send(ctx context.Context, m jetstream.Msg, class, reason string) error {
	md, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	wm := message.NewMessage("dl-"+md.Stream+"-"+seq, m.Data())
	wm.SetContext(ctx)
	wm.Metadata.Set(HeaderReason, reason)
	wm.Metadata.Set(HeaderReasonClass, class)
	wm.Metadata.Set(HeaderOrigSubject, m.Subject())
	wm.Metadata.Set(HeaderOrigStreamSeq, seq)
	if err := d.pub.Publish(d.subject+"."+class, wm); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	d.log.Warn("payout request dead-lettered", "class", class, "reason", reason, "stream_seq", seq)
	if err := m.TermWithReason(class + ": " + truncate(reason, 200)); err != nil {
		d.log.Warn("term failed", "err", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

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
