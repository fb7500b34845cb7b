// Package soak proves exactly-once payment across crashes and replicas with real processes
// (README "Failure model"), on either WeChat Pay product (Config.Product: the batch API, or
// transfer bills): a 3-node JetStream cluster on loopback (R3 streams and KV), the WeChat Pay
// sandbox as a process injecting faults, several processor replicas on their own ledger
// files, and the producer publishing a synthetic workload with re-publishes, invalid and
// misrouted lines and one request just under the 1 MiB max payload. While it runs it
// SIGKILLs a random processor every few seconds and restarts it on the same data dir, kills
// and restarts one NATS node once, and cuts processors' connections right after they send a
// claim (fault proxies between them and the cluster: the claim lands, its reply is lost).
// When everything has settled it checks the sandbox's own payment record against every
// ledger file, the dead letters, the events on the results stream, and that no plaintext
// name rests anywhere.
//
// On transfer bills the sandbox's simulated payees confirm, decline or never confirm (their
// bills close as FAIL OVERDUE_CLOSE), a share of the callbacks is lost, and upstream cancels
// some payouts mid-run (payees who would never confirm, and a few who would) and, once
// everything is final, a few finished payouts and one nobody has: every payout must end
// SUCCESS (paid once), FAIL with the sandbox's reason, or CANCELLED, each refused cancel
// answered once, and each payee's app told about its bill at most once.
//
// With Config.Adopt (make soak) it also plays the recovery drill of issue 16: one processor
// without a ledger replica is SIGKILLed mid-run and its data dir deleted for good; once its
// heartbeat is silent, `processor adopt` takes over its payouts into a fresh ledger from what
// NATS holds, a replacement runs on it, and every check above must pass without the lost file.
//
// Run is the library entry point; cmd/soak is its command line (make soak) and
// TestSoakShort runs a small one inside go test.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// Config shapes one soak run. Start from DefaultConfig or DefaultBillsConfig.
type Config struct {
	// Product is the WeChat Pay product of the merchant: ProductBatches (the batch API; ""
	// too) or ProductBills (transfer bills, one create per payout at most 100/s).
	Product    string
	Dir        string        // working directory (created): binaries, logs, data dirs, ledgers
	Bin        string        // directory holding Binaries; empty: Build them into Dir/bin
	Payouts    int           // generated requests, valid and invalid
	Processors int           // replicas
	KillEvery  time.Duration // a random processor is SIGKILLed and restarted this often
	MinKills   int           // killing goes on at least until this many kills
	KillUntil  float64       // …and until this share of the valid payouts is final
	Timeout    time.Duration // the run from the cluster's start to the checks (not the build)
	Seed       uint64        // workload and chaos
	// DuplicateWindow is the stream's Nats-Msg-Id window, short so that a slice of keys
	// is re-published after it has passed.
	DuplicateWindow time.Duration
	AckWait         time.Duration // short, so that redeliveries after a kill come quickly
	// Quota is the sandbox's limit in requests/s per endpoint (WeChat's is 50 per merchant on the
	// batch API, docs/wechatpay.md §5, and 100 on transfer bills, docs/transfer-bills.md) and Share
	// each replica's configured share of it (its cancels get a fifth of it). Shares that add up to
	// more than the quota make the sandbox answer 429 under load, and every replica must back off
	// without ever changing a number.
	Quota, Share int
	// DiskLoss replicates the first processor's ledger with litestream and, once mid-run,
	// kills it with its litestream, deletes its ledger for good and starts it again: it must
	// restore the file from the replica, complete what the replica lacked from NATS and
	// finish as the same instance.
	DiskLoss bool
	// Adopt plays the recovery drill once mid-run, once every request is published (the late
	// re-publishes of old keys still to come) and a few kills have passed: the last processor
	// (which does not replicate) is SIGKILLed and its data dir deleted for good; once its
	// heartbeat is silent (the processors beat every second and are silent after 5 s),
	// `processor adopt` takes its payouts over into a fresh ledger, and a replacement on that
	// ledger takes its place in the chaos (the next kill hits it).
	Adopt bool
	Log   io.Writer // progress lines; nil: discarded
}

