package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSummary_waitDrawsNoProgressOffATerminal: summary --wait into a file (a log, a pipe,
// make run's output) writes no progress line: stderr holds the timeout's message alone.
func TestSummary_waitDrawsNoProgressOffATerminal(t *testing.T) {
	path := auditLedger(t, "W1") // one payout, RECEIVED: never final here
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	var stdout strings.Builder
	code := run(context.Background(), []string{"summary", "--ledger", path, "--wait", "700ms"}, os.Getenv, strings.NewReader(""), &stdout, stderr)
	if got, want := code, 1; got != want {
		t.Fatalf("exit %d, want %d", got, want)
	}
	b, err := os.ReadFile(stderr.Name())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "processor summary: 1 payouts or batches still open after 700ms\n"; got != want {
		t.Fatalf("stderr %q, want %q", got, want)
	}
	if !strings.Contains(stdout.String(), "RECEIVED") {
		t.Fatalf("stdout %q: want the summary", stdout.String())
	}
}

func TestProgress_line(t *testing.T) {
	first := &progress{payouts: 100, final: 10}
	for _, tc := range []struct {
		name   string
		p      *progress
		expect int
		want   string
	}{
		{name: "before the first read", want: "reading the ledger"},
		{name: "rate since the first read", p: &progress{payouts: 100, final: 50, openBatches: 2}, want: "final 50/100 payouts (10/s), 2 batches open, 4s"},
		{name: "expecting more than are in", p: &progress{payouts: 100, final: 50}, expect: 1000, want: "final 50/1000 payouts (10/s), 0 batches open, 4s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.line(first, tc.expect, 4*time.Second); got != tc.want {
				t.Fatalf("line = %q, want %q", got, tc.want)
			}
		})
	}
}
