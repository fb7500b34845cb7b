// Package instances keeps a heartbeat of every processor instance in a JetStream KeyValue
// bucket, so that claims owned by an instance that is gone can be found (issue 16,
// orphaned ownership).
//
// A processor's instance id is tied to its ledger file; its claims (internal/claims) carry
// that id. If the file is lost, the claims stay owned by an id no process runs any more.
// Each instance therefore writes one key, its id, holding a Record: who it is, when it
// started, when it was last seen and where its ledger stands. A Beat rewrites the record
// every Every and marks it stopped on a clean stop, so a clean shutdown is never mistaken
// for a loss. A Watcher lists the records and reports the Silent ones: not seen for longer
// than a threshold, without a clean stop.
//
// Every write is revision-checked (KV compare-and-set), so the record is also where adoption
// is fenced: Retire marks an instance retired only if the record is unchanged since it was
// judged not alive, so of two adopters exactly one wins, and a retired instance that comes
// back learns it at its next beat (ErrRetired) and must stop.
package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
)

// Defaults for a zero Every or deadAfter.
const (
	// DefaultEvery is how often a Beat rewrites its record and a Watcher lists the records.
	DefaultEvery = 10 * time.Second
	// DefaultDeadAfter is how long an instance may go unseen, without a clean stop, before
	// it is Silent: many beats, so a slow write or a short NATS outage is not a loss.
	DefaultDeadAfter = 2 * time.Minute
)

var (
	// ErrRetired means the instance has been retired (adopted by another): a Beat of it
	// stops and must not work any more, and a Retire of it lost to an earlier one.
	ErrRetired = errors.New("instance retired")
	// ErrSuperseded means another process now writes the heartbeat of the same instance
	// id (the same ledger file, or a copy of it, runs twice): the Beat that sees it stops,
	// and its process must stop working.
	ErrSuperseded = errors.New("instance heartbeat written by another process")
	// ErrAlive is returned by Retire for an instance that is alive: it is not retired.
	ErrAlive = errors.New("instance alive")
)

// State is how an instance stands, judged by Classify.
type State string

// The states of an instance.
const (
	Alive   State = "alive"   // seen within deadAfter, not stopped
	Stopped State = "stopped" // stopped cleanly: it owns its claims and its ledger file is intact
	Silent  State = "silent"  // not seen for longer than deadAfter without a clean stop: maybe lost
	Retired State = "retired" // adopted by another instance; it must never work again
)

// LedgerPos is where an instance's ledger stands: enough to tell, after a loss, how far a
// restored copy lags. Path is the file path on the instance's host.
type LedgerPos struct {
	Path      string `json:"path,omitempty"`
	LastSeq   int64  `json:"last_seq"`   // the highest payout seq
	LastEvent int64  `json:"last_event"` // the id of the last event of the hash chain
}

// Info is what an instance says of itself in every beat. It holds no secrets.
type Info struct {
	Instance string // the ledger's instance id: the key of the record
	MchID    string
	Host     string // os.Hostname of the process
	Version  string
	// Journaled says every batch holding a payout received from JournalSince on was journaled
	// before its first send (internal/journal); a record without it (an older version) promises
	// nothing of the kind.
	Journaled    bool
	JournalSince time.Time
	// ClaimsFirst says intake claims a key before it commits the row, the claim naming the
	// request's stream sequence (internal/claims). An instance without it (an older version)
	// records a claim it cannot read as a duplicate, so a claims-first instance claims
	// nothing while such an instance of its merchant is alive.
	ClaimsFirst bool
}

// Record is one instance's stored heartbeat.
type Record struct {
	Instance string `json:"instance"`
	MchID    string `json:"mchid,omitempty"`
	Host     string `json:"host,omitempty"`
	Version  string `json:"version,omitempty"`
	// Journaled and JournalSince are Info's.
	Journaled    bool      `json:"journaled,omitempty"`
	JournalSince time.Time `json:"journal_since,omitzero"`
	ClaimsFirst  bool      `json:"claims_first,omitempty"` // Info's
	Boot         string    `json:"boot,omitempty"`         // random per process run: tells one run's writes from another's
	StartedAt    time.Time `json:"started_at,omitzero"`
	SeenAt       time.Time `json:"seen_at,omitzero"`    // the writer's clock at the last beat
	StoppedAt    time.Time `json:"stopped_at,omitzero"` // set by the final beat of a clean stop
	Ledger       LedgerPos `json:"ledger"`
	RetiredBy    string    `json:"retired_by,omitempty"` // the adopter that retired it
	RetiredAt    time.Time `json:"retired_at,omitzero"`

	Revision uint64 `json:"-"` // the KV revision it was read at
}

// Status is a Record with its State.
type Status struct {
	Record
	State State
}

