// Package clitest checks the command-line contract every paystream binary keeps: help is
// not an error, a bad flag is, and --version says the version.
package clitest

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/cli"
)

// Run is a binary's run function reduced to its arguments and output streams, returning the
// exit code.
type Run func(args []string, stdout, stderr io.Writer) int

// Contract runs run with -h, --help (and help when it has subcommands) and then each
// subcommand with -h and --help, failing t unless each exits 0 with "usage" on stdout and
// nothing on stderr; with --no-such-flag, failing unless it exits 2 with something on stderr;
// and with --version, failing unless it prints "name cli.VersionString()".
func Contract(t *testing.T, name string, run Run, subcommands ...string) {
	t.Helper()
	help := [][]string{{"-h"}, {"--help"}}
	bad := [][]string{{"--no-such-flag"}}
	if len(subcommands) > 0 {
		help = append(help, []string{"help"})
	}
	for _, sub := range subcommands {
		help = append(help, []string{sub, "-h"}, []string{sub, "--help"})
		bad = append(bad, []string{sub, "--no-such-flag"})
	}
	exec := func(args []string) (int, string, string) {
		var stdout, stderr strings.Builder
		code := run(args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	for _, args := range help {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := exec(args)
			if code != 0 || !strings.Contains(stdout, "usage") || stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and usage on stdout only", code, stdout, stderr)
			}
		})
	}
	for _, args := range bad {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if code, _, stderr := exec(args); code != 2 || stderr == "" {
				t.Fatalf("exit %d, stderr %q; want 2 and the reason on stderr", code, stderr)
			}
		})
	}
	t.Run("--version", func(t *testing.T) {
		code, stdout, _ := exec([]string{"--version"})
		if want := name + " " + cli.VersionString() + "\n"; code != 0 || stdout != want {
			t.Fatalf("exit %d, stdout %q; want 0 and %q", code, stdout, want)
		}
	})
}

// Dispatcher is Contract for a binary of subcommands (cli.Dispatch): run is its whole
// command line, given no environment and an empty stdin, and commands its subcommands.
func Dispatcher(t *testing.T, name string, run cli.Run, commands map[string]cli.Command) {
	t.Helper()
	subcommands := make([]string, 0, len(commands))
	for sub := range commands {
		subcommands = append(subcommands, sub)
	}
	Contract(t, name, func(args []string, stdout, stderr io.Writer) int {
		return run(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), stdout, stderr)
	}, subcommands...)
}
