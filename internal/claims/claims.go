// Package claims keeps cross-replica ownership of payouts in a JetStream KeyValue bucket.
//
// JetStream delivers at least once and WeChat deduplicates out_detail_no only inside one
// batch, so a request redelivered to a second processor after the first committed it (but
// died before its ack) would be paid twice. Before a payout may join a batch, its processor
// creates the key "<mchid>.<out_detail_no>", create-if-absent, with its own instance id (and
// the payout's content digest) as the value. The winner owns the payout forever (the bucket's
// TTL is longer than any redelivery or replay window); a loser records a duplicate. A
// restarted owner finds its own claims because the value holds its instance id, which is tied
// to its ledger file.
//
// The value is "<instance>;<hex digest>;<stream seq>": the instance id, the first DigestSize
// bytes of the payout's content digest (the ledger's content hash), so a loser can tell a
// harmless duplicate (same digest) from a conflicting request sent to another replica, and
// the JetStream stream sequence of the request message the claim was made for. Intake claims
// before it commits (each row is then written once): a claim for the very message a loser
// holds (same stream sequence) may not be committed by its owner yet, so the loser hands the
// message back instead of recording a duplicate (internal/pipeline). Claims written before
// stream sequences hold "<instance>;<hex digest>" and before digests just "<instance>"; they
// read as an Owner with no stream sequence (its owner committed before claiming).
//
// A create whose outcome is unknown (its reply lost with the connection, timed out, or never
// sent) is "maybe mine": Claim keeps resolving it, by reading the key and creating it again if
// it is absent, until the owner is known. So Claim never reports a key as failed while the
// server may hold this instance's claim on it. (Were it to fail, the group would be
// redelivered to another replica, which would find the keys owned here and mark them
// DUPLICATE, while the rows here stayed unclaimed: stranded.)
package claims

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/backoff"
	"github.com/paystream/paystream/internal/broker"
)

// DigestSize is how many leading bytes of an Item's digest a claim stores.
const DigestSize = 16

// DefaultAckTimeout bounds, unless WithAckTimeout says otherwise, how long Claim waits for
// the acks of its pipelined creates, and each read or create while it resolves a key.
const DefaultAckTimeout = 5 * time.Second

// Backoff between resolution rounds that failed (server unreachable, no responders, …):
// doubling from backoffMin up to backoffMax, with jitter.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
)

// logInterval is the least time between two resolution log lines of one kind.
const logInterval = 10 * time.Second

// ErrBucketNotFound is returned by Claim when the claims bucket no longer exists: nothing can
// be claimed until it is created again (broker.Ensure does at start).
var ErrBucketNotFound = errors.New("claims bucket not found")

// errAckTimeout is the cause recorded for a create whose ack did not arrive in time.
var errAckTimeout = errors.New("no ack within the ack timeout")

// Item is one payout to claim.
type Item struct {
	Key       string // from Key
	Digest    []byte // the ledger content hash of the payout; the first DigestSize bytes are stored
	StreamSeq uint64 // the request message's stream sequence; 0 for none (not stored)
}

// Owner is the instance that owns a key, the digest it claimed the key with, and the stream
// sequence of the message it claimed it for.
type Owner struct {
	Instance  string
	Digest    []byte // nil when the stored claim carries none (written before digests)
	StreamSeq uint64 // 0 when the stored claim carries none (written before stream sequences)
}

// Conflicts reports whether the owner claimed different content than digest d: true only
// when both digests are known and differ (d is compared on its first DigestSize bytes). An
// owner without a digest never conflicts, since nothing tells its content apart.
func (o Owner) Conflicts(d []byte) bool {
	if len(o.Digest) == 0 || len(d) == 0 {
		return false
	}
	return !bytes.Equal(o.Digest, d[:min(len(d), DigestSize)])
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger of resolution episodes (default slog.Default(); nil keeps it).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// WithAckTimeout sets how long Claim waits for the acks of its creates before resolving the
// unanswered ones by reading them, and the bound of each read or create while resolving
// (default DefaultAckTimeout). d ≤ 0 keeps the default.
func WithAckTimeout(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.ackTimeout = d
		}
	}
}

// WithObserver calls observe after every Claim (op "claim") and Owner (op "owner") with its
// duration and its error (nil on success). observe must be fast and safe for concurrent use;
// nil keeps none.
func WithObserver(observe func(op string, d time.Duration, err error)) Option {
	return func(s *Store) { s.observe = observe }
}

