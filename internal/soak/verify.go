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
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// payoutStates are every state a ledger payout can be in, on every rail.
var payoutStates = []string{
	ledger.PayoutReceived, ledger.PayoutClaimed, ledger.PayoutDuplicate, ledger.PayoutSealed, ledger.PayoutInit,
	ledger.PayoutWaitPay, ledger.PayoutProcessing, ledger.PayoutSuccess, ledger.PayoutFail, ledger.PayoutRejected,
	ledger.PayoutAccepted, ledger.PayoutWaitUserConfirm, ledger.PayoutTransfering, ledger.PayoutCanceling, ledger.PayoutCancelled,
}

// row is one ledger's record of a payout.
type row struct {
	proc                              string
	state, batch, opsNote, failReason string
	amount                            int64
}

func (r row) String() string {
	s := r.proc + ":" + r.state
	if r.batch != "" {
		s += " batch " + r.batch
	}
	return s + r.opsNote
}

// evidence is what the run knows about the keys: every ledger's rows and the sandbox's own
// record (its payments, and on transfer bills every bill it has).
type evidence struct {
	bills         bool                      // the run is on transfer bills
	rows          map[string][]row          // out_detail_no → one row per ledger holding it
	paid          *wechatpaytest.PaidReport // payments of details and bills alike, by number
	ledgerSuccess int64                     // the SUCCESS total of every ledger, in fen
	payments      map[string][]wechatpaytest.Payment
	sandbox       map[string]wechatpaytest.BillSummary // bills: out_bill_no (= out_detail_no) → the sandbox's bill
}

// of describes at most 5 keys: their ledger rows and the sandbox's record of them.
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
		if bl, ok := e.sandbox[k]; ok {
			fmt.Fprintf(&b, ", sandbox bill %s %s %s", bl.TransferBillNo, bl.State, bl.FailReason)
		} else if e.bills {
			b.WriteString(", no sandbox bill")
		}
	}
	return b.String()
}

// final returns the one row of key in a final state other than DUPLICATE; ok is false
// unless exactly one ledger holds it so.
func (e *evidence) final(key string) (r row, ok bool) {
	n := 0
	for _, rw := range e.rows[key] {
		if ledger.PayoutFinal(rw.state) && rw.state != ledger.PayoutDuplicate {
			r, n = rw, n+1
		}
	}
	return r, n == 1
}

// sandboxState is key's final state by the sandbox's own record. On transfer bills it is
// its bill's state and fail_reason ("" when the sandbox has no such bill: WeChat never saw
// it) and reasonKnown is true; on the batch API it is SUCCESS when paid, else FAIL, and the
// record holds no reason.
func (e *evidence) sandboxState(key string) (state, reason string, reasonKnown bool) {
	if e.bills {
		bl := e.sandbox[key]
		return bl.State, bl.FailReason, true
	}
	if e.paid.Paid[key] > 0 {
		return ledger.PayoutSuccess, "", false
	}
	return ledger.PayoutFail, "", false
}

// verify stops the processors with SIGTERM and checks the soak's contract: each valid payout
// paid exactly once by the sandbox's record, none twice, every invalid or misrouted one
// dead-lettered with its reason, every ledger's audit clean and its states equal to the
// sandbox's (and, on transfer bills, every payout final: SUCCESS, FAIL with a reason, or
// CANCELLED).
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

	ev, files, err := s.gather(ctx)
	if err != nil {
		return
	}
	s.checkPayouts(ev)
	s.checkResults(ctx, ev)
	s.checkDeadLetters(ctx)
	s.checkFiles(files)
	s.checkStuckStages()
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
	stats := r.Sandbox
	f := stats.Faults
	injected := f["system_error"] > 0 && f["drop_after_commit"] > 0 && stats.RateLimited+f["frequency_limited"] > 0
	name := "faults injected: SYSTEM_ERROR, commit-then-drop, 429"
	if ev.bills {
		injected = injected && stats.NotifyLost > 0
		name += ", lost callbacks"
	}
	r.check(name, injected, "system_error %d, drop_after_commit %d, truncate %d, rate limited %d (quota) and %d (injected), callbacks lost %d",
		f["system_error"], f["drop_after_commit"], f["truncate"], stats.RateLimited, f["frequency_limited"], stats.NotifyLost)
	for _, px := range s.proxies {
		r.ClaimCuts += px.Cuts()
	}
	r.check("chaos: processors killed, a NATS node restarted, claim replies lost", r.Kills >= s.cfg.MinKills && r.NATSRestarts >= 1 && r.ClaimCuts > 0,
		"%d kills (want ≥ %d), %d NATS node restarts, %d claim replies lost", r.Kills, s.cfg.MinKills, r.NATSRestarts, r.ClaimCuts)
	if s.cfg.DiskLoss {
		r.check("disk loss: a replica killed with its litestream and its ledger deleted comes back from its replica, completed from NATS",
			r.DiskLosses >= 1 && r.DiskLossHeld > 0 && r.DiskLossErr == "",
			"%d ledgers deleted (holding %d events) and restored (litestream); lost window: %d events not replicated at the kill, completed from NATS (the other checks count the payouts)%s",
			r.DiskLosses, r.DiskLossHeld, r.LostEvents, orNone(r.DiskLossErr))
	}
	if s.cfg.Adopt {
		s.checkAdoption(ctx)
	}
}

