// Package cli is the plumbing the paystream commands share: a signal-aware main, the
// process environment passed explicitly (so tests call a command's run directly),
// subcommand dispatch, flag parsing where help is not an error, and the version.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Env is what a command may read from its process.
type Env struct {
	Getenv func(string) string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Command is a subcommand: it returns the process exit code (0 ok, 1 failure, 2 usage).
type Command func(ctx context.Context, args []string, e Env) int

// Run is a whole command line: the shape of every main's run function.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int

// Main runs run with the process's arguments and environment under a context that SIGINT
// and SIGTERM cancel, and exits with its code. DumpSignal writes every goroutine's stack to
// standard error meanwhile.
func Main(run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopDumps := DumpStacksOn(os.Stderr, DumpSignal)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stopDumps()
	stop()
	os.Exit(code)
}

// Dispatch runs the subcommand args[0] of the command name. It prints usage on stdout for
// help, -h or --help (exit 0), the version for version or --version (exit 0), and usage on
// stderr for no arguments and for an unknown subcommand (exit 2).
func Dispatch(ctx context.Context, name, usage string, cmds map[string]Command, args []string, e Env) int {
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, usage)
		return 2
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			fmt.Fprint(e.Stdout, usage)
			return 0
		case "-version", "--version", "version":
			WriteVersion(e.Stdout, name)
			return 0
		}
		fmt.Fprintf(e.Stderr, "%s: unknown command %q\n%s", name, args[0], usage)
		return 2
	}
	return cmd(ctx, args[1:], e)
}
