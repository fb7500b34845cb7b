package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/paystream/paystream/internal/metrics"
)

// TestMain lets the memory measurement re-run this test binary as its processor child.
func TestMain(m *testing.M) {
	if path := os.Getenv(ChildEnv); path != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		if err := RunChild(ctx, path); err != nil {
			fmt.Fprintln(os.Stderr, "bench processor:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun takes every measurement at a small size: each one must finish, and the report
// must carry every verdict, positive rates and the result files.
func TestRun(t *testing.T) {
	o := Options{
		Intake: 2000, Prefill: 5000, Drain: 1500, DrainBills: 300, Speed: 120, Backlogs: [2]int{1000, 2000},
		Lag: 50_000, Dir: t.TempDir(), Results: t.TempDir(),
	}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(r.Verdicts), 8; got != want {
		t.Fatalf("%d verdicts, want %d: %+v", got, want, r.Verdicts)
	}
	for name, rate := range map[string]*Rate{"raw": r.Raw, "raw-claim": r.RawClaim, "ledger": r.Ledger, "empty": r.Empty, "growth-empty": r.GrowthEmpty, "prefilled": r.Prefilled} {
		if rate == nil || rate.N != o.Intake || rate.PerSec <= 0 {
			t.Errorf("%s rate = %+v, want %d payouts at a positive rate", name, rate, o.Intake)
		}
	}
	if len(r.IntakeRounds) != intakeRounds || len(r.GrowthRounds) != growthRounds {
		t.Errorf("%d intake and %d growth rounds, want %d and %d", len(r.IntakeRounds), len(r.GrowthRounds), intakeRounds, growthRounds)
	}
	for i, g := range r.GrowthRounds {
		for name, x := range map[string]Rate{"empty": g.Empty, "prefilled": g.Prefilled} {
			if x.N != o.Intake || x.StartupS <= 0 {
				t.Errorf("growth round %d %s = %+v, want %d payouts and a start-up time", i+1, name, x, o.Intake)
			}
		}
		if g.Empty.PerSec > r.GrowthEmpty.PerSec || g.Prefilled.PerSec > r.Prefilled.PerSec {
			t.Errorf("growth round %d = %+v: better than the best (%.0f/s, %.0f/s)", i+1, g, r.GrowthEmpty.PerSec, r.Prefilled.PerSec)
		}
	}
	if d := r.Drain; d == nil || d.Batches < 2 || d.Floor <= d.Processing || d.Wall <= 0 {
		t.Errorf("drain = %+v, want ≥ 2 batches and a floor above the processing time", d)
	}
	checkBillDrain(t, r.DrainBills, o.DrainBills)
	if l := r.Lag; l == nil || l.Payouts != o.Lag || l.PerSec <= 0 || l.Reads == 0 || l.Samples < l.Reads || l.Max < l.P50 || l.Max > 30 {
		t.Errorf("replication lag = %+v, want copy reads judged under load and a max lag of seconds", l)
	}
	for _, m := range r.Memory {
		if m.PeakMB < 10 || m.PeakMB > 2000 {
			t.Errorf("peak RSS %.1f MB at backlog %d: not a process's", m.PeakMB, m.Backlog)
		}
	}
	b, err := os.ReadFile(filepath.Join(r.resultsDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Verdicts) != len(r.Verdicts) {
		t.Fatalf("report.json = %v, %d verdicts", err, len(back.Verdicts))
	}
	txt, err := os.ReadFile(filepath.Join(r.resultsDir, "bench.txt"))
	if err != nil || !strings.Contains(string(txt), "BenchmarkIntake/raw 1 ") || !strings.Contains(string(txt), "BenchmarkDrainBills 1 ") ||
		!strings.Contains(string(txt), "BenchmarkReplicationLag 1 ") {
		t.Fatalf("bench.txt = %q, %v", txt, err)
	}
	if s := r.RawClaim.Stages; s == nil || s.Fetch <= 0 || s.Claim <= 0 || s.Ack <= 0 || s.Fetch+s.Claim+s.Ack > r.RawClaim.Seconds {
		t.Errorf("floor stages = %+v, want each positive and their sum within %.3f s", s, r.RawClaim.Seconds)
	}
	// The processor's own stage clocks (from its /metrics): every stage worked, none longer
	// than the processor was up.
	if b, e := r.Empty.Busy, r.Empty; b == nil || b.Fetch <= 0 || b.Validate <= 0 || b.Claim <= 0 || b.Commit <= 0 ||
		max(b.Fetch, b.Validate, b.Claim, b.Commit) > e.StartupS+e.Seconds {
		t.Errorf("processor stages = %+v, want each positive and within the %.3f s it ran", b, e.StartupS+e.Seconds)
	}
	// CPU time is counted over each intake measurement: more than nothing, and no more than
	// every core could give over its wall time.
	for name, x := range map[string]*Rate{"floor": r.RawClaim, "processor": r.Empty} {
		if x.CPU <= 0 || x.CPU > x.Seconds*float64(runtime.NumCPU()) {
			t.Errorf("%s CPU %.3f s over %.3f s of wall time on %d CPUs", name, x.CPU, x.Seconds, runtime.NumCPU())
		}
	}
	var out strings.Builder
	r.WriteText(&out)
	if !strings.Contains(out.String(), "intake stages, ms per 1000 payouts: fetch ") || !strings.Contains(out.String(), "processor's own intake stages") {
		t.Errorf("text report lacks the intake stages:\n%s", out.String())
	}
	for _, v := range r.Verdicts {
		if !strings.Contains(out.String(), v.Name) {
			t.Errorf("text report lacks %q:\n%s", v.Name, out.String())
		}
	}
}

// TestRun_OnlyDrainBills runs the bills drain alone (-only drain-bills): it is the only
// measurement taken, and its two verdicts reach the text report and bench.txt.
func TestRun_OnlyDrainBills(t *testing.T) {
	o := Options{DrainBills: 200, Speed: 120, Only: []string{"drain-bills"}, Dir: t.TempDir(), Results: t.TempDir()}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Raw != nil || r.Empty != nil || r.Drain != nil || len(r.Memory) > 0 {
		t.Fatalf("-only drain-bills took other measurements: %+v", r)
	}
	checkBillDrain(t, r.DrainBills, o.DrainBills)
	var names []string
	for _, v := range r.Verdicts {
		names = append(names, v.Name)
	}
	if got, want := strings.Join(names, ", "), "bills drain ratio, bill queries per bill"; got != want {
		t.Fatalf("verdicts %q, want %q", got, want)
	}
	var out strings.Builder
	r.WriteText(&out)
	for _, want := range []string{"bills drain ratio", "bill queries per bill", "on transfer bills"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
	txt, err := os.ReadFile(filepath.Join(r.resultsDir, "bench.txt"))
	if err != nil || !strings.Contains(string(txt), "queries/bill") {
		t.Fatalf("bench.txt = %q, %v", txt, err)
	}
	b, err := os.ReadFile(filepath.Join(r.resultsDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.DrainBills == nil || back.DrainBills.Bills != r.DrainBills.Bills {
		t.Fatalf("report.json = %v, drain_bills %+v", err, back.DrainBills)
	}
}

// checkBillDrain checks a bills drain of n payouts: one bill per payout at the sandbox, a
// create for each, every bill whose callback was lost found by a query, and a floor made
// of the creates at 100/s plus the confirm and processing time.
func checkBillDrain(t *testing.T, d *BillDrainResult, n int) {
	t.Helper()
	switch {
	case d == nil:
		t.Fatal("no bills drain")
	case d.Bills != n || d.Creates < d.Bills:
		t.Errorf("bills drain: %d bills, %d creates, want %d bills each created", d.Bills, d.Creates, n)
	case d.NotifyLost > 0 && d.Queries < d.NotifyLost:
		t.Errorf("bills drain: %d callbacks lost, only %d queries: who found those bills final?", d.NotifyLost, d.Queries)
	case d.Notified == 0:
		t.Errorf("bills drain: no callback delivered: %+v", d)
	case d.QueriesPerBill != float64(d.Queries)/float64(d.Bills):
		t.Errorf("bills drain: %.4f queries per bill, %d queries for %d bills", d.QueriesPerBill, d.Queries, d.Bills)
	case d.CreateFloor != float64(d.Bills)/billQPS || d.Floor != d.CreateFloor+d.Processing || d.Processing <= 0:
		t.Errorf("bills drain floor = %+v, want bills/%d + processing", d, billQPS)
	case d.Wall <= 0 || d.Ratio != d.Wall/d.Floor:
		t.Errorf("bills drain wall = %+v", d)
	}
}

// TestReport_writeStages: the stages are the floor's per 1000 payouts, the ledger commit
// measured alone, and the rest of the processor's time, summing to it.
func TestReport_writeStages(t *testing.T) {
	r := Report{
		RawClaim: &Rate{N: 2000, Seconds: 0.1, Stages: &Stages{Fetch: 0.02, Claim: 0.05, Ack: 0.01}},
		Ledger:   &Rate{N: 4000, Seconds: 0.08},
		Empty:    &Rate{N: 2000, Seconds: 0.3},
	}
	var out strings.Builder
	r.writeStages(&out)
	if got, want := out.String(), "intake stages, ms per 1000 payouts: fetch 10.0 + KV claim 25.0 + ack 5.0 + ledger commit 20.0 + the rest 90.0 = processor 150.0\n"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	r.Empty.Busy = &Busy{Fetch: 0.2, Validate: 0.01, Claim: 0.25, Commit: 0.15}
	out.Reset()
	r.writeStages(&out)
	if want := "processor's own intake stages, busy ms per 1000 payouts (they overlap): fetch 100.0, validate 5.0, claim 125.0, commit 75.0; wall 150.0\n"; !strings.HasSuffix(out.String(), want) {
		t.Fatalf("got  %q\nwant it to end with %q", out.String(), want)
	}
	r.RawClaim.CPU, r.Empty.CPU = 0.04, 0.1
	out.Reset()
	r.writeStages(&out)
	if want := "intake CPU, ms per 1000 payouts (with the embedded JetStream server): ownership floor 20.0, processor 50.0 (floor ÷ processor 0.400); cores in use: floor 0.40, processor 0.33\n"; !strings.HasSuffix(out.String(), want) {
		t.Fatalf("got  %q\nwant it to end with %q", out.String(), want)
	}
	r.Ledger = nil
	out.Reset()
	r.writeStages(&out)
	if got := out.String(); got != "" {
		t.Fatalf("printed stages without a ledger commit measurement: %q", got)
	}
}

func TestPeakRSS(t *testing.T) {
	mb, err := peakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if mb <= 1 {
		t.Fatalf("peak RSS of this test = %.2f MB", mb)
	}
	if _, err := peakRSS(-1); err == nil {
		t.Fatal("peakRSS(-1) succeeded")
	}
}

// TestScrapeBusy reads the stage counters from a processor's metrics handler, and refuses an
// exposition without them (an older processor, or the wrong address).
func TestScrapeBusy(t *testing.T) {
	m := metrics.New("")
	m.IntakeStageSeconds.WithLabelValues("claim").Add(1.25)
	m.IntakeStageSeconds.WithLabelValues("commit").Add(0.5)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	b, err := scrapeBusy(context.Background(), srv.URL)
	if err != nil || *b != (Busy{Claim: 1.25, Commit: 0.5}) {
		t.Fatalf("scrapeBusy = %+v, %v; want claim 1.25 s, commit 0.5 s", b, err)
	}
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "go_goroutines 7") }))
	defer other.Close()
	if b, err := scrapeBusy(context.Background(), other.URL); err == nil {
		t.Fatalf("scrapeBusy of an exposition without the stages = %+v, want an error", b)
	}
}
