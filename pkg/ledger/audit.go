package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Stuck thresholds (spec §6, §10 rule 7).
const (
	// StuckAccepted: a batch in WAIT_PAY or ACCEPTED longer than this needs a human
	// (low balance, or staff must confirm).
	StuckAccepted = 30 * time.Minute
	// HorizonMargin: an unsettled batch this close to the QueryHorizon is flagged while it
	// can still be queried.
	HorizonMargin = 3 * 24 * time.Hour
)

// Report is the result of Audit: which checks ran on which files and every violation found.
type Report struct {
	Files      []string    `json:"files"`
	Checks     []Check     `json:"checks"`
	Violations []Violation `json:"violations"`
}

// Check is one invariant and how many violations it found across all files.
type Check struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Violations  int    `json:"violations"`
}

// Violation names one offending row, e.g. Row "payouts seq=42 out_detail_no=abc".
type Violation struct {
	File   string `json:"file"`
	Check  string `json:"check"`
	Row    string `json:"row"`
	Detail string `json:"detail"`
}

// OK reports whether no violation was found.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// WriteText writes the report as a human table: one line per check, then the violations.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ledger audit of %s\n\nCHECK\tRESULT\tWHAT\n", strings.Join(r.Files, ", "))
	for _, c := range r.Checks {
		res := "ok"
		if c.Violations > 0 {
			res = fmt.Sprintf("%d VIOLATIONS", c.Violations)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, c.Description)
	}
	if len(r.Violations) > 0 {
		fmt.Fprintf(tw, "\nFILE\tCHECK\tROW\tDETAIL\n")
		for _, v := range r.Violations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.File, v.Check, v.Row, v.Detail)
		}
	}
	verdict := "clean"
	if !r.OK() {
		verdict = fmt.Sprintf("%d violations", len(r.Violations))
	}
	fmt.Fprintf(tw, "\n%s\n", verdict)
	return tw.Flush()
}

// Go-side checks; the SQL ones are the audit_* views of the schema.
var goChecks = []Check{
	{Name: "event_chain", Description: "every event's prev_hash and hash recompute; ids have no gaps"},
	{Name: "event_replay", Description: "every payout and batch state, batch membership and request content is what the event history produces"},
	{Name: "batch_body", Description: "every frozen body lists exactly its members, amounts and totals"},
	{Name: "stuck", Description: "no batch WAIT_PAY/ACCEPTED over 30 min, none unsettled near the 30-day query horizon"},
	{Name: "cross_file_keys", Description: "no out_detail_no owned by two ledger files (DUPLICATE rows own nothing)"},
}

// Audit checks the invariants of every ledger file in paths, read-only, as of now. The error
// is non-nil only if a file cannot be read (missing, not a ledger, older schema); violations
// are in the Report.
func Audit(ctx context.Context, paths []string, now time.Time) (*Report, error) {
	r := &Report{Files: paths, Violations: []Violation{}}
	counts := map[string]int{}
	descs := map[string]string{}
	var order []string
	addCheck := func(name, desc string) {
		if _, ok := descs[name]; !ok {
			order = append(order, name)
		}
		descs[name] = desc
	}
	keys := map[string]string{} // out_detail_no → first file
	for _, path := range paths {
		a, err := openAudit(ctx, path)
		if err != nil {
			return nil, err
		}
		views, err := a.views(ctx)
		if err == nil {
			for _, v := range views {
				addCheck(strings.TrimPrefix(v, "audit_"), "view "+v+" is empty")
			}
			for _, c := range goChecks {
				addCheck(c.Name, c.Description)
			}
			err = a.run(ctx, views, now, keys)
		}
		a.db.Close()
		if err != nil {
			return nil, fmt.Errorf("audit %s: %w", path, err)
		}
		r.Violations = append(r.Violations, a.violations...)
	}
	for _, v := range r.Violations {
		counts[v.Check]++
	}
	for _, n := range order {
		r.Checks = append(r.Checks, Check{Name: n, Description: descs[n], Violations: counts[n]})
	}
	return r, nil
}