// Classify judges each record at now: Retired if retired, Stopped after a clean stop,
// Silent if last seen more than deadAfter before now (DefaultDeadAfter if deadAfter ≤ 0),
// else Alive. SeenAt is the writer's clock, so deadAfter must dwarf the clock skew between
// hosts. The result is in the order of records.
func Classify(records []Record, now time.Time, deadAfter time.Duration) []Status {
	deadAfter = deadAfterOr(deadAfter)
	out := make([]Status, len(records))
	for i, r := range records {
		out[i] = Status{Record: r, State: state(r, now, deadAfter)}
	}
	return out
}

func state(r Record, now time.Time, deadAfter time.Duration) State {
	switch {
	case r.RetiredBy != "":
		return Retired
	case !r.StoppedAt.IsZero():
		return Stopped
	case now.Sub(r.SeenAt) > deadAfter:
		return Silent
	default:
		return Alive
	}
}

// Ensure creates or updates the heartbeat bucket, stored and replicated like the claims
// bucket (broker.Ensure): file storage, replicas copies, one revision per key. It has no
// TTL: a retired instance's record must outlive any return of that instance. Safe to call
// from every replica at every start.
func Ensure(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "paystream instance heartbeats",
		Storage: jetstream.FileStorage, Replicas: replicas, History: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("instances bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// List returns every record in the bucket kv (on js), in instance order, or an error: never
// a shorter list, since a caller reads a missing record as an instance gone (and a missing
// older version as "claims may go on"). So it does not list through a KV watch, whose
// end-of-values mark counts deliveries (a key that beat or was created while it ran can stand
// in for one not yet delivered) and which jetstream's ListKeys ends quietly with its context.
// It takes the keys from the subjects the bucket's stream holds (one answer of the server's),
// then reads each key's last value; a key removed since is skipped.
func List(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) ([]Record, error) {
	prefix := "$KV." + kv.Bucket() + "."
	subjects, err := broker.SubjectsOnLeader(ctx, js, "KV_"+kv.Bucket(), prefix+">")
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	out := make([]Record, 0, len(subjects))
	for subject := range subjects {
		r, err := Get(ctx, js, kv, strings.TrimPrefix(subject, prefix))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed: its subject keeps the marker
		}
		if err != nil {
			return nil, fmt.Errorf("list instances: %w", err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Instance, b.Instance) })
	return out, nil
}

// Get reads one instance's record in kv (on js); an error wrapping jetstream.ErrKeyNotFound
// when it has none. It reads from the leader of the bucket's stream (broker.LeaderGet): a
// lagging copy could answer an older beat, or none at all for an instance that just started.
func Get(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance string) (Record, error) {
	e, err := broker.LeaderGet(ctx, js, kv, instance)
	if err != nil {
		return Record{}, fmt.Errorf("get instance %s: %w", instance, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value, &r); err != nil {
		return Record{}, fmt.Errorf("decode instance %s: %w", instance, err)
	}
	r.Instance, r.Revision = instance, e.Revision
	return r, nil
}

// Retire marks instance retired (in kv, on js) by adopter by, if its record read at now is not Alive
// (judged with deadAfter as in Classify). The update is revision-checked against that
// read: if the instance beat in between, Retire reads again and judges again, so of any
// number of concurrent Retire calls exactly one returns nil, and none succeeds over a beat
// it did not see. An instance with no record (it never beat) is retired by creating its
// record, create-if-absent.
//
// Errors: ErrAlive if the instance is alive; ErrRetired (naming the adopter) if it is
// already retired, by an earlier call or a concurrent one that won.
//
// The retired instance learns it at its next beat, within its Every once it reaches NATS;
// until then it may still finish what it had in hand.
func Retire(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance, by string, now time.Time, deadAfter time.Duration) error {
	for {
		r, err := Get(ctx, js, kv, instance)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			r = Record{Instance: instance, RetiredBy: by, RetiredAt: now}
			_, err = kv.Create(ctx, instance, encode(r))
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // written since: judge it
			}
			if err != nil {
				return fmt.Errorf("retire instance %s: %w", instance, err)
			}
			return nil
		case err != nil:
			return fmt.Errorf("retire: %w", err)
		}
		switch state(r, now, deadAfterOr(deadAfter)) {
		case Retired:
			return fmt.Errorf("instance %s retired by %s at %s: %w", instance, r.RetiredBy, r.RetiredAt.Format(time.RFC3339), ErrRetired)
		case Alive:
			return fmt.Errorf("instance %s seen at %s: %w", instance, r.SeenAt.Format(time.RFC3339), ErrAlive)
		}
		r.RetiredBy, r.RetiredAt = by, now
		_, err = kv.Update(ctx, instance, encode(r), r.Revision)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // written since: judge it again
		}
		if err != nil {
			return fmt.Errorf("retire instance %s: %w", instance, err)
		}
		return nil
	}
}

func deadAfterOr(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultDeadAfter
	}
	return d
}

// encode marshals r; a Record always marshals.
func encode(r Record) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("instances: encode record: %v", err))
	}
	return b
}
