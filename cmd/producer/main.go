// Command producer feeds payout requests into JetStream: it validates and publishes files of
// requests, and generates realistic synthetic ones for tests and demos.
//
//	producer publish --file payouts.jsonl [--format jsonl|csv] [--strict] [--url nats://…]
//	producer gen --count 2600 --seed 1 [--out FILE] [--invalid-rate 0.01 …]
package main

import (
	"context"
	"io"

	"github.com/paystream/paystream/internal/cli"
)

func main() { cli.Main(run) }

const usage = `usage: producer <command> [flags]

commands:
  publish  validate and publish payout requests (producer publish --file F [--format jsonl|csv] [--strict])
  gen      write synthetic payout requests as JSON lines (producer gen --count N --seed S [--out F])

Run "producer <command> -h" for its flags.
`

// commands are the subcommands of producer.
var commands = map[string]cli.Command{
	"publish": cmdPublish,
	"gen":     cmdGen,
}

// run dispatches a subcommand and returns the process exit code: 0 success, 1 failure,
// 2 usage error.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "producer", usage, commands, args, cli.Env{Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}
