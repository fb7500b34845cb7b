// Command producer feeds payout requests into JetStream: it validates and publishes files of
// requests, and generates realistic synthetic ones for tests and demos.
//
//	producer publish --file payouts.jsonl [--format jsonl|csv] [--strict] [--url nats://…]
//	producer gen --count 2600 --seed 1 [--out FILE] [--invalid-rate 0.01 …]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env carries what a subcommand may read from its process, so tests can call run directly.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

const usage = `usage: producer <command> [flags]

commands:
  publish  validate and publish payout requests (producer publish --file F [--format jsonl|csv] [--strict])
  gen      write synthetic payout requests as JSON lines (producer gen --count N --seed S [--out F])

Run "producer <command> -h" for its flags.
`

// run dispatches a subcommand and returns the process exit code: 0 success, 1 failure,
// 2 usage error.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func(context.Context, []string, env) int{
		"publish": cmdPublish,
		"gen":     cmdGen,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "producer: unknown command %q\n%s", args[0], usage)
		return 2
	}
	return cmd(ctx, args[1:], e)
}
