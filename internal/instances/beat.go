package instances

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BeatConfig is what Start needs. JS, KV and Self.Instance are required.
type BeatConfig struct {
	JS    jetstream.JetStream // the bucket's JetStream, to read the record back
	KV    jetstream.KeyValue  // the bucket from Ensure
	Self  Info
	Every time.Duration // between beats; DefaultEvery if ≤ 0
	// Status returns the ledger's position for each beat; nil writes none. It is called
	// from the beat goroutine and must be cheap and safe for concurrent use.
	Status func() LedgerPos
	Log    *slog.Logger     // default slog.Default()
	Now    func() time.Time // default time.Now
}

// Beat keeps one instance's heartbeat: Start writes the first one, a goroutine rewrites it
// every Every until Stop, and Stop writes the clean-stop mark. Its methods are safe for
// concurrent use.
type Beat struct {
	cfg     BeatConfig
	boot    string
	started time.Time

	rev  uint64       // the revision of our last write; 0: unknown, read it first. Owned by the beat goroutine while it runs.
	last atomic.Int64 // unix nanoseconds of the last written beat

	cancel   context.CancelFunc
	done     chan struct{}
	err      error // why the goroutine ended on its own; set before done is closed
	stopOnce sync.Once
	stopErr  error
}

// Start writes the instance's first heartbeat and starts rewriting it every cfg.Every. It
// returns an error wrapping ErrRetired if the instance has been retired: the process must
// not take any work. A record left by an earlier run of the same instance is taken over
// (logged at WARN when that run did not stop cleanly).
//
// The beats go on, whatever becomes of ctx, until Stop. A transient write failure is
// logged once per episode and retried at the next beat. If a beat finds the instance
// retired (ErrRetired) or its record written by another process (ErrSuperseded), the
// goroutine ends: Done is closed, Err says why, and the process must stop working.
func Start(ctx context.Context, cfg BeatConfig) (*Beat, error) {
	if cfg.JS == nil || cfg.KV == nil || cfg.Self.Instance == "" {
		return nil, errors.New("instances: BeatConfig needs JS, KV and Self.Instance")
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Status == nil {
		cfg.Status = func() LedgerPos { return LedgerPos{} }
	}
	b := &Beat{cfg: cfg, boot: rand.Text(), started: cfg.Now(), done: make(chan struct{})}
	if err := b.write(ctx, true, time.Time{}); err != nil {
		return nil, fmt.Errorf("first heartbeat: %w", err)
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	go b.loop(lctx)
	return b, nil
}

// Done is closed when the beats have ended: after Stop, or on their own when the
// instance was fenced (see Err).
func (b *Beat) Done() <-chan struct{} { return b.done }

// Err returns, once Done is closed, why the beats ended on their own: an error wrapping
// ErrRetired or ErrSuperseded. It is nil before Done is closed and after a plain Stop.
func (b *Beat) Err() error {
	select {
	case <-b.done:
		return b.err
	default:
		return nil
	}
}

// LastBeat returns when the last heartbeat was written (the configured clock).
func (b *Beat) LastBeat() time.Time { return time.Unix(0, b.last.Load()) }

// Stop ends the beats and writes the clean-stop mark, so the instance reads as Stopped,
// not Silent. Call it only once the process has stopped all work: an adopter may retire a
// stopped instance at once. ctx bounds the final write (pass one that is not yet done,
// e.g. context.WithoutCancel with a timeout). If the beats ended fenced, Stop writes
// nothing and returns Err. Later calls return the first call's result.
func (b *Beat) Stop(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.cancel()
		<-b.done
		if b.err != nil {
			b.stopErr = b.err
			return
		}
		if err := b.write(ctx, false, b.cfg.Now()); err != nil {
			b.stopErr = fmt.Errorf("stop heartbeat: %w", err)
			return
		}
		b.cfg.Log.Info("heartbeat stopped cleanly")
	})
	return b.stopErr
}

func (b *Beat) loop(ctx context.Context) {
	defer close(b.done)
	t := time.NewTicker(b.cfg.Every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wctx, cancel := context.WithTimeout(ctx, b.cfg.Every)
		err := b.write(wctx, false, time.Time{})
		cancel()
		switch {
		case errors.Is(err, ErrRetired) || errors.Is(err, ErrSuperseded):
			b.err = err
			b.cfg.Log.Error("heartbeat fenced: this instance must stop working", "err", err)
			return
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			b.cfg.Log.Warn("heartbeat not written; retrying", "err", err)
		case err == nil && failing:
			failing = false
			b.cfg.Log.Info("heartbeat written again")
		}
	}
}

