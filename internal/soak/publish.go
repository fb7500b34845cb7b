package soak

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// publishAll runs the producer over the workload: the valid lines in waves spread over the
// duplicate window (validated publishes; after each wave a slice of its keys again, which
// JetStream drops), the invalid lines raw after the first wave (so that they reach the processors and
// are dead-lettered), and last a slice of the first waves' keys again once the window has
// passed. On transfer bills upstream's cancels (workload.cancel) follow the last wave, while
// the first bills are long final (some closed unconfirmed), later ones wait for their payee
// and the last ones are not even sealed. It closes requested once every request (and cancel)
// is out, before the late re-publishes, and published when everything is out.
func (s *soak) publishAll(ctx context.Context, requested, published chan<- struct{}) error {
	w := s.work
	s.logf("publishing %d valid requests in %d waves, and %d invalid ones", len(w.valid), len(w.waves), len(w.invalid))
	began := time.Now()
	every := (s.cfg.DuplicateWindow + 5*time.Second) / time.Duration(len(w.waves))
	var lateAt time.Time
	for i, f := range w.waves {
		if err := sleepUntil(ctx, began.Add(time.Duration(i)*every)); err != nil {
			return err
		}
		if _, _, err := s.produce(ctx, f, false); err != nil {
			return err
		}
		stored, dup, err := s.produce(ctx, w.again[i], false)
		if err != nil {
			return err
		}
		s.earlyDropped += dup
		s.earlyStored += stored
		if i == 0 {
			if _, _, err := s.produce(ctx, w.invalidFile, true); err != nil {
				return err
			}
			if err := s.publishPoison(ctx); err != nil {
				return err
			}
		}
		if i == len(w.waves)/2-1 {
			lateAt = time.Now().Add(s.cfg.DuplicateWindow + 5*time.Second)
		}
	}
	if s.cfg.bills() {
		s.logf("cancelling %d payouts", len(w.cancel))
		if err := s.requestCancels(ctx, w.cancelFile, len(w.cancel)); err != nil {
			return err
		}
	}
	close(requested)
	s.logf("published; re-publishing %d keys once the %s duplicate window has passed", w.late, s.cfg.DuplicateWindow)
	if err := sleepUntil(ctx, lateAt); err != nil {
		return err
	}
	n, _, err := s.produce(ctx, w.lateFile, false)
	if err != nil {
		return err
	}
	s.lateAccepted = n
	close(published)
	s.logf("late re-publishes sent: %d of %d stored as new messages", n, w.late)
	return nil
}

// publishPoison publishes the workload's request just under the 1 MiB max payload, raw,
// retrying while a NATS node restarts. Its dead letter (the body plus headers) would not fit
// the limit unless the processor cuts it.
func (s *soak) publishPoison(ctx context.Context) error {
	m := nats.NewMsg(payout.Subject(payout.DefaultSubjectPrefix, wechatpaytest.DefaultMchID))
	m.Data = s.work.poison
	return poll(ctx, produceFor, produceRetry, func() (bool, string) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := s.js.PublishMsg(actx, m); err != nil {
			return false, "publish the poison request: " + err.Error()
		}
		return true, ""
	})
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// A producer run whose publishes partly failed (while a NATS node is dead its streams elect
// new leaders, and publishes fail fast meanwhile) is repeated every produceRetry for up to
// produceFor, as an upstream system would: JetStream drops what it already has inside the
// duplicate window, the ledger and the claims after it.
const produceFor, produceRetry = time.Minute, 2 * time.Second

// produce runs "producer publish" over file and returns how many messages JetStream stored
// as new and how many it dropped as duplicates, summed over its tries.
func (s *soak) produce(ctx context.Context, file string, raw bool) (stored, dropped int, err error) {
	args := []string{"publish", "--config", s.producerConf, "--product", s.cfg.Product, "--file", file, "--url", s.natsURL}
	if raw {
		args = append(args, "--raw")
	}
	giveUp := time.Now().Add(produceFor)
	for try := 1; ; try++ {
		pub, dup, err := s.produceOnce(ctx, filepath.Base(file), args)
		stored, dropped = stored+pub, dropped+dup
		if err == nil {
			return stored, dropped, nil
		}
		err = fmt.Errorf("producer publish %s (try %d): %w", filepath.Base(file), try, err)
		s.logf("%v", err)
		if time.Now().After(giveUp) {
			return stored, dropped, err
		}
		if err := sleepUntil(ctx, time.Now().Add(produceRetry)); err != nil {
			return stored, dropped, err
		}
	}
}

