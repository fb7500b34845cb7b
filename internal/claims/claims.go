// Package claims keeps cross-replica ownership of payouts in a JetStream KeyValue bucket.
//
// JetStream delivers at least once and WeChat deduplicates out_detail_no only inside one
// batch, so a request redelivered to a second processor after the first committed it (but
// died before its ack) would be paid twice. Before a payout may join a batch, its processor
// creates the key "<mchid>.<out_detail_no>" with its own instance id as the value,
// create-if-absent. The winner owns the payout forever (the bucket's TTL is longer than any
// redelivery or replay window); a loser records a duplicate. A restarted owner finds its own
// claims because the value is its instance id, which is tied to its ledger file.
package claims

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Store claims keys in one KV bucket on behalf of one instance.
type Store struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	subject  string // "$KV.<bucket>."
	instance string
}

// New returns a Store for instance over kv. js must be the JetStream context kv came from.
func New(js jetstream.JetStream, kv jetstream.KeyValue, instance string) *Store {
	return &Store{js: js, kv: kv, subject: "$KV." + kv.Bucket() + ".", instance: instance}
}

// Key is the claim key of a payout. mchid and out_detail_no are [0-9A-Za-z], valid KV key
// characters.
func Key(mchID, outDetailNo string) string { return mchID + "." + outDetailNo }

// Claim tries to claim every key for this instance and returns, for each key in order, the
// owning instance id: this instance's id when it won (now or earlier), another id when that
// instance owns it. The creates are pipelined (asynchronous publishes with an expected last
// subject sequence of 0, which is what KeyValue.Create does one at a time), so a group of
// thousands costs a few round trips. Any other error fails the whole call: the caller must not
// ack, and will retry.
func (s *Store) Claim(ctx context.Context, keys []string) ([]string, error) {
	futures := make([]jetstream.PubAckFuture, len(keys))
	for i, k := range keys {
		m := nats.NewMsg(s.subject + k)
		m.Data = []byte(s.instance)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("claim %s: %w", k, err)
		}
		futures[i] = f
	}
	owners := make([]string, len(keys))
	for i, f := range futures {
		select {
		case <-f.Ok():
			owners[i] = s.instance
			continue
		case err := <-f.Err():
			if !keyExists(err) {
				return nil, fmt.Errorf("claim %s: %w", keys[i], err)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		e, err := s.kv.Get(ctx, keys[i])
		if err != nil {
			return nil, fmt.Errorf("claim %s: read owner: %w", keys[i], err)
		}
		owners[i] = string(e.Value())
	}
	return owners, nil
}

// Instance is the id this Store claims for.
func (s *Store) Instance() string { return s.instance }

func keyExists(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