// gather reads the sandbox's record (kept in the working directory) and every ledger. It
// records a failed check and returns the error when the sandbox cannot answer.
func (s *soak) gather(ctx context.Context) (ev *evidence, files []string, err error) {
	r := s.rep
	ev = &evidence{bills: s.cfg.bills(), rows: map[string][]row{}, payments: map[string][]wechatpaytest.Payment{}}
	var stats wechatpaytest.Stats
	err = s.admin(ctx, "/sandbox/paid", &ev.paid)
	if err == nil {
		err = s.admin(ctx, "/sandbox/stats", &stats)
	}
	if err == nil && ev.bills {
		var bills []wechatpaytest.BillSummary
		err = s.admin(ctx, "/sandbox/bills", &bills)
		ev.sandbox = make(map[string]wechatpaytest.BillSummary, len(bills))
		for _, b := range bills {
			ev.sandbox[b.OutBillNo] = b
		}
	}
	if err != nil {
		r.check("sandbox record readable", false, "%v", err)
		return nil, nil, err
	}
	r.Sandbox = stats
	for _, p := range ev.paid.Payments {
		ev.payments[p.OutDetailNo] = append(ev.payments[p.OutDetailNo], p)
	}
	var readErrs []string
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
				ev.ledgerSuccess += rw.amount
			}
		}
	}
	r.check("every ledger file readable", len(readErrs) == 0, "%d files; %s", len(files), strings.Join(readErrs, "; "))
	return ev, files, nil
}

