package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/payout"
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

// firstRead runs hook once, right after the first of a cancel's two reads (the requests
// consumer's state and the key's owner), whichever comes first.
type firstRead struct {
	once sync.Once
	hook func()
}

type hookedKV struct {
	jetstream.KeyValue
	r *firstRead
}

func (k hookedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.Get(ctx, key)
	k.r.once.Do(k.r.hook)
	return e, err
}

type hookedConsumer struct {
	jetstream.Consumer
	r *firstRead
}

func (c hookedConsumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	i, err := c.Consumer.Info(ctx)
	c.r.once.Do(c.r.hook)
	return i, err
}

// recordingPublisher keeps the subjects it was asked to publish to.
type recordingPublisher struct{ subjects []string }

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for range msgs {
		p.subjects = append(p.subjects, topic)
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// TestCancels_UnknownWhileAnotherReplicaTakesItIn: between the cancel's two reads, another
// replica claims the request and acks it. Read owner first, the cancel saw no owner and then
// a consumer with nothing left, and answered UNKNOWN_PAYOUT for a payout that replica was
// about to pay (upstream, trusting it, may issue the payout again under a new number). Now
// the owner is read again once nothing is left ahead of the cancel, and only that read is
// believed: it finds replica B.
func TestCancels_UnknownWhileAnotherReplicaTakesItIn(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	ctx := context.Background()
	topo := broker.DefaultTopology()
	requests, kv, err := broker.Ensure(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	const mch, key = "1900000001", "K1"
	cancelCons, err := broker.EnsureCancels(ctx, js, topo, "A", mch)
	if err != nil {
		t.Fatal(err)
	}
	req, err := js.Publish(ctx, payout.Subject(payout.DefaultSubjectPrefix, mch), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, payout.CancelPrefix+"."+mch, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	b, err := cancelCons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cm := <-b.Messages()
	if cm == nil {
		t.Fatal("no cancel delivered")
	}
	r := &firstRead{hook: func() { // replica B takes the request in: claim, commit, ack
		item := claims.Item{Key: claims.Key(mch, key), Digest: make([]byte, claims.DigestSize), StreamSeq: req.Sequence}
		if _, err := claims.New(js, kv, "B").Claim(ctx, []claims.Item{item}); err != nil {
			t.Error(err)
		}
		rb, err := requests.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Error(err)
			return
		}
		for m := range rb.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Error(err)
			}
		}
	}}
	pub := &recordingPublisher{}
	c := &cancels{requests: hookedConsumer{requests, r}, claims: claims.New(js, hookedKV{kv, r}, "A"), mchID: mch,
		prefix: payout.CancelPrefix, pub: pub, results: "payouts.results", retry: time.Second, recorded: func() {},
		now: time.Now, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cancel := payout.CancelRequest{OutDetailNo: key, MchID: mch}
	c.unknown(ctx, cm, cancel)
	c.unknown(ctx, cm, cancel) // the cancel again, as its redelivery would bring it
	if len(pub.subjects) != 0 {
		t.Fatalf("answered %v for a payout replica B owns", pub.subjects)
	}
}
