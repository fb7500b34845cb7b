package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/pkg/ledger"
)

// restoredChecks are the audit checks a restored ledger must pass on its own before it takes
// any work: its hash chain, every state its event history produces, and every frozen body.
// The others judge a file among its peers (owner_missing, cross-file keys) or its age.
var restoredChecks = []string{"event_chain", "event_replay", "batch_body"}

// restoreLedger restores cfg.Ledger from its replica when the file is missing and a replica
// is configured, and checks the copy. restored is false when there was nothing to do: the
// file exists, no replica is configured, or the replica is empty (a new replica). A replica
// that cannot be read is an error: the processor never starts on an empty ledger in place of
// one it could not restore.
func restoreLedger(ctx context.Context, cfg Config, log *slog.Logger) (restored bool, err error) {
	if cfg.Replica.URL == "" {
		return false, nil
	}
	if _, err := os.Stat(cfg.Ledger); err == nil || !errors.Is(err, os.ErrNotExist) {
		return false, nil // there, or not ours to judge here: Open says what is wrong
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Ledger), 0o700); err != nil {
		return false, fmt.Errorf("ledger dir: %w", err)
	}
	start := time.Now()
	restored, err = replica.Restore(ctx, cfg.Replica.Litestream, cfg.replicaConfig(), log)
	if err != nil {
		return false, fmt.Errorf("restore the ledger from replica.url: %w", err)
	}
	if !restored {
		log.Info("no ledger file and an empty replica: a new ledger", "replica", replica.RedactURL(cfg.Replica.URL))
		return false, nil
	}
	rep, err := ledger.Audit(ctx, []string{cfg.Ledger}, time.Now())
	if err != nil {
		return true, fmt.Errorf("audit the restored ledger: %w", err)
	}
	var bad []string
	for _, v := range rep.Violations {
		if slices.Contains(restoredChecks, v.Check) {
			bad = append(bad, fmt.Sprintf("%s %s: %s", v.Check, v.Row, v.Detail))
		}
	}
	if len(bad) > 0 {
		return true, fmt.Errorf("the restored ledger %s fails its own audit (%s); it was left in place, untouched by work", cfg.Ledger, strings.Join(bad, "; "))
	}
	log.Warn("ledger restored from its replica; its structure checks out (whether it is complete is judged against the instance's heartbeat)",
		"ledger", cfg.Ledger, "replica", replica.RedactURL(cfg.Replica.URL), "took", time.Since(start).Round(time.Millisecond))
	return true, nil
}

// startReplication runs litestream beside the processor (a child process: it must never
// share the process, docs/replication.md), creating a nats:// replica's object store first.
// The caller stops it after the ledger is closed, so the last commits are shipped.
func startReplication(ctx context.Context, cfg Config, js jetstream.JetStream, log *slog.Logger) (*replica.Process, error) {
	rc := cfg.replicaConfig()
	if _, ok := rc.Bucket(); ok {
		if err := replica.EnsureBucket(ctx, js, rc, cfg.NATS.Topology.Replicas); err != nil {
			return nil, fmt.Errorf("replica bucket: %w", err)
		}
	}
	path := filepath.Join(cfg.DataDir, "litestream.yml")
	if err := replica.WriteConfig(path, rc); err != nil {
		return nil, err
	}
	// A processor killed and restarted at once: its litestream, told by the parent's death to
	// stop, may still be shipping. Two must never replicate one ledger.
	pid := filepath.Join(cfg.DataDir, "litestream.pid")
	if err := replica.AwaitPrevious(ctx, pid, replica.StopTimeout, log); err != nil {
		return nil, err
	}
	p, err := replica.Start(context.WithoutCancel(ctx), cfg.Replica.Litestream, path, log)
	if err != nil {
		return nil, err
	}
	if err := replica.WritePID(pid, p.Pid()); err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	return p, nil
}