// Store claims keys in one KV bucket on behalf of one instance. It is safe for concurrent
// use.
type Store struct {
	js         jetstream.JetStream
	kv         jetstream.KeyValue
	subject    string // "$KV.<bucket>."
	instance   string
	log        *slog.Logger
	ackTimeout time.Duration
	resolved   atomic.Int64
	observe    func(op string, d time.Duration, err error) // nil: none

	episodes   limiter // "claims resolved" lines
	unresolved limiter // "claims unresolved; retrying" lines
}

// New returns a Store for instance over kv. js is the JetStream context the Store's creates
// are published through, on kv's connection, and should serve nothing else: a Claim whose
// acks do not all come within the ack timeout cleans up its pending async publishes (see
// Claim). It needs no publish timeout (jetstream.WithPublishAsyncTimeout), which costs a
// timer per create. instance must not contain ';' (instance ids are [0-9A-Za-z]).
func New(js jetstream.JetStream, kv jetstream.KeyValue, instance string, opts ...Option) *Store {
	s := &Store{
		js: js, kv: kv, subject: "$KV." + kv.Bucket() + ".", instance: instance,
		log: slog.Default(), ackTimeout: DefaultAckTimeout,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Key is the claim key of a payout. mchid and out_detail_no are [0-9A-Za-z], valid KV key
// characters.
func Key(mchID, outDetailNo string) string { return mchID + "." + outDetailNo }

// Instance is the id this Store claims for.
func (s *Store) Instance() string { return s.instance }

// Resolved is the number of keys, over the Store's life, whose create had an unknown outcome
// and whose owner Claim then learned by resolving them.
func (s *Store) Resolved() int64 { return s.resolved.Load() }

// Owner reads who owns key, without claiming it: ok is false when nobody does. It reads from
// the leader of the bucket's stream (broker.LeaderGet), so a claim made anywhere before the
// call is never missed.
func (s *Store) Owner(ctx context.Context, key string) (o Owner, ok bool, err error) {
	defer s.observed("owner", time.Now(), &err)
	e, err := broker.LeaderGet(ctx, s.js, s.kv, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return Owner{}, false, nil
	case err != nil:
		return Owner{}, false, fmt.Errorf("claim owner of %s: %w", key, err)
	}
	return parse(e.Value), true, nil
}

// Claim tries to claim every item for this instance and returns, for each item in order, its
// owner: this instance when it won (now or earlier), another instance when that one owns it.
//
// The creates are pipelined (asynchronous publishes with an expected last subject sequence
// of 0, which is what KeyValue.Create does one at a time), so a group of thousands costs a
// few round trips. A key that exists is read for its owner. A create whose outcome is unknown
// (any error but "wrong last sequence", no ack within the ack timeout, a lost connection, no
// responders) may have landed, so it is resolved: the key is read, an absent key is created
// again, and a failed read or create is retried after a capped, jittered backoff, until the
// owner is known. A reconnect during the call loses no key.
//
// Claim fails only when ctx ends before every owner is known (the error wraps ctx.Err()),
// when the bucket no longer exists (ErrBucketNotFound, confirmed by the server's
// stream-not-found code), or when the connection is closed for good (the error wraps
// nats.ErrConnectionClosed or jetstream.ErrConnectionClosed). Then the keys' claims may or
// may not be this instance's: the caller must not ack, and must claim them again (resolving
// them) before it may treat them as anyone's.
func (s *Store) Claim(ctx context.Context, items []Item) (_ []Owner, err error) {
	defer s.observed("claim", time.Now(), &err)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	futures := make([]jetstream.PubAckFuture, len(items))
	var unknown []int // creates of unknown outcome
	var cause error   // the first reason a create's outcome is unknown
	for i, it := range items {
		m := nats.NewMsg(s.subject + it.Key)
		m.Data = s.value(it)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		f, err := s.js.PublishMsgAsync(m)
		if err != nil { // e.g. too many pending or connection closed: maybe never sent
			unknown = append(unknown, i)
			cause = firstErr(cause, err)
			continue
		}
		futures[i] = f
	}
	owners := make([]Owner, len(items))
	var digests arena
	var exists []int // keys another create got first: read their owner
	timer := time.NewTimer(s.ackTimeout)
	defer timer.Stop()
	expired := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		okc, errc := f.Ok(), f.Err()
		var err error
		acked := false
		select {
		case <-okc:
			acked = true
		case err = <-errc:
		default:
			if !expired {
				select {
				case <-okc:
					acked = true
				case err = <-errc:
				case <-timer.C:
					expired = true
				case <-ctx.Done():
					return nil, fmt.Errorf("claim: %w", ctx.Err())
				}
			}
		}
		switch {
		case acked:
			owners[i] = Owner{Instance: s.instance, Digest: digests.copy(items[i].Digest), StreamSeq: items[i].StreamSeq}
		case err == nil: // no ack within the bound: the future may never resolve
			unknown = append(unknown, i)
			cause = firstErr(cause, errAckTimeout)
		case keyExists(err):
			exists = append(exists, i)
		default: // lost connection, no responders, …: maybe landed
			unknown = append(unknown, i)
			cause = firstErr(cause, err)
		}
	}
	if expired {
		// The creates not answered within the bound would keep their places among js's
		// pending async publishes until a reconnect (their replies may never come), until
		// lost replies added up to the limit that stalls every publish: drop them. Any other
		// pending create of js fails with ErrJetStreamPublisherClosed, which its Claim
		// resolves like every create of unknown outcome.
		s.js.CleanupPublisher()
	}
	if len(exists) == 0 && len(unknown) == 0 {
		return owners, nil
	}
	if err := s.settle(ctx, items, owners, exists, unknown, cause); err != nil {
		return nil, err
	}
	return owners, nil
}

// observed reports one call to the observer, if there is one.
func (s *Store) observed(op string, start time.Time, err *error) {
	if s.observe != nil {
		s.observe(op, time.Since(start), *err)
	}
}

// settle learns the owner of items[exists…] (keys known to exist) and items[unknown…] (creates
// of unknown outcome, the first for reason cause), in rounds: a round reads (or creates) keys
// in turn until one fails; then, after a backoff, the next round starts where it failed.
func (s *Store) settle(ctx context.Context, items []Item, owners []Owner, exists, unknown []int, cause error) error {
	queue := append(exists, unknown...)
	// queue[ambiguous:] had to be resolved: the creates of unknown outcome, and every key
	// still unread once a round fails.
	ambiguous := len(exists)
	start := time.Now()
	rounds := 0
	for done := 0; ; {
		var failed error
		for ; done < len(queue); done++ {
			i := queue[done]
			o, err := s.resolve(ctx, items[i])
			if err != nil {
				failed = err
				break
			}
			owners[i] = o
			if done >= ambiguous {
				s.resolved.Add(1)
			}
		}
		if failed == nil {
			break
		}
		left := len(queue) - done
		ambiguous = min(ambiguous, done)
		cause = firstErr(cause, failed)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("claim: %d of %d keys unresolved: %w", left, len(items), err)
		}
		if closed(failed) {
			return fmt.Errorf("claim: %d of %d keys unresolved: %w", left, len(items), failed)
		}
		if s.bucketGone(ctx, failed) {
			return fmt.Errorf("claim %s: %w: %w", s.kv.Bucket(), ErrBucketNotFound, failed)
		}
		rounds++
		if ok, held := s.unresolved.allow(); ok {
			s.log.Warn("claims unresolved; retrying", "keys", left, "round", rounds,
				"bucket", s.kv.Bucket(), "err", failed, "held_back", held)
		}
		t := time.NewTimer(backoff.Jittered(backoffMin, backoffMax, rounds-1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("claim: %d of %d keys unresolved: %w", left, len(items), ctx.Err())
		}
	}
	if n := len(queue) - ambiguous; n > 0 {
		if ok, held := s.episodes.allow(); ok {
			s.log.Info("claims of unknown outcome resolved", "keys", n, "of", len(items),
				"retry_rounds", rounds, "took", time.Since(start), "cause", cause, "held_back", held)
		}
	}
	return nil
}

// resolve learns the owner of one key: read it (from the leader, as Owner); absent, create it
// (a create that finds it present reads it again).
func (s *Store) resolve(ctx context.Context, it Item) (Owner, error) {
	ctx, cancel := context.WithTimeout(ctx, s.ackTimeout)
	defer cancel()
	var err error
	for range 2 {
		var e broker.Entry
		e, err = broker.LeaderGet(ctx, s.js, s.kv, it.Key)
		if err == nil {
			return parse(e.Value), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			return Owner{}, fmt.Errorf("read %s: %w", it.Key, err)
		}
		// KeyValue.Create also replaces a delete marker, which an expected last sequence of
		// 0 would not.
		if _, err = s.kv.Create(ctx, it.Key, s.value(it)); err == nil {
			return Owner{Instance: s.instance, Digest: new(arena).copy(it.Digest), StreamSeq: it.StreamSeq}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return Owner{}, fmt.Errorf("create %s: %w", it.Key, err)
		}
		// Created by someone between the read and the create: read it again.
	}
	return Owner{}, fmt.Errorf("create %s: %w", it.Key, err)
}

// closed reports whether err says the NATS connection is closed for good (closed by its
// owner, or out of reconnect attempts): nothing sent on it will ever be answered.
func closed(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed)
}

