package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/instances"
)

// The recovery drill (Config.Adopt; issue 16): a processor that does not replicate is
// SIGKILLed and its data dir deleted for good, so nothing of its ledger is left; once its
// heartbeat is silent, `processor adopt` (docs/replication.md#adoption) takes its payouts
// over into a fresh ledger from what NATS holds (its claims, its journaled batches, the
// request stream), and a replacement processor on that ledger takes its place in the chaos.

// Adoption is what `processor adopt` printed: the keys it listed and its totals line.
type Adoption struct {
	Listed    int // keys listed, one line each (resume, pay here, or LEFT)
	Held      int // claims the lost instance held
	Batches   int // journaled batches resumed under their own numbers
	InBatches int // payouts in those batches
	ToPay     int // payouts held but never sent: paid anew by the adopter
	Reclaimed int // of those, DUPLICATE rows of the adopter's ledger reclaimed
	Left      int // claims left with the lost instance, never paid
}

// adoptTotals matches the last line of `processor adopt` (cmd/processor/adopt.go), planned or not.
var adoptTotals = regexp.MustCompile(`held (\d+) claims; (?:would adopt|adopted): (\d+) batches resumed \((\d+) payouts\), (\d+) payouts to pay here \((\d+) reclaimed from DUPLICATE\), (\d+) left`)

// parseAdoption reads the output of `processor adopt`: a line per key (key, a tab, what is
// done with it) and the totals line. A missing totals line is an error.
func parseAdoption(out []byte) (Adoption, error) {
	var a Adoption
	found := false
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "\t") {
			a.Listed++
			continue
		}
		m := adoptTotals.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n := make([]int, len(m)-1)
		for i, s := range m[1:] {
			n[i], _ = strconv.Atoi(s) // \d+ of a count: fits
		}
		a.Held, a.Batches, a.InBatches, a.ToPay, a.Reclaimed, a.Left = n[0], n[1], n[2], n[3], n[4], n[5]
		found = true
	}
	if !found {
		return a, errors.New("no totals line in the output of processor adopt")
	}
	return a, nil
}

// adoptAttempts bounds the runs of `processor adopt` for real: a run that fails (a claim
// move whose reply a fault proxy cut, JetStream answering "no responders" for a while after
// a node restart on a loaded box) is run again, as its error asks, as an operator would.
const adoptAttempts = 10

// adoptPause is the wait before a failed run of `processor adopt` is run again.
const adoptPause = 3 * time.Second

// loseAndAdopt plays the recovery drill on the last processor (the first one replicates for
// DiskLoss), while it has work in hand: it reads its instance id, SIGKILLs it, deletes its data dir (its log is kept
// beside it as evidence), waits until its heartbeat is silent, runs `processor adopt --plan`
// then `processor adopt` with a replacement config on a fresh data dir, and starts the
// replacement in its place. Everything it learns goes into the report.
func (s *soak) loseAndAdopt(ctx context.Context) error {
	i := len(s.procs) - 1
	lost := s.procs[i]
	if err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, string) {
		return lost.running(), lost.name + " not running yet"
	}); err != nil {
		return err
	}
	// Read beside its writer, before the loss: nothing of the file is left after it.
	instance, _, err := ledgerPosition(ctx, lost.ledger)
	if err != nil {
		return err
	}
	s.rep.AdoptInstance = instance
	lost.kill()
	killed := time.Now()
	keptLog := filepath.Join(s.cfg.Dir, lost.name+"-lost.log")
	if err := os.Rename(lost.logPath, keptLog); err != nil {
		return err
	}
	s.lostLogs = append(s.lostLogs, keptLog)
	if err := os.RemoveAll(lost.dir); err != nil {
		return err
	}
	s.logf("SIGKILLed %s (instance %s) and deleted its data dir for good; waiting until its heartbeat is silent", lost.name, instance)

	kv, err := s.js.KeyValue(ctx, s.topo.InstancesBucket)
	if err != nil {
		return fmt.Errorf("instances bucket: %w", err)
	}
	if err := poll(ctx, s.topo.SilentAfter+time.Minute, 250*time.Millisecond, func() (bool, string) {
		r, err := instances.Get(ctx, s.js, kv, instance)
		if err != nil {
			return false, err.Error()
		}
		st := instances.Classify([]instances.Record{r}, time.Now(), s.topo.SilentAfter)[0].State
		return st == instances.Silent, fmt.Sprintf("instance %s is %s", instance, st)
	}); err != nil {
		return err
	}
	s.rep.AdoptSilentAfter = time.Since(killed)

	repl, err := s.newProcessor(lost.name+"-adopter", lost.listen, false)
	if err != nil {
		return err
	}
	// Either run may meet the chaos (a NATS node restarting, a cut connection): each is run
	// again, as its error asks, after a pause.
	var out []byte
	for try := 1; try <= adoptAttempts; try++ {
		if out, _, err = s.runAdopt(ctx, repl, instance, "plan-"+strconv.Itoa(try), "--plan"); err == nil {
			break
		}
		s.logf("processor adopt --plan, attempt %d: %v", try, err)
		sleepCtx(ctx, adoptPause)
	}
	if err != nil {
		return err
	}
	if s.rep.AdoptPlan, err = parseAdoption(out); err != nil {
		return err
	}
	s.logf("processor adopt --plan: %+v", s.rep.AdoptPlan)
	for s.rep.AdoptAttempts < adoptAttempts {
		s.rep.AdoptAttempts++
		var errs []byte
		out, errs, err = s.runAdopt(ctx, repl, instance, strconv.Itoa(s.rep.AdoptAttempts))
		if err == nil {
			s.rep.AdoptRuns = 1 + bytes.Count(errs, []byte(adoptRunsAgain))
			break
		}
		s.logf("processor adopt, attempt %d: %v", s.rep.AdoptAttempts, err)
		sleepCtx(ctx, adoptPause)
	}
	if err != nil {
		return err
	}
	if s.rep.Adopted, err = parseAdoption(out); err != nil {
		return err
	}
	s.rep.AdoptTook = time.Since(killed)
	s.rep.Adoptions++
	s.logf("adopted %s into %s in %s from the kill: %+v", instance, repl.name, s.rep.AdoptTook.Round(time.Millisecond), s.rep.Adopted)
	s.procs[i], s.adopter = repl, repl
	return repl.start()
}

