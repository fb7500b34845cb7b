package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// The replication lag stage (issue 16, docs/replication.md "What a disk loss can lose"): a
// real processor replicates its ledger with litestream into a file replica while it takes in
// a backlog. Beside it, `litestream restore -f` keeps a copy restored from the replica (follow
// mode: the replica's new LTX files applied as they appear), and every lagSampleEvery the live
// ledger's position and then the copy's are read. The lag of a copy read is how long before
// it the live ledger was first seen holding the copy's last payout: a disk lost at that
// moment would lose what was committed since. The copy trails the replica by up to
// lagFollowEvery plus the time to apply a file, so the lag read off it is an upper bound of
// the replica's, by about that much.
const (
	// lagSampleEvery is how often the live ledger and the copy are read: the resolution of
	// every lag.
	lagSampleEvery = 20 * time.Millisecond
	// lagSyncInterval is litestream's monitor and sync interval in this stage: the
	// processor's default (replica.sync-interval).
	lagSyncInterval = time.Second
	// lagFollowEvery is how often the follow-mode restore looks for new files in the replica.
	lagFollowEvery = 100 * time.Millisecond
)

// LagResult is the replication lag measured under load: how far the replica trailed the live
// ledger, read every lagSampleEvery while the processor took in its backlog.
type LagResult struct {
	Payouts        int     `json:"payouts"`
	SyncInterval   float64 `json:"sync_interval_s"`
	FollowInterval float64 `json:"follow_interval_s"` // the copy's poll of the replica
	IntakeS        float64 `json:"intake_s"`          // from the processor's start to every payout acked
	PerSec         float64 `json:"per_s"`             // Payouts ÷ IntakeS: the load
	Samples        int     `json:"live_samples"`      // reads of the live ledger's position
	// Reads is the copy reads judged; Unjudged those the live samples could not date (a copy
	// whose last payout was committed before the first live sample).
	Reads    int     `json:"copy_reads"`
	Unjudged int     `json:"copy_reads_unjudged"`
	P50      float64 `json:"lag_p50_s"`
	P95      float64 `json:"lag_p95_s"`
	P99      float64 `json:"lag_p99_s"`
	Max      float64 `json:"lag_max_s"`
	// MaxBehind is the most payouts the live ledger held beyond the copy at a copy read:
	// what a disk lost then would have lost.
	MaxBehind int64 `json:"max_behind"`
	// LossAtMax is Max × PerSec: the payouts committed in the worst window at this load.
	LossAtMax float64 `json:"loss_at_max"`
}

// position is a ledger's last payout seq (ledger.DB.Position) as read at a time.
type position struct {
	at  time.Time // when the read returned: the ledger held seq by then
	seq int64
}

// lagOf judges the copy's position c against live, the live ledger's positions in the order
// they were read. lag is how long before c.at the live ledger was first seen holding the
// copy's last payout, behind how many payouts the live ledger held beyond the copy at its
// last read up to c.at; both are 0 when it held none (the copy was whole). ok is false when
// live cannot date the copy: no position below c.seq was read (a copy whose last payout was
// committed before the first read), or none reached it.
func lagOf(live []position, c position) (lag time.Duration, behind int64, ok bool) {
	i := sort.Search(len(live), func(i int) bool { return live[i].seq >= c.seq })
	if i == 0 || i == len(live) {
		return 0, 0, false
	}
	j := sort.Search(len(live), func(j int) bool { return live[j].at.After(c.at) }) - 1
	if j < 0 || live[j].seq <= c.seq {
		return 0, 0, true
	}
	// live[j].seq > c.seq, so j ≥ i and live[i].at ≤ live[j].at ≤ c.at.
	return c.at.Sub(live[i].at), live[j].seq - c.seq, true
}

// judge fills r's lag figures from the copy's positions read while live was read;
// r.PerSec must be set.
func (r *LagResult) judge(live, copies []position) {
	r.Samples, r.Reads, r.Unjudged, r.MaxBehind = len(live), 0, 0, 0
	var lags []float64
	for _, c := range copies {
		lag, behind, ok := lagOf(live, c)
		if !ok {
			r.Unjudged++
			continue
		}
		r.Reads++
		lags = append(lags, lag.Seconds())
		r.MaxBehind = max(r.MaxBehind, behind)
	}
	slices.Sort(lags)
	r.P50, r.P95, r.P99, r.Max = nearestRank(lags, 0.5), nearestRank(lags, 0.95), nearestRank(lags, 0.99), nearestRank(lags, 1)
	r.LossAtMax = r.Max * r.PerSec
}

// nearestRank is the q-quantile (0 < q ≤ 1) of sorted by the nearest-rank method; 0 for none.
func nearestRank(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[max(int(math.Ceil(q*float64(len(sorted))))-1, 0)]
}

// errNoLagRead: no read of the copy made while the backlog was taken in could be judged; a
// larger backlog (Options.Lag) gives the stage something to measure.
var errNoLagRead = errors.New("no read of the replica's copy could be judged while the backlog was taken in")

