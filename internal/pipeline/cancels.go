package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// cancels takes upstream cancels (payout.CancelRequest on payouts.cancel.<mchid>) from this
// replica's own durable consumer: every replica sees every cancel of its merchant, because
// only the replica whose ledger holds the payout can act on it. That replica records the
// cancel in the ledger (the driver acts on it: a bill never sent is cancelled locally, one
// WeChat knows is cancelled there and followed to its end); the others stay silent while
// the claims bucket names an owner. A cancel nobody can act on is answered with a
// payout.CancelRefusedEvent, the same message id from every replica, so upstream gets one.
type cancels struct {
	cons     jetstream.Consumer
	requests jetstream.Consumer // the shared consumer of payout requests
	db       *ledger.DB
	claims   *claims.Store
	mchID    string
	prefix   string // payouts.cancel
	pub      message.Publisher
	results  string // payouts.results
	retry    time.Duration
	recorded func() // wakes the driver
	now      func() time.Time
	log      *slog.Logger
}

func (c *cancels) run(ctx context.Context) error {
	for ctx.Err() == nil {
		batch, err := c.cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("fetching cancels", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		for m := range batch.Messages() {
			c.handle(ctx, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			// A stream without a leader answers at once ("no responders"): wait, or this loop
			// spins and logs thousands of lines a second while a NATS node restarts.
			c.log.Warn("fetching cancels", "err", err)
			sleepCtx(ctx, time.Second)
		}
	}
	return nil
}

// handle settles one cancel message: acked once recorded or answered, naked (redelivered
// later) when the ledger, the claims bucket or the publish failed.
func (c *cancels) handle(ctx context.Context, m jetstream.Msg) {
	req, err := payout.DecodeCancel(m.Data())
	if err == nil {
		err = req.Validate()
	}
	if err == nil && m.Subject() != c.prefix+"."+req.MchID {
		err = fmt.Errorf("published to %s but its mchid is %s: the subject must be %s.<mchid of the body>", m.Subject(), req.MchID, c.prefix)
	}
	if err == nil && req.MchID != c.mchID {
		err = fmt.Errorf("mchid %s is not this processor's merchant (%s)", req.MchID, c.mchID)
	}
	if err != nil {
		c.answer(ctx, m, req, payout.CancelInvalid, "", err.Error())
		return
	}
	state, err := c.db.RequestCancel(ctx, req.OutDetailNo, req.Reason)
	switch {
	case err == nil:
		c.log.Info("cancel recorded", "out_detail_no", req.OutDetailNo, "state", state)
		c.recorded()
		c.ack(m)
	case errors.Is(err, ledger.ErrFinal):
		c.answer(ctx, m, req, payout.CancelFinal, state, "the payout is already "+state)
	case errors.Is(err, ledger.ErrCannotCancel) && state == ledger.PayoutDuplicate:
		c.ack(m) // another replica owns it and answers
	case errors.Is(err, ledger.ErrCannotCancel):
		c.answer(ctx, m, req, payout.CancelNotSupported, state, "the batch API cannot cancel a payout once it is sealed into a batch")
	case errors.Is(err, ledger.ErrNotFound):
		c.unknown(ctx, m, req)
	case errors.Is(err, ledger.ErrInvalid):
		c.answer(ctx, m, req, payout.CancelInvalid, "", err.Error()) // the same again would fail the same way
	default:
		c.log.Error("recording a cancel; will retry", "out_detail_no", req.OutDetailNo, "err", err)
		c.nak(m)
	}
}

// unknown answers a cancel for a payout this ledger does not hold: silence if another
// replica owns it, a refusal if nobody does, and later if this instance claimed it (it is
// being taken in) or requests ahead of the cancel are still on their way in.
func (c *cancels) unknown(ctx context.Context, m jetstream.Msg, req payout.CancelRequest) {
	key := claims.Key(req.MchID, req.OutDetailNo)
	for caughtUp := false; ; caughtUp = true {
		o, owned, err := c.claims.Owner(ctx, key)
		switch {
		case err != nil:
			c.log.Warn("reading the owner of a cancelled payout; will retry", "out_detail_no", req.OutDetailNo, "err", err)
			c.nak(m)
			return
		case owned && o.Instance != c.claims.Instance():
			c.ack(m)
			return
		case owned:
			// Intake claims before it commits: the payout is on its way into this ledger (held
			// for its batch, or its message coming back after a crash). Look again soon.
			if err := m.NakWithDelay(catchUpDelay); err != nil {
				c.log.Warn("naking a cancel", "err", err)
			}
			return
		case caughtUp:
			c.answer(ctx, m, req, payout.CancelUnknown, "", "no processor has received a payout with this out_detail_no")
			return
		}
		// No owner. The request may be published before the cancel and not yet taken in:
		// until every request ahead of the cancel in the stream is acked (claimed, then
		// committed), no owner is not proof of none. Once they are, the owner is read again,
		// and only that read is believed: a request another replica claimed and acked since
		// the first read has its claim by then.
		if behind, err := c.requestsBehind(ctx, m); err != nil || behind {
			if err != nil {
				c.log.Warn("reading the requests consumer; will retry the cancel", "out_detail_no", req.OutDetailNo, "err", err)
			}
			if err := m.NakWithDelay(catchUpDelay); err != nil {
				c.log.Warn("naking a cancel", "err", err)
			}
			return
		}
	}
}

// requestsBehind reports whether requests published before the cancel m may still be on
// their way into a ledger: the requests consumer's ack floor is below m and it has work left.
func (c *cancels) requestsBehind(ctx context.Context, m jetstream.Msg) (bool, error) {
	md, err := m.Metadata()
	if err != nil {
		return false, err
	}
	info, err := c.requests.Info(ctx)
	if err != nil {
		return false, err
	}
	caughtUp := info.NumPending == 0 && info.NumAckPending == 0
	return !caughtUp && info.AckFloor.Stream < md.Sequence.Stream, nil
}

// answer publishes a refusal and acks the cancel; on a failed publish the cancel is naked,
// so the refusal is never lost.
func (c *cancels) answer(ctx context.Context, m jetstream.Msg, req payout.CancelRequest, code, state, detail string) {
	body, err := json.Marshal(payout.CancelRefusedEvent{
		OutDetailNo: req.OutDetailNo, MchID: req.MchID, Code: code, State: state, Detail: detail, At: c.now()})
	if err != nil {
		c.log.Error("encoding a cancel refusal", "err", err)
		c.nak(m)
		return
	}
	wm := message.NewMessage(payout.NoticeMsgID(req.MchID, req.OutDetailNo, payout.StateCancelRefused, code), body)
	wm.SetContext(ctx)
	if err := c.pub.Publish(payout.ResultSubject(c.results, payout.StateCancelRefused), wm); err != nil {
		c.log.Warn("publishing a cancel refusal; will retry", "out_detail_no", req.OutDetailNo, "err", err)
		c.nak(m)
		return
	}
	c.log.Info("cancel refused", "out_detail_no", req.OutDetailNo, "code", code, "state", state)
	c.ack(m)
}

// catchUpDelay is how soon a cancel waiting for its request to be taken in is looked at again.
const catchUpDelay = 500 * time.Millisecond

func (c *cancels) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		c.log.Warn("acking a cancel", "err", err)
	}
}

func (c *cancels) nak(m jetstream.Msg) {
	if err := m.NakWithDelay(c.retry); err != nil {
		c.log.Warn("naking a cancel", "err", err)
	}
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
