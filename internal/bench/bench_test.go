package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
		Intake: 2000, Prefill: 5000, Drain: 1500, Speed: 120, Backlogs: [2]int{1000, 2000},
		Dir: t.TempDir(), Results: t.TempDir(),
	}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(r.Verdicts), 5; got != want {
		t.Fatalf("%d verdicts, want %d: %+v", got, want, r.Verdicts)
	}
	for name, rate := range map[string]*Rate{"raw": r.Raw, "raw-claim": r.RawClaim, "empty": r.Empty, "prefilled": r.Prefilled} {
		if rate == nil || rate.N != o.Intake || rate.PerSec <= 0 {
			t.Errorf("%s rate = %+v, want %d payouts at a positive rate", name, rate, o.Intake)
		}
	}
	if d := r.Drain; d == nil || d.Batches < 2 || d.Floor <= d.Processing || d.Wall <= 0 {
		t.Errorf("drain = %+v, want ≥ 2 batches and a floor above the processing time", d)
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
	if err != nil || !strings.Contains(string(txt), "BenchmarkIntake/raw 1 ") {
		t.Fatalf("bench.txt = %q, %v", txt, err)
	}
	var out strings.Builder
	r.WriteText(&out)
	for _, v := range r.Verdicts {
		if !strings.Contains(out.String(), v.Name) {
			t.Errorf("text report lacks %q:\n%s", v.Name, out.String())
		}
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