// replicationLag runs the real processor on a new ledger at dataDir/ledger.db replicated by
// litestream (the executable at litestream) into dataDir/replica, against an idle,
// production-paced sandbox process, until the shared durable consumer has acked every message
// up to lastSeq (the n payouts published before). Meanwhile a follow-mode restore keeps
// dataDir/copy/ledger.db restored from the replica, and the live ledger's and the copy's
// positions are read every lagSampleEvery; each copy read before the last ack is judged.
func (e *env) replicationLag(ctx context.Context, dataDir, litestream string, n int, lastSeq uint64) (LagResult, error) {
	r := LagResult{Payouts: n, SyncInterval: lagSyncInterval.Seconds(), FollowInterval: lagFollowEvery.Seconds()}
	sb, err := e.startSandbox(ctx, wechatpaytest.DefaultOptions(), dataDir)
	if err != nil {
		return r, err
	}
	defer sb.Close()
	logs, err := os.OpenFile(filepath.Join(dataDir, "processor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return r, err
	}
	defer logs.Close()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return r, err
	}
	cfg := e.processorConfig(abs, sb.URL())
	replicaURL := "file://" + filepath.Join(abs, "replica")
	cfg.Replica = app.ReplicaConfig{URL: replicaURL, SyncInterval: lagSyncInterval, Litestream: litestream}
	copyPath := filepath.Join(abs, "copy", "ledger.db")
	if err := os.MkdirAll(filepath.Dir(copyPath), 0o700); err != nil {
		return r, err
	}
	p, err := startProcessor(ctx, cfg, logs)
	if err != nil {
		return r, err
	}
	wctx, stop := context.WithCancel(ctx)
	sampled, followed := make(chan error, 1), make(chan error, 1)
	var live, copies []position
	go func() {
		var err error
		live, copies, err = sampleLag(wctx, cfg.Ledger, copyPath)
		sampled <- err
	}()
	go func() { followed <- followReplica(wctx, litestream, replicaURL, copyPath, logs) }()
	end, err := e.waitAcked(ctx, cfg.NATS.Topology.Consumer, lastSeq, 5*time.Minute)
	stop()
	if err := errors.Join(err, <-sampled, <-followed, p.Stop()); err != nil {
		return r, err
	}
	r.IntakeS = end.Sub(p.ready).Seconds()
	r.PerSec = float64(n) / r.IntakeS
	r.judge(live, slices.DeleteFunc(copies, func(c position) bool { return !c.at.Before(end) }))
	if r.Reads == 0 {
		return r, fmt.Errorf("%w: %.1f s of intake, %d copy reads unjudged", errNoLagRead, r.IntakeS, r.Unjudged)
	}
	return r, nil
}

// sampleLag reads the position of the live ledger at livePath (ledger.OpenReadOnly, beside
// its writer) and then, once it exists, of the copy at copyPath, every lagSampleEvery until
// ctx is done, and returns the positions read.
func sampleLag(ctx context.Context, livePath, copyPath string) (live, copies []position, err error) {
	tick := time.NewTicker(lagSampleEvery)
	defer tick.Stop()
	for {
		l, err := readPosition(ctx, livePath)
		if err != nil {
			return live, copies, stopped(ctx, fmt.Errorf("live ledger: %w", err))
		}
		live = append(live, l)
		if _, err := os.Stat(copyPath); err == nil {
			c, err := readPosition(ctx, copyPath)
			if err != nil {
				return live, copies, stopped(ctx, fmt.Errorf("the replica's copy: %w", err))
			}
			copies = append(copies, c)
		} else if !errors.Is(err, os.ErrNotExist) {
			return live, copies, err
		}
		select {
		case <-ctx.Done():
			return live, copies, nil
		case <-tick.C:
		}
	}
}

// stopped is nil once ctx is done (a read cut short by the end of the stage), err before.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// readPosition opens the ledger at path read-only and returns its position.
func readPosition(ctx context.Context, path string) (position, error) {
	db, err := ledger.OpenReadOnly(ctx, path)
	if err != nil {
		return position{}, err
	}
	seq, _ := db.Position()
	return position{at: time.Now(), seq: seq}, db.Close()
}

// followReplica keeps out restored from the replica at replicaURL with `litestream restore
// -f` (follow mode: the replica's new files applied every lagFollowEvery) until ctx is done,
// its output appended to logs. While the replica is empty the restore exits at once and is
// run again a lagFollowEvery later.
func followReplica(ctx context.Context, litestream, replicaURL, out string, logs *os.File) error {
	tick := time.NewTicker(lagFollowEvery)
	defer tick.Stop()
	for {
		cmd := exec.CommandContext(ctx, litestream, "restore", "-f", "-follow-interval", lagFollowEvery.String(),
			"-if-replica-exists", "-o", out, replicaURL)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // follow mode stops cleanly on it
		cmd.WaitDelay = 10 * time.Second
		cmd.Stdout, cmd.Stderr = logs, logs
		err := cmd.Run()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("litestream restore -f: %w (see %s)", err, logs.Name())
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("litestream restore -f stopped following %s (%v; see %s)", out, err, logs.Name())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
