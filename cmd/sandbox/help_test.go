package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/cli"
)

// TestRun_HelpVersion: -h and --help print usage on stdout and return nil (exit 0) without
// serving; --version prints the version; a bad flag is errUsage (exit 2).
func TestRun_HelpVersion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr error
		wantOut string
	}{
		{name: "-h", args: []string{"-h"}, wantOut: "usage: sandbox"},
		{name: "--help", args: []string{"--help"}, wantOut: "usage: sandbox"},
		{name: "--version", args: []string{"--version"}, wantOut: "sandbox " + cli.VersionString() + "\n"},
		{name: "bad flag", args: []string{"--nope"}, wantErr: errUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(context.Background(), tc.args, func(string) string { return "" }, &stdout, &stderr)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("run = %v, want %v; stderr %q", err, tc.wantErr, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantOut) || (tc.wantErr == nil) != (stderr.Len() == 0) {
				t.Fatalf("stdout %q stderr %q; want %q", stdout.String(), stderr.String(), tc.wantOut)
			}
		})
	}
}
