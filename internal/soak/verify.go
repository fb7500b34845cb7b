package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// payoutStates are every state a ledger payout can be in.
var payoutStates = []string{
	ledger.PayoutReceived, ledger.PayoutClaimed, ledger.PayoutDuplicate, ledger.PayoutSealed, ledger.PayoutInit,
	ledger.PayoutWaitPay, ledger.PayoutProcessing, ledger.PayoutSuccess, ledger.PayoutFail, ledger.PayoutRejected,
}

// row is one ledger's record of a payout.
type row struct {
	proc                  string
	state, batch, opsNote string
	amount                int64
}

func (r row) String() string {
	s := r.proc + ":" + r.state
	if r.batch != "" {
		s += " batch " + r.batch
	}
	return s + r.opsNote
}

// evidence is what the run knows about a set of keys.
type evidence struct {
	rows     map[string][]row // out_detail_no → one row per ledger holding it
	paid     *wechatpaytest.PaidReport
	payments map[string][]wechatpaytest.Payment
}

// of describes at most 5 keys: their ledger rows and the sandbox's payments of them.
func (e *evidence) of(keys []string) string {
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i == 5 {
			fmt.Fprintf(&b, "; … %d more", len(keys)-5)
			break
		}
		fmt.Fprintf(&b, "; %s: ledgers %v, sandbox paid %d", k, e.rows[k], e.paid.Paid[k])
		for _, p := range e.payments[k] {
			fmt.Fprintf(&b, " (batch %s detail %s)", p.OutBatchNo, p.DetailID)
		}
	}
	return b.String()
}

