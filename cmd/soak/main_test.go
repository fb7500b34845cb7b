package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/cli/clitest"
)

// TestRun_Usage: bad flags and a config the harness refuses exit 2 before anything starts.
func TestRun_Usage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unknown flag", []string{"-nope"}, 2, "flag provided but not defined"},
		{"stray argument", []string{"extra"}, 2, "unexpected arguments"},
		{"too few payouts", []string{"-payouts", "10", "-keep", "KEEP"}, 2, "at least 100"},
		{"no processors", []string{"-processors", "0", "-keep", "KEEP"}, 2, "at least 1"},
		{"unknown product", []string{"-product", "cheques"}, 2, "want both, batches or bills"},
		{"a flag applies to the bills run too", []string{"-product", "bills", "-quota", "0", "-keep", "KEEP"}, 2, "quota and share"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, a := range tt.args {
				if a == "KEEP" {
					tt.args[i] = t.TempDir()
				}
			}
			var stdout, stderr bytes.Buffer
			if got := run(context.Background(), tt.args, &stdout, &stderr); got != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", got, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Fatalf("stderr %q does not say %q", stderr.String(), tt.wantErr)
			}
		})
	}
}

// TestRun_Help: -h and --help print usage on stdout and exit 0 before anything is built, a
// bad flag exits 2, --version prints the version.
func TestRun_Help(t *testing.T) {
	clitest.Contract(t, "soak", func(args []string, stdout, stderr io.Writer) int {
		return run(context.Background(), args, stdout, stderr)
	})
}