// checkPayouts checks every valid payout against its payee, every ledger and the sandbox's
// record: paid as its payee decides (at most once when cancelled), final in exactly one
// ledger as the sandbox has it, with WeChat's reason; and that nothing was paid or stored
// that was never requested.
func (s *soak) checkPayouts(ev *evidence) {
	r, w := s.rep, s.work
	var wrongCount, twice, unknown, notOneFinal, stateDiffers, notAsPayee, inFlight, badReason []string
	var wantTotal int64
	var mustPay, fails, neverSent int
	for k := range w.valid {
		// The payee decides whether a payout may be paid; a cancel makes it may-be.
		finals := w.finals(k)
		canPay := slices.Contains(finals, ledger.PayoutSuccess)
		must := canPay && !w.cancel[k]
		paid := ev.paid.Paid[k]
		if paid > 1 || must && paid != 1 || !canPay && paid != 0 {
			wrongCount = append(wrongCount, k)
		}
		if must {
			mustPay++
		}
		if canPay && paid == 1 {
			wantTotal += w.amount[k]
		}
		for _, rw := range ev.rows[k] {
			if !ledger.PayoutFinal(rw.state) {
				inFlight = append(inFlight, k)
			}
		}
		f, ok := ev.final(k)
		if !ok {
			notOneFinal = append(notOneFinal, k)
			continue
		}
		state, reason, reasonKnown := ev.sandboxState(k)
		switch {
		case f.state == state:
		case ev.bills && f.state == ledger.PayoutCancelled && state == "":
			neverSent++ // cancelled before WeChat ever saw it
		default:
			stateDiffers = append(stateDiffers, k)
		}
		if !slices.Contains(finals, f.state) {
			notAsPayee = append(notAsPayee, k)
		}
		if f.state == ledger.PayoutFail {
			fails++
			if f.failReason == "" || reasonKnown && f.failReason != reason {
				badReason = append(badReason, k)
			}
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
	for k := range ev.sandbox {
		if _, ok := w.valid[k]; !ok {
			unknown = append(unknown, k+" (a sandbox bill)")
		}
	}
	r.check("every valid payout paid exactly once, fail-… openids never (bills: nor declined, unconfirmed or cancelled ones)", len(wrongCount) == 0,
		"%d of %d keys paid as expected (%d to pay, %d cancelled upstream, %d failing, %d declining, %d never confirming)%s",
		len(w.valid)-len(wrongCount), len(w.valid), mustPay, len(w.cancel), r.Failing, r.Declining, r.NeverConfirm, ev.of(wrongCount))
	r.check("no payout paid twice", len(twice) == 0 && len(ev.paid.DoublePaid) == 0,
		"%d payments in the sandbox, double paid %v%s", len(ev.paid.Payments), ev.paid.DoublePaid, ev.of(twice))
	r.check("nothing paid or stored that was never requested", len(unknown) == 0, "%d unknown keys %v", len(unknown), first(unknown, 5))
	r.check("paid total equals the ledgers' SUCCESS total and the requested total", int64(ev.paid.Total) == ev.ledgerSuccess && ev.ledgerSuccess == wantTotal,
		"sandbox %d fen, ledgers %d fen, requested (to be paid) %d fen", ev.paid.Total, ev.ledgerSuccess, wantTotal)
	r.check("each key final in exactly one ledger (DUPLICATE elsewhere)", len(notOneFinal) == 0,
		"%d keys not final in exactly one ledger%s", len(notOneFinal), ev.of(notOneFinal))
	r.check("every final ledger state equals the sandbox's", len(stateDiffers) == 0,
		"%d keys differ (%d cancelled before WeChat saw them: no bill)%s", len(stateDiffers), neverSent, ev.of(stateDiffers))
	r.check("every final state is what its payee did, or CANCELLED on upstream's request", len(notAsPayee) == 0,
		"%d keys otherwise%s", len(notAsPayee), ev.of(notAsPayee))
	r.check("no payout left in flight in any ledger (none stuck RECEIVED)", len(inFlight) == 0, "%d keys%s", len(inFlight), ev.of(inFlight))
	r.check("every FAIL carries WeChat's fail_reason (bills: the sandbox's own)", len(badReason) == 0,
		"%d of %d FAIL payouts without it%s", len(badReason), fails, ev.of(badReason))

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
			rw := row{proc: name, state: p.State, batch: p.OutBatchNo, amount: p.Amount, failReason: p.FailReason}
			if p.FailReason != "" {
				rw.opsNote = " (" + p.FailReason + ")"
			}
			out[p.OutDetailNo] = rw
		}
	}
	return out, nil
}

// stored is one message read back from a stream.
type stored struct {
	seq     uint64
	subject string
	data    []byte
	header  nats.Header
}