// verify stops the processors with SIGTERM and checks the contract of issue #6.
func (s *soak) verify(ctx context.Context) {
	r, w := s.rep, s.work
	var stopErrs []string
	for _, p := range s.procs {
		if p.p.exited() {
			stopErrs = append(stopErrs, fmt.Sprintf("%s had already exited: %v", p.name, p.p.err))
			continue
		}
		if err := p.p.stop(time.Minute); err != nil {
			stopErrs = append(stopErrs, err.Error())
		}
	}
	r.check("processors stop cleanly on SIGTERM", len(stopErrs) == 0, "%d processors; %s", len(s.procs), strings.Join(stopErrs, "; "))

	ev := &evidence{rows: map[string][]row{}, payments: map[string][]wechatpaytest.Payment{}}
	var stats wechatpaytest.Stats
	err := s.admin(ctx, "/sandbox/paid", &ev.paid)
	if err == nil {
		err = s.admin(ctx, "/sandbox/stats", &stats)
	}
	if err != nil {
		r.check("sandbox record readable", false, "%v", err)
		return
	}
	r.Sandbox = stats
	for _, p := range ev.paid.Payments {
		ev.payments[p.OutDetailNo] = append(ev.payments[p.OutDetailNo], p)
	}
	var files []string
	var readErrs []string
	var ledgerSuccess int64
	for _, p := range s.procs {
		files = append(files, p.ledger)
		rows, err := readLedger(ctx, p.name, p.ledger)
		if err != nil {
			readErrs = append(readErrs, err.Error())
			continue
		}
		for k, rw := range rows {
			ev.rows[k] = append(ev.rows[k], rw)
			if rw.state == ledger.PayoutSuccess {
				ledgerSuccess += rw.amount
			}
		}
	}
	r.check("every ledger file readable", len(readErrs) == 0, "%d files; %s", len(files), strings.Join(readErrs, "; "))

	var wrongCount, twice, unknown, notOneFinal, stateDiffers, inFlight []string
	var wantTotal int64
	for k, fails := range w.valid {
		want := 1
		if fails {
			want = 0
		} else {
			wantTotal += w.amount[k]
		}
		if ev.paid.Paid[k] != want {
			wrongCount = append(wrongCount, k)
		}
		var finals []row
		for _, rw := range ev.rows[k] {
			switch rw.state {
			case ledger.PayoutSuccess, ledger.PayoutFail, ledger.PayoutRejected:
				finals = append(finals, rw)
			case ledger.PayoutDuplicate:
			default:
				inFlight = append(inFlight, k)
			}
		}
		if len(finals) != 1 {
			notOneFinal = append(notOneFinal, k)
			continue
		}
		wantState := ledger.PayoutFail
		if ev.paid.Paid[k] > 0 {
			wantState = ledger.PayoutSuccess
		}
		if finals[0].state != wantState {
			stateDiffers = append(stateDiffers, k)
		}
	}
	for k, n := range ev.paid.Paid {
		if n > 1 {
			twice = append(twice, k)
		}
		if _, ok := w.valid[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	for k, rows := range ev.rows {
		if _, ok := w.valid[k]; !ok {
			unknown = append(unknown, k+" (in "+rows[0].proc+")")
		}
	}
	paidNow := len(w.valid) - r.Failing
	r.check("every valid payout paid exactly once, fail-… openids never", len(wrongCount) == 0,
		"%d of %d keys paid as expected (%d to pay, %d failing)%s", len(w.valid)-len(wrongCount), len(w.valid), paidNow, r.Failing, ev.of(wrongCount))
	r.check("no payout paid twice", len(twice) == 0 && len(ev.paid.DoublePaid) == 0,
		"%d payments in the sandbox, double paid %v%s", len(ev.paid.Payments), ev.paid.DoublePaid, ev.of(twice))
	r.check("nothing paid or stored that was never requested", len(unknown) == 0, "%d unknown keys %v", len(unknown), first(unknown, 5))
	r.check("paid total equals the ledgers' SUCCESS total and the requested total", int64(ev.paid.Total) == ledgerSuccess && ledgerSuccess == wantTotal,
		"sandbox %d fen, ledgers %d fen, requested (non-failing) %d fen", ev.paid.Total, ledgerSuccess, wantTotal)
	r.check("each key final in exactly one ledger (DUPLICATE elsewhere)", len(notOneFinal) == 0,
		"%d keys not final in exactly one ledger%s", len(notOneFinal), ev.of(notOneFinal))
	r.check("every final ledger state equals the sandbox's", len(stateDiffers) == 0,
		"%d keys differ%s", len(stateDiffers), ev.of(stateDiffers))
	r.check("no payout left in flight in any ledger", len(inFlight) == 0, "%d keys%s", len(inFlight), ev.of(inFlight))

	s.checkDeadLetters(ctx)
	s.checkAudit(ctx, files)

	// A NATS node restart can delay a publish past the window (or lose an original whose ack
	// never came), so an early re-publish may be stored after all; the exactly-once checks
	// above prove the processors absorbed those. Here: every one was acknowledged (a file the
	// harness published again after a failed try counts its lines twice), and
	// JetStream's dedup did the work for the rest.
	r.check("re-publishes inside the duplicate window acknowledged, JetStream dropping them", s.earlyDropped+s.earlyStored >= w.early && s.earlyDropped > 0,
		"%d dropped and %d stored for %d re-published keys", s.earlyDropped, s.earlyStored, w.early)
	r.check("late re-publishes reached the processors as new messages", s.lateAccepted == w.late,
		"%d of %d stored after the %s duplicate window", s.lateAccepted, w.late, s.cfg.DuplicateWindow)
	f := stats.Faults
	r.check("faults injected: SYSTEM_ERROR, commit-then-drop, 429", f["system_error"] > 0 && f["drop_after_commit"] > 0 && stats.RateLimited > 0,
		"system_error %d, drop_after_commit %d, truncate %d, rate limited %d", f["system_error"], f["drop_after_commit"], f["truncate"], stats.RateLimited)
	r.check("chaos: processors killed, a NATS node restarted", r.Kills >= s.cfg.MinKills && r.NATSRestarts >= 1,
		"%d kills (want ≥ %d), %d NATS node restarts", r.Kills, s.cfg.MinKills, r.NATSRestarts)
}

// readLedger returns every payout of the ledger at path by key.
func readLedger(ctx context.Context, name, path string) (map[string]row, error) {
	db, err := ledger.OpenReadOnly(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer db.Close()
	out := map[string]row{}
	for _, st := range payoutStates {
		ps, err := db.PayoutsInState(ctx, st, ledger.MaxGroup*100)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, p := range ps {
			rw := row{proc: name, state: p.State, batch: p.OutBatchNo, amount: p.Amount}
			if p.FailReason != "" {
				rw.opsNote = " (" + p.FailReason + ")"
			}
			out[p.OutDetailNo] = rw
		}
	}
	return out, nil
}

// checkDeadLetters reads the whole dead-letter stream: every invalid line must be there
// with a reason header, and nothing else.
func (s *soak) checkDeadLetters(ctx context.Context) {
	msgs, err := readStream(ctx, s.js, s.topo.DeadLetterStream)
	if err != nil {
		s.rep.check("every invalid request dead-lettered with its reason", false, "%v", err)
		return
	}
	seen := map[string]int{}
	var noReason, unexpected int
	for _, m := range msgs {
		if m.Header.Get(pipeline.HeaderReason) == "" {
			noReason++
		}
		if !s.work.invalid[string(m.Data)] {
			unexpected++
		}
		seen[string(m.Data)]++
	}
	missing, repeated := 0, 0
	for line := range s.work.invalid {
		switch n := seen[line]; {
		case n == 0:
			missing++
		case n > 1:
			repeated++
		}
	}
	s.rep.check("every invalid request dead-lettered with its reason", missing == 0 && noReason == 0 && unexpected == 0,
		"%d dead letters for %d invalid lines: %d missing, %d without a reason, %d not from the invalid lines, %d lines dead-lettered more than once",
		len(msgs), len(s.work.invalid), missing, noReason, unexpected, repeated)
}

// readStream returns every message stored in stream.
func readStream(ctx context.Context, js jetstream.JetStream, stream string) ([]*nats.Msg, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	want := st.CachedInfo().State.Msgs
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []*nats.Msg
	for uint64(len(out)) < want {
		b, err := c.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range b.Messages() {
			out = append(out, &nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
			n++
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if n == 0 {
			return out, fmt.Errorf("read %d of %d messages of %s", len(out), want, stream)
		}
	}
	return out, nil
}

// checkAudit runs "processor audit" over every ledger file: it must exit 0.
func (s *soak) checkAudit(ctx context.Context, files []string) {
	args := []string{"audit"}
	for _, f := range files {
		args = append(args, "--ledger", f)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "processor"), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	detail := "exit 0, clean"
	if err != nil {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		detail = fmt.Sprintf("%v:\n    %s", err, strings.Join(first(lines, 40), "\n    "))
	}
	s.rep.check("processor audit over all ledger files exits 0", err == nil, "%s", detail)
}

// admin GETs a sandbox admin endpoint into v and keeps the answer in the working directory
// (/sandbox/paid → sandbox-paid.json), the evidence of a failed run.
func (s *soak) admin(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.sandboxURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	name := "sandbox-" + filepath.Base(path) + ".json"
	if err := os.WriteFile(filepath.Join(s.cfg.Dir, name), body, 0o600); err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
