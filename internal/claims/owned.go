package claims

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
)

// ErrNotHeld is returned by Transfer when the key is no longer held by the instance it was
// read from (nor already by the new owner).
var ErrNotHeld = errors.New("claim not held by the instance")

// Held is one stored claim: its key, its owner and the KV revision it was read at.
type Held struct {
	Key      string
	Owner    Owner
	Revision uint64
}

// OwnedBy returns every claim of kv (on js) held by instance, in key order, or an error: never
// a shorter list, since an adopter leaves a claim missing from it unpaid. It reads the whole
// bucket (one ordered pass over its last values): a recovery tool's read, not a hot path.
//
// The watch's end mark comes when its consumer has nothing more pending in its copy of the
// stream, and on a cluster that consumer may run on a replica behind the leader. So the watch
// must reach the last message the stream's leader held before the watch began (it is the last
// value of its key, or was replaced by a later one); a watch that ends before is an error
// (docs/replication.md#reading-the-kv-buckets). An instance's claims do not change once it is
// retired, so a key updated during the watch (delivered after the mark) is never one of them.
func OwnedBy(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance string) ([]Held, error) {
	last, err := broker.LastSeqOnLeader(ctx, js, "KV_"+kv.Bucket(), "$KV."+kv.Bucket()+".>")
	if err != nil {
		return nil, fmt.Errorf("claims of %s: %w", instance, err)
	}
	w, err := kv.WatchAll(ctx) // deletes too: the last message may be one
	if err != nil {
		return nil, fmt.Errorf("claims of %s: %w", instance, err)
	}
	defer func() { _ = w.Stop() }()
	var out []Held
	var reached uint64
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("claims of %s: the watch closed: %w", instance, broker.ErrShortRead)
			}
			if e == nil { // the initial values are all delivered
				if reached < last {
					return nil, fmt.Errorf("claims of %s: the watch ended at revision %d, and the stream's leader held %d (a replica behind the leader): %w", instance, reached, last, broker.ErrShortRead)
				}
				slices.SortFunc(out, func(a, b Held) int { return strings.Compare(a.Key, b.Key) })
				return out, nil
			}
			reached = max(reached, e.Revision())
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if o := parse(e.Value()); o.Instance == instance {
				out = append(out, Held{Key: e.Key(), Owner: o, Revision: e.Revision()})
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("claims of %s: %w", instance, ctx.Err())
		}
	}
}

// Transfer moves claim h to instance to, keeping its digest and stream sequence, if the key is still as it was
// read (revision-checked). A key already held by to (an earlier Transfer whose reply was
// lost) is done; a key changed otherwise (another owner, or deleted) returns an error
// wrapping ErrNotHeld. When the key changed but cannot be read back, the read's error is
// returned (not ErrNotHeld: the change may be an earlier Transfer's). It reads the key back from
// the leader (broker.LeaderGet): a lagging copy's older value would say ErrNotHeld for a key
// an earlier Transfer moved.
func Transfer(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, h Held, to string) error {
	_, err := kv.Update(ctx, h.Key, encode(Owner{Instance: to, Digest: h.Owner.Digest, StreamSeq: h.Owner.StreamSeq}), h.Revision)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("transfer claim %s: %w", h.Key, err)
	}
	e, gerr := broker.LeaderGet(ctx, js, kv, h.Key)
	switch {
	case gerr == nil && parse(e.Value).Instance == to:
		return nil
	case gerr != nil && !errors.Is(gerr, jetstream.ErrKeyNotFound):
		// Unread, the key may be to's already (a reply lost): not known to be lost.
		return fmt.Errorf("transfer claim %s: %w", h.Key, gerr)
	}
	return fmt.Errorf("transfer claim %s from %s: %w", h.Key, h.Owner.Instance, ErrNotHeld)
}
