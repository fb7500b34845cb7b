package main

import (
	"context"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/cli"
)

// TestRun_Help: --help and -h on processor and on every subcommand print usage on stdout and
// exit 0; --version prints the version.
func TestRun_Help(t *testing.T) {
	cases := [][]string{{"--help"}, {"-h"}, {"help"}}
	for name := range commands {
		cases = append(cases, []string{name, "--help"}, []string{name, "-h"})
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			if got, want := run(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr), 0; got != want {
				t.Fatalf("exit %d, want %d; stderr %q", got, want, stderr.String())
			}
			if !strings.Contains(stdout.String(), "usage") || stderr.Len() != 0 {
				t.Fatalf("stdout %q, stderr %q: want usage on stdout only", stdout.String(), stderr.String())
			}
		})
	}
	t.Run("--version", func(t *testing.T) {
		var stdout, stderr strings.Builder
		if got, want := run(context.Background(), []string{"--version"}, func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr), 0; got != want {
			t.Fatalf("exit %d, want %d", got, want)
		}
		if got, want := stdout.String(), "processor "+cli.VersionString()+"\n"; got != want {
			t.Fatalf("stdout %q, want %q", got, want)
		}
	})
}