// auditor audits one file.
type auditor struct {
	path       string
	db         *sql.DB
	violations []Violation
}

func (a *auditor) add(check, row, format string, args ...any) {
	a.violations = append(a.violations, Violation{File: a.path, Check: check, Row: row, Detail: fmt.Sprintf(format, args...)})
}

func openAudit(ctx context.Context, path string) (*auditor, error) {
	db, err := openReader(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &auditor{path: path, db: db}, nil
}

func (a *auditor) views(ctx context.Context) ([]string, error) {
	var out []string
	err := eachRow(ctx, a.db, `SELECT name FROM sqlite_master WHERE type = 'view' AND name LIKE 'audit\_%' ESCAPE '\' ORDER BY name`, nil,
		func(scan func(...any) error) error {
			var n string
			err := scan(&n)
			out = append(out, n)
			return err
		})
	return out, err
}

func (a *auditor) run(ctx context.Context, views []string, now time.Time, keys map[string]string) error {
	// One read transaction: every check sees the same snapshot.
	tx, err := a.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, v := range views {
		if err := eachRow(ctx, tx, `SELECT row, detail FROM `+v, nil, func(s func(...any) error) error {
			var row, detail string
			if err := s(&row, &detail); err != nil {
				return err
			}
			a.add(strings.TrimPrefix(v, "audit_"), row, "%s", detail)
			return nil
		}); err != nil {
			return fmt.Errorf("view %s: %w", v, err)
		}
	}
	for _, step := range []func(context.Context, *sql.Tx, time.Time) error{a.replay, a.bodies, a.stuck} {
		if err := step(ctx, tx, now); err != nil {
			return err
		}
	}
	// A key recorded as DUPLICATE lost its claim to another replica: that file does not own it.
	// Keys are per merchant.
	return eachRow(ctx, tx, `SELECT seq, mchid, out_detail_no FROM payouts WHERE state <> 'DUPLICATE' ORDER BY seq`, nil, func(s func(...any) error) error {
		var seq int64
		var mchID, no string
		if err := s(&seq, &mchID, &no); err != nil {
			return err
		}
		key := mchID + "." + no
		if first, ok := keys[key]; ok && first != a.path {
			a.add("cross_file_keys", fmt.Sprintf("payouts seq=%d out_detail_no=%s", seq, no), "also owned in %s", first)
		} else if !ok {
			keys[key] = a.path
		}
		return nil
	})
}

// replayed is what the event history says about one payout.
type replayed struct {
	state string
	batch string
	pos   int
}

// replay verifies the hash chain and rebuilds every payout's and batch's state from the
// events, then compares with the stored rows.
func (a *auditor) replay(ctx context.Context, tx *sql.Tx, _ time.Time) error {
	payouts := map[int64]*replayed{}
	batches := map[string]string{}    // out_batch_no → state
	bodyDigest := map[string][]byte{} // out_batch_no → SHA-256(body) at seal
	var prevID int64
	prev := []byte{}
	evRow := func(e *event) string {
		return fmt.Sprintf("events id=%d kind=%s batch=%s seqs=%s", e.ID, e.Kind, e.OutBatchNo, e.Seqs)
	}
	err := eachRow(ctx, tx, `SELECT id, at, source, kind, out_batch_no, seqs, from_state, to_state, data, digest, prev_hash, hash
		FROM events ORDER BY id`, nil, func(s func(...any) error) error {
		var e event
		if err := s(&e.ID, &e.At, &e.Source, &e.Kind, &e.OutBatchNo, &e.Seqs, &e.From, &e.To, &e.Data, &e.Digest, &e.PrevHash, &e.Hash); err != nil {
			return err
		}
		if e.ID != prevID+1 {
			a.add("event_chain", evRow(&e), "id follows %d: events %d..%d are missing", prevID, prevID+1, e.ID-1)
		}
		if !bytes.Equal(e.PrevHash, prev) {
			a.add("event_chain", evRow(&e), "prev_hash does not match the hash of the event before it")
		}
		if !bytes.Equal(e.chainHash(e.PrevHash), e.Hash) {
			a.add("event_chain", evRow(&e), "hash does not match the row's content")
		}
		prevID, prev = e.ID, e.Hash
		seqs, err := decodeSeqs(e.Seqs)
		if err != nil {
			a.add("event_replay", evRow(&e), "%v", err)
			return nil
		}
		switch e.Kind {
		case kindInsert:
			return a.replayInsert(ctx, tx, &e, seqs, payouts, evRow(&e))
		case kindPayoutState, kindSeal:
			for i, seq := range seqs {
				p := payouts[seq]
				if p == nil {
					a.add("event_replay", evRow(&e), "payout seq=%d changes state before it was inserted", seq)
					continue
				}
				if p.state != e.From {
					a.add("event_replay", evRow(&e), "payout seq=%d was %s, event moves it from %s", seq, p.state, e.From)
				}
				p.state = e.To
				if e.Kind == kindSeal {
					p.batch, p.pos = e.OutBatchNo, i
				}
			}
			if e.Kind == kindSeal {
				if _, ok := batches[e.OutBatchNo]; ok {
					a.add("event_replay", evRow(&e), "batch sealed twice")
				}
				batches[e.OutBatchNo], bodyDigest[e.OutBatchNo] = BatchSealed, e.Digest
			}
		case kindBatchState, kindSubmit:
			if st, ok := batches[e.OutBatchNo]; !ok || st != e.From {
				a.add("event_replay", evRow(&e), "batch was %q, event moves it from %s", st, e.From)
			}
			batches[e.OutBatchNo] = e.To
		default:
			a.add("event_replay", evRow(&e), "unknown event kind")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay events: %w", err)
	}
	err = eachRow(ctx, tx, `SELECT seq, out_detail_no, state, coalesce(out_batch_no, ''), coalesce(batch_pos, -1) FROM payouts ORDER BY seq`, nil,
		func(s func(...any) error) error {
			var seq int64
			var key, state, batch string
			var pos int
			if err := s(&seq, &key, &state, &batch, &pos); err != nil {
				return err
			}
			row := fmt.Sprintf("payouts seq=%d out_detail_no=%s", seq, key)
			p := payouts[seq]
			delete(payouts, seq)
			switch {
			case p == nil:
				a.add("event_replay", row, "no insert event for this row")
			case p.state != state:
				a.add("event_replay", row, "state %s, but the events end in %s", state, p.state)
			case p.batch != batch || (batch != "" && p.pos != pos):
				a.add("event_replay", row, "in batch %q at %d, but was sealed into %q at %d", batch, pos, p.batch, p.pos)
			}
			return nil
		})
	if err != nil {
		return err
	}
	missing := make([]int64, 0, len(payouts))
	for seq := range payouts {
		missing = append(missing, seq)
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
	for _, seq := range missing {
		a.add("event_replay", fmt.Sprintf("payouts seq=%d", seq), "inserted by the events but the row is gone")
	}
	return eachRow(ctx, tx, `SELECT out_batch_no, state, body FROM batches ORDER BY out_batch_no`, nil, func(s func(...any) error) error {
		var no, state string
		var body []byte
		if err := s(&no, &state, &body); err != nil {
			return err
		}
		row := "batches out_batch_no=" + no
		want, ok := batches[no]
		sum := sha256.Sum256(body)
		switch {
		case !ok:
			a.add("event_replay", row, "no seal event for this batch")
		case want != state:
			a.add("event_replay", row, "state %s, but the events end in %s", state, want)
		case !bytes.Equal(sum[:], bodyDigest[no]):
			a.add("event_replay", row, "body differs from the body sealed")
		}
		return nil
	})
}

// replayInsert replays an insert event and checks each row's content digest.
func (a *auditor) replayInsert(ctx context.Context, tx *sql.Tx, e *event, rng []int64, payouts map[int64]*replayed, evRow string) error {
	if len(rng) != 2 && len(rng) != 1 {
		a.add("event_replay", evRow, "insert event needs one seq range")
		return nil
	}
	lo, hi := rng[0], rng[len(rng)-1]
	if int64(len(e.Digest)) != (hi-lo+1)*rowDigestLen {
		a.add("event_replay", evRow, "digest covers %d rows, range has %d", len(e.Digest)/rowDigestLen, hi-lo+1)
		return nil
	}
	for seq := lo; seq <= hi; seq++ {
		if payouts[seq] != nil {
			a.add("event_replay", evRow, "payout seq=%d inserted twice", seq)
		}
		payouts[seq] = &replayed{state: e.To}
	}
	return eachRow(ctx, tx, `SELECT `+payoutCols+` FROM payouts WHERE seq BETWEEN ? AND ? ORDER BY seq`, []any{lo, hi}, func(s func(...any) error) error {
		p, err := scanPayout(scanFunc(s))
		if err != nil {
			return err
		}
		i := (p.Seq - lo) * rowDigestLen
		if got := rowDigests([]Payout{p}); !bytes.Equal(got, e.Digest[i:i+rowDigestLen]) {
			a.add("event_replay", fmt.Sprintf("payouts seq=%d out_detail_no=%s", p.Seq, p.OutDetailNo),
				"request content (amount %d fen, …) differs from what was inserted (event id=%d)", p.Amount, e.ID)
		}
		return nil
	})
}

// scanFunc adapts a scan function to scanPayout.
type scanFunc func(...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// bodies checks every frozen body against its members.
func (a *auditor) bodies(ctx context.Context, tx *sql.Tx, _ time.Time) error {
	type hdr struct {
		no     string
		amount int64
		num    int
		body   []byte
	}
	var bs []hdr
	if err := eachRow(ctx, tx, `SELECT out_batch_no, total_amount, total_num, body FROM batches ORDER BY out_batch_no`, nil, func(s func(...any) error) error {
		var h hdr
		bs = append(bs, h)
		return s(&bs[len(bs)-1].no, &bs[len(bs)-1].amount, &bs[len(bs)-1].num, &bs[len(bs)-1].body)
	}); err != nil {
		return err
	}
	for _, b := range bs {
		ms, err := members(ctx, tx, `out_batch_no = ? ORDER BY batch_pos`, b.no)
		if err != nil {
			return err
		}
		if err := checkBody(b.no, b.amount, b.num, b.body, ms); err != nil {
			a.add("batch_body", "batches out_batch_no="+b.no, "%v", err)
		}
	}
	return nil
}

// stuck flags batches that need a human or are running out of query window.
func (a *auditor) stuck(ctx context.Context, tx *sql.Tx, now time.Time) error {
	return eachRow(ctx, tx, `SELECT out_batch_no, state, state_at, sealed_at FROM batches WHERE settled = 0 ORDER BY out_batch_no`, nil,
		func(s func(...any) error) error {
			var no, state string
			var stateAt, sealedAt int64
			if err := s(&no, &state, &stateAt, &sealedAt); err != nil {
				return err
			}
			row := "batches out_batch_no=" + no
			if (state == BatchWaitPay || state == BatchAccepted) && now.Sub(fromMS(stateAt)) > StuckAccepted {
				a.add("stuck", row, "%s for %s (over %s)", state, now.Sub(fromMS(stateAt)).Round(time.Minute), StuckAccepted)
			}
			if age := now.Sub(fromMS(sealedAt)); age > QueryHorizon-HorizonMargin {
				a.add("stuck", row, "%s and unsettled %s after sealing; queries stop at %s", state, age.Round(time.Hour), QueryHorizon)
			}
			return nil
		})
}