// Products (Config.Product), as the processor's wechatpay.product.
const (
	ProductBatches = "batches"
	ProductBills   = "bills"
)

// DefaultConfig is the batch API run of make soak: 50k payouts, 3 processors, a kill every 3 s.
func DefaultConfig() Config {
	return Config{
		Product: ProductBatches, Payouts: 50_000, Processors: 3, KillEvery: 3 * time.Second, MinKills: 5, KillUntil: 0.98,
		Timeout: 15 * time.Minute, Seed: 1, DuplicateWindow: 20 * time.Second, AckWait: 10 * time.Second,
		Quota: 50, Share: 25, DiskLoss: true, Adopt: true,
	}
}

// DefaultBillsConfig is the transfer bills run of make soak: 10k payouts (each one create
// at most 100/s per merchant, so about two minutes of creates), 3 processors whose shares
// (45/s each) exceed WeChat's 100/s, a kill every 3 s.
func DefaultBillsConfig() Config {
	c := DefaultConfig()
	c.Product, c.Payouts, c.Timeout, c.Quota, c.Share = ProductBills, 10_000, 10*time.Minute, 100, 45
	return c
}

// bills reports whether the run is on transfer bills.
func (c Config) bills() bool { return c.Product == ProductBills }

// ErrConfig is wrapped by Run's error for a Config it cannot run.
var ErrConfig = errors.New("soak: bad config")

// Validate returns an error wrapping ErrConfig for a Config Run cannot run.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is required", ErrConfig)
	case c.Product != "" && c.Product != ProductBatches && c.Product != ProductBills:
		return fmt.Errorf("%w: product %q, want %s or %s", ErrConfig, c.Product, ProductBatches, ProductBills)
	case c.Payouts < 100:
		return fmt.Errorf("%w: %d payouts, want at least 100", ErrConfig, c.Payouts)
	case c.Processors < 1:
		return fmt.Errorf("%w: %d processors, want at least 1", ErrConfig, c.Processors)
	case c.Quota < 1 || c.Share < 1:
		return fmt.Errorf("%w: quota and share must be at least 1 request/s", ErrConfig)
	case c.KillEvery <= 0 || c.Timeout <= 0 || c.DuplicateWindow <= 0 || c.AckWait < time.Second:
		return fmt.Errorf("%w: kill-every, timeout and the duplicate window must be positive, ack-wait at least 1s", ErrConfig)
	case c.Adopt && c.DiskLoss && c.Processors < 2:
		return fmt.Errorf("%w: the recovery drill loses a processor that does not replicate: want at least 2 processors with the disk loss", ErrConfig)
	}
	return nil
}

