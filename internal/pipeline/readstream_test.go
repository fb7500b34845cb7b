package pipeline

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/natstest"
)

// readAll reads stream through readStream and returns the stream sequences it was given.
func readAll(t *testing.T, st jetstream.Stream, subjects []string, each func(n int)) []uint64 {
	t.Helper()
	var seqs []uint64
	err := readStream(context.Background(), st, subjects, func(_ jetstream.Msg, md *jetstream.MsgMetadata) {
		seqs = append(seqs, md.Sequence.Stream)
		if each != nil {
			each(len(seqs))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}

// mustReadAllInOrder fails unless seqs are the stream sequences 1 to total, in order: every
// message read once.
func mustReadAllInOrder(t *testing.T, seqs []uint64, total int) {
	t.Helper()
	if len(seqs) != total {
		t.Fatalf("read %d of %d messages", len(seqs), total)
	}
	for i, q := range seqs {
		if q != uint64(i+1) {
			t.Fatalf("message %d has stream sequence %d", i, q)
		}
	}
}

// streamOf makes stream R on r.> holding n messages, r.0 to r.<n-1>.
func streamOf(t *testing.T, js jetstream.JetStream, n int) jetstream.Stream {
	t.Helper()
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("r.%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestReadStream_lostPullIsReadAgain: the answer to a pull is lost with its connection. The
// server counted that batch as delivered to the ordered consumer, so the consumer's count of
// what is pending leaves it out; a read that trusted it ended 1000 messages short with no
// error, and an adoption then missed a CANCELLED outcome (and paid it) or a request (and left
// it). Every message stored when the read began is read, once, in order.
func TestReadStream_lostPullIsReadAgain(t *testing.T) {
	s := natstest.Run(t)
	ctx := context.Background()
	const total = 2500
	streamOf(t, natstest.Connect(t, s), total)
	p, err := faultproxy.Start("127.0.0.1:0", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	js := natstest.ConnectURL(t, p.URL(), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	st, err := js.Stream(ctx, "R")
	if err != nil {
		t.Fatal(err)
	}
	seqs := readAll(t, st, nil, func(n int) {
		if n == 10 { // within the first batch: the answer to the next pull is lost
			p.CutAfter([]byte("CONSUMER.MSG.NEXT"), 1)
		}
	})
	if p.Cuts() != 1 {
		t.Fatalf("%d cuts, want 1", p.Cuts())
	}
	mustReadAllInOrder(t, seqs, total)
}

// TestReadStream_lostMiddleIsReadAgain: a batch loses its middle (the connection dropped while
// the server sent it, and the client was back before the rest came: seen beside a loaded
// machine, where a read ended 645 of 2500 messages short with no error). The ordered consumer
// would go on after the last message that arrived; every message is read, once, in order.
func TestReadStream_lostMiddleIsReadAgain(t *testing.T) {
	const total = 2500
	st := streamOf(t, natstest.Connect(t, natstest.Run(t)), total)
	ls := &losingStream{Stream: st, lose: func(consumer, batch, i int) bool {
		return consumer == 1 && batch == 2 && i >= 100 && i < 745
	}}
	seqs := readAll(t, ls, nil, nil)
	if ls.lost != 645 || ls.opened != 2 {
		t.Fatalf("%d messages lost, %d consumers opened; want 645 lost in the second batch and one consumer more", ls.lost, ls.opened)
	}
	mustReadAllInOrder(t, seqs, total)
}

// TestReadStream_noProgressEnds: every batch loses its first delivery, so no fetch can be
// read. The read ends with errReadStalled after maxReadStalls consumers, rather than making
// consumers for ever.
func TestReadStream_noProgressEnds(t *testing.T) {
	st := streamOf(t, natstest.Connect(t, natstest.Run(t)), 10)
	ls := &losingStream{Stream: st, lose: func(_, _, i int) bool { return i == 0 }}
	err := readStream(context.Background(), ls, nil, func(jetstream.Msg, *jetstream.MsgMetadata) { t.Fatal("a message was read") })
	if !errors.Is(err, errReadStalled) {
		t.Fatalf("read ended with %v, want errReadStalled", err)
	}
	if ls.opened != maxReadStalls {
		t.Fatalf("%d consumers opened, want %d", ls.opened, maxReadStalls)
	}
}

// losingStream is a stream whose ordered consumers lose the messages lose names (the i-th of
// the batch-th fetch of the consumer-th consumer opened, each from 1 but i from 0), as a lost
// connection would; it counts the consumers opened and the messages lost.
type losingStream struct {
	jetstream.Stream
	lose         func(consumer, batch, i int) bool
	opened, lost int
}

func (s *losingStream) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.Stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.opened++
	return &losingConsumer{Consumer: c, s: s, n: s.opened}, nil
}

type losingConsumer struct {
	jetstream.Consumer
	s          *losingStream
	n, batches int
}

func (c *losingConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	b, err := c.Consumer.Fetch(n, opts...)
	if err != nil {
		return nil, err
	}
	c.batches++
	out, i := make(chan jetstream.Msg, n), 0
	for m := range b.Messages() {
		if c.s.lose(c.n, c.batches, i) {
			c.s.lost++
		} else {
			out <- m
		}
		i++
	}
	close(out)
	return batchOf{out, b.Error()}, nil
}

// TestReadStream_subjectsAndStart: only the messages on the subjects are read, up to the last
// one stored when the read began (here far before the stream's end), and none stored after.
func TestReadStream_subjectsAndStart(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := range 3000 {
		subject := "r.other"
		if i%7 == 0 && i < 1500 {
			subject = "r.wanted"
		}
		a, err := js.Publish(ctx, subject, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if subject == "r.wanted" {
			want = append(want, a.Sequence)
		}
	}
	got := readAll(t, st, []string{"r.wanted"}, func(n int) {
		if n == 1 { // stored after the read began: not read
			if _, err := js.Publish(ctx, "r.wanted", []byte("late")); err != nil {
				t.Error(err)
			}
		}
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read %d messages %v…, want %d %v…", len(got), got[:min(5, len(got))], len(want), want[:5])
	}
	if none := readAll(t, st, []string{"r.none"}, nil); len(none) != 0 {
		t.Fatalf("read %d messages on a subject that has none", len(none))
	}
}

// laggingStream is a stream whose ordered consumers run on a copy that holds only its first
// upTo messages for their first fetches: they say nothing is pending behind message upTo,
// bring nothing on the fetch after it, and only then catch up (a replica behind the leader).
type laggingStream struct {
	jetstream.Stream
	upTo uint64
}

func (s laggingStream) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.Stream.OrderedConsumer(ctx, cfg)
	return &laggingConsumer{Consumer: c, upTo: s.upTo}, err
}

type laggingConsumer struct {
	jetstream.Consumer
	upTo, read uint64
	caughtUp   bool
}

func (c *laggingConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	switch {
	case c.caughtUp:
		return c.Consumer.Fetch(n, opts...)
	case c.read == c.upTo: // the copy has nothing more yet
		c.caughtUp = true
		none := make(chan jetstream.Msg)
		close(none)
		return batchOf{msgs: none}, nil
	}
	b, err := c.Consumer.Fetch(int(min(uint64(n), c.upTo-c.read)), opts...)
	if err != nil {
		return nil, err
	}
	out := make(chan jetstream.Msg, n)
	for m := range b.Messages() {
		c.read++
		out <- laggingMsg{m, c.upTo - c.read}
	}
	close(out)
	return batchOf{out, b.Error()}, nil
}

type laggingMsg struct {
	jetstream.Msg
	pending uint64
}

func (m laggingMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := m.Msg.Metadata()
	if err == nil {
		md.NumPending = m.pending
	}
	return md, err
}

type batchOf struct {
	msgs chan jetstream.Msg
	err  error
}

func (b batchOf) Messages() <-chan jetstream.Msg { return b.msgs }
func (b batchOf) Error() error                   { return b.err }

// TestReadStream_aLaggingCopyIsReadToTheEnd: the consumer's copy of the stream holds 300 of
// 1000 messages at first, says nothing is pending behind the 300th and brings nothing on the
// next fetch. The read still ends only at the leader's last message.
func TestReadStream_aLaggingCopyIsReadToTheEnd(t *testing.T) {
	const total = 1000
	st := streamOf(t, natstest.Connect(t, natstest.Run(t)), total)
	for _, subjects := range [][]string{nil, {"r.>"}} {
		seqs := readAll(t, laggingStream{st, 300}, subjects, nil)
		if len(seqs) != total || seqs[0] != 1 || seqs[total-1] != total {
			t.Fatalf("subjects %v: read %d messages (%v … %v), want all %d", subjects, len(seqs), seqs[:min(3, len(seqs))], seqs[max(0, len(seqs)-3):], total)
		}
	}
}

// TestReadStream_unansweredPullIsReadAgain: on a cluster a pull can reach no consumer (the
// node the client is on does not know yet where the ordered fetch's new consumer runs), and
// the fetch brings nothing but nats.ErrNoResponders. The read goes on after the last message
// read: every message once, in order. Pulls never answered end with the read's context.
func TestReadStream_unansweredPullIsReadAgain(t *testing.T) {
	const total = 2500
	st := streamOf(t, natstest.Connect(t, natstest.Run(t)), total)
	us := &unansweredStream{Stream: st, unanswered: func(fetch int) bool { return fetch == 2 || fetch == 3 }}
	mustReadAllInOrder(t, readAll(t, us, nil, nil), total)
	if us.refused != 2 {
		t.Fatalf("%d pulls unanswered, want 2", us.refused)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	never := &unansweredStream{Stream: st, unanswered: func(int) bool { return true }}
	err := readStream(ctx, never, nil, func(jetstream.Msg, *jetstream.MsgMetadata) { t.Fatal("a message was read") })
	if !errors.Is(err, context.DeadlineExceeded) || never.refused < 2 {
		t.Fatalf("read of a stream whose pulls are never answered ended with %v after %d pulls, want the context's deadline after several", err, never.refused)
	}
}

// unansweredStream is a stream whose ordered consumers' fetches (counted across consumers,
// from 1) named by unanswered bring nothing and end with nats.ErrNoResponders, as a pull
// that reached no consumer does; it counts them.
type unansweredStream struct {
	jetstream.Stream
	unanswered       func(fetch int) bool
	fetches, refused int
}

func (s *unansweredStream) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.Stream.OrderedConsumer(ctx, cfg)
	return unansweredConsumer{c, s}, err
}

type unansweredConsumer struct {
	jetstream.Consumer
	s *unansweredStream
}

func (c unansweredConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	if c.s.fetches++; c.s.unanswered(c.s.fetches) {
		c.s.refused++
		none := make(chan jetstream.Msg)
		close(none)
		return batchOf{none, nats.ErrNoResponders}, nil
	}
	return c.Consumer.Fetch(n, opts...)
}
