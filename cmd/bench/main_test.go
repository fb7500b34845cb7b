package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/bench"
	"github.com/paystream/paystream/internal/cli/clitest"
)

// TestRun_Help: -h and --help print usage on stdout and exit 0 before any benchmark runs, a
// bad flag exits 2, --version prints the version.
func TestRun_Help(t *testing.T) {
	clitest.Contract(t, "bench", func(args []string, stdout, stderr io.Writer) int {
		return run(context.Background(), args, func(string) string { return "" }, nil, stdout, stderr)
	})
}

// TestRun_Child: with bench.ChildEnv set, run is the measured processor, not the benchmarks:
// a config it cannot read exits 1 with the reason on stderr (and no usage, no table).
func TestRun_Child(t *testing.T) {
	getenv := func(k string) string {
		if k == bench.ChildEnv {
			return filepath.Join(t.TempDir(), "missing.json")
		}
		return ""
	}
	var stdout, stderr strings.Builder
	if got, want := run(context.Background(), []string{"--help"}, getenv, nil, &stdout, &stderr), 1; got != want {
		t.Fatalf("exit %d, want %d; stderr %q", got, want, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "bench processor: ") || stdout.String() != "" {
		t.Fatalf("stdout %q, stderr %q; want only the child's error", stdout.String(), stderr.String())
	}
}
