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
	"github.com/paystream/paystream/pkg/payout"
)

// Shares of the workload (issue #6): 1% invalid lines and 5% of the valid keys published a
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
)

// misroute turns r into the i-th misrouted request (a new key): for merchant 1900000002
// (producer --raw publishes it to that merchant's subject), or, every other one, through a
// sub-merchant the processors are not configured for.
func misroute(r payout.Request, i int) payout.Request {
	r.OutDetailNo = fmt.Sprintf("MIS%d%s", i, r.OutDetailNo)
	r.OutDetailNo = r.OutDetailNo[:min(len(r.OutDetailNo), payout.MaxNoLen)]
	r.UserName = ""
	if r.Amount >= payout.NameRequiredFrom {
		r.Amount = 100
	}
	if i%2 == 0 {
		r.MchID = "1900000002"
	} else {
		r.AppID, r.SceneID, r.SubMchID, r.SubAppID, r.AuthorizationType = "", "", "1900000101", "wxs0000000000000001", payout.AuthInformation
	}
	return r
}

// workload is what the producer sends, written as JSON-lines files, and what the checks
// expect from it.
type workload struct {
	valid   map[string]bool // out_detail_no → the sandbox fails it (never paid)
	amount  map[string]int64
	invalid map[string]bool // the exact invalid lines (misrouted ones and the poison too), as published raw
	names   [][]byte        // the plaintext real names of the valid requests: they must rest nowhere
	poison  []byte          // one request just under the 1 MiB max payload, published raw
	// misrouted counts the invalid lines that are valid requests for a merchant or
	// sub-merchant the processors do not pay for.
	misrouted int

	waves       []string // valid lines, wave by wave
	again       []string // per wave: some of its keys, re-published right after it
	invalidFile string
	lateFile    string // keys of waves[:waves/2], re-published after the duplicate window
	early, late int
}

// writeWorkload generates n requests for seed with internal/synth into dir.
func writeWorkload(ctx context.Context, dir string, n int, seed uint64) (*workload, error) {
	w := &workload{
		valid: map[string]bool{}, amount: map[string]int64{}, invalid: map[string]bool{},
		invalidFile: filepath.Join(dir, "invalid.jsonl"), lateFile: filepath.Join(dir, "republish-late.jsonl"),
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
	for _, name := range append(append([]string{w.invalidFile, w.lateFile}, w.waves...), w.again...) {
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
	i, nValid := 0, 0
	err := synth.Each(ctx, o, func(r synth.Record) error {
		wave := i * waves / n
		i++
		if !r.Valid {
			w.invalid[string(r.Line)] = true
			return line(w.invalidFile, r.Line)
		}
		w.valid[r.Req.OutDetailNo] = r.Fails()
		w.amount[r.Req.OutDetailNo] = r.Req.Amount
		if r.Req.UserName != "" {
			w.names = append(w.names, []byte(r.Req.UserName))
		}
		nValid++
		if nValid%misroutedEach == 0 {
			b, err := json.Marshal(misroute(r.Req, w.misrouted))
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