// Report is what a run measured and checked.
type Report struct {
	Dir          string
	Product      string // ProductBatches or ProductBills
	Payouts      int    // generated requests
	Valid        int    // valid keys
	Failing      int    // valid keys the sandbox fails (never paid)
	Declining    int    // bills: valid keys whose payee declines (FAIL USER_DECLINED)
	NeverConfirm int    // bills: valid keys whose payee never confirms (FAIL OVERDUE_CLOSE)
	Cancels      int    // bills: upstream cancels published mid-run
	LateCancels  int    // bills: cancels published once everything was final (finished or unknown payouts)
	Invalid      int    // invalid lines published raw
	Republished  int    // keys published twice, inside the duplicate window
	Late         int    // keys published twice, after the duplicate window
	Misrouted    int    // requests for another merchant or sub-merchant, published raw
	Kills        int    // processor SIGKILLs
	Crashes      int    // processor exits nobody asked for (restarted too)
	NATSRestarts int
	ClaimCuts    int    // processor connections cut right after a claim was sent: the claim landed, its reply was lost
	DiskLosses   int    // ledgers deleted for good after a SIGKILL (litestream's too), to be restored from their replica
	DiskLossErr  string // why the disk loss could not be played out; "" when it was
	DiskLossHeld int64  // events the deleted ledger held
	// LostEvents is how many ledger events the replica lacked at the kill: the lost window,
	// which the restarted processor completes from NATS.
	LostEvents int64
	// The recovery drill (Config.Adopt): the lost instance, what `processor adopt --plan` and
	// then `processor adopt` said (after AdoptAttempts invocations, the last of which ran
	// AdoptRuns times: it runs again by itself after a NATS failure), how long after the
	// SIGKILL its heartbeat was silent and the adoption done, and why it could not be played
	// out.
	Adoptions        int
	AdoptInstance    string
	AdoptPlan        Adoption
	Adopted          Adoption
	AdoptAttempts    int
	AdoptRuns        int
	AdoptSilentAfter time.Duration
	AdoptTook        time.Duration
	AdoptErr         string
	Sandbox          wechatpaytest.Stats
	Elapsed          time.Duration
	Checks           []Check
}

// Check is one verdict of the final verification.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// Failed counts the failed checks.
func (r *Report) Failed() int {
	n := 0
	for _, c := range r.Checks {
		if !c.OK {
			n++
		}
	}
	return n
}

func (r *Report) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// WriteText prints the numbers, every check, and last, alone on its line, "N passed, M failed".
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "soak (%s) in %s: %d requests (%d valid, %d failing at WeChat, %d invalid of which %d misrouted and 1 near the max payload), re-published %d in the duplicate window and %d after it\n",
		r.Product, r.Dir, r.Payouts, r.Valid, r.Failing, r.Invalid, r.Misrouted, r.Republished, r.Late)
	if r.Product == ProductBills {
		fmt.Fprintf(w, "payees: %d decline, %d never confirm; upstream cancels: %d mid-run, %d of finished or unknown payouts; callbacks delivered %d, lost %d\n",
			r.Declining, r.NeverConfirm, r.Cancels, r.LateCancels, r.Sandbox.Notified, r.Sandbox.NotifyLost)
	}
	fmt.Fprintf(w, "kills %d, unrequested exits %d, NATS node restarts %d, claim replies lost %d, ledgers lost and restored %d (%d events lost), wall time %s\n",
		r.Kills, r.Crashes, r.NATSRestarts, r.ClaimCuts, r.DiskLosses, r.LostEvents, r.Elapsed.Round(time.Second))
	if r.Adoptions > 0 || r.AdoptErr != "" {
		a := r.Adopted
		fmt.Fprintf(w, "recovery drill: instance %s lost with its disk, adopted %d time(s) in %s from the kill: %d claims, %d batches resumed (%d payouts), %d to pay anew, %d left\n",
			r.AdoptInstance, r.Adoptions, r.AdoptTook.Round(time.Millisecond), a.Held, a.Batches, a.InBatches, a.ToPay, a.Left)
	}
	fmt.Fprintf(w, "sandbox: faults %v, rate limited (429) %d, requests %v\n", r.Sandbox.Faults, r.Sandbox.RateLimited, r.Sandbox.Requests)
	for _, c := range r.Checks {
		verdict := "PASS"
		if !c.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "%s %s: %s\n", verdict, c.Name, c.Detail)
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", len(r.Checks)-r.Failed(), r.Failed())
}

