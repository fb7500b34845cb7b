package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/testingutil"
)

// failingConsumer answers every fetch at once with a batch that failed, as a stream without
// a leader does ("no responders") while a NATS node restarts.
type failingConsumer struct {
	jetstream.Consumer
	fetches int
}

func (c *failingConsumer) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.fetches++
	return failedBatch{}, nil
}

type failedBatch struct{}

func (failedBatch) Messages() <-chan jetstream.Msg {
	ch := make(chan jetstream.Msg)
	close(ch)
	return ch
}

func (failedBatch) Error() error { return errors.New("nats: no responders available for request") }

// TestCancels_FetchErrorWaits: a failing fetch is retried after a pause, not in a loop that
// spins and floods the log while NATS recovers.
func TestCancels_FetchErrorWaits(t *testing.T) {
	var logs testingutil.LockedBuffer
	cons := &failingConsumer{}
	c := &cancels{cons: cons, log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := c.run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(logs.String(), "fetching cancels"); cons.fetches > 2 || got > 2 {
		t.Errorf("%d fetches and %d warnings in half a second, want at most 2: a failing fetch must pause", cons.fetches, got)
	}
}
