package main

import (
	"testing"

	"github.com/paystream/paystream/internal/cli/clitest"
)

// TestRun_Help: -h and --help on producer and on every subcommand print usage on stdout and exit
// 0, a bad flag exits 2, --version prints the version.
func TestRun_Help(t *testing.T) { clitest.Dispatcher(t, "producer", run, commands) }
