package payout

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjetstream "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/paystream/paystream/internal/natstest"
)

// mustJetStream runs an embedded JetStream server with a "payouts" stream on
// payouts.requests.> and returns a client for it.
func mustJetStream(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	return connect(t, natstest.Run(t))
}

func connect(t *testing.T, s *server.Server) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "payouts", Subjects: []string{DefaultSubjectPrefix + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	return js, st
}

func TestPublisher_Publish(t *testing.T) {
	js, st := mustJetStream(t)
	ctx := t.Context()
	at := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	p := NewPublisher(js, WithSource("test"), WithClock(func() time.Time { return at }))

	r := direct()
	r.Schema = "" // filled in by the publisher
	dup, err := p.Publish(ctx, r)
	if err != nil || dup {
		t.Fatalf("first publish: dup=%v err=%v", dup, err)
	}
	dup, err = p.Publish(ctx, r)
	if err != nil || !dup {
		t.Fatalf("second publish: dup=%v err=%v, want a duplicate", dup, err)
	}

	mustHoldOne(t, st)
	got := lastRequest(t, st, r)
	if got.Source != "test" || !got.CreatedAt.Equal(at) || got.Schema != SchemaV1 {
		t.Fatalf("metadata = %q %v %q, want filled in", got.Source, got.CreatedAt, got.Schema)
	}
}

func TestPublisher_invalidIsNotSent(t *testing.T) {
	js, st := mustJetStream(t)
	p := NewPublisher(js)
	r := direct()
	r.Amount = 0
	if _, err := p.Publish(t.Context(), r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if _, err := p.PublishAsync(r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("async err = %v, want ErrInvalid", err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("stream holds %d messages, want 0", info.State.Msgs)
	}
}

func TestPublisher_PublishAsync(t *testing.T) {
	js, _ := mustJetStream(t)
	p := NewPublisher(js, WithSubjectPrefix(DefaultSubjectPrefix))
	var futures []jetstream.PubAckFuture
	for _, no := range []string{"A1", "A2", "A1"} {
		r := direct()
		r.OutDetailNo = no
		f, err := p.PublishAsync(r)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	var dups int
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				dups++
			}
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	}
	if dups != 1 {
		t.Fatalf("duplicates = %d, want 1", dups)
	}
}

// TestNewMessage publishes through a real watermill-nats/v2 JetStream publisher and checks
// that JetStream deduplicates on out_detail_no.
func TestNewMessage(t *testing.T) {
	s := natstest.Run(t)
	_, st := connect(t, s)

	pub, err := wmjetstream.NewPublisher(wmjetstream.PublisherConfig{URL: s.ClientURL(), Logger: watermill.NopLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	r := direct()
	for range 2 {
		m, err := NewMessage(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(Subject(DefaultSubjectPrefix, r.MchID), m); err != nil {
			t.Fatal(err)
		}
	}
	mustHoldOne(t, st)
	if got := lastRequest(t, st, r); got.OutDetailNo != r.OutDetailNo || got.Amount != r.Amount {
		t.Fatalf("payload decodes to %+v", got)
	}
}

// mustHoldOne fails unless st holds exactly one message (duplicates were dropped).
func mustHoldOne(t *testing.T, st jetstream.Stream) {
	t.Helper()
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(1); got != want {
		t.Fatalf("stream holds %d messages, want %d", got, want)
	}
}

// lastRequest returns the last request published for r's merchant, after checking that its
// Nats-Msg-Id is r's out_detail_no.
func lastRequest(t *testing.T, st jetstream.Stream, r Request) Request {
	t.Helper()
	msg, err := st.GetLastMsgForSubject(t.Context(), Subject(DefaultSubjectPrefix, r.MchID))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get(jetstream.MsgIDHeader), r.OutDetailNo; got != want {
		t.Fatalf("Nats-Msg-Id = %q, want %q", got, want)
	}
	got, err := DecodeAndValidate(msg.Data, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return got
}
