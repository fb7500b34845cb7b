// Package bench measures how close paystream runs to the limits of what it is built on
// (README, "Performance"): every number is a ratio of two measurements taken side by side in one run on
// the same machine.
//
//   - Intake ratio: payouts/s through the real processor (validate, ledger commit with
//     synchronous=FULL, claim in KV, seal, ack) ÷ the ownership floor: a raw nats.go fetch +
//     KV claim + ack of the same messages on the same server, the least a replica that owns
//     what it takes in can do. Target ≥ 0.6. Raw fetch+ack (no claim) is printed beside it.
//     Each is the best of five interleaved rounds, each round on a server of its own. Beside
//     them, intake's stages per 1000 payouts: fetch, KV claim and ack as the floor's loop
//     spent them, the ledger commit measured alone, and the rest of the processor's time.
//   - Ledger growth ratio: processor intake on a ledger already holding millions of payouts
//     with random keys ÷ intake on an empty ledger. Target ≥ 0.7.
//   - Drain ratio: wall time from the processor's start on a published backlog to every
//     payout final against the rate-limited sandbox on a fast clock ÷ the floor those limits
//     imply (the creates, then the batch queries and the fail_reason detail queries side by
//     side: each API has its own 50 QPS). Target ≤ 1.25.
//   - Bills drain ratio: the same on the transfer-bills rail, the sandbox holding
//     the real 100/s bill create and query limits while its clock runs fast and payees
//     confirm soon after each create: wall time ÷ (bills / 100 per s + the scaled confirm
//     and process time). Target ≤ 1.1.
//   - Queries per bill: bill queries the sandbox received ÷ bills in that drain, with
//     callbacks on and a share of them lost, so queries are the sweep that catches those.
//     Target ≤ 1.2.
//   - Memory: peak RSS of a processor process taking in a backlog, at two backlog sizes, the
//     lowest of two interleaved rounds each. Target ≤ 200 MB at the larger, and flat (≤ 1.25×
//     the smaller's).
//   - Replication lag (issue 16): a processor replicating its ledger with litestream (1 s
//     sync interval, a file replica) takes in a backlog while a follow-mode restore keeps a
//     copy of the replica; every 20 ms the lag of the copy is how long before then the live
//     ledger already held its last payout: what a disk lost at that moment would lose. Its
//     p50, p95, p99 and max are reported, the max against TargetLagMax.
//
// Every measurement runs the sandbox (cmd/sandbox, built once per run) as a process of its
// own, so its RSA signing and verification stay out of the measured process's CPU and
// profiles; the drains read its record through its admin API.
//
// Run is what cmd/bench (make bench) calls. It is not a test: it takes minutes (the bills
// drain alone about 17: 100k creates at 100/s) and its results depend on the machine.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/internal/soak"
)

// Targets: the limits the README's "Performance" section promises, on both rails.
const (
	TargetIntake         = 0.6  // processor ÷ ownership floor (raw fetch + KV claim + ack), at least
	TargetGrowth         = 0.7  // prefilled ÷ empty, at least
	TargetDrain          = 1.25 // wall ÷ floor, at most
	TargetDrainBills     = 1.1  // bills drain wall ÷ floor, at most (#13)
	TargetQueriesPerBill = 1.2  // bill queries ÷ bills with callbacks on, at most (#13)
	TargetPeakMB         = 200  // peak RSS at the larger backlog, at most
	TargetFlat           = 1.25 // larger backlog's peak ÷ smaller's, at most
	TargetLagMax         = 5.0  // replication lag under load, seconds, at most (docs/replication.md: about 2 s)
)

// intakeFetch is the processor's default fetch-batch: what the raw measurements fetch at
// once and the ledger commit measurement commits in one transaction.
var intakeFetch = pipeline.DefaultConfig().Intake.FetchBatch

