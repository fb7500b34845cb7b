package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// results is what the results stream told upstream, by out_detail_no. An event stored twice
// under one message id (its publisher was killed before it recorded the publish, and the
// repeat came after the duplicate window) is counted once, in redelivered.
type results struct {
	outcomes    map[string][]payout.OutcomeEvent // every state but DUPLICATE
	duplicates  int                              // DUPLICATE outcomes (a replica that lost the claim)
	waits       map[string][]payout.WaitUserConfirmEvent
	refusals    map[string][]payout.CancelRefusedEvent
	redelivered int
	malformed   []string
	withName    int // events holding a plaintext name
}

// readResults reads the results stream (subject only, when it is not empty).
func (s *soak) readResults(ctx context.Context, subject string) (*results, error) {
	msgs, err := readStream(ctx, s.js, s.topo.ResultsStream, subject)
	if err != nil {
		return nil, err
	}
	res := &results{outcomes: map[string][]payout.OutcomeEvent{}, waits: map[string][]payout.WaitUserConfirmEvent{},
		refusals: map[string][]payout.CancelRefusedEvent{}}
	ids := map[string]bool{}
	for _, m := range msgs {
		id := m.header.Get(jetstream.MsgIDHeader)
		if id != "" && ids[id] {
			res.redelivered++
			continue
		}
		ids[id] = true
		if s.holdsName(m.data) {
			res.withName++
		}
		var err error
		switch m.subject {
		case payout.ResultSubject(payout.ResultsPrefix, payout.StateWaitUserConfirm):
			var ev payout.WaitUserConfirmEvent
			if err = json.Unmarshal(m.data, &ev); err == nil {
				res.waits[ev.OutDetailNo] = append(res.waits[ev.OutDetailNo], ev)
			}
		case payout.ResultSubject(payout.ResultsPrefix, payout.StateCancelRefused):
			var ev payout.CancelRefusedEvent
			if err = json.Unmarshal(m.data, &ev); err == nil {
				res.refusals[ev.OutDetailNo] = append(res.refusals[ev.OutDetailNo], ev)
			}
		default:
			var ev payout.OutcomeEvent
			err = json.Unmarshal(m.data, &ev)
			switch {
			case err != nil:
			case m.subject != payout.ResultSubject(payout.ResultsPrefix, ev.State):
				err = fmt.Errorf("state %s on %s", ev.State, m.subject)
			case ev.State == ledger.PayoutDuplicate:
				res.duplicates++
			default:
				res.outcomes[ev.OutDetailNo] = append(res.outcomes[ev.OutDetailNo], ev)
			}
		}
		if err != nil {
			res.malformed = append(res.malformed, fmt.Sprintf("seq %d on %s: %v", m.seq, m.subject, err))
		}
	}
	return res, nil
}

