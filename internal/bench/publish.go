package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// jsDuplicateInProcess is JetStream's 409 "duplicate message id is in process": an earlier
// publish of the same Nats-Msg-Id is still being stored.
const jsDuplicateInProcess jetstream.ErrorCode = 10158

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

// retry re-publishes msg, synchronously, while its failure is passing (transient) and
// retryFor has not passed, waiting 100 ms, doubling up to 2 s, before each attempt.
func (p *publisher) retry(msg *nats.Msg, err error) (*jetstream.PubAck, error) {
	wait, deadline := 100*time.Millisecond, time.Now().Add(p.retryFor)
	for transient(err) && time.Now().Add(wait).Before(deadline) {
		select {
		case <-p.ctx.Done():
			return nil, errors.Join(err, p.ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
		p.stats.Retries++
		if p.onRetry != nil {
			p.onRetry(msg, err)
		}
		ack, perr := p.js.PublishMsg(p.ctx, msg)
		if perr == nil {
			return ack, nil
		}
		err = perr
	}
	return nil, err
}

// transient reports whether a publish that failed with err may succeed when sent again.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsDuplicateInProcess
	}
	return errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}
