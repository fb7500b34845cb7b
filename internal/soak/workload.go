package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// Shares of the workload: 1% invalid lines and 5% of the valid keys published a
// second time, half of them at once (inside the JetStream duplicate window) and half once
// the window has passed.
const (
	invalidRate = 0.01
	failRate    = 0.02 // openids "fail-…" that the sandbox fails
	namedRate   = 0.02 // large payouts carrying an encrypted user_name
	waves       = 10   // the valid requests are published in this many waves, spread over time
	// Every 40th valid key is re-published right after its wave (2.5%); every 10th key of the first
	// half of the waves, a different one, is re-published after the window (2.5%).
	earlyEach, lateEach = 40, 10
	// Every misroutedEach-th valid request also has a twin for another merchant or an
	// unknown sub-merchant (a new key): dead-lettered as misrouted, never paid.
	misroutedEach = 1000
	// Transfer bills: shares of payees who never confirm and who decline, and the cancels
	// upstream publishes mid-run: every other payee who never confirms (cancelled in time,
	// or refused because WeChat had already closed the bill) and every cancelPaysEach-th
	// payee who would confirm (cancelled before the bill is sent or confirmed, or refused
	// because it was too late: then paid).
	noConfirmRate, declineRate = 0.03, 0.02
	cancelPaysEach             = 100
)

// payee is what the sandbox's simulated payee of a valid request does, by its openid
// (internal/synth, pkg/wechatpay/wechatpaytest).
type payee int

const (
	payeePays          payee = iota // paid: the batch detail succeeds, or the payee confirms the bill
	payeeFails                      // "fail-<REASON>-…": FAIL with that reason, never paid
	payeeDeclines                   // bills, "decline-…": FAIL USER_DECLINED
	payeeNeverConfirms              // bills, "noconfirm-…": FAIL OVERDUE_CLOSE when WeChat closes the bill
)

// payeeOf classifies a generated record.
func payeeOf(r synth.Record) payee {
	switch {
	case r.Fails():
		return payeeFails
	case r.Declines():
		return payeeDeclines
	case r.NeverConfirms():
		return payeeNeverConfirms
	}
	return payeePays
}

// misroute turns r into the i-th misrouted request (a new key): for merchant 1900000002
// (producer --raw publishes it to that merchant's subject), or, every other one on the batch
// API, through a sub-merchant the processors are not configured for (on transfer bills a
// sub_mchid is refused as invalid, partner bills not being supported).
func misroute(r payout.Request, i int, bills bool) payout.Request {
	r.OutDetailNo = fmt.Sprintf("MIS%d%s", i, r.OutDetailNo)
	r.OutDetailNo = r.OutDetailNo[:min(len(r.OutDetailNo), payout.MaxNoLen)]
	r.UserName = ""
	if r.Amount >= payout.NameRequiredFrom {
		r.Amount = 100
	}
	if i%2 == 0 || bills {
		r.MchID = "1900000002"
	} else {
		r.AppID, r.SceneID, r.SubMchID, r.SubAppID, r.AuthorizationType = "", "", "1900000101", "wxs0000000000000001", payout.AuthInformation
	}
	return r
}

// workload is what the producer sends, written as JSON-lines files, and what the checks
// expect from it.
type workload struct {
	valid   map[string]payee // out_detail_no → what its payee does
	amount  map[string]int64
	cancel  map[string]bool // bills: the keys upstream cancels mid-run (cancelFile)
	invalid map[string]bool // the exact invalid lines (misrouted ones and the poison too), as published raw
	names   names           // the plaintext real names of the valid requests: they must rest nowhere
	poison  []byte          // one request just under the 1 MiB max payload, published raw
	// misrouted counts the invalid lines that are valid requests for a merchant or
	// sub-merchant the processors do not pay for.
	misrouted int

	waves       []string // valid lines, wave by wave
	again       []string // per wave: some of its keys, re-published right after it
	invalidFile string
	lateFile    string // keys of waves[:waves/2], re-published after the duplicate window
	cancelFile  string // bills: the keys of cancel, one per line (producer cancel --file)
	early, late int
}