// Run performs one soak. The error is for a harness that could not run (build, start,
// timeout before the checks); a run that found violations returns a Report with failed
// checks and a nil error. Every child process is stopped before Run returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Product == "" {
		cfg.Product = ProductBatches
	}
	s := &soak{cfg: cfg, rep: &Report{Dir: cfg.Dir, Product: cfg.Product, Payouts: cfg.Payouts}, log: cfg.Log,
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x50a6))}
	if s.log == nil {
		s.log = io.Discard
	}
	defer s.shutdown()
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	began := time.Now()
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := s.setUp(rctx); err != nil {
		return nil, err
	}
	if err := s.exercise(rctx); err != nil {
		return nil, err
	}
	s.settle(rctx)
	// The checks run even when the run timed out while settling: what is stuck is the finding.
	vctx, vcancel := context.WithTimeout(context.WithoutCancel(ctx), verifyTimeout)
	defer vcancel()
	if s.cfg.bills() {
		s.cancelSettled(vctx)
	}
	s.verify(vctx)
	s.rep.Elapsed = time.Since(began)
	return s.rep, nil
}

// verifyTimeout bounds the checks: the cancels of settled payouts (bills), stopping the
// processors, reading the ledgers, the sandbox's record and the streams, and the audit.
const verifyTimeout = 3 * time.Minute

// soak is the state of one run.
type soak struct {
	cfg  Config
	rep  *Report
	log  io.Writer
	rng  *rand.Rand
	bin  string
	root string // module root: the test keys live under it
	// litestream is the replicating binary (DiskLoss); "" without.
	litestream string
	diskLost   bool // loseDisk has been tried
	// The recovery drill: tried, the replacement that adopted the lost processor (nil
	// until it has), whether a kill has hit it since, and the lost processor's kept log.
	adoptTried    bool
	adopter       *processor
	adopterKilled bool
	lostLogs      []string
	work          *workload

	nodes        []*natsNode
	natsURL      string
	proxies      []*faultproxy.Proxy // one per node; the processors reach the cluster through them
	procURL      string
	producerConf string
	nc           *nats.Conn
	js           jetstream.JetStream
	sandbox      *proc
	sandboxURL   string
	procs        []*processor
	topo         broker.Topology

	// settledCancels are the payouts cancelled once final (bills): each must be refused
	// ALREADY_FINAL; unknownCancel names no payout and must be refused UNKNOWN_PAYOUT.
	settledCancels []string
	unknownCancel  string

	lateAccepted int // late re-publishes JetStream stored as new messages
	earlyDropped int // publishes JetStream dropped as duplicates (the early re-publishes)
	earlyStored  int // early re-publishes stored anyway: the original was lost or delayed past the window by a NATS node restart

	logMu sync.Mutex
}

func (s *soak) logf(format string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.log, "soak %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// prepare makes the working directory and finds or builds the binaries.
func (s *soak) prepare(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return err
	}
	var err error
	if s.root, err = ModuleRoot(ctx); err != nil {
		return err
	}
	if s.cfg.Dir, err = filepath.Abs(s.cfg.Dir); err != nil {
		return err
	}
	s.rep.Dir = s.cfg.Dir
	s.bin = s.cfg.Bin
	if s.bin != "" {
		if s.bin, err = filepath.Abs(s.bin); err != nil {
			return err
		}
	} else {
		s.bin = filepath.Join(s.cfg.Dir, "bin")
		s.logf("building %v into %s", Binaries, s.bin)
		if err := Build(ctx, s.bin); err != nil {
			return err
		}
	}
	if s.cfg.DiskLoss {
		if s.litestream, err = replica.Binary(s.root); err != nil {
			return err
		}
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(s.bin, b)); err != nil {
			return fmt.Errorf("soak: binary %s (go build -o DIR/ ./cmd/... and go build -o DIR/nats-server github.com/nats-io/nats-server/v2): %w", b, err)
		}
	}
	return nil
}

