package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/paystream/paystream/internal/metrics"
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
	now    func() time.Time
	m      *metrics.Metrics
	prog   *progress
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
			// The changes of the next moment join this drain: on the bills rail finals come
			// one at a time (about 100 a second), and a drain for each cost two reads and a
			// write transaction per payout.
			sleepCtx(ctx, outboxGather)
		case <-t.C:
		}
	}
}

// outboxGather is how long a drain waits after it is woken, so that one drain takes in the
// rows written meanwhile; it is all the latency it adds to an outcome.
const outboxGather = 100 * time.Millisecond

func (o *outcomes) drain(ctx context.Context) error {
	if err := o.drainBox(ctx, o.pendingOutcomes, o.db.MarkPublished); err != nil {
		return err
	}
	return o.drainBox(ctx, o.pendingNotices, o.db.MarkNoticesPublished)
}

// drainBox publishes an outbox until it is empty: each round reads up to 500 pending rows,
// publishes them and marks those published.
func (o *outcomes) drainBox(ctx context.Context, pending func(context.Context) ([]event, error),
	mark func(context.Context, []int64) error) error {
	for ctx.Err() == nil {
		evs, err := pending(ctx)
		if err != nil || len(evs) == 0 {
			return err
		}
		ids, err := o.publishAll(ctx, evs)
		if len(ids) > 0 {
			if merr := mark(ctx, ids); merr != nil {
				return merr
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// outboxRound is how many outbox rows one round of drainBox reads.
const outboxRound = 500

func (o *outcomes) pendingOutcomes(ctx context.Context) ([]event, error) {
	pending, err := o.db.PendingOutcomes(ctx, outboxRound)
	evs := make([]event, len(pending))
	for i, p := range pending {
		evs[i] = event{row: p.ID, id: payout.OutcomeMsgID(p.MchID, p.OutDetailNo, p.State), state: p.State, kind: kindOutcome,
			created: p.At, amount: p.Amount, body: payout.OutcomeEvent{
				OutDetailNo: p.OutDetailNo, MchID: p.MchID, State: p.State, Amount: p.Amount,
				OutBatchNo: p.OutBatchNo, BatchID: p.BatchID, DetailID: p.DetailID, FailReason: p.FailReason,
				OutBillNo: p.OutBillNo, TransferBillNo: p.TransferBillNo, At: p.At,
			}}
	}
	return evs, err
}

func (o *outcomes) pendingNotices(ctx context.Context) ([]event, error) {
	pending, err := o.db.PendingNotices(ctx, outboxRound)
	if err != nil {
		return nil, err
	}
	evs := make([]event, len(pending))
	for i, n := range pending {
		evs[i] = event{row: n.ID, state: n.Kind, kind: kindNotice, created: n.At}
		switch n.Kind {
		case ledger.NoticeWaitUserConfirm:
			evs[i].id = payout.NoticeMsgID(n.MchID, n.OutDetailNo, n.Kind, n.TransferBillNo)
			evs[i].body = payout.WaitUserConfirmEvent{
				OutDetailNo: n.OutDetailNo, MchID: n.MchID, AppID: n.AppID, OutBillNo: n.OutBillNo,
				TransferBillNo: n.TransferBillNo, PackageInfo: n.PackageInfo, Amount: n.Amount, ExpireAt: n.ExpireAt, At: n.At,
			}
		case ledger.NoticeCancelRefused:
			evs[i].id = payout.NoticeMsgID(n.MchID, n.OutDetailNo, n.Kind, n.Code)
			evs[i].body = payout.CancelRefusedEvent{OutDetailNo: n.OutDetailNo, MchID: n.MchID, Code: n.Code, State: n.State, Detail: n.Detail, At: n.At}
		default:
			return nil, fmt.Errorf("notice %d: unknown kind %q", n.ID, n.Kind)
		}
	}
	return evs, nil
}

// event is one outbox row to publish: its row id, message id, results subject state and body;
// its outbox (kindOutcome, kindNotice), when the row was written (the ledger's at, written with
// the row) and, for an outcome, the payout's amount.
type event struct {
	row       int64
	id, state string
	body      any
	kind      string
	created   time.Time
	amount    int64
}

// The outboxes, as paystream_outcomes_published_total{kind} names them.
const (
	kindOutcome = "outcome"
	kindNotice  = "notice"
)

// published counts a row published now: the publish lag from the row's creation, the count
// by kind, and the payouts paid or failed for the progress line.
func (o *outcomes) published(ev event) {
	o.m.OutcomePublishLag.Observe(max(0, o.now().Sub(ev.created).Seconds()))
	o.m.OutcomesPublished.WithLabelValues(ev.kind).Inc()
	if ev.kind != kindOutcome {
		return
	}
	switch ev.state {
	case ledger.PayoutSuccess:
		o.prog.paid.Add(1)
		o.prog.paidFen.Add(ev.amount)
	case ledger.PayoutFail, ledger.PayoutRejected:
		o.prog.failed.Add(1)
	}
}

// publishConcurrency is how many outcome publishes wait for their JetStream ack at once:
// each is a round trip, and outcomes have no order among themselves.
const publishConcurrency = 32

// publishAll publishes evs, publishConcurrency at a time, and returns the row ids of those
// published (to mark) and the first error. A row not marked is published again later under
// the same message id, which JetStream deduplicates.
func (o *outcomes) publishAll(ctx context.Context, evs []event) ([]int64, error) {
	var (
		mu    sync.Mutex
		ids   = make([]int64, 0, len(evs))
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, publishConcurrency)
	)
	for _, ev := range evs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := o.publish(ctx, ev.id, ev.state, ev.body)
			if err == nil {
				o.published(ev)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("publish %s: %w", ev.id, err)
				}
				return
			}
			ids = append(ids, ev.row)
		}()
	}
	wg.Wait()
	return ids, first
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