// Options sizes a run. DefaultOptions is the README's.
type Options struct {
	Intake  int // payouts in the intake stream
	Prefill int // payouts already in the ledger for the growth ratio
	Drain   int // payouts drained through the sandbox
	// DrainBills is payouts drained through the sandbox on the transfer-bills rail.
	DrainBills int
	Speed      float64   // sandbox and processor clock factor for the drain
	Backlogs   [2]int    // backlog sizes of the memory measurement, smaller first
	Lag        int       // payouts in the backlog the replication lag is measured under
	Dir        string    // scratch space (ledgers, JetStream); removed by Run
	Results    string    // where results and profiles go (bench/results)
	Only       []string  // run only these measurements (intake, growth, drain, drain-bills, memory, lag); empty: all
	Log        io.Writer // progress lines; nil: discard
}

// DefaultOptions returns the sizes the README's "Performance" section reports.
func DefaultOptions() Options {
	return Options{
		Intake: 200_000, Prefill: 5_000_000, Drain: 100_000, DrainBills: 100_000, Speed: 60,
		Backlogs: [2]int{250_000, 1_000_000}, Lag: 400_000, Results: "bench/results",
	}
}

// Rate is a count over a duration.
type Rate struct {
	N       int     `json:"n"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_s"`
	Stages  *Stages `json:"stages,omitempty"` // raw measurements only
	// CPU is the CPU time (user + system) the bench process spent over the measured interval,
	// in seconds: the raw loop or the processor, with the embedded JetStream server they share
	// (intake measurements only; the sandbox is another process).
	CPU float64 `json:"cpu_s,omitempty"`
	// StartupS is how long the processor took to start, before the clock (processor
	// measurements only).
	StartupS float64 `json:"startup_s,omitempty"`
	// Busy is where the processor's own intake stages spent the time (intake measurements of
	// the processor only).
	Busy *Busy `json:"busy,omitempty"`
}

// processCPU is the CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func newRate(n int, d time.Duration) Rate {
	return Rate{N: n, Seconds: d.Seconds(), PerSec: float64(n) / d.Seconds()}
}

// cores is the CPU time r's measurement took per second of its wall time, to two decimals:
// how many cores' worth the bench process got while it ran (0 where CPU was not measured).
func (r Rate) cores() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return math.Round(r.CPU/r.Seconds*100) / 100
}

// IntakeRound is one round of the intake measurements, taken one after the other on a server
// of the round's own over a fresh set of payouts.
type IntakeRound struct {
	Raw      Rate `json:"raw_fetch_ack"`
	Empty    Rate `json:"intake_empty"`
	RawClaim Rate `json:"raw_fetch_claim_ack"`
	Ledger   Rate `json:"ledger_commit"`
}

// best returns the faster of r and x.
func best(r *Rate, x Rate) *Rate {
	if r == nil || x.PerSec > r.PerSec {
		return &x
	}
	return r
}

// Verdict is one target's outcome.
type Verdict struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Pass   bool    `json:"pass"`
}

// Report is everything one run measured.
type Report struct {
	Started   time.Time `json:"started"`
	GoVersion string    `json:"go_version"`
	CPUs      int       `json:"cpus"`
	// Raw, RawClaim, Ledger and Empty are each the best of IntakeRounds.
	Raw      *Rate `json:"raw_fetch_ack,omitempty"`
	RawClaim *Rate `json:"raw_fetch_claim_ack,omitempty"` // raw plus a KV claim per message
	Ledger   *Rate `json:"ledger_commit,omitempty"`       // InsertPayouts alone, groups of the fetch batch
	Empty    *Rate `json:"intake_empty,omitempty"`
	// IntakeRounds is every round of the intake measurements, in order.
	IntakeRounds []IntakeRound `json:"intake_rounds,omitempty"`
	// GrowthEmpty and Prefilled are the best of GrowthRounds' runs on an empty ledger and on a
	// fresh copy of the prefilled one: the growth ratio's two sides.
	GrowthEmpty  *Rate            `json:"growth_empty,omitempty"`
	Prefilled    *Rate            `json:"intake_prefilled,omitempty"`
	GrowthRounds []GrowthRound    `json:"growth_rounds,omitempty"`
	Prefill      int              `json:"prefill,omitempty"`
	PrefillS     float64          `json:"prefill_s,omitempty"` // building the prefilled ledger
	Drain        *DrainResult     `json:"drain,omitempty"`
	DrainBills   *BillDrainResult `json:"drain_bills,omitempty"`
	Memory       []MemoryResult   `json:"memory,omitempty"`        // the lowest peak of each backlog
	MemoryRounds []MemoryResult   `json:"memory_rounds,omitempty"` // every measurement, in order
	Lag          *LagResult       `json:"replication_lag,omitempty"`
	Verdicts     []Verdict        `json:"verdicts"`
	Profiles     []string         `json:"profiles,omitempty"`
	Elapsed      float64          `json:"elapsed_s"`
	resultsDir   string
}