// setUp writes the workload and starts the cluster, the sandbox and the processors.
func (s *soak) setUp(ctx context.Context) error {
	var err error
	if s.work, err = writeWorkload(ctx, s.cfg.Dir, s.cfg.Product, s.cfg.Payouts, s.cfg.Seed); err != nil {
		return err
	}
	if err := s.writeProducerConfig(); err != nil {
		return err
	}
	w := s.work
	s.rep.Valid, s.rep.Invalid, s.rep.Republished, s.rep.Late = len(w.valid), len(w.invalid), w.early, w.late
	s.rep.Misrouted, s.rep.Cancels = w.misrouted, len(w.cancel)
	for _, p := range w.valid {
		switch p {
		case payeeFails:
			s.rep.Failing++
		case payeeDeclines:
			s.rep.Declining++
		case payeeNeverConfirms:
			s.rep.NeverConfirm++
		}
	}

	s.logf("starting a 3-node JetStream cluster")
	if s.nodes, err = startClusterRetrying(ctx, filepath.Join(s.bin, "nats-server"), filepath.Join(s.cfg.Dir, "nats"), 3, s.logf); err != nil {
		return err
	}
	s.natsURL = clusterURL(s.nodes)
	var urls []string
	for _, n := range s.nodes {
		px, err := faultproxy.Start("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", n.clientPort))
		if err != nil {
			return err
		}
		s.proxies = append(s.proxies, px)
		urls = append(urls, px.URL())
	}
	s.procURL = strings.Join(urls, ",")
	if s.nc, err = nats.Connect(s.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond)); err != nil {
		return err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return err
	}
	if err := s.startSandbox(ctx); err != nil {
		return err
	}
	if err := s.ensureTopology(ctx); err != nil {
		return err
	}
	s.logf("starting %d processors", s.cfg.Processors)
	for i := range s.cfg.Processors {
		p, err := s.newProcessor(fmt.Sprintf("p%d", i+1), "", s.cfg.DiskLoss && i == 0) // the replica lives off its data dir: what loseDisk deletes
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		if err := p.start(); err != nil {
			return err
		}
	}
	return nil
}

// ensureTopology creates the streams, consumer and claims bucket with broker.Ensure, as an
// operator would before starting replicas, retrying while the new cluster elects its
// leaders. The processors' own Ensure at every start then finds them as configured
// (processorConfig writes s.topo itself).
func (s *soak) ensureTopology(ctx context.Context) error {
	s.topo = broker.DefaultTopology()
	s.topo.Replicas, s.topo.DuplicateWindow, s.topo.AckWait = 3, s.cfg.DuplicateWindow, s.cfg.AckWait
	s.topo.Backoff, s.topo.MaxAckPending = nil, maxAckPending*s.cfg.Processors
	if s.cfg.Adopt {
		// The drill waits until the lost instance is silent: a beat a second, silent after 5 s
		// (config: at least 3 beats), so the driver's lease (silent-after/2) is 2.5 s.
		s.topo.HeartbeatEvery, s.topo.SilentAfter = time.Second, 5*time.Second
	}
	return poll(ctx, time.Minute, 500*time.Millisecond, func() (bool, string) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, _, err := broker.Ensure(actx, s.js, s.topo); err != nil {
			return false, "jetstream topology: " + err.Error()
		}
		return true, ""
	})
}

// exercise publishes the workload while the chaos loop kills processors and a NATS node,
// and returns when both are done.
func (s *soak) exercise(ctx context.Context) error {
	requested, published := make(chan struct{}), make(chan struct{})
	chaosDone := make(chan struct{})
	chaosCtx, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	go func() {
		defer close(chaosDone)
		s.chaos(chaosCtx, requested, published)
	}()
	err := s.publishAll(ctx, requested, published)
	if err != nil {
		stopChaos() // the workload is incomplete: the run cannot pass
	}
	<-chaosDone
	if err != nil {
		return err
	}
	return ctx.Err()
}