// finals returns the final ledger states key may end in: what its payee does, or CANCELLED
// when upstream cancelled it.
func (w *workload) finals(key string) []string {
	st := []string{ledger.PayoutFail}
	if w.valid[key] == payeePays {
		st = []string{ledger.PayoutSuccess}
	}
	if w.cancel[key] {
		st = append(st, ledger.PayoutCancelled)
	}
	return st
}

// writeWorkload generates n requests of product for seed with internal/synth into dir.
func writeWorkload(ctx context.Context, dir, product string, n int, seed uint64) (*workload, error) {
	bills := product == ProductBills
	w := &workload{
		valid: map[string]payee{}, amount: map[string]int64{}, cancel: map[string]bool{}, invalid: map[string]bool{},
		invalidFile: filepath.Join(dir, "invalid.jsonl"), lateFile: filepath.Join(dir, "republish-late.jsonl"),
		cancelFile: filepath.Join(dir, "cancel.txt"),
	}
	for i := range waves {
		w.waves = append(w.waves, filepath.Join(dir, fmt.Sprintf("wave-%02d.jsonl", i)))
		w.again = append(w.again, filepath.Join(dir, fmt.Sprintf("wave-%02d-again.jsonl", i)))
	}
	files := map[string]*bufio.Writer{}
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for _, name := range append(append([]string{w.invalidFile, w.lateFile, w.cancelFile}, w.waves...), w.again...) {
		f, err := os.Create(name)
		if err != nil {
			return nil, err
		}
		opened = append(opened, f)
		files[name] = bufio.NewWriter(f)
	}
	line := func(name string, b []byte) error {
		files[name].Write(b)
		return files[name].WriteByte('\n')
	}
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = n, seed, invalidRate, failRate, namedRate
	if bills {
		o.Product, o.NoConfirmRate, o.DeclineRate = synth.ProductBills, noConfirmRate, declineRate
	}
	i, nValid, nNoConfirm, nPays := 0, 0, 0, 0
	err := synth.Each(ctx, o, func(r synth.Record) error {
		wave := i * waves / n
		i++
		if !r.Valid {
			w.invalid[string(r.Line)] = true
			return line(w.invalidFile, r.Line)
		}
		key, p := r.Req.OutDetailNo, payeeOf(r)
		w.valid[key] = p
		w.amount[key] = r.Req.Amount
		if r.Req.UserName != "" {
			w.names.add(r.Req.UserName)
		}
		nValid++
		cancel := false
		switch {
		case bills && p == payeeNeverConfirms:
			nNoConfirm++
			cancel = nNoConfirm%2 == 1
		case bills && p == payeePays:
			nPays++
			cancel = nPays%cancelPaysEach == 0
		}
		if cancel {
			w.cancel[key] = true
			if err := line(w.cancelFile, []byte(key)); err != nil {
				return err
			}
		}
		if nValid%misroutedEach == 0 {
			b, err := json.Marshal(misroute(r.Req, w.misrouted, bills))
			if err != nil {
				return err
			}
			w.misrouted++
			w.invalid[string(b)] = true
			if err := line(w.invalidFile, b); err != nil {
				return err
			}
		}
		if err := line(w.waves[wave], r.Line); err != nil {
			return err
		}
		switch {
		case nValid%earlyEach == 0:
			w.early++
			return line(w.again[wave], r.Line)
		case nValid%lateEach == lateEach/2 && wave < waves/2:
			w.late++
			return line(w.lateFile, r.Line)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generate payouts: %w", err)
	}
	w.poison = append([]byte(`{"schema":"paystream.payout.v1","out_detail_no":"POISON1","remark":"`),
		append(bytes.Repeat([]byte("x"), 1<<20-1024), `"}`...)...)
	w.invalid[string(w.poison)] = true
	for _, f := range opened {
		if err := files[f.Name()].Flush(); err != nil {
			return nil, err
		}
	}
	return w, nil
}
