package soak

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
)

// publishAll runs the producer over the workload: the valid lines in waves spread over the
// duplicate window (validated publishes; after each wave a slice of its keys again, which
// JetStream drops), the invalid lines raw after the first wave (so that they reach the processors and
// are dead-lettered), and last a slice of the first waves' keys again once the window has
// passed. It closes published when everything is out.
func (s *soak) publishAll(ctx context.Context, published chan<- struct{}) error {
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
		_, dup, err := s.produce(ctx, w.again[i], false)
		if err != nil {
			return err
		}
		s.earlyDropped += dup
		if i == 0 {
			if _, _, err := s.produce(ctx, w.invalidFile, true); err != nil {
				return err
			}
		}
		if i == len(w.waves)/2-1 {
			lateAt = time.Now().Add(s.cfg.DuplicateWindow + 5*time.Second)
		}
	}
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

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// produceTries bounds the producer runs per file. A run whose publishes partly failed
// (acks lost while a NATS node restarts) is repeated, as an upstream system would: JetStream
// drops what it already has inside the duplicate window, the ledger and the claims after it.
const produceTries = 3

// produce runs "producer publish" over file and returns how many messages JetStream stored
// as new and how many it dropped as duplicates, summed over its tries.
func (s *soak) produce(ctx context.Context, file string, raw bool) (stored, dropped int, err error) {
	args := []string{"publish", "--file", file, "--url", s.natsURL}
	if raw {
		args = append(args, "--raw")
	}
	var last error
	for try := 1; try <= produceTries; try++ {
		cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "producer"), args...)
		cmd.Dir = s.cfg.Dir // no configs/producer.yaml here: flags and defaults only
		var out bytes.Buffer
		cmd.Stdout = &out
		logf, err := os.OpenFile(filepath.Join(s.cfg.Dir, "producer.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return stored, dropped, err
		}
		cmd.Stderr = logf
		err = cmd.Run()
		logf.Close()
		var pub, dup, inv, failed int
		if _, serr := fmt.Sscanf(out.String(), "published %d, duplicates %d, invalid %d, failed %d", &pub, &dup, &inv, &failed); serr != nil && err == nil {
			err = fmt.Errorf("unexpected producer output %q: %w", out.String(), serr)
		}
		stored, dropped = stored+pub, dropped+dup
		s.logf("producer %s: %s", filepath.Base(file), bytes.TrimSpace(out.Bytes()))
		if err == nil {
			return stored, dropped, nil
		}
		last = fmt.Errorf("producer publish %s (try %d): %w; %s", filepath.Base(file), try, err, bytes.TrimSpace(out.Bytes()))
		s.logf("%v", last)
		if ctx.Err() != nil {
			break
		}
	}
	return stored, dropped, last
}

// progress counts, over every ledger file, payouts in a final state other than DUPLICATE
// and payouts still moving. A file that does not exist yet counts nothing.
func (s *soak) progress(ctx context.Context) (final, pending int) {
	for _, p := range s.procs {
		db, err := ledger.OpenReadOnly(ctx, p.ledger)
		if err != nil {
			continue
		}
		sum, err := db.Summary(ctx)
		db.Close()
		if err != nil {
			continue
		}
		for st, t := range sum.Payouts {
			switch st {
			case ledger.PayoutSuccess, ledger.PayoutFail, ledger.PayoutRejected:
				final += t.Count
			case ledger.PayoutDuplicate:
			default:
				pending += t.Count
			}
		}
	}
	return final, pending
}