// chaos kills a random processor every KillEvery and restarts it on its data dir, once
// kills and restarts a NATS node, plays the recovery drill once every request is out and
// the disk loss once everything is, and stops when the run has been shaken enough:
// everything published, MinKills reached, the NATS node back, the drills played,
// KillUntil of the payouts final.
func (s *soak) chaos(ctx context.Context, requested, published <-chan struct{}) {
	tick := time.NewTicker(s.cfg.KillEvery)
	defer tick.Stop()
	last, lastChange := -1, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.supervise()
		isPublished := closed(published)
		final, _, _ := s.progress(ctx)
		if final != last {
			last, lastChange = final, time.Now()
		}
		enough := isPublished && s.rep.Kills >= s.cfg.MinKills && s.rep.NATSRestarts > 0 && s.drillsDone()
		if enough && (float64(final) >= s.cfg.KillUntil*float64(len(s.work.valid)) || time.Since(lastChange) > stallAfter) {
			s.logf("chaos over: %d kills, %d/%d payouts final", s.rep.Kills, final, len(s.work.valid))
			return
		}
		// A claim whose reply is lost: the next claim publish through a random proxy lands on
		// the server, and that processor's connection is cut before the reply comes back.
		s.proxies[s.rng.IntN(len(s.proxies))].CutAfter([]byte("PUB $KV."+s.topo.ClaimsBucket+"."), 1)
		if s.rep.NATSRestarts == 0 && s.rep.Kills >= 2 {
			if err := s.restartNATSNode(ctx); err != nil {
				s.logf("NATS node restart: %v", err)
			}
			continue
		}
		// Once everything is published, so the lost ledger holds a good part of the run.
		if s.cfg.DiskLoss && !s.diskLost && s.rep.Kills >= 3 && isPublished {
			s.diskLost = true // once, whatever comes of it: the check says
			if err := s.loseDisk(ctx); err != nil {
				s.rep.DiskLossErr = err.Error()
				s.logf("disk loss of %s: %v", s.procs[0].name, err)
			}
			continue
		}
		// Once every request is out (the late re-publishes of old keys are still to come), while
		// the processors still have work in hand: the recovery drill on one that does not replicate.
		if s.cfg.Adopt && !s.adoptTried && closed(requested) && s.rep.Kills >= 3 {
			s.adoptTried = true // once, whatever comes of it: the check says
			if err := s.loseAndAdopt(ctx); err != nil {
				s.rep.AdoptErr = err.Error()
				s.logf("recovery drill: %v", err)
			}
			continue
		}
		p := s.procs[s.rng.IntN(len(s.procs))]
		if s.adopter != nil && !s.adopterKilled && s.adopter.running() {
			// The first kill after the adoption hits the replacement: it resumes what it adopted.
			p, s.adopterKilled = s.adopter, true
		}
		p.kill()
		s.rep.Kills++
		if err := p.start(); err != nil {
			s.logf("restart %s: %v", p.name, err)
		}
		s.logf("killed and restarted %s (kill %d; %d/%d payouts final)", p.name, s.rep.Kills, final, len(s.work.valid))
	}
}

// drillsDone reports whether the disk loss and the recovery drill, each if asked for, have
// been tried, and a kill has hit the replacement of the drill since.
func (s *soak) drillsDone() bool {
	return (!s.cfg.DiskLoss || s.diskLost) && (!s.cfg.Adopt || s.adoptTried && (s.adopter == nil || s.adopterKilled))
}

