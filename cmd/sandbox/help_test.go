package main

import (
	"context"
	"io"
	"testing"

	"github.com/paystream/paystream/internal/cli/clitest"
)

// TestRun_Help: -h and --help print usage on stdout and exit 0 without serving, a bad flag
// exits 2, --version prints the version.
func TestRun_Help(t *testing.T) {
	clitest.Contract(t, "sandbox", func(args []string, stdout, stderr io.Writer) int {
		return run(context.Background(), args, func(string) string { return "" }, nil, stdout, stderr)
	})
}
