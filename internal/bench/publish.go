package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/paystream/paystream/pkg/payout"
)

// Publishing pace of the benchmarks: cmd/producer's window (configs/producer.yaml), with
// more patience, because a server busy with a processor (a drain publishes while it runs) on
// a loaded machine acks late, and that only slows the publisher down, it is not a failure.
// The stream's duplicate window (newEnv) outlasts a message's last retry.
const (
	// publishWindow is the most asynchronous publishes left unacknowledged.
	publishWindow = 256
	// publishAckTimeout is how long an asynchronous publish waits for its ack before it
	// counts as failed (and is retried).
	publishAckTimeout = 10 * time.Second
	// publishRetryFor is how long a failed publish is retried.
	publishRetryFor = 2 * time.Minute
)

// errPublish matches the error of publisher.wait when a message was never acknowledged.
var errPublish = errors.New("publish failed")

// publisher publishes to JetStream as cmd/producer does: at most window asynchronous
// publishes unacknowledged (publish blocks for room, so nats.go's own pending limit, the
// same number, is never hit and never stalls), each ack waited for, and a publish that
// failed for a passing reason (no ack within the ack timeout, no responders, JetStream's
// "duplicate message id is in process") re-published with the same message, so the same
// Nats-Msg-Id, with a capped backoff for up to retryFor. JetStream deduplicates on that id
// within the stream's duplicate window, so a retry of a message that was stored but whose ack
// was lost is acknowledged as a duplicate, never stored twice. Every message must carry a
// Nats-Msg-Id. publish is for one goroutine; wait ends it.
type publisher struct {
	ctx      context.Context
	js       jetstream.JetStream
	retryFor time.Duration
	onRetry  func(msg *nats.Msg, err error) // called before each re-publish; nil: nothing

	slots   chan struct{}
	pending chan jetstream.PubAckFuture
	done    chan struct{}
	stats   publishStats // written by collect only; read after done
	failed  error        // collect's first failure
}

// publishStats counts what a publisher's acks said.
type publishStats struct {
	Stored     int // acknowledged as new
	Duplicates int // acknowledged as already held (PubAck.Duplicate)
	Retries    int // re-publishes after a passing failure
	Failed     int // never acknowledged
}

// newPublisher returns a publisher on nc with at most window publishes in flight, each
// failing after ackTimeout without an ack and retried for up to retryFor. It stops
// retrying when ctx is done.
func newPublisher(ctx context.Context, nc *nats.Conn, window int, ackTimeout, retryFor time.Duration) (*publisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window), jetstream.WithPublishAsyncTimeout(ackTimeout))
	if err != nil {
		return nil, err
	}
	p := &publisher{
		ctx: ctx, js: js, retryFor: retryFor,
		slots:   make(chan struct{}, window),
		pending: make(chan jetstream.PubAckFuture, window),
		done:    make(chan struct{}),
	}
	go p.collect()
	return p, nil
}

// publish sends m asynchronously once fewer than window publishes are unacknowledged. An
// error means m was not sent (ctx done, or the connection refused it); its outcome otherwise
// comes out of wait.
func (p *publisher) publish(m *nats.Msg) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		<-p.slots
		return fmt.Errorf("%w: %s: %w", errPublish, m.Header.Get(jetstream.MsgIDHeader), err)
	}
	p.pending <- f
	return nil
}

// wait returns once every published message is acknowledged or has failed, with what the
// acks said; an error matching errPublish if any message was never acknowledged. Call it
// once, after the last publish.
func (p *publisher) wait() (publishStats, error) {
	close(p.pending)
	<-p.done
	if p.failed != nil {
		return p.stats, fmt.Errorf("%d messages not acknowledged, the first: %w", p.stats.Failed, p.failed)
	}
	return p.stats, nil
}

// collect waits for each future in order, retrying failed ones, and frees its slot. The ack
// timeout guarantees each future resolves.
func (p *publisher) collect() {
	defer close(p.done)
	for f := range p.pending {
		var ack *jetstream.PubAck
		var err error
		select {
		case ack = <-f.Ok():
		case err = <-f.Err():
			ack, err = p.retry(f.Msg(), err)
		}
		switch {
		case err != nil:
			p.stats.Failed++
			if p.failed == nil {
				p.failed = fmt.Errorf("%w: %s: %w", errPublish, f.Msg().Header.Get(jetstream.MsgIDHeader), err)
			}
		case ack.Duplicate:
			p.stats.Duplicates++
		default:
			p.stats.Stored++
		}
		<-p.slots
	}
}

// retry re-publishes msg while its failure is passing (payout.Republish), counting each attempt.
func (p *publisher) retry(msg *nats.Msg, err error) (*jetstream.PubAck, error) {
	return payout.Republish(p.ctx, p.js, msg, err, p.retryFor, func(err error) {
		p.stats.Retries++
		if p.onRetry != nil {
			p.onRetry(msg, err)
		}
	})
}
