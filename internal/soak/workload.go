package soak

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/paystream/paystream/internal/synth"
)

// Shares of the workload (issue #6): 1% invalid lines, 5% of the valid keys published a
// second time, half of them inside the JetStream duplicate window and half after it.
const (
	invalidRate   = 0.01
	failRate      = 0.02 // openids "fail-…" that the sandbox fails
	namedRate     = 0.02 // large payouts carrying an encrypted user_name
	republishEach = 20   // every 20th valid key is published again: 5%
)

// workload is what the producer sends, written as JSON-lines files, and what the checks
// expect from it.
type workload struct {
	valid   map[string]bool // out_detail_no → the sandbox fails it (never paid)
	amount  map[string]int64
	invalid map[string]bool // the exact invalid lines, as published raw

	validFile, invalidFile string
	earlyFile, lateFile    string // re-publishes inside and after the duplicate window
	early, late            int
}

// writeWorkload generates n requests for seed with internal/synth into dir.
func writeWorkload(ctx context.Context, dir string, n int, seed uint64) (*workload, error) {
	w := &workload{
		valid: map[string]bool{}, amount: map[string]int64{}, invalid: map[string]bool{},
		validFile: filepath.Join(dir, "valid.jsonl"), invalidFile: filepath.Join(dir, "invalid.jsonl"),
		earlyFile: filepath.Join(dir, "republish-early.jsonl"), lateFile: filepath.Join(dir, "republish-late.jsonl"),
	}
	files := map[string]*bufio.Writer{}
	var closers []*os.File
	defer func() {
		for _, f := range closers {
			f.Close()
		}
	}()
	for _, name := range []string{w.validFile, w.invalidFile, w.earlyFile, w.lateFile} {
		f, err := os.Create(name)
		if err != nil {
			return nil, err
		}
		closers = append(closers, f)
		files[name] = bufio.NewWriter(f)
	}
	line := func(name string, b []byte) error {
		files[name].Write(b)
		return files[name].WriteByte('\n')
	}
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = n, seed, invalidRate, failRate, namedRate
	nValid := 0
	err := synth.Each(ctx, o, func(r synth.Record) error {
		if !r.Valid {
			w.invalid[string(r.Line)] = true
			return line(w.invalidFile, r.Line)
		}
		w.valid[r.Req.OutDetailNo] = r.Fails()
		w.amount[r.Req.OutDetailNo] = r.Req.Amount
		nValid++
		if err := line(w.validFile, r.Line); err != nil {
			return err
		}
		switch nValid % (2 * republishEach) {
		case 0:
			w.late++
			return line(w.lateFile, r.Line)
		case republishEach:
			w.early++
			return line(w.earlyFile, r.Line)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generate payouts: %w", err)
	}
	for _, f := range closers {
		if err := files[f.Name()].Flush(); err != nil {
			return nil, err
		}
	}
	return w, nil
}