// loseDisk kills the first processor as a dying disk would: its litestream first (SIGKILL,
// so it cannot ship its last frames), then the processor. It deletes the ledger and
// litestream's state for good and starts the processor again: it must restore the file from
// its replica, complete what the copy lacks from NATS (claims, journal, requests) once its
// old heartbeat is silent, and finish as the same instance. The lost window (events the
// replica lacked at the kill) is measured by restoring the replica aside, as the processor
// will, before it starts.
func (s *soak) loseDisk(ctx context.Context) error {
	p := s.procs[0]
	if err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, string) {
		return p.running(), p.name + " not running yet"
	}); err != nil {
		return err
	}
	if pid, err := os.ReadFile(filepath.Join(p.dir, "litestream.pid")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
	}
	p.kill()
	instance, before, err := ledgerPosition(ctx, p.ledger)
	if err != nil {
		return err
	}
	for _, f := range []string{p.ledger, p.ledger + "-wal", p.ledger + "-shm", replica.MetaDir(p.ledger)} {
		if err := os.RemoveAll(f); err != nil {
			return err
		}
	}
	s.rep.DiskLosses++
	s.rep.DiskLossHeld = before
	aside := replica.Config{DB: filepath.Join(s.cfg.Dir, "restored-aside.db"), Replica: "file://" + filepath.Join(s.cfg.Dir, "replica-"+p.name)}
	if _, err := replica.Restore(ctx, s.litestream, aside, slog.New(slog.DiscardHandler)); err != nil {
		return fmt.Errorf("restore the replica aside: %w", err)
	}
	_, after, err := ledgerPosition(ctx, aside.DB)
	if err != nil {
		return err
	}
	s.rep.LostEvents = before - min(after, before)
	s.logf("killed %s with its litestream and deleted its ledger for good (event %d; its replica holds up to %d: %d events not replicated); restarting it on its replica",
		p.name, before, after, s.rep.LostEvents)
	if err := p.start(); err != nil {
		return err
	}
	var restored string
	err = poll(ctx, 2*time.Minute, 100*time.Millisecond, func() (bool, string) {
		id, _, err := ledgerPosition(ctx, p.ledger)
		if err != nil {
			return false, err.Error()
		}
		restored = id
		return true, ""
	})
	if err == nil && restored != instance {
		err = fmt.Errorf("%s came back as instance %s, not %s: a new ledger, not the restored one", p.name, restored, instance)
	}
	return err
}

// ledgerPosition is the instance id and the last event of the ledger file at path
// (read-only, beside its writer).
func ledgerPosition(ctx context.Context, path string) (string, int64, error) {
	db, err := ledger.OpenReadOnly(ctx, path)
	if err != nil {
		return "", 0, err
	}
	defer db.Close()
	_, ev := db.Position()
	return db.InstanceID(), ev, nil
}

// restartNATSNode SIGKILLs one cluster node, waits a few seconds and starts it again on its
// store, then waits until it serves JetStream.
func (s *soak) restartNATSNode(ctx context.Context) error {
	n := s.nodes[s.rng.IntN(len(s.nodes))]
	s.logf("killing NATS node %s", n.name)
	n.proc.kill()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(3 * time.Second):
	}
	if err := n.start(); err != nil {
		return err
	}
	s.rep.NATSRestarts++
	if err := waitJetStream(ctx, n.url(), time.Minute); err != nil {
		return err
	}
	s.logf("NATS node %s is back", n.name)
	return nil
}

// supervise restarts any processor that exited without being asked to, and counts it.
func (s *soak) supervise() {
	for _, p := range s.procs {
		if p.p.exited() {
			s.rep.Crashes++
			s.logf("%s exited on its own (%v: %s); restarting", p.name, p.p.err, lastLine(p.logPath))
			if err := p.start(); err != nil {
				s.logf("restart %s: %v", p.name, err)
			}
		}
	}
}

// lastLine is the last line of the file at path (a processor's error on exit).
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// stallAfter is how long no payout may become final before the run is declared stuck:
// every pipeline cadence of the soak (poll, retry, parked retry, breaker) is a few seconds.
const stallAfter = time.Minute