// produceOnce runs "producer publish" once and parses its summary.
func (s *soak) produceOnce(ctx context.Context, name string, args []string) (published, duplicates int, err error) {
	summary, err := s.runProducer(ctx, name, args)
	var invalid, failed int
	if _, serr := fmt.Sscanf(summary, "published %d, duplicates %d, invalid %d, failed %d", &published, &duplicates, &invalid, &failed); serr != nil && err == nil {
		err = fmt.Errorf("unexpected producer output %q: %w", summary, serr)
	}
	return published, duplicates, err
}

// requestCancels runs "producer cancel" over the keys in file (want of them), as upstream
// would: the producer re-publishes after passing failures itself (--retry-for), and the
// cancels' message ids make a repeat harmless.
func (s *soak) requestCancels(ctx context.Context, file string, want int) error {
	summary, err := s.runProducer(ctx, filepath.Base(file), []string{"cancel", "--config", s.producerConf, "--url", s.natsURL,
		"--mchid", wechatpaytest.DefaultMchID, "--reason", "soak", "--retry-for", produceFor.String(), "--file", file})
	var sent, invalid, failed int
	if _, serr := fmt.Sscanf(summary, "cancel requested %d, invalid %d, failed %d", &sent, &invalid, &failed); serr != nil && err == nil {
		err = fmt.Errorf("unexpected producer output %q: %w", summary, serr)
	}
	if err == nil && sent != want {
		err = fmt.Errorf("producer cancel %s: %d cancels requested, want %d", filepath.Base(file), sent, want)
	}
	return err
}

// runProducer runs the producer once with args and returns the summary it printed on
// stdout; its stderr is appended to producer.log, and the first error it printed is part
// of a failure.
func (s *soak) runProducer(ctx context.Context, name string, args []string) (summary string, err error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "producer"), args...)
	cmd.Dir = s.cfg.Dir
	var out, errs bytes.Buffer
	logf, err := os.OpenFile(filepath.Join(s.cfg.Dir, "producer.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(logf, &errs)
	err = cmd.Run()
	summary = string(bytes.TrimSpace(out.Bytes()))
	s.logf("producer %s %s: %s", args[0], name, summary)
	if err != nil {
		firstErr, _, _ := strings.Cut(errs.String(), "\n")
		err = fmt.Errorf("%w; %s; first error: %s", err, summary, firstErr)
	}
	return summary, err
}

// progress counts, over every ledger file, payouts in a final state other than DUPLICATE
// (SUCCESS, FAIL, REJECTED, CANCELLED), payouts still moving, and events in the outboxes not
// yet published (outcomes and notices; at most unpublishedMax per ledger and kind). A file
// that does not exist yet counts nothing.
func (s *soak) progress(ctx context.Context) (final, pending, unpublished int) {
	for _, p := range s.procs {
		db, err := ledger.OpenReadOnly(ctx, p.ledger)
		if err != nil {
			continue
		}
		sum, err := db.Summary(ctx)
		outcomes, oerr := db.PendingOutcomes(ctx, unpublishedMax)
		notices, nerr := db.PendingNotices(ctx, unpublishedMax)
		db.Close()
		if err != nil || oerr != nil || nerr != nil {
			continue
		}
		unpublished += len(outcomes) + len(notices)
		for st, t := range sum.Payouts {
			switch {
			case st == ledger.PayoutDuplicate:
			case ledger.PayoutFinal(st):
				final += t.Count
			default:
				pending += t.Count
			}
		}
	}
	return final, pending, unpublished
}

// unpublishedMax bounds the outbox rows progress reads per ledger and kind.
const unpublishedMax = 10_000
