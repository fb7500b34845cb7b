package payout

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultSubjectPrefix is where requests are published: <prefix>.<mchid>.
const DefaultSubjectPrefix = "payouts.requests"

// Subject returns the subject a request for mchid is published to.
func Subject(prefix, mchid string) string { return prefix + "." + mchid }

// Publisher validates payout requests and publishes them to JetStream with
// Nats-Msg-Id = out_detail_no, so JetStream drops a re-publish inside the stream's
// duplicate window (the processor's ledger drops it after that). It is safe for concurrent
// use; it does not own js.
type Publisher struct {
	js     jetstream.JetStream
	prefix string
	limits Limits
	source string
	now    func() time.Time
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithSubjectPrefix replaces DefaultSubjectPrefix.
func WithSubjectPrefix(prefix string) PublisherOption {
	return func(p *Publisher) { p.prefix = prefix }
}

// WithLimits replaces DefaultLimits for validation.
func WithLimits(l Limits) PublisherOption { return func(p *Publisher) { p.limits = l } }

// WithSource sets Request.Source on requests that have none.
func WithSource(source string) PublisherOption { return func(p *Publisher) { p.source = source } }

// WithClock sets the clock used for Request.CreatedAt (default time.Now).
func WithClock(now func() time.Time) PublisherOption { return func(p *Publisher) { p.now = now } }

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, prefix: DefaultSubjectPrefix, limits: DefaultLimits(), now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Publish validates r, publishes it and waits for the stream's ack. dup reports that
// JetStream already held a message with this out_detail_no (PubAck.Duplicate): nothing new
// was stored. A *ValidationError means nothing was sent. On any other error the message may
// or may not be stored; publishing the same request again is safe.
func (p *Publisher) Publish(ctx context.Context, r Request) (dup bool, err error) {
	msg, err := p.Msg(r)
	if err != nil {
		return false, err
	}
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("publish %s: %w", r.OutDetailNo, err)
	}
	return ack.Duplicate, nil
}

// PublishAsync validates r and publishes it without waiting; the caller reads the result
// from the future (Ok: PubAck with Duplicate; Err: failed, safe to publish again). How many
// may be in flight is set on js (jetstream.WithPublishAsyncMaxPending); opts are passed on.
func (p *Publisher) PublishAsync(r Request, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	msg, err := p.Msg(r)
	if err != nil {
		return nil, err
	}
	f, err := p.js.PublishMsgAsync(msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", r.OutDetailNo, err)
	}
	return f, nil
}

// Msg validates r (after filling Schema, Source and CreatedAt when empty) and returns the
// NATS message Publish would send.
func (p *Publisher) Msg(r Request) (*nats.Msg, error) {
	if r.Schema == "" {
		r.Schema = SchemaV1
	}
	if r.Source == "" {
		r.Source = p.source
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = p.now().UTC()
	}
	if err := r.Validate(p.limits); err != nil {
		return nil, err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("payout: encode %s: %w", r.OutDetailNo, err)
	}
	msg := nats.NewMsg(Subject(p.prefix, r.MchID))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, r.OutDetailNo)
	return msg, nil
}

// NewMessage returns r as a watermill message for a watermill-nats/v2 publisher. Its UUID
// and its "Nats-Msg-Id" metadata are both out_detail_no: the pkg/nats publisher with
// JetStreamConfig.TrackMsgId publishes the UUID as Nats-Msg-Id, and the NATSMarshaler of
// both pkg/nats and pkg/jetstream copies metadata into headers. NewMessage does not
// validate; call Validate first. The topic to publish to is Subject(prefix, r.MchID).
func NewMessage(r Request) (*message.Message, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("payout: encode %s: %w", r.OutDetailNo, err)
	}
	m := message.NewMessage(r.OutDetailNo, data)
	m.Metadata.Set(jetstream.MsgIDHeader, r.OutDetailNo)
	return m, nil
}