// Pass reports whether every measured target passed.
func (r *Report) Pass() bool {
	for _, v := range r.Verdicts {
		if !v.Pass {
			return false
		}
	}
	return true
}

func (o Options) runs(name string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, n := range o.Only {
		if n == name {
			return true
		}
	}
	return false
}

// Run takes every measurement o asks for, one after the other (they would skew each other
// on a small box), and writes the report, profiles and a benchstat-readable text file under
// o.Results/<start time>/.
func Run(ctx context.Context, o Options) (*Report, error) {
	log := slog.New(slog.DiscardHandler)
	if o.Log != nil {
		log = slog.New(slog.NewTextHandler(o.Log, nil))
	}
	r := &Report{Started: time.Now(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU()}
	r.resultsDir = filepath.Join(o.Results, r.Started.Format("20060102-150405"))
	if err := os.MkdirAll(r.resultsDir, 0o755); err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp(o.Dir, "paystream-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	// Every measurement runs the sandbox as a process of its own, built once.
	bin, err := buildSandbox(ctx, filepath.Join(scratch, "bin"))
	if err != nil {
		return nil, err
	}
	steps := []struct {
		name string
		fn   func(ctx context.Context, o Options, dir, sandboxBin string, r *Report, log *slog.Logger) error
	}{
		{"intake", runIntake}, {"drain", runDrain}, {"drain-bills", runDrainBills}, {"memory", runMemory}, {"lag", runLag},
	}
	for _, s := range steps {
		if s.name == "intake" && !o.runs("intake") && !o.runs("growth") {
			continue
		}
		if s.name != "intake" && !o.runs(s.name) {
			continue
		}
		if err := s.fn(ctx, o, filepath.Join(scratch, s.name), bin, r, log); err != nil {
			return r, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	r.Elapsed = time.Since(r.Started).Seconds()
	return r, r.write()
}

func (r *Report) profile(name string) string {
	p := filepath.Join(r.resultsDir, name)
	r.Profiles = append(r.Profiles, p)
	return p
}

// intakeRounds: the intake ratios take the best of this many interleaved rounds of each
// measurement (raw, processor, floor, ledger alone; a fresh set of payouts each round), so a
// burst of other work on a shared machine during one measurement (a `make test` beside the
// bench takes both cores for minutes, in bursts) does not decide a ratio.
const intakeRounds = 5

// growthRounds: the growth ratio takes the best of this many rounds, each a processor run on
// an empty ledger and then one on a fresh copy of the prefilled ledger (a fresh set of payouts
// each run): both sides of the ratio are measured side by side, as the intake rounds are, so
// load that comes and goes (a `make test` beside the bench) weighs on both alike.
const growthRounds = 3

// runIntake measures, in intakeRounds rounds, raw fetch+ack, the processor on an empty ledger,
// the ownership floor and the ledger commit alone; then (for the growth ratio) growthRounds
// rounds of the processor on an empty and on a prefilled ledger. Every round runs on a
// JetStream server of its own (freshServer): on one server that kept every earlier round's
// messages, claims and consumers, each round ran slower than the one before (the bench's heap
// grew from 93 to 442 MB over five rounds, the processor's CPU per 1000 payouts by a quarter),
// so the rounds were not repeats of one measurement.
func runIntake(ctx context.Context, o Options, dir, sandboxBin string, r *Report, log *slog.Logger) error {
	fetch := intakeFetch
	for round := 1; round <= intakeRounds; round++ {
		var ir IntakeRound
		err := freshServer(ctx, filepath.Join(dir, fmt.Sprint("server", round)), sandboxBin, log, func(e *env) error {
			log.Info("publishing", "payouts", o.Intake, "round", round)
			last, err := e.publish(ctx, payouts(o.Intake, uint64(round)))
			if err != nil {
				return err
			}
			if ir.Raw, err = e.rawIntake(ctx, last, o.Intake, fetch, false); err != nil {
				return err
			}
			profile := ""
			if round == 1 {
				profile = r.profile("intake.cpu.pprof")
			}
			if ir.Empty, err = e.processorIntake(ctx, filepath.Join(dir, fmt.Sprint("empty", round)), o.Intake, last, profile); err != nil {
				return err
			}
			// After the processor: the claims it leaves behind in the server would skew it otherwise.
			ir.RawClaim, err = e.rawIntake(ctx, last, o.Intake, fetch, true)
			return err
		})
		if err != nil {
			return err
		}
		if ir.Ledger, err = ledgerCommit(ctx, filepath.Join(dir, fmt.Sprint("commit", round)), o.Intake, fetch); err != nil {
			return err
		}
		log.Info("intake round", "round", round, "raw_per_s", int(ir.Raw.PerSec), "processor_per_s", int(ir.Empty.PerSec),
			"floor_per_s", int(ir.RawClaim.PerSec), "ledger_per_s", int(ir.Ledger.PerSec),
			"processor_cores", ir.Empty.cores(), "floor_cores", ir.RawClaim.cores())
		r.IntakeRounds = append(r.IntakeRounds, ir)
		r.Raw, r.Empty, r.RawClaim, r.Ledger = best(r.Raw, ir.Raw), best(r.Empty, ir.Empty), best(r.RawClaim, ir.RawClaim), best(r.Ledger, ir.Ledger)
	}
	r.verdict("intake ratio to ownership floor", r.Empty.PerSec/r.RawClaim.PerSec, TargetIntake, true)
	if !o.runs("growth") {
		return nil
	}
	log.Info("prefilling ledger", "payouts", o.Prefill)
	start := time.Now()
	template := filepath.Join(dir, "prefilled")
	if err := prefill(ctx, template, o.Prefill, 3); err != nil {
		return err
	}
	r.Prefill, r.PrefillS = o.Prefill, time.Since(start).Seconds()
	log.Info("prefilled", "seconds", int(r.PrefillS))
	for round := 1; round <= growthRounds; round++ {
		var g GrowthRound
		seed := uint64(intakeRounds + 2*round)
		err := freshServer(ctx, filepath.Join(dir, fmt.Sprint("growth-server", round)), sandboxBin, log, func(e *env) error {
			var err error
			if g.Empty, err = e.growthRun(ctx, o, "", filepath.Join(dir, fmt.Sprint("growth-empty", round)), seed-1, ""); err != nil {
				return err
			}
			profile := ""
			if round == 1 {
				profile = r.profile("growth.cpu.pprof")
			}
			g.Prefilled, err = e.growthRun(ctx, o, template, filepath.Join(dir, fmt.Sprint("prefilled", round)), seed, profile)
			return err
		})
		if err != nil {
			return err
		}
		log.Info("growth round", "round", round, "empty_per_s", int(g.Empty.PerSec), "prefilled_per_s", int(g.Prefilled.PerSec),
			"startup_s", g.Prefilled.StartupS)
		r.GrowthRounds = append(r.GrowthRounds, g)
		r.GrowthEmpty, r.Prefilled = best(r.GrowthEmpty, g.Empty), best(r.Prefilled, g.Prefilled)
	}
	r.verdict("ledger growth ratio", r.Prefilled.PerSec/r.GrowthEmpty.PerSec, TargetGrowth, true)
	return nil
}

// freshServer runs fn on a new env (an embedded JetStream server with the processor's
// topology) under dir, then stops the server and removes its store.
func freshServer(ctx context.Context, dir, sandboxBin string, log *slog.Logger, fn func(*env) error) error {
	e, err := newEnv(ctx, dir, sandboxBin, log)
	if err != nil {
		return err
	}
	err = fn(e)
	e.Close()
	return errors.Join(err, os.RemoveAll(dir))
}

// GrowthRound is one round of the growth measurement: the processor on an empty ledger, then
// on a copy of the prefilled one.
type GrowthRound struct {
	Empty     Rate `json:"empty"`
	Prefilled Rate `json:"prefilled"`
}

// growthRun publishes a fresh set of payouts (seed) and runs the processor on them at dataDir:
// on an empty ledger, or with template set on a copy of the ledger there, removed afterwards.
// With profile set, the run's CPU profile is written there.
func (e *env) growthRun(ctx context.Context, o Options, template, dataDir string, seed uint64, profile string) (Rate, error) {
	if template != "" {
		if err := copyLedger(template, dataDir); err != nil {
			return Rate{}, err
		}
		defer os.RemoveAll(dataDir)
	}
	last, err := e.publish(ctx, payouts(o.Intake, seed))
	if err != nil {
		return Rate{}, err
	}
	return e.processorIntake(ctx, dataDir, o.Intake, last, profile)
}

func runDrain(ctx context.Context, o Options, dir, sandboxBin string, r *Report, log *slog.Logger) error {
	e, err := newEnv(ctx, dir, sandboxBin, log)
	if err != nil {
		return err
	}
	defer e.Close()
	log.Info("draining", "payouts", o.Drain, "speed", o.Speed)
	d, err := e.drain(ctx, filepath.Join(dir, "processor"), o.Drain, o.Speed, r.profile("drain.cpu.pprof"))
	if err != nil {
		return err
	}
	r.Drain = &d
	log.Info("drained", "wall_s", d.Wall, "floor_s", d.Floor)
	r.verdict("drain ratio", d.Ratio, TargetDrain, false)
	return nil
}

func runDrainBills(ctx context.Context, o Options, dir, sandboxBin string, r *Report, log *slog.Logger) error {
	e, err := newEnv(ctx, dir, sandboxBin, log)
	if err != nil {
		return err
	}
	defer e.Close()
	log.Info("draining on transfer bills", "payouts", o.DrainBills, "speed", o.Speed)
	d, err := e.drainBills(ctx, filepath.Join(dir, "processor"), o.DrainBills, o.Speed, r.profile("drain-bills.cpu.pprof"))
	if err != nil {
		return err
	}
	r.DrainBills = &d
	log.Info("drained on transfer bills", "wall_s", d.Wall, "floor_s", d.Floor, "queries_per_bill", d.QueriesPerBill)
	r.verdict("bills drain ratio", d.Ratio, TargetDrainBills, false)
	r.verdict("bill queries per bill", d.QueriesPerBill, TargetQueriesPerBill, false)
	return nil
}

// memoryRounds: each backlog is measured this many times, interleaved (smaller, larger,
// smaller, …), and the lowest peak of each is judged: a peak is the most the process held at
// once, which a garbage collection landing late can only inflate, so the lowest of a few is the
// least noisy measure of what it needs.
const memoryRounds = 2

func runMemory(ctx context.Context, o Options, dir, sandboxBin string, r *Report, log *slog.Logger) error {
	var best [2]MemoryResult
	for round := 0; round < memoryRounds; round++ {
		for i, n := range o.Backlogs {
			sub := filepath.Join(dir, fmt.Sprintf("%d-%d", n, round))
			e, err := newEnv(ctx, sub, sandboxBin, log)
			if err != nil {
				return err
			}
			log.Info("memory", "backlog", n, "round", round+1)
			m, err := e.memory(ctx, filepath.Join(sub, "processor"), n, uint64(10+i))
			e.Close()
			if err != nil {
				return err
			}
			log.Info("memory", "backlog", n, "round", round+1, "peak_mb", m.PeakMB)
			r.MemoryRounds = append(r.MemoryRounds, m)
			if round == 0 || m.PeakMB < best[i].PeakMB {
				best[i] = m
			}
		}
	}
	r.Memory = best[:]
	small, large := best[0], best[1]
	r.verdict(fmt.Sprintf("peak RSS MB at %d backlog", large.Backlog), large.PeakMB, TargetPeakMB, false)
	r.verdict(fmt.Sprintf("peak RSS %d ÷ %d backlog", large.Backlog, small.Backlog), large.PeakMB/small.PeakMB, TargetFlat, false)
	return nil
}

// runLag measures the replication lag under load: it publishes a backlog of o.Lag payouts,
// then runs a processor replicating its ledger with the pinned litestream (built first when
// missing, as `make litestream` does) until it has taken them in.
func runLag(ctx context.Context, o Options, dir, sandboxBin string, r *Report, log *slog.Logger) error {
	root, err := soak.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	litestream, err := replica.Binary(root)
	if err != nil {
		return err
	}
	e, err := newEnv(ctx, dir, sandboxBin, log)
	if err != nil {
		return err
	}
	defer e.Close()
	log.Info("publishing", "payouts", o.Lag)
	last, err := e.publish(ctx, payouts(o.Lag, 30))
	if err != nil {
		return err
	}
	log.Info("replication lag", "payouts", o.Lag)
	l, err := e.replicationLag(ctx, filepath.Join(dir, "processor"), litestream, o.Lag, last)
	if err != nil {
		return err
	}
	r.Lag = &l
	log.Info("replication lag", "p50_s", l.P50, "p95_s", l.P95, "max_s", l.Max, "copy_reads", l.Reads, "per_s", int(l.PerSec))
	r.verdict("replication lag max, s", l.Max, TargetLagMax, false)
	return nil
}

// verdict records value against target: at least (atLeast) or at most.
func (r *Report) verdict(name string, value, target float64, atLeast bool) {
	v := Verdict{Name: name, Value: value}
	if atLeast {
		v.Target, v.Pass = fmt.Sprintf("≥ %g", target), value >= target
	} else {
		v.Target, v.Pass = fmt.Sprintf("≤ %g", target), value <= target
	}
	r.Verdicts = append(r.Verdicts, v)
}

// WriteText prints the table of measurements and one PASS/FAIL line per target.
func (r *Report) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "measurement\tcount\tseconds\tper second\n")
	row := func(name string, x *Rate) {
		if x != nil {
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\n", name, x.N, x.Seconds, x.PerSec)
		}
	}
	if len(r.IntakeRounds) > 0 {
		fmt.Fprintf(tw, "intake: the best of %d interleaved rounds\t\t\t\n", len(r.IntakeRounds))
	}
	row("raw fetch+ack", r.Raw)
	row("raw fetch+claim+ack (ownership floor)", r.RawClaim)
	row(fmt.Sprintf("ledger commit alone (groups of %d)", intakeFetch), r.Ledger)
	row("processor intake, empty ledger", r.Empty)
	if r.Prefilled != nil {
		fmt.Fprintf(tw, "growth: the best of %d rounds, each on an empty ledger, then on a copy of the prefilled one\t\t\t\n", len(r.GrowthRounds))
	}
	row("processor intake, empty ledger", r.GrowthEmpty)
	row(fmt.Sprintf("processor intake, %d-payout ledger", r.Prefill), r.Prefilled)
	if r.Prefilled != nil {
		fmt.Fprintf(tw, "  (prefill took %.1f s; processor start on it %.2f s)\t\t\t\n", r.PrefillS, r.Prefilled.StartupS)
	}
	if d := r.Drain; d != nil {
		fmt.Fprintf(tw, "drain %d payouts, speed %g\t%d batches\t%.2f\t%.0f\n", d.Payouts, d.Speed, d.Batches, d.Wall, float64(d.Payouts)/d.Wall)
		fmt.Fprintf(tw, "  floor = %d creates/%d + max(%d queries/%d, %d fail reasons/%d) + processing %.2f s\t\t%.2f\t\n",
			d.Batches, drainQPS, d.Queries, drainQPS, d.Details, drainQPS, d.Processing, d.Floor)
		fmt.Fprintf(tw, "  sent: %d creates, %d queries, %d detail queries; %d answered 429\t\t\t\n", d.Creates, d.Sent, d.DetailsSent, d.RateLimited)
	}
	if d := r.DrainBills; d != nil {
		fmt.Fprintf(tw, "drain %d payouts on transfer bills, speed %g\t%d bills\t%.2f\t%.0f\n", d.Payouts, d.Speed, d.Bills, d.Wall, float64(d.Payouts)/d.Wall)
		fmt.Fprintf(tw, "  floor = %d creates/%d + confirm and processing %.2f s\t\t%.2f\t\n", d.Bills, billQPS, d.Processing, d.Floor)
		fmt.Fprintf(tw, "  sent: %d creates, %d queries (%.3f per bill); %d callbacks, %d lost; %d answered 429\t\t\t\n",
			d.Creates, d.Queries, d.QueriesPerBill, d.Notified, d.NotifyLost, d.RateLimited)
		fmt.Fprintf(tw, "  bills created from %.2f s to %.2f s (%.1f/s), the last final at WeChat at %.2f s\t\t\t\n",
			d.FirstCreate, d.LastCreate, float64(d.Bills)/max(d.LastCreate-d.FirstCreate, 1e-9), d.LastSettled)
	}
	for _, m := range r.Memory {
		var rounds []string
		for _, x := range r.MemoryRounds {
			if x.Backlog == m.Backlog {
				rounds = append(rounds, fmt.Sprintf("%.1f", x.PeakMB))
			}
		}
		fmt.Fprintf(tw, "memory: %d backlog, peak RSS %.1f MB (lowest of %s)\t%d\t%.2f\t%.0f\n", m.Backlog, m.PeakMB,
			strings.Join(rounds, ", "), m.Backlog, m.Seconds, float64(m.Backlog)/m.Seconds)
	}
	if l := r.Lag; l != nil {
		fmt.Fprintf(tw, "replication lag: intake with litestream (file replica, sync %g s)\t%d\t%.2f\t%.0f\n", l.SyncInterval, l.Payouts, l.IntakeS, l.PerSec)
		fmt.Fprintf(tw, "  lag p50 %.2f s, p95 %.2f s, p99 %.2f s, max %.2f s (%d reads of a follow-mode copy)\t\t\t\n", l.P50, l.P95, l.P99, l.Max, l.Reads)
		fmt.Fprintf(tw, "  a disk lost under this load loses up to %.0f payouts (max lag × rate; %d seen at most)\t\t\t\n", l.LossAtMax, l.MaxBehind)
	}
	tw.Flush()
	r.writeStages(w)
	if r.Raw != nil && r.Empty != nil {
		fmt.Fprintf(w, "info  %-32s %8.3f  (processor ÷ raw fetch+ack, which claims nothing; no target)\n", "intake ratio to raw fetch+ack", r.Empty.PerSec/r.Raw.PerSec)
	}
	for _, v := range r.Verdicts {
		res := "PASS"
		if !v.Pass {
			res = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-32s %8.3f  (target %s)\n", res, v.Name, v.Value, v.Target)
	}
	if r.resultsDir != "" {
		fmt.Fprintf(w, "results: %s (%.0f s)\n", r.resultsDir, r.Elapsed)
	}
}

// writeStages prints where intake's time goes, in milliseconds of wall time per 1000
// payouts: fetch, KV claim and ack as the ownership floor's loop spent it, the ledger commit
// measured alone (InsertPayouts in groups of the fetch batch), and what the processor spends
// beyond their sum (decoding, validation, the pipeline's own work and waits; negative where
// the processor overlaps stages that were measured one after the other).
func (r *Report) writeStages(w io.Writer) {
	f, e := r.RawClaim, r.Empty
	if f == nil || f.Stages == nil || e == nil || r.Ledger == nil {
		return
	}
	per := func(seconds float64, n int) float64 { return seconds * 1e6 / float64(n) } // ms per 1000
	s := f.Stages
	fetch, claim, ack := per(s.Fetch, f.N), per(s.Claim, f.N), per(s.Ack, f.N)
	commit, total := per(r.Ledger.Seconds, r.Ledger.N), per(e.Seconds, e.N)
	fmt.Fprintf(w, "intake stages, ms per 1000 payouts: fetch %.1f + KV claim %.1f + ack %.1f + ledger commit %.1f + the rest %.1f = processor %.1f\n",
		fetch, claim, ack, commit, total-fetch-claim-ack-commit, total)
	if b := e.Busy; b != nil {
		// Measured in the processor: each stage's goroutine, overlapping the others.
		fmt.Fprintf(w, "processor's own intake stages, busy ms per 1000 payouts (they overlap): fetch %.1f, validate %.1f, claim %.1f, commit %.1f; wall %.1f\n",
			per(b.Fetch, e.N), per(b.Validate, e.N), per(b.Claim, e.N), per(b.Commit, e.N), total)
	}
	if f.CPU > 0 && e.CPU > 0 {
		// Both cores are busy while the processor takes in a backlog, so its rate follows its CPU
		// per payout. Other load on the machine moves this ratio less than the rates' (both
		// sides' CPU per payout rises under it, the processor's a little more). What moves most
		// is the CPU each side got while it ran (cores in use): beside other load the rates'
		// ratio is the CPU ratio times the ratio of those shares.
		fmt.Fprintf(w, "intake CPU, ms per 1000 payouts (with the embedded JetStream server): ownership floor %.1f, processor %.1f (floor ÷ processor %.3f); cores in use: floor %.2f, processor %.2f\n",
			per(f.CPU, f.N), per(e.CPU, e.N), f.CPU/float64(f.N)/(e.CPU/float64(e.N)), f.cores(), e.cores())
	}
}

// write stores report.json and bench.txt (Go benchmark format, for benchstat) in the
// results directory.
func (r *Report) write() error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.resultsDir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(r.resultsDir, "bench.txt"))
	if err != nil {
		return err
	}
	r.writeBenchFormat(f)
	return f.Close()
}

// writeBenchFormat writes one Go benchmark line per measurement, so two runs compare with
// `benchstat old/bench.txt new/bench.txt`.
func (r *Report) writeBenchFormat(w io.Writer) {
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/paystream/paystream/internal/bench\n", runtime.GOOS, runtime.GOARCH)
	rate := func(name string, x *Rate) {
		if x != nil {
			fmt.Fprintf(w, "BenchmarkIntake/%s 1 %.0f ns/op %.0f msgs/s\n", name, x.Seconds*1e9, x.PerSec)
		}
	}
	rate("raw", r.Raw)
	rate("raw-claim", r.RawClaim)
	rate("ledger-commit", r.Ledger)
	rate("empty", r.Empty)
	rate("growth-empty", r.GrowthEmpty)
	rate("prefilled", r.Prefilled)
	if d := r.Drain; d != nil {
		fmt.Fprintf(w, "BenchmarkDrain 1 %.0f ns/op %.4f floor-ratio %d 429s\n", d.Wall*1e9, d.Ratio, d.RateLimited)
	}
	if d := r.DrainBills; d != nil {
		fmt.Fprintf(w, "BenchmarkDrainBills 1 %.0f ns/op %.4f floor-ratio %.4f queries/bill %d 429s\n", d.Wall*1e9, d.Ratio, d.QueriesPerBill, d.RateLimited)
	}
	for _, m := range r.Memory {
		fmt.Fprintf(w, "BenchmarkMemory/backlog=%d 1 %.0f ns/op %.1f peak-MB\n", m.Backlog, m.Seconds*1e9, m.PeakMB)
	}
	if l := r.Lag; l != nil {
		fmt.Fprintf(w, "BenchmarkReplicationLag 1 %.0f ns/op %.3f p50-s %.3f p95-s %.3f max-s %d max-behind\n", l.IntakeS*1e9, l.P50, l.P95, l.Max, l.MaxBehind)
	}
}