// checkDeadLetters reads the whole dead-letter stream and the requests stream: every invalid
// line (misrouted ones and the poison request too) must be dead-lettered once, with a
// reason, found again by its original stream sequence; nothing else may be; the poison's
// dead letter is cut to fit; no dead letter holds a plaintext name, and no request stored
// by the producer does either.
func (s *soak) checkDeadLetters(ctx context.Context) {
	const name = "every invalid or misrouted request dead-lettered once with its reason"
	dls, err := readStream(ctx, s.js, s.topo.DeadLetterStream, "")
	if err != nil {
		s.rep.check(name, false, "%v", err)
		return
	}
	reqs, err := readStream(ctx, s.js, s.topo.Stream, "")
	if err != nil {
		s.rep.check(name, false, "%v", err)
		return
	}
	orig := make(map[uint64][]byte, len(reqs))
	for _, m := range reqs {
		orig[m.seq] = m.data
	}
	seen := map[string]int{}
	var noReason, unexpected, misrouted, oversized int
	poisonNote := "no dead letter"
	for _, m := range dls {
		if m.header.Get(payout.HeaderReason) == "" {
			noReason++
		}
		if m.header.Get(payout.HeaderReasonClass) == payout.ClassMisrouted {
			misrouted++
		}
		if len(m.data) > payout.MaxMessageSize {
			oversized++
		}
		seq, _ := strconv.ParseUint(m.header.Get(payout.HeaderOrigStreamSeq), 10, 64)
		data, ok := orig[seq]
		if !ok || !s.work.invalid[string(data)] {
			unexpected++
			continue
		}
		if bytes.Equal(data, s.work.poison) {
			poisonNote = m.header.Get(payout.HeaderBody)
		}
		seen[string(data)]++
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
	s.rep.check(name, missing == 0 && noReason == 0 && unexpected == 0 && repeated == 0 && misrouted == s.work.misrouted,
		"%d dead letters for %d invalid lines: %d missing, %d without a reason, %d not from the invalid lines, %d lines dead-lettered more than once; %d misrouted (want %d)",
		len(dls), len(s.work.invalid), missing, noReason, unexpected, repeated, misrouted, s.work.misrouted)
	s.rep.check("a request just under the max payload is dead-lettered, cut to fit", strings.HasPrefix(poisonNote, "truncated") && oversized == 0,
		"poison dead letter: %q; %d dead letters over %d bytes", poisonNote, oversized, payout.MaxMessageSize)

	var inDL, inStream int
	for _, m := range dls {
		if s.holdsName(m.data) {
			inDL++
		}
	}
	for _, m := range reqs {
		if !s.work.invalid[string(m.data)] && s.holdsName(m.data) { // raw invalid lines are the harness's own doing
			inStream++
		}
	}
	s.rep.check("no plaintext name in the dead letters or the requests the producer stored", inDL == 0 && inStream == 0 && s.work.names.len() > 0,
		"%d names in the workload; found in %d dead letters and %d stored requests", s.work.names.len(), inDL, inStream)
}

// holdsName reports whether b contains one of the workload's plaintext names.
func (s *soak) holdsName(b []byte) bool { return s.work.names.in(b) }

// checkFiles scans every ledger file (and its WAL) and every processor's log for plaintext
// names.
func (s *soak) checkFiles(ledgers []string) {
	var found []string
	files := slices.Clone(ledgers)
	for _, f := range ledgers {
		files = append(files, f+"-wal")
	}
	files = append(files, s.processorLogs()...)
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			found = append(found, err.Error())
		}
		if s.holdsName(b) {
			found = append(found, path)
		}
	}
	s.rep.check("no plaintext name in any ledger file or processor log", len(found) == 0, "%d ledgers and %d logs; names found in %v",
		len(ledgers), len(s.procs)+len(s.lostLogs), found)
}

// processorLogs are the logs of the running processors, then those of the lost ones.
func (s *soak) processorLogs() []string {
	var paths []string
	for _, p := range s.procs {
		paths = append(paths, p.logPath)
	}
	return append(paths, s.lostLogs...)
}

// checkStuckStages checks that no processor reported a pipeline stage stuck (its own watch:
// one piece of work for a minute), in its log or in the logs of lost processors. A log that
// cannot be read is a failure, not a log without reports.
func (s *soak) checkStuckStages() {
	var stuck []string
	paths := s.processorLogs()
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			stuck = append(stuck, err.Error())
		}
		if n := bytes.Count(b, []byte(stuckStageLine)); n > 0 {
			stuck = append(stuck, fmt.Sprintf("%s: %d", filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), n))
		}
	}
	s.rep.check("no processor reported a pipeline stage stuck", len(stuck) == 0, "%d logs; reports %v", len(paths), stuck)
}

// stuckStageLine is the start of the message a processor logs when a stage is stuck
// (internal/pipeline's watch).
const stuckStageLine = "pipeline stage stuck"

// readStream returns every message stored in stream (on subject only, when it is not
// empty), trying again for a while when the cluster cannot answer (a node restarted during
// the run may still be catching up).
func readStream(ctx context.Context, js jetstream.JetStream, stream, subject string) ([]stored, error) {
	var out []stored
	var err error
	perr := poll(ctx, time.Minute, time.Second, func() (bool, string) {
		out, err = readStreamOnce(ctx, js, stream, subject)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if perr != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, perr)
	}
	return out, nil
}

func readStreamOnce(ctx context.Context, js jetstream.JetStream, stream, subject string) ([]stored, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	want := st.CachedInfo().State.Msgs
	var cc jetstream.OrderedConsumerConfig
	if subject != "" {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return nil, err
		}
		want = 0
		for _, n := range info.State.Subjects {
			want += n
		}
		cc.FilterSubjects = []string{subject}
	}
	if want == 0 {
		return nil, nil
	}
	c, err := st.OrderedConsumer(ctx, cc)
	if err != nil {
		return nil, err
	}
	var out []stored
	for uint64(len(out)) < want {
		b, err := c.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range b.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, stored{seq: md.Sequence.Stream, subject: m.Subject(), data: m.Data(), header: m.Headers()})
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

// orNone is "" for "", else "; " and s.
func orNone(s string) string {
	if s == "" {
		return ""
	}
	return "; " + s
}