// checkResults checks what upstream was told on the results stream: one outcome per final
// payout, its ledger state and reason with the requested amount (on transfer bills with the
// sandbox's bill numbers), and no plaintext name; on transfer bills also the payees' apps'
// events and the answers to cancels.
func (s *soak) checkResults(ctx context.Context, ev *evidence) {
	const name = "one outcome event per final payout: its ledger state, reason and amount"
	res, err := s.readResults(ctx, "")
	if err != nil {
		s.rep.check(name, false, "%v", err)
		return
	}
	var missing, extra, differ, unknown []string
	events := 0
	for k, evs := range res.outcomes {
		events += len(evs)
		if _, ok := s.work.valid[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	for k := range s.work.valid {
		f, ok := ev.final(k)
		evs := res.outcomes[k]
		switch {
		case !ok:
			// not final in exactly one ledger: checked above
		case len(evs) == 0:
			missing = append(missing, k)
		case len(evs) > 1:
			extra = append(extra, k)
		case !s.outcomeAgrees(evs[0], f, ev):
			differ = append(differ, k)
		}
	}
	s.rep.check(name, len(missing)+len(extra)+len(differ)+len(unknown)+len(res.malformed) == 0,
		"%d events (and %d DUPLICATE, %d stored again past the duplicate window): %d payouts without one%s, %d with more than one%s, %d differing%s, %d for unknown keys %v, %d malformed %v",
		events, res.duplicates, res.redelivered, len(missing), ev.of(missing), len(extra), ev.of(extra), len(differ), ev.of(differ),
		len(unknown), first(unknown, 5), len(res.malformed), first(res.malformed, 3))
	s.rep.check("no plaintext name in the results stream", res.withName == 0, "%d events hold one", res.withName)
	if ev.bills {
		s.checkWaits(res, ev)
		s.checkCancels(res, ev)
	}
}

// outcomeAgrees reports whether an outcome event says what the ledger row f holds.
func (s *soak) outcomeAgrees(e payout.OutcomeEvent, f row, ev *evidence) bool {
	ok := e.State == f.state && e.FailReason == f.failReason && e.Amount == s.work.amount[e.OutDetailNo] &&
		e.MchID == wechatpaytest.DefaultMchID
	if ev.bills {
		ok = ok && e.OutBillNo == e.OutDetailNo && e.TransferBillNo == ev.sandbox[e.OutDetailNo].TransferBillNo
	}
	return ok
}

// checkWaits: a payee's app is told once at most about its bill (one notice per bill in the
// ledger), only about a bill WeChat has, with what it needs to open the confirmation page;
// and most payees are told (a create whose answer was lost may be answered again only after
// the payee has confirmed: then there is nothing left to tell).
func (s *soak) checkWaits(res *results, ev *evidence) {
	var twice, noBill, lacking []string
	for k, evs := range res.waits {
		bl, known := ev.sandbox[k]
		e := evs[0]
		switch {
		case len(evs) > 1:
			twice = append(twice, k)
		case !known:
			noBill = append(noBill, k)
		case e.PackageInfo == "" || e.AppID == "" || e.MchID != wechatpaytest.DefaultMchID || e.OutBillNo != k ||
			e.TransferBillNo != bl.TransferBillNo || e.Amount != s.work.amount[k] || e.ExpireAt.IsZero():
			lacking = append(lacking, k)
		}
	}
	succeeded := 0
	for _, bl := range ev.sandbox {
		if bl.State == ledger.PayoutSuccess {
			succeeded++
		}
	}
	s.rep.check("wait_user_confirm: at most once per bill, only for bills WeChat has, with what the app needs", len(twice)+len(noBill)+len(lacking) == 0 && 2*len(res.waits) >= succeeded,
		"%d bills announced (%d paid bills; want at least half announced): %d more than once%s, %d without a sandbox bill%s, %d lacking or wrong%s",
		len(res.waits), succeeded, len(twice), ev.of(twice), len(noBill), ev.of(noBill), len(lacking), ev.of(lacking))
}

// checkCancels: a payout cancelled mid-run ends CANCELLED and is not refused, or ends as its
// payee did (too late: WeChat refused, or it was final first) and is refused once (twice only
// for a bill of the instance lost with its disk: WeChat refused, then its adopter finds it
// final); a
// cancel of a settled payout is refused ALREADY_FINAL, one of an unknown payout
// UNKNOWN_PAYOUT; nothing else is refused.
func (s *soak) checkCancels(res *results, ev *evidence) {
	want := map[string]string{s.unknownCancel: payout.CancelUnknown} // key → the one code it must get
	for _, k := range s.settledCancels {
		want[k] = payout.CancelFinal
	}
	var wrong []string
	atWeChat, beforeWeChat := 0, 0
	refused := map[string]int{}
	for k := range s.work.cancel {
		f, ok := ev.final(k)
		if !ok {
			continue // not final in exactly one ledger: checked above
		}
		codes := refusalCodes(res.refusals[k])
		switch {
		case f.state == ledger.PayoutCancelled && len(codes) == 0:
			if _, known := ev.sandbox[k]; known {
				atWeChat++
			} else {
				beforeWeChat++
			}
		case f.state != ledger.PayoutCancelled && len(codes) == 1 && (codes[0] == payout.CancelTooLate || codes[0] == payout.CancelFinal):
			refused[f.state+" "+codes[0]]++
		case f.state != ledger.PayoutCancelled && len(codes) == 2 && codes[0] == payout.CancelTooLate && codes[1] == payout.CancelFinal &&
			s.adoptedBatch(f.batch):
			// The lost instance answered (WeChat refused) and its disk took the record of it
			// with it; its adopter, asked again by the same cancel, answers what its ledger
			// knows: the bill ended first (README, failure modes: a disk lost without a replica).
			refused[f.state+" "+codes[0]+" then "+codes[1]+" by the adopter"]++
		default:
			wrong = append(wrong, fmt.Sprintf("%s (%s) refused %v", k, f.state, codes))
		}
	}
	for k, evs := range res.refusals {
		if s.work.cancel[k] {
			continue
		}
		codes := refusalCodes(evs)
		code, asked := want[k]
		if !asked || len(codes) != 1 || codes[0] != code {
			wrong = append(wrong, fmt.Sprintf("%s refused %v, want %q", k, codes, code))
		}
		delete(want, k)
	}
	for k, code := range want {
		wrong = append(wrong, fmt.Sprintf("%s never refused, want %s", k, code))
	}
	slices.Sort(wrong)
	s.rep.check("cancels: CANCELLED, or refused once as too late; settled payouts ALREADY_FINAL, unknown ones UNKNOWN_PAYOUT", len(wrong) == 0 && atWeChat+beforeWeChat > 0,
		"%d cancelled mid-run: CANCELLED %d at WeChat and %d before WeChat saw them, refused %v; %d settled and 1 unknown cancelled at the end; %d wrong %v",
		len(s.work.cancel), atWeChat, beforeWeChat, refused, len(s.settledCancels), len(wrong), first(wrong, 5))
}

func refusalCodes(evs []payout.CancelRefusedEvent) []string {
	codes := make([]string, len(evs))
	for i, e := range evs {
		codes[i] = e.Code
	}
	return codes
}

// adoptedBatch reports whether batch was sealed by the instance the recovery drill lost with
// its disk: batching.OutBatchNo starts with "B" and the instance id.
func (s *soak) adoptedBatch(batch string) bool {
	return s.rep.AdoptInstance != "" && strings.HasPrefix(batch, "B"+s.rep.AdoptInstance)
}

// settledCancelsEach is how many settled payouts each ledger contributes to the cancels of
// cancelSettled.
const settledCancelsEach = 2

// cancelSettled runs once every payout is final, with the processors still up: upstream
// cancels a few payouts already SUCCESS (each ledger's first ones not cancelled before) and
// one no processor has, and waits until each is refused on the results stream (bounded:
// the verdict is checkCancels').
func (s *soak) cancelSettled(ctx context.Context) {
	var keys []string
	for _, p := range s.procs {
		db, err := ledger.OpenReadOnly(ctx, p.ledger)
		if err != nil {
			s.logf("cancels of settled payouts: %v", err)
			continue
		}
		ps, err := db.PayoutsInState(ctx, ledger.PayoutSuccess, 100)
		db.Close()
		if err != nil {
			s.logf("cancels of settled payouts: %v", err)
			continue
		}
		n := 0
		for _, py := range ps {
			if n < settledCancelsEach && !s.work.cancel[py.OutDetailNo] {
				keys, n = append(keys, py.OutDetailNo), n+1
			}
		}
	}
	s.settledCancels = keys
	s.unknownCancel = fmt.Sprintf("NOSUCHPAYOUT%d", s.cfg.Seed)
	s.rep.LateCancels = len(keys) + 1
	file := s.work.cancelFile + ".settled"
	if err := os.WriteFile(file, []byte(strings.Join(append(slices.Clone(keys), s.unknownCancel), "\n")+"\n"), 0o600); err != nil {
		s.logf("cancels of settled payouts: %v", err)
		return
	}
	s.logf("cancelling %d settled payouts and %s", len(keys), s.unknownCancel)
	if err := s.requestCancels(ctx, file, len(keys)+1); err != nil {
		s.logf("%v", err)
		return
	}
	err := poll(ctx, time.Minute, time.Second, func() (bool, string) {
		res, err := s.readResults(ctx, payout.ResultSubject(payout.ResultsPrefix, payout.StateCancelRefused))
		if err != nil {
			return false, err.Error()
		}
		var waiting []string
		for _, k := range append(slices.Clone(keys), s.unknownCancel) {
			if len(res.refusals[k]) == 0 {
				waiting = append(waiting, k)
			}
		}
		return len(waiting) == 0, fmt.Sprintf("no refusal yet for %v", waiting)
	})
	if err != nil {
		s.logf("cancels of settled payouts: %v", err)
	}
}
