// Command producer feeds payout requests into JetStream: it validates and publishes files of
// requests, asks for payouts to be cancelled (transfer bills), and generates realistic
// synthetic requests for tests and demos.
//
//	producer publish --file payouts.jsonl [--format jsonl|csv] [--strict] [--product bills] [--url nats://…]
//	producer cancel --mchid 1900000001 [--reason R] [--file keys.txt] [OUT_DETAIL_NO…]
//	producer gen --count 2600 --seed 1 [--product bills] [--out FILE] [--invalid-rate 0.01 …]
package main

import (
	"context"
	"io"

	"github.com/paystream/paystream/internal/cli"
)

func main() { cli.Main(run) }

const usage = `usage: producer <command> [flags]

commands:
  publish  validate and publish payout requests (producer publish --file F [--format jsonl|csv] [--strict] [--product batches|bills])
  cancel   ask for transfer bills to be cancelled (producer cancel --mchid M [--reason R] [--file F] [OUT_DETAIL_NO…])
  gen      write synthetic payout requests as JSON lines (producer gen --count N --seed S [--product batches|bills] [--out F])

Run "producer <command> -h" for its flags.
`

// commands are the subcommands of producer.
var commands = map[string]cli.Command{
	"publish": cmdPublish,
	"cancel":  cmdCancel,
	"gen":     cmdGen,
}

// run dispatches a subcommand and returns the process exit code: 0 success, 1 failure,
// 2 usage error.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cli.Dispatch(ctx, "producer", usage, commands, args, cli.Env{Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}
