package payout

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jsDuplicateInProcess is JetStream's 409 "duplicate message id is in process".
const jsDuplicateInProcess jetstream.ErrorCode = 10158

// Transient reports whether a publish that failed with err may succeed when sent again: no
// answer (an async publish timeout, no stream response, no responders, a timeout, as while a
// NATS node restarts), or JetStream's "duplicate message id is in process" while an earlier
// publish of the same id is still being stored.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsDuplicateInProcess
	}
	return errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// Republish sends msg again, synchronously, after its publish failed with err, while the
// failure is Transient and window has not passed: it waits 100 ms before the first attempt,
// doubling up to 2 s, and calls onRetry (if not nil) before each. The message keeps its
// Nats-Msg-Id, so JetStream stores it at most once however often it is sent within the
// stream's duplicate window (which must outlast window). It returns the first ack, or the
// last error.
func Republish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, err error, window time.Duration, onRetry func(error)) (*jetstream.PubAck, error) {
	wait, deadline := 100*time.Millisecond, time.Now().Add(window)
	for Transient(err) && time.Now().Add(wait).Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
		if onRetry != nil {
			onRetry(err)
		}
		ack, perr := js.PublishMsg(ctx, msg)
		if perr == nil {
			return ack, nil
		}
		err = perr
	}
	return nil, err
}