// settle waits until every valid payout is final in some ledger, nothing is in flight and
// every outcome and notice is published (the processors publish from their ledgers'
// outboxes after the fact, and the checks read what upstream was told), or until progress
// stalls for stallAfter, or the run times out.
func (s *soak) settle(ctx context.Context) {
	s.logf("waiting for every payout to be final and its outcome published")
	last, lastChange := [2]int{-1, -1}, time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s.supervise()
		final, pending, unpublished := s.progress(ctx)
		if now := [2]int{final, unpublished}; now != last {
			last, lastChange = now, time.Now()
		}
		if final >= len(s.work.valid) && pending == 0 && unpublished == 0 {
			s.logf("settled: %d payouts final, every event published", final)
			return
		}
		if time.Since(lastChange) > stallAfter {
			s.logf("progress stalled at %d/%d final, %d in flight, %d events unpublished", final, len(s.work.valid), pending, unpublished)
			s.dumpStacks()
			return
		}
		select {
		case <-ctx.Done():
			s.logf("timed out at %d/%d final, %d in flight, %d events unpublished", final, len(s.work.valid), pending, unpublished)
			s.dumpStacks()
			return
		case <-tick.C:
		}
	}
}

// dumpStacks has every running processor write a goroutine dump to its log (cli.DumpSignal)
// and waits up to dumpWait for each: where the stages of a stalled run wait. stackDump reads
// one back.
func (s *soak) dumpStacks() {
	for _, p := range s.procs {
		if p.p == nil || p.p.exited() {
			continue
		}
		before := dumpsIn(p.logPath)
		if err := p.p.cmd.Process.Signal(cli.DumpSignal); err != nil {
			s.logf("%s: goroutine dump: %v", p.name, err)
			continue
		}
		deadline := time.Now().Add(dumpWait)
		for dumpsIn(p.logPath) == before && time.Now().Before(deadline) && !p.p.exited() {
			time.Sleep(50 * time.Millisecond) // polling the log for the dump's last line
		}
		if dumpsIn(p.logPath) == before {
			s.logf("%s: no goroutine dump in its log within %s", p.name, dumpWait)
			continue
		}
		s.logf("%s: goroutine dump written to %s", p.name, p.logPath)
	}
}

// dumpWait bounds how long dumpStacks waits for one processor's dump.
const dumpWait = 10 * time.Second

// dumpsIn counts the goroutine dumps completed in the log at path.
func dumpsIn(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), cli.DumpEnd)
}

// stackDump returns, from a processor's log, the goroutines of its last goroutine dump
// (cli.DumpSignal) that run paystream code, or "" if the log holds no dump. The runtime's
// and libraries' own goroutines are left out: a stall is read from where our stages wait.
func stackDump(log []byte) string {
	text := string(log)
	end := strings.LastIndex(text, cli.DumpEnd)
	if end < 0 {
		return ""
	}
	begin := strings.LastIndex(text[:end], cli.DumpBegin)
	if begin < 0 {
		return ""
	}
	dump := text[begin:end]
	header, body, _ := strings.Cut(dump, "\n")
	kept := []string{header}
	for _, g := range strings.Split(body, "\n\n") {
		if strings.Contains(g, "github.com/paystream/paystream/") {
			kept = append(kept, strings.TrimSpace(g))
		}
	}
	return strings.Join(kept, "\n\n")
}

// shutdown stops every child process: processors (if verify did not), sandbox, NATS.
func (s *soak) shutdown() {
	for _, p := range s.procs {
		if p.p != nil && !p.p.exited() {
			p.p.kill()
		}
	}
	if s.sandbox != nil && !s.sandbox.exited() {
		_ = s.sandbox.stop(10 * time.Second)
	}
	if s.nc != nil {
		s.nc.Close()
	}
	for _, px := range s.proxies {
		px.Close()
	}
	for _, n := range s.nodes {
		if n.proc != nil && !n.proc.exited() {
			_ = n.proc.stop(10 * time.Second)
		}
	}
}

// poll calls cond every `every` until it holds, ctx ends or limit passes.
func poll(ctx context.Context, limit, every time.Duration, cond func() (bool, string)) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), state)
		case <-deadline.C:
			return fmt.Errorf("not reached after %s: %s", limit, state)
		case <-tick.C:
		}
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