// bucketGone reports whether err is what a missing bucket answers (no responders to a create,
// stream not found to a read) and the server confirms, by its stream-not-found code, that the
// bucket does not exist.
func (s *Store) bucketGone(ctx context.Context, err error) bool {
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.ackTimeout)
	defer cancel()
	_, err = s.js.KeyValue(ctx, s.kv.Bucket())
	return errors.Is(err, jetstream.ErrBucketNotFound)
}

// value is this instance's claim value for it (see encode).
func (s *Store) value(it Item) []byte {
	return encode(Owner{Instance: s.instance, Digest: it.Digest, StreamSeq: it.StreamSeq})
}

// encode is the claim value of o: "<instance>;<hex of the digest's first DigestSize
// bytes>;<stream seq>", without the stream sequence when it is 0, and just "<instance>" when
// there is neither.
func encode(o Owner) []byte {
	d := o.Digest[:min(len(o.Digest), DigestSize)]
	if len(d) == 0 && o.StreamSeq == 0 {
		return []byte(o.Instance)
	}
	v := make([]byte, 0, len(o.Instance)+2+hex.EncodedLen(len(d))+20)
	v = append(v, o.Instance...)
	v = append(v, ';')
	v = hex.AppendEncode(v, d)
	if o.StreamSeq > 0 {
		v = append(v, ';')
		v = strconv.AppendUint(v, o.StreamSeq, 10)
	}
	return v
}