// adoptRunsAgain starts the line `processor adopt` logs when it runs again by itself after a
// NATS failure (internal/app): the run after it sees only the claims the failed one left.
const adoptRunsAgain = "adoption failed on NATS; it runs again"

// runAdopt runs `processor adopt --instance instance --config <p's config>` with extra
// flags, keeps its output in the working directory (adopt-<tag>.out) and its log lines in
// p's log, and returns its output and its log lines; an exit other than 0 is an error quoting
// its last line.
func (s *soak) runAdopt(ctx context.Context, p *processor, instance, tag string, extra ...string) (stdout, stderr []byte, err error) {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	defer log.Close()
	actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := append([]string{"adopt", "--instance", instance, "--config", p.conf}, extra...)
	var out, errs bytes.Buffer
	cmd := exec.CommandContext(actx, p.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(log, &errs)
	err = cmd.Run()
	if werr := os.WriteFile(filepath.Join(s.cfg.Dir, "adopt-"+tag+".out"), out.Bytes(), 0o600); werr != nil {
		return nil, nil, werr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("processor %s: %w (%s)", strings.Join(args, " "), err, lastLine(p.logPath))
	}
	return out.Bytes(), errs.Bytes(), nil
}

// claimsLeftWith counts the claims still held by instance (after an adoption: none).
func (s *soak) claimsLeftWith(ctx context.Context, instance string) (int, error) {
	kv, err := s.js.KeyValue(ctx, s.topo.ClaimsBucket)
	if err != nil {
		return 0, err
	}
	held, err := claims.OwnedBy(ctx, s.js, kv, instance)
	return len(held), err
}

// checkAdoption: the drill happened (one instance lost with its disk and adopted), the plan
// listed every key it held, nothing was left with it (no claim either), and the replacement
// was SIGKILLed afterwards like the others. The payouts themselves are the other checks':
// each paid once by the sandbox's record, final in one ledger, the audit clean without the
// lost file.
func (s *soak) checkAdoption(ctx context.Context) {
	r := s.rep
	plan, got := r.AdoptPlan, r.Adopted
	claimsLeft := -1
	var claimsErr string
	if r.AdoptInstance != "" {
		n, err := s.claimsLeftWith(ctx, r.AdoptInstance)
		if err != nil {
			claimsErr = "; claims unreadable: " + err.Error()
		} else {
			claimsLeft = n
		}
	}
	// A run again after a failure (the soak's, or the command's own after a NATS failure)
	// sees only what the failed one left: the plan is compared with a first run alone.
	asPlanned := r.AdoptAttempts != 1 || r.AdoptRuns != 1 || plan.Held == got.Held && plan.Batches == got.Batches && plan.ToPay == got.ToPay
	ok := r.Adoptions == 1 && r.AdoptErr == "" && plan.Held > 0 && plan.Listed == plan.Held && got.Held > 0 && got.Left == 0 &&
		asPlanned && claimsLeft == 0 && s.adopterKilled
	r.check("recovery drill: a processor SIGKILLed and its disk lost (no replica) is adopted into a fresh ledger, nothing left behind", ok,
		"instance %s silent %s after the kill; plan listed %d keys of %d held; adopted (attempt %d, run %d) %d claims: %d batches resumed (%d payouts), %d to pay anew (%d reclaimed), %d left; %d claims still the lost instance's; kill to adoption done %s; replacement killed afterwards %v%s%s",
		r.AdoptInstance, r.AdoptSilentAfter.Round(time.Millisecond), plan.Listed, plan.Held, r.AdoptAttempts, r.AdoptRuns, got.Held, got.Batches, got.InBatches,
		got.ToPay, got.Reclaimed, got.Left, claimsLeft, r.AdoptTook.Round(time.Millisecond), s.adopterKilled, claimsErr, orNone(r.AdoptErr))
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
