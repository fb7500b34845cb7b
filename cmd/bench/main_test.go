package main

import (
	"context"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/cli"
)

// TestRun_HelpVersion: -h and --help print usage on stdout and exit 0 before any benchmark
// runs; --version prints the version; a bad flag is a usage error.
func TestRun_HelpVersion(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "-h", args: []string{"-h"}, wantOut: "usage: bench"},
		{name: "--help", args: []string{"--help"}, wantOut: "usage: bench"},
		{name: "--version", args: []string{"--version"}, wantOut: "bench " + cli.VersionString() + "\n"},
		{name: "bad flag", args: []string{"--nope"}, wantCode: 2, wantErr: "flag provided but not defined"},
		{name: "stray argument", args: []string{"extra"}, wantCode: 2, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if got := run(context.Background(), tc.args, &stdout, &stderr); got != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", got, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantOut) || !strings.Contains(stderr.String(), tc.wantErr) || (tc.wantErr == "") != (stderr.Len() == 0) {
				t.Fatalf("stdout %q stderr %q; want %q and %q", stdout.String(), stderr.String(), tc.wantOut, tc.wantErr)
			}
		})
	}
}