// write puts the heartbeat, revision-checked against our last write. A mismatch means
// someone else wrote: it reads the record and goes on only if that was a write of ours
// whose reply was lost (same boot), or, when first, an earlier run's.
func (b *Beat) write(ctx context.Context, first bool, stopped time.Time) error {
	kv, id := b.cfg.KV, b.cfg.Self.Instance
	now := b.cfg.Now()
	rec := encode(Record{
		Instance: id, MchID: b.cfg.Self.MchID, Host: b.cfg.Self.Host, Version: b.cfg.Self.Version,
		Journaled: b.cfg.Self.Journaled, JournalSince: b.cfg.Self.JournalSince, ClaimsFirst: b.cfg.Self.ClaimsFirst,
		Boot: b.boot, StartedAt: b.started, SeenAt: now, StoppedAt: stopped, Ledger: b.cfg.Status(),
	})
	for {
		if b.rev == 0 {
			cur, err := Get(ctx, b.cfg.JS, kv, id)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				rev, err := kv.Create(ctx, id, rec)
				if errors.Is(err, jetstream.ErrKeyExists) {
					continue // written since: judge it
				}
				if err != nil {
					return fmt.Errorf("create heartbeat %s: %w", id, err)
				}
				b.wrote(rev, now)
				return nil
			case err != nil:
				return err
			}
			if err := b.judge(cur, first); err != nil {
				return err
			}
			b.rev = cur.Revision
		}
		rev, err := kv.Update(ctx, id, rec, b.rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			b.rev = 0
			continue
		}
		if err != nil {
			return fmt.Errorf("update heartbeat %s: %w", id, err)
		}
		b.wrote(rev, now)
		return nil
	}
}

func (b *Beat) wrote(rev uint64, at time.Time) {
	b.rev = rev
	b.last.Store(at.UnixNano())
}

// judge says whether the stored record cur may be overwritten by this process.
func (b *Beat) judge(cur Record, first bool) error {
	switch {
	case cur.RetiredBy != "":
		return fmt.Errorf("instance %s retired by %s at %s: %w", cur.Instance, cur.RetiredBy, cur.RetiredAt.Format(time.RFC3339), ErrRetired)
	case cur.Boot == b.boot:
		return nil // our own write, whose reply we did not get
	case !first:
		return fmt.Errorf("instance %s on host %q started at %s: %w", cur.Instance, cur.Host, cur.StartedAt.Format(time.RFC3339), ErrSuperseded)
	case cur.StoppedAt.IsZero() && !cur.SeenAt.IsZero():
		b.cfg.Log.Warn("the previous run of this instance did not stop cleanly", "host", cur.Host, "seen_at", cur.SeenAt, "started_at", cur.StartedAt)
	}
	return nil
}

// Watcher reports, every Every, the instances other than Self that are Silent. JS, KV and
// Report are required.
type Watcher struct {
	JS        jetstream.JetStream // the bucket's JetStream, for List
	KV        jetstream.KeyValue
	Self      string        // this instance, never reported
	DeadAfter time.Duration // DefaultDeadAfter if ≤ 0
	Every     time.Duration // DefaultEvery if ≤ 0
	// Report is called from Run after each successful listing with the silent instances
	// (empty when none), in instance order, so a caller can both raise and clear.
	Report func(silent []Record)
	// Alive, if set, is called after Report with the other instances that are Alive.
	Alive func(alive []Record)
	Log   *slog.Logger     // default slog.Default()
	Now   func() time.Time // default time.Now
}

// Run lists the records at once and then every Every until ctx is done, when it returns
// nil. A failed listing is logged at WARN once per episode (and its end at INFO) and
// reports nothing.
func (w *Watcher) Run(ctx context.Context) error {
	if w.JS == nil || w.KV == nil || w.Report == nil {
		return errors.New("instances: Watcher needs JS, KV and Report")
	}
	every, log, now := w.Every, w.Log, w.Now
	if every <= 0 {
		every = DefaultEvery
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		lctx, cancel := context.WithTimeout(ctx, every)
		recs, err := List(lctx, w.JS, w.KV)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			log.Warn("instances not listed; retrying", "err", err)
		case err == nil:
			if failing {
				failing = false
				log.Info("instances listed again")
			}
			silent, alive := []Record{}, []Record{}
			for _, s := range Classify(recs, now(), w.DeadAfter) {
				switch {
				case s.Instance == w.Self:
				case s.State == Silent:
					silent = append(silent, s.Record)
				case s.State == Alive:
					alive = append(alive, s.Record)
				}
			}
			w.Report(silent)
			if w.Alive != nil {
				w.Alive(alive)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