// parse reads a claim value (see encode), or the legacy "<instance>;<hex digest>" and
// "<instance>". A digest that is not hex is treated as absent, and so is a stream sequence
// that is not a positive decimal number.
func parse(v []byte) Owner {
	i := bytes.IndexByte(v, ';')
	if i < 0 {
		return Owner{Instance: string(v)}
	}
	o := Owner{Instance: string(v[:i])}
	rest := v[i+1:]
	if j := bytes.IndexByte(rest, ';'); j >= 0 {
		if seq, err := strconv.ParseUint(string(rest[j+1:]), 10, 64); err == nil {
			o.StreamSeq = seq
		}
		rest = rest[:j]
	}
	if d, err := hex.DecodeString(string(rest)); err == nil && len(d) > 0 {
		o.Digest = d
	}
	return o
}

// arena copies the stored part of digests into shared blocks: one allocation per 64 keys
// on the hot path rather than one per key.
type arena []byte

// copy returns a copy of d's first DigestSize bytes (nil when d is empty).
func (a *arena) copy(d []byte) []byte {
	d = d[:min(len(d), DigestSize)]
	if len(d) == 0 {
		return nil
	}
	if cap(*a)-len(*a) < len(d) {
		*a = make([]byte, 0, max(len(d), min(len(*a)*2, 64*DigestSize)))
	}
	n := len(*a)
	*a = append(*a, d...)
	return (*a)[n:len(*a):len(*a)]
}

// firstErr keeps the first cause.
func firstErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// limiter allows one event per logInterval and counts the ones it held back since.
type limiter struct {
	mu   sync.Mutex
	last time.Time
	held int
}

func (l *limiter) allow() (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.last.IsZero() || now.Sub(l.last) >= logInterval {
		l.last, held, l.held = now, l.held, 0
		return true, held
	}
	l.held++
	return false, 0
}

func keyExists(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
