package payout

import (
	"bytes"
	"context"
	"errors"
	"strings"
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
// that JetStream deduplicates on MsgID.
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
// Nats-Msg-Id is MsgID(r) and that it validates as the processor validates (no plaintext
// name).
func lastRequest(t *testing.T, st jetstream.Stream, r Request) Request {
	t.Helper()
	msg, err := st.GetLastMsgForSubject(t.Context(), Subject(DefaultSubjectPrefix, r.MchID))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get(jetstream.MsgIDHeader), MsgID(&r); got != want {
		t.Fatalf("Nats-Msg-Id = %q, want %q", got, want)
	}
	l := DefaultLimits()
	l.EncryptedNamesOnly = true
	got, err := DecodeAndValidate(msg.Data, l)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestPublisher_conflictIsStored: the same out_detail_no with another amount inside the
// duplicate window is stored under another id (the processor dead-letters it as a
// conflict); an identical re-publish stays a duplicate.
func TestPublisher_conflictIsStored(t *testing.T) {
	js, st := mustJetStream(t)
	p := NewPublisher(js)
	r := direct()
	conflict := r
	conflict.Amount++
	for i, tc := range []struct {
		r       Request
		wantDup bool
	}{{r, false}, {conflict, false}, {r, true}, {conflict, true}} {
		dup, err := p.Publish(t.Context(), tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if dup != tc.wantDup {
			t.Fatalf("publish %d: dup = %v, want %v", i, dup, tc.wantDup)
		}
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(2); got != want {
		t.Fatalf("stream holds %d messages, want %d", got, want)
	}
	ids := map[string]int64{}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if got.OutDetailNo != r.OutDetailNo || m.Header.Get(jetstream.MsgIDHeader) != MsgID(&got) {
			t.Fatalf("message %d: key %s, id %s", seq, got.OutDetailNo, m.Header.Get(jetstream.MsgIDHeader))
		}
		ids[m.Header.Get(jetstream.MsgIDHeader)] = got.Amount
	}
	if len(ids) != 2 {
		t.Fatalf("ids %v, want two distinct", ids)
	}
}

// TestPublisher_sealsName: a name published through the Publisher rests in the stream only
// as ciphertext (the store files are scanned), which the TEST-ONLY platform private key
// decrypts to the name; a re-publish, with a fresh ciphertext, is still a duplicate.
func TestPublisher_sealsName(t *testing.T) {
	s := natstest.Run(t)
	js, st := connect(t, s)
	const name = "欧阳娜娜"
	l := DefaultLimits()
	l.EncryptedNamesOnly = true // ignored by the Publisher: it seals
	p := NewPublisher(js, WithNameKey(testNameKey()), WithLimits(l))
	r := direct()
	r.Amount, r.UserName = 250000, name
	for i, wantDup := range []bool{false, true} {
		dup, err := p.Publish(t.Context(), r)
		if err != nil || dup != wantDup {
			t.Fatalf("publish %d: dup=%v err=%v, want dup=%v", i, dup, err, wantDup)
		}
	}
	mustHoldOne(t, st)
	got := lastRequest(t, st, r)
	if got.UserName != "" || got.WechatpaySerial != testNameKey().ID {
		t.Fatalf("stored user_name set or serial %q", got.WechatpaySerial)
	}
	if got, want := open(t, got.UserNameCipher), name; got != want {
		t.Fatalf("decrypted name = %q, want %q", got, want)
	}
	stored := natstest.StoreBytes(t, s)
	if !bytes.Contains(stored, []byte(r.OpenID)) {
		t.Fatal("the store files do not hold the openid: the scan sees nothing")
	}
	if bytes.Contains(stored, []byte(name)) || bytes.Contains(stored, []byte(`\u6b27`)) {
		t.Fatal("the store files hold the plaintext name")
	}
}

// TestPublisher_nameWithoutKey: without a name key a plaintext name is refused as invalid,
// on user_name, and nothing is sent; a request without a name is published.
func TestPublisher_nameWithoutKey(t *testing.T) {
	js, st := mustJetStream(t)
	p := NewPublisher(js)
	r := direct()
	r.UserName = "张三"
	_, err := p.Publish(t.Context(), r)
	var ve *ValidationError
	if !errors.As(err, &ve) || !ve.Has("user_name") || ve.Problems[0].Reason != ReasonNoNameKey {
		t.Fatalf("err = %v, want a user_name problem %q", err, ReasonNoNameKey)
	}
	if strings.Contains(err.Error(), "张三") {
		t.Fatalf("error %q leaks the name", err)
	}
	if _, err := p.PublishAsync(r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("async err = %v, want ErrInvalid", err)
	}
	if _, err := p.Publish(t.Context(), direct()); err != nil {
		t.Fatal(err)
	}
	mustHoldOne(t, st)
}

// TestPublisher_presealed: a request that arrives sealed is published as it is.
func TestPublisher_presealed(t *testing.T) {
	js, st := mustJetStream(t)
	r := direct()
	r.Amount, r.UserName = 250000, "张三"
	if err := testNameKey().Seal(&r); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPublisher(js).Publish(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if got := lastRequest(t, st, r); got.UserNameCipher != r.UserNameCipher {
		t.Fatal("the Publisher changed a sealed name")
	}
}

func TestNewMessage_refusesPlaintextName(t *testing.T) {
	r := direct()
	r.UserName = "张三"
	if _, err := NewMessage(r); !errors.Is(err, ErrPlaintextName) || strings.Contains(err.Error(), "张三") {
		t.Fatalf("err = %v, want ErrPlaintextName without the name", err)
	}
	if err := testNameKey().Seal(&r); err != nil {
		t.Fatal(err)
	}
	m, err := NewMessage(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.UUID, MsgID(&r); got != want || m.Metadata.Get(jetstream.MsgIDHeader) != want {
		t.Fatalf("UUID %s, metadata %s, want %s", got, m.Metadata.Get(jetstream.MsgIDHeader), want)
	}
}
