package payout

import (
	"context"
	"encoding/json"
	"errors"
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

// Publisher validates payout requests, seals their real names and publishes them to
// JetStream with Nats-Msg-Id = MsgID(r), so JetStream drops an identical re-publish inside
// the stream's duplicate window (the processor's ledger drops it after that) while a
// conflicting one (same key, other content) is stored for the processor to refuse. It is
// safe for concurrent use; it does not own js.
type Publisher struct {
	js           jetstream.JetStream
	prefix       string
	cancelPrefix string
	rail         string // "" validates each request on r.Rail()
	limits       Limits
	source       string
	now          func() time.Time
	nameKey      *NameKey
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithSubjectPrefix replaces DefaultSubjectPrefix.
func WithSubjectPrefix(prefix string) PublisherOption {
	return func(p *Publisher) { p.prefix = prefix }
}

// WithCancelPrefix replaces CancelPrefix for Cancel.
func WithCancelPrefix(prefix string) PublisherOption {
	return func(p *Publisher) { p.cancelPrefix = prefix }
}

// WithRail validates every request for rail (ValidateFor) instead of its own r.Rail(): a
// merchant with the transfer bills product publishes WithRail(RailBills), so requests are
// checked as the processor will check them there. "" restores the default.
func WithRail(rail string) PublisherOption { return func(p *Publisher) { p.rail = rail } }

// WithLimits replaces DefaultLimits for validation. Limits.EncryptedNamesOnly is ignored:
// the Publisher validates the plaintext name before it seals it.
func WithLimits(l Limits) PublisherOption {
	l.EncryptedNamesOnly = false
	return func(p *Publisher) { p.limits = l }
}

// WithNameKey sets WeChat Pay's public key, with which the Publisher seals every plaintext
// user_name (NameKey.Seal) before publishing. Without it a request with a plaintext
// user_name is refused as invalid; requests without a name, or with a user_name_cipher
// already, are published either way.
func WithNameKey(k NameKey) PublisherOption { return func(p *Publisher) { p.nameKey = &k } }

// WithSource sets Request.Source on requests that have none.
func WithSource(source string) PublisherOption { return func(p *Publisher) { p.source = source } }

// WithClock sets the clock used for Request.CreatedAt (default time.Now).
func WithClock(now func() time.Time) PublisherOption { return func(p *Publisher) { p.now = now } }

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, prefix: DefaultSubjectPrefix, cancelPrefix: CancelPrefix, limits: DefaultLimits(), now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Publish validates and seals r (see Msg), publishes it and waits for the stream's ack. dup
// reports that JetStream already held a message with this id, that is the same key with the
// same content (PubAck.Duplicate): nothing new was stored. A *ValidationError means nothing
// was sent. On any other error the message may or may not be stored; publishing the same
// request again is safe.
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

// PublishAsync validates and seals r (see Msg) and publishes it without waiting; the caller
// reads the result from the future (Ok: PubAck with Duplicate; Err: failed, safe to publish
// again: the future's Msg keeps the same id and ciphertext). How many may be in flight is
// set on js (jetstream.WithPublishAsyncMaxPending); opts are passed on.
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

// Msg returns the NATS message Publish would send for r: it fills Schema, Source and
// CreatedAt when empty, validates r with the Publisher's limits for its rail (WithRail;
// a plaintext user_name is allowed here), seals a plaintext user_name with the name key, and sets Nats-Msg-Id to
// MsgID(r). The message body never holds a plaintext name. A *ValidationError (matching
// ErrInvalid) means r is refused, including a plaintext name with no name key configured
// (WithNameKey); any other error is a failure to encrypt.
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
	rail := p.rail
	if rail == "" {
		rail = r.Rail()
	}
	if err := r.ValidateFor(rail, p.limits); err != nil {
		return nil, err
	}
	if r.UserName != "" {
		if p.nameKey == nil {
			return nil, &ValidationError{Problems: []Problem{{Field: "user_name", Reason: ReasonNoNameKey}}}
		}
		if err := p.nameKey.Seal(&r); err != nil {
			return nil, err
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("payout: encode %s: %w", r.OutDetailNo, err)
	}
	msg := nats.NewMsg(Subject(p.prefix, r.MchID))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, MsgID(&r))
	return msg, nil
}

// Cancel asks the processor to cancel a payout: it fills c.Schema when empty, validates c
// (a *ValidationError means nothing was sent), and publishes it to
// CancelSubject(prefix, c.MchID) (prefix CancelPrefix unless WithCancelPrefix) with
// Nats-Msg-Id CancelMsgID(c), waiting for the stream's ack. A repeat inside the stream's
// duplicate window is acknowledged as a duplicate and not stored again; either way nil. On
// any other error the cancel may or may not be stored; sending it again is safe. The
// answer comes later as events (see CancelRequest).
func (p *Publisher) Cancel(ctx context.Context, c CancelRequest) error {
	if c.Schema == "" {
		c.Schema = CancelSchemaV1
	}
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("payout: encode cancel %s: %w", c.OutDetailNo, err)
	}
	msg := nats.NewMsg(CancelSubject(p.cancelPrefix, c.MchID))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, CancelMsgID(c))
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish cancel %s: %w", c.OutDetailNo, err)
	}
	return nil
}

// ReasonNoNameKey is the problem reason Msg gives a plaintext user_name when the Publisher
// has no name key.
const ReasonNoNameKey = "no WeChat Pay public key configured to encrypt it"

// ErrPlaintextName is returned by NewMessage for a request that still holds a plaintext
// user_name: seal it first (NameKey.Seal).
var ErrPlaintextName = errors.New("payout: plaintext user_name; seal it with NameKey.Seal before publishing")

// NewMessage returns r as a watermill message for a watermill-nats/v2 publisher. Its UUID
// and its "Nats-Msg-Id" metadata are both MsgID(r): the pkg/nats publisher with
// JetStreamConfig.TrackMsgId publishes the UUID as Nats-Msg-Id, and the NATSMarshaler of
// both pkg/nats and pkg/jetstream copies metadata into headers. NewMessage does not
// validate (call Validate first) and does not seal: a request still holding a plaintext
// user_name is refused with ErrPlaintextName (call NameKey.Seal first). The topic to publish
// to is Subject(prefix, r.MchID).
func NewMessage(r Request) (*message.Message, error) {
	if r.UserName != "" {
		return nil, fmt.Errorf("%w (out_detail_no %s)", ErrPlaintextName, r.OutDetailNo)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("payout: encode %s: %w", r.OutDetailNo, err)
	}
	id := MsgID(&r)
	m := message.NewMessage(id, data)
	m.Metadata.Set(jetstream.MsgIDHeader, id)
	return m, nil
}
