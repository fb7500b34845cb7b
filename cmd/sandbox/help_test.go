package main

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/paystream/paystream/internal/cli/clitest"
)

// TestRun_Help: -h and --help print usage on stdout and exit 0 without serving, a bad flag
// is errUsage (exit 2), --version prints the version.
func TestRun_Help(t *testing.T) {
	clitest.Contract(t, "sandbox", func(args []string, stdout, stderr io.Writer) int {
		switch err := run(context.Background(), args, func(string) string { return "" }, stdout, stderr); {
		case errors.Is(err, errUsage):
			return 2
		case err != nil:
			return 1
		}
		return 0
	})
}