// ErrRestoredIncomplete: a ledger restored from its replica is not proven whole. litestream
// ships commits about a second after they are made; a lost disk takes the newest with it, and
// a batch sealed and sent in that second, or a request acked in it, would be unknown to the
// copy: resuming it as it is could pay twice or strand a payout. The copy is whole only when
// the instance's heartbeat shows a clean stop at the very event it ends with (a clean stop
// closes the ledger before it stops litestream, so everything was shipped); otherwise Run
// completes it from NATS first (recoverRestored), once the old process is silent.
var ErrRestoredIncomplete = errors.New("restored ledger not proven complete")

// checkRestored compares a restored ledger with the last heartbeat of its instance (kv is the
// heartbeat bucket) and returns an error wrapping ErrRestoredIncomplete unless the instance
// stopped cleanly at the event the copy ends with.
func checkRestored(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, db *ledger.DB) error {
	seq, ev := db.Position()
	rec, err := instances.Get(ctx, js, kv, db.InstanceID())
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("%w: instance %s has no heartbeat to compare the copy with (the copy ends at event %d)", ErrRestoredIncomplete, db.InstanceID(), ev)
	case err != nil:
		return fmt.Errorf("restored ledger: read the instance's heartbeat: %w", err)
	case rec.StoppedAt.IsZero():
		return fmt.Errorf("%w: instance %s did not stop cleanly (last seen %s at event %d, payout seq %d; the copy ends at event %d, seq %d): "+
			"commits made after the replica's last sync are gone, and a batch sent in that gap would be paid again; the copy is left in place for recovery",
			ErrRestoredIncomplete, db.InstanceID(), rec.SeenAt.Format(time.RFC3339), rec.Ledger.LastEvent, rec.Ledger.LastSeq, ev, seq)
	case rec.Ledger.LastEvent != ev:
		return fmt.Errorf("%w: instance %s stopped cleanly at event %d, the copy ends at event %d", ErrRestoredIncomplete, db.InstanceID(), rec.Ledger.LastEvent, ev)
	}
	return nil
}

// awaitSilent waits until instance's heartbeat is not Alive (silent, stopped, or none): the
// process that wrote a restored copy may still run somewhere, cut off, and must have stopped
// acting before the copy does.
func awaitSilent(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, instance string, silentAfter time.Duration, log *slog.Logger) error {
	var logged time.Time
	for {
		rec, err := instances.Get(ctx, js, kv, instance)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the instance's heartbeat: %w", err)
		}
		if st := instances.Classify([]instances.Record{rec}, time.Now(), silentAfter)[0]; st.State != instances.Alive {
			return nil
		}
		if time.Since(logged) > 10*time.Second {
			log.Warn("waiting for the instance's last heartbeat to be silent-after old before completing the restored copy",
				"seen_at", rec.SeenAt, "host", rec.Host, "silent_after", silentAfter)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// recoverRestored completes a restored copy that may lack its last commits, as an adoption
// of its own instance (pipeline.Adopt): every claim the instance holds and every batch it
// journaled that the copy lacks is recorded, the batches under their own numbers and bodies,
// marked maybe sent. Its claims are its own already, so none moves.
func recoverRestored(ctx context.Context, p *pipeline.Pipeline, js jetstream.JetStream, jso jsObjects, topo broker.Topology, db *ledger.DB, log *slog.Logger) error {
	src, err := adoptSource(ctx, js, jso, topo, db.InstanceID())
	if err != nil {
		return err
	}
	a, err := p.Adopt(ctx, src, false)
	if err != nil {
		return fmt.Errorf("complete the restored ledger: %w", err)
	}
	for _, l := range a.Left {
		log.Error("a payout this instance held cannot be recovered; it is never paid from here", "key", l.Key, "reason", l.Reason)
	}
	if err := db.EndAdoption(ctx); err != nil {
		return err
	}
	log.Warn("restored ledger completed from NATS", "held", a.Held, "batches", len(a.Batches), "in_batches", a.InBatches,
		"to_pay", a.ToPay, "left", len(a.Left))
	return nil
}
