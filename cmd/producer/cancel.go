package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/config"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/pkg/payout"
)

const cancelUsage = `usage: producer cancel --mchid M [flags] [OUT_DETAIL_NO…]

Asks the processor to cancel payouts of merchant M: one payout.CancelRequest per
out_detail_no, given as arguments and/or in --file (one per line; blank lines and lines
starting with # are skipped), published to <cancel-subject-prefix>.<mchid> with
Nats-Msg-Id "cancel." + out_detail_no, so a repeat is dropped as a duplicate. Only transfer
bills can be cancelled, and only until the payee has received the money; the answer comes
later as events: the payout's outcome on payouts.results.cancelled (or its other final
state), or a refusal on payouts.results.cancel_refused. An invalid key is reported and not
published. Ends with one summary line on stdout; exits 1 if any key was invalid or any
publish failed.
`

// cmdCancel implements "producer cancel".
func cmdCancel(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("cancel", flag.ContinueOnError)
	cli.SetUsage(fs, cancelUsage+"\nflags:\n")
	path := configFlags(fs, map[string]string{
		"cancel-subject-prefix": "subject prefix",
		"retry-for":             "re-publish after a passing failure this long",
	})
	mchid := fs.String("mchid", "", "merchant id of the payouts (required)")
	reason := fs.String("reason", "", "why, kept in the ledger (at most 64 characters, no personal data)")
	file := fs.String("file", "", "file of out_detail_no values, one per line; - for stdin")
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if *mchid == "" || *file == "" && fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cfg, err := loadConfig(*path, e.Getenv, config.Overrides(fs)...)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	keys := fs.Args()
	if *file != "" {
		in, _, err := openInput(*file, e.Stdin)
		if err != nil {
			fmt.Fprintln(e.Stderr, "producer:", err)
			return 1
		}
		more, err := readKeys(in)
		in.Close()
		if err != nil {
			fmt.Fprintln(e.Stderr, "producer: read:", err)
			return 1
		}
		keys = append(keys, more...)
	}
	nc, err := connect(cfg)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	pub := payout.NewPublisher(js, payout.WithCancelPrefix(cfg.CancelSubjectPrefix))
	var sent, invalid, failed int
	for _, key := range keys {
		if ctx.Err() != nil {
			break
		}
		err := sendCancel(ctx, pub, payout.CancelRequest{OutDetailNo: key, MchID: *mchid, Reason: *reason}, cfg)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, payout.ErrInvalid):
			invalid++
			fmt.Fprintf(e.Stderr, "%q: %v\n", cutKey(key), err)
		default:
			failed++
			fmt.Fprintf(e.Stderr, "%q: publish failed: %v\n", cutKey(key), err)
		}
	}
	fmt.Fprintf(e.Stdout, "cancel requested %d, invalid %d, failed %d\n", sent, invalid, failed)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(e.Stderr, "producer: interrupted")
		return 1
	case invalid > 0 || failed > 0:
		return 1
	}
	return 0
}

// sendCancel publishes c, waiting cfg.AckTimeout for each ack and re-publishing after a
// passing failure for cfg.RetryFor (the message id is the same, so never twice).
func sendCancel(ctx context.Context, pub *payout.Publisher, c payout.CancelRequest, cfg Config) error {
	wait, deadline := 100*time.Millisecond, time.Now().Add(cfg.RetryFor)
	for {
		actx, cancel := context.WithTimeout(ctx, cfg.AckTimeout)
		err := pub.Cancel(actx, c)
		cancel()
		if err == nil || !payout.Transient(err) || !time.Now().Add(wait).Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// readKeys returns the non-blank lines of r that do not start with #, trimmed.
func readKeys(r io.Reader) ([]string, error) {
	var keys []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k := strings.TrimSpace(sc.Text())
		if k != "" && !strings.HasPrefix(k, "#") {
			keys = append(keys, k)
		}
	}
	return keys, sc.Err()
}

// cutKey shortens a key for an error line (a bad line may be anything).
func cutKey(k string) string {
	if r := []rune(k); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return k
}
