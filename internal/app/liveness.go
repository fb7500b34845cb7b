package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/pkg/ledger"
)

// silentReminder is how often a silent set that has not changed is logged again.
const silentReminder = 10 * time.Minute

// liveness is this instance's heartbeat and its watch over the others' (internal/instances):
// an instance that stops beating without a clean stop leaves the payouts it claimed stranded,
// so every replica reports it (log at ERROR, paystream_instances_silent, the status page).
type liveness struct {
	beat *instances.Beat
	h    *health
	m    *metrics.Metrics
	log  *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	last     []string // the silent instance ids last logged
	loggedAt time.Time

	// older is set while an instance of this merchant running the commit-first claim
	// protocol (an older version) is alive, and until the first listing: see mayClaim.
	older     atomic.Bool
	olderLast []string // the older instance ids last logged
}

// startLiveness writes this instance's first heartbeat and starts watching the others. It
// refuses (an error wrapping instances.ErrRetired) an instance another replica has retired:
// its ledger's work was adopted, so it must never work again.
func startLiveness(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, topo broker.Topology, db *ledger.DB, self instances.Info,
	h *health, m *metrics.Metrics, log *slog.Logger) (*liveness, error) {
	self.Host, _ = os.Hostname()
	bc := instances.BeatConfig{
		JS: js, KV: kv, Self: self, Every: topo.HeartbeatEvery, Log: log,
		Status: func() instances.LedgerPos {
			seq, ev := db.Position()
			return instances.LedgerPos{Path: db.Path(), LastSeq: seq, LastEvent: ev}
		},
	}
	// The first beat is retried while JetStream cannot answer (a node restarting), as the
	// topology is; a fence is final.
	var beat *instances.Beat
	var logged time.Time
	for {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		beat, err = instances.Start(bctx, bc)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, instances.ErrRetired):
			return nil, fmt.Errorf("instance %s was retired by another replica, which took over its ledger's work; "+
				"this ledger file must not run again (start a new one): %w", self.Instance, err)
		case errors.Is(err, instances.ErrSuperseded) || ctx.Err() != nil:
			return nil, fmt.Errorf("heartbeat: %w", err)
		default:
			if time.Since(logged) > 10*time.Second {
				log.Warn("first heartbeat not written; retrying", "err", err)
				logged = time.Now()
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("heartbeat: %w", err)
			case <-time.After(time.Second):
			}
			continue
		}
		break
	}
	l := &liveness{beat: beat, h: h, m: m, log: log}
	l.older.Store(true) // until the first listing says otherwise
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	w := &instances.Watcher{JS: js, KV: kv, Self: self.Instance, DeadAfter: topo.SilentAfter, Every: topo.HeartbeatEvery, Report: l.report, Log: log,
		Alive: func(alive []instances.Record) { l.alive(self.MchID, alive) }}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		_ = w.Run(wctx) // returns nil when wctx is done
	}()
	return l, nil
}

// report takes the watcher's silent instances: the metric and the page at every listing, the
// log when the set changes (and every silentReminder while it stays).
func (l *liveness) report(silent []instances.Record) {
	l.m.InstancesSilent.Set(float64(len(silent)))
	ids := make([]string, len(silent))
	page := make([]ops.SilentInstance, len(silent))
	for i, r := range silent {
		ids[i] = r.Instance
		page[i] = ops.SilentInstance{Instance: r.Instance, Host: r.Host, SeenAt: r.SeenAt, LastSeq: r.Ledger.LastSeq, LastEvent: r.Ledger.LastEvent}
	}
	l.h.silent.Store(&page)
	changed := !slices.Equal(ids, l.last)
	if !changed && (len(ids) == 0 || time.Since(l.loggedAt) < silentReminder) {
		return
	}
	l.last, l.loggedAt = ids, time.Now()
	if len(silent) == 0 {
		l.log.Info("no processor instance is silent any more")
		return
	}
	for _, r := range silent {
		l.log.Error("instance silent: it stopped beating without a clean stop, and the payouts it claimed are stranded until it runs again on its ledger or is adopted (processor adopt --instance ID --plan lists them)",
			"silent_instance", r.Instance, "host", r.Host, "seen_at", r.SeenAt, "ledger_last_seq", r.Ledger.LastSeq, "ledger_last_event", r.Ledger.LastEvent)
	}
}

// alive takes the watcher's alive instances: any of mchID's that does not claim first (an
// older version, which commits before it claims and records a claim it cannot read as a
// duplicate) pauses this instance's claims: were this one to claim a message and stop before
// committing it, such an instance receiving the message again would record it as this one's
// duplicate and ack it, and nobody would pay it. Logged when the set changes.
func (l *liveness) alive(mchID string, alive []instances.Record) {
	var ids []string
	for _, r := range alive {
		if !r.ClaimsFirst && r.MchID == mchID {
			ids = append(ids, r.Instance)
		}
	}
	l.older.Store(len(ids) > 0)
	if slices.Equal(ids, l.olderLast) {
		return
	}
	l.olderLast = ids
	if len(ids) == 0 {
		l.log.Info("no instance of an older claim protocol is alive: intake claims again")
		return
	}
	l.log.Error("an instance of an older version is alive: this one claims nothing (intake paused) until it stops; upgrade replicas by stopping the older ones first",
		"older_instances", ids)
}

// mayClaim reports whether intake may claim: leased, and no alive instance of the merchant
// runs the older claim protocol (see alive).
func (l *liveness) mayClaim(silentAfter time.Duration) bool {
	return l.leased(silentAfter) && !l.older.Load()
}

// leased reports whether the last heartbeat written is younger than half of silentAfter: an
// adopter judges an instance lost only once it has been silent for silentAfter, so an
// instance that acts only while leased never acts after an adopter has begun (given clocks
// within silentAfter/2 of each other).
func (l *liveness) leased(silentAfter time.Duration) bool {
	return time.Since(l.beat.LastBeat()) < silentAfter/2
}

// fenced is closed when the heartbeat ended on its own: the instance was retired, or another
// process writes its heartbeat. Err says which.
func (l *liveness) fenced() <-chan struct{} { return l.beat.Done() }

// err is why the heartbeat ended on its own; nil while it beats and after a plain stop.
func (l *liveness) err() error { return l.beat.Err() }

// stop ends the watch and writes the clean-stop mark: call it only once the pipeline has
// stopped, since a stopped instance may be judged to have finished its work.
func (l *liveness) stop(ctx context.Context) error {
	l.cancel()
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return l.beat.Stop(ctx)
}
