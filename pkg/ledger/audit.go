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

// Stuck thresholds: the audit must see every state a payout, batch or bill can be stuck in
// (docs/money-rules.md#bad-input; docs/wechatpay.md §5, §10; docs/transfer-bills.md §4, §6).
const (
	// BillOverdueMargin: a bill not final this long after its expire_at is flagged; WeChat
	// closes an unconfirmed bill after BillConfirmWindow, sometimes later, and a query or
	// callback should have brought the close in by then.
	BillOverdueMargin = 24 * time.Hour
	// StuckCancel: a cancel requested longer ago than this and still open on a bill that is
	// not final needs a look (cancels run at 20/s per merchant and CANCELING is short).
	StuckCancel = time.Hour
	// StuckAccepted: a batch in WAIT_PAY or ACCEPTED longer than this needs a human
	// (low balance, or staff must confirm).
	StuckAccepted = 30 * time.Minute
	// StuckUnaccepted: a batch still SEALED this long after sealing, or a bill WeChat has
	// never answered for this long after its batch was sealed, is one nothing got WeChat to
	// take: parked on a code an operator must fix, its processor stopped and not adopted, or
	// WeChat unreachable. A running processor creates within seconds of the seal (a backlog
	// of transfer bills at WeChat's 100 creates/s takes an hour per 360 000 bills).
	StuckUnaccepted = time.Hour
	// HorizonMargin: an unsettled batch this close to the QueryHorizon is flagged while it
	// can still be queried.
	HorizonMargin = 3 * 24 * time.Hour
	// StuckIntake: a payout RECEIVED or CLAIMED (committed, not yet in a batch) unchanged for
	// longer than this is one nothing is working on, e.g. a stranded claim. A running
	// processor claims within a fetch and seals within a batch's wait, both seconds.
	StuckIntake = 10 * time.Minute
	// StuckOutbox: an outcome or notice event still unpublished this long after it was
	// written has not reached upstream (NATS unreachable, or no processor running on this
	// ledger); a running processor publishes within a second.
	StuckOutbox = 10 * time.Minute
)

// MaxExamples is the most violations Audit lists per file and check in Report.Violations;
// Check.Violations counts all of them and Check.Omitted the ones not listed.
const MaxExamples = 20

// Report is the result of Audit: which checks ran on which files and the violations found
// (at most MaxExamples per file and check; the checks count them all).
type Report struct {
	Files      []string    `json:"files"`
	Checks     []Check     `json:"checks"`
	Violations []Violation `json:"violations"`
}

// Check is one invariant and how many violations it found across all files. Omitted of
// them are not listed in Report.Violations.
type Check struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Violations  int    `json:"violations"`
	Omitted     int    `json:"omitted"`
}

// Violation names one offending row, e.g. Row "payouts seq=42 out_detail_no=abc".
type Violation struct {
	File   string `json:"file"`
	Check  string `json:"check"`
	Row    string `json:"row"`
	Detail string `json:"detail"`
}

// OK reports whether no violation was found, listed or not.
func (r *Report) OK() bool { return r.total() == 0 }

// total is the number of violations found, listed or not.
func (r *Report) total() int {
	n := 0
	for _, c := range r.Checks {
		n += c.Violations
	}
	return max(n, len(r.Violations))
}

// WriteText writes the report as a human table: one line per check, then the violations
// listed.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ledger audit of %s\n\nCHECK\tRESULT\tWHAT\n", strings.Join(r.Files, ", "))
	for _, c := range r.Checks {
		res := "ok"
		if c.Violations > 0 {
			res = fmt.Sprintf("%d VIOLATIONS", c.Violations)
		}
		if c.Omitted > 0 {
			res += fmt.Sprintf(" (%d more not listed)", c.Omitted)
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
		verdict = fmt.Sprintf("%d violations", r.total())
	}
	fmt.Fprintf(tw, "\n%s\n", verdict)
	return tw.Flush()
}

// Go-side checks; the SQL ones are the audit_* views of the schema.
var goChecks = []Check{
	{Name: "event_chain", Description: "every event's prev_hash and hash recompute; ids have no gaps"},
	{Name: "event_replay", Description: "every payout and batch state, batch membership and request content is what the event history produces"},
	{Name: "batch_body", Description: "every frozen body lists exactly its members, amounts and totals"},
	{Name: "stuck", Description: "no batch WAIT_PAY/ACCEPTED over 30 min, no batch or bill WeChat never accepted 1 h after sealing, none unsettled near the 30-day query horizon"},
	{Name: "bill_overdue", Description: "no bill still open 24 h past its expiry (WeChat closes unconfirmed bills after 24 h)"},
	{Name: "cancel_stuck", Description: "no cancel requested over 1 h ago still open on a bill that is not final"},
	{Name: "stuck_intake", Description: "no payout RECEIVED or CLAIMED unchanged for over 10 min (nothing is working on it)"},
	{Name: "outbox_stuck", Description: "no outcome or notice event unpublished for over 10 min (upstream has not been told)"},
	{Name: "cross_file_keys", Description: "no out_detail_no owned by two ledger files (DUPLICATE rows own nothing)"},
	{Name: "duplicate_unfinished", Description: "every DUPLICATE row's owner (another instance, its file audited) holds the key and is paying or finished it"},
	{Name: "owner_missing", Description: "every DUPLICATE row names an owner instance whose ledger (or its adopter's) is among the files audited"},
	{Name: "adoption_unfinished", Description: "no adoption of a lost instance left half done (processor adopt must be run again)"},
}

// Audit checks the invariants of every ledger file in paths, read-only, as of now. Each
// file is read in one snapshot; all stay open until the cross-file checks are done. The
// error is non-nil only if a file cannot be read (missing, not a ledger, older schema);
// violations are in the Report.
func Audit(ctx context.Context, paths []string, now time.Time) (*Report, error) {
	r := &Report{Files: paths, Violations: []Violation{}}
	var auditors []*auditor
	defer func() {
		for _, a := range auditors {
			a.close()
		}
	}()
	byInstance := map[string]*auditor{} // instance id → the first file with it
	for _, path := range paths {
		a, err := openAudit(ctx, path)
		if err != nil {
			return nil, err
		}
		auditors = append(auditors, a)
		if _, ok := byInstance[a.instance]; !ok {
			byInstance[a.instance] = a
		}
	}
	// A lost instance's keys live on in the file of the instance that adopted it.
	for _, a := range auditors {
		for _, lost := range a.adopted {
			if _, ok := byInstance[lost]; !ok {
				byInstance[lost] = a
			}
		}
	}
	descs := map[string]string{}
	var order []string
	addCheck := func(name, desc string) {
		if _, ok := descs[name]; !ok {
			order = append(order, name)
		}
		descs[name] = desc
	}
	var keys map[string]string // mchid.out_detail_no → first file; only needed across files
	if len(paths) > 1 {
		keys = map[string]string{}
	}
	for _, a := range auditors {
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
		if err != nil {
			return nil, fmt.Errorf("audit %s: %w", a.path, err)
		}
		if a.adopting != "" {
			a.add("adoption_unfinished", "meta adopting="+a.adopting, "the adoption of instance %s is unfinished: its claims may not all be moved here; the processor refuses to run", a.adopting)
		}
	}
	if err := checkOwners(ctx, auditors, byInstance, now); err != nil {
		return nil, err
	}
	counts, omitted := map[string]int{}, map[string]int{}
	for _, a := range auditors {
		r.Violations = append(r.Violations, a.violations...)
		for c, n := range a.counts {
			counts[c] += n
			omitted[c] += n - min(n, MaxExamples)
		}
	}
	for _, n := range order {
		r.Checks = append(r.Checks, Check{Name: n, Description: descs[n], Violations: counts[n], Omitted: omitted[n]})
	}
	return r, nil
}

// auditor audits one file, in one read transaction.
type auditor struct {
	path       string
	instance   string // the file's instance id (meta)
	db         *sql.DB
	tx         *sql.Tx
	violations []Violation
	counts     map[string]int // violations found per check, listed or not
	dups       []dupRow       // the file's DUPLICATE rows, for checkOwners
	adopted    []string       // lost instances this file's instance adopted (meta adopted.<id>)
	adopting   string         // an unfinished adoption's instance (meta adopting)
}

// dupRow is a DUPLICATE payout as checkOwners needs it.
type dupRow struct {
	seq              int64
	mchID, key, fail string
}

func (d dupRow) row() string { return fmt.Sprintf("payouts seq=%d out_detail_no=%s", d.seq, d.key) }

// add counts a violation and lists it if the check has fewer than MaxExamples listed.
func (a *auditor) add(check, row, format string, args ...any) {
	a.counts[check]++
	if a.counts[check] > MaxExamples {
		return
	}
	a.violations = append(a.violations, Violation{File: a.path, Check: check, Row: row, Detail: fmt.Sprintf(format, args...)})
}

// openAudit opens path read-only and starts the read transaction every check of it uses, so
// they all see the same snapshot.
func openAudit(ctx context.Context, path string) (*auditor, error) {
	db, err := openReader(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	a := &auditor{path: path, db: db, counts: map[string]int{}}
	if a.tx, err = db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true}); err == nil {
		err = a.tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&a.instance)
	}
	if err != nil {
		a.close()
		return nil, fmt.Errorf("audit %s: instance id: %w", path, err)
	}
	err = eachRow(ctx, a.tx, `SELECT key, value FROM meta WHERE key = ? OR key LIKE ?`, []any{metaAdopting, metaAdopted + "%"},
		func(s func(...any) error) error {
			var k, v string
			if err := s(&k, &v); err != nil {
				return err
			}
			if lost, ok := strings.CutPrefix(k, metaAdopted); ok {
				a.adopted = append(a.adopted, lost)
			} else {
				a.adopting = v
			}
			return nil
		})
	if err != nil {
		a.close()
		return nil, fmt.Errorf("audit %s: adoptions: %w", path, err)
	}
	return a, nil
}

// close ends the read transaction and closes the file.
func (a *auditor) close() {
	if a.tx != nil {
		a.tx.Rollback()
	}
	a.db.Close()
}

func (a *auditor) views(ctx context.Context) ([]string, error) {
	var out []string
	err := eachRow(ctx, a.tx, `SELECT name FROM sqlite_master WHERE type = 'view' AND name LIKE 'audit\_%' ESCAPE '\' ORDER BY name`, nil,
		func(scan func(...any) error) error {
			var n string
			err := scan(&n)
			out = append(out, n)
			return err
		})
	return out, err
}

func (a *auditor) run(ctx context.Context, views []string, now time.Time, keys map[string]string) error {
	for _, v := range views {
		if err := eachRow(ctx, a.tx, `SELECT row, detail FROM `+v, nil, func(s func(...any) error) error {
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
	for _, step := range []func(context.Context, *sql.Tx, time.Time) error{a.replay, a.bodies, a.stuck, a.bills, a.outbox} {
		if err := step(ctx, a.tx, now); err != nil {
			return err
		}
	}
	return a.payouts(ctx, now, keys)
}

// payouts streams every payout once: rows RECEIVED or CLAIMED that nothing is working on;
// DUPLICATE rows, kept for checkOwners; and, when keys is not nil (several files), keys
// owned by two files. A key recorded as DUPLICATE lost its claim to another replica: that
// file does not own it. Keys are per merchant.
func (a *auditor) payouts(ctx context.Context, now time.Time, keys map[string]string) error {
	return eachRow(ctx, a.tx, `SELECT seq, mchid, out_detail_no, state, updated_at, fail_reason FROM payouts ORDER BY seq`, nil,
		func(s func(...any) error) error {
			var d dupRow
			var state string
			var updated int64
			if err := s(&d.seq, &d.mchID, &d.key, &state, &updated, &d.fail); err != nil {
				return err
			}
			switch state {
			case PayoutDuplicate:
				a.dups = append(a.dups, d)
				return nil
			case PayoutReceived, PayoutClaimed:
				if age := now.Sub(fromMS(updated)); age > StuckIntake {
					a.add("stuck_intake", d.row(), "%s for %s (over %s): nothing is working on it", state, age.Round(time.Minute), StuckIntake)
				}
			}
			if keys == nil {
				return nil
			}
			key := d.mchID + "." + d.key
			if first, ok := keys[key]; ok && first != a.path {
				a.add("cross_file_keys", d.row(), "also owned in %s", first)
			} else if !ok {
				keys[key] = a.path
			}
			return nil
		})
}

// ownerRow is the owner's row for a key a DUPLICATE row names.
type ownerRow struct {
	state, fail string
	updated     int64
}

// checkOwners checks every DUPLICATE row against the ledger of the instance that owns its
// key (its fail_reason, see MarkDuplicate): that must be another instance whose file is
// among those audited (else owner_missing), and its file must hold the key in a state other
// than DUPLICATE, and not RECEIVED or CLAIMED for over StuckIntake (else
// duplicate_unfinished: nobody pays it). The owners' rows are found through the
// (seq, key_hash) index, not a table scan.
func checkOwners(ctx context.Context, auditors []*auditor, byInstance map[string]*auditor, now time.Time) error {
	type ref struct {
		a     *auditor
		d     dupRow
		owner string
	}
	lookups := map[*auditor][]ref{}
	for _, a := range auditors {
		for _, d := range a.dups {
			owner, _, ok := parseOwner(d.fail)
			o := byInstance[owner]
			switch {
			case !ok:
				a.add("owner_missing", d.row(), "fail_reason %q names no owner instance", d.fail)
			case owner == a.instance:
				a.add("duplicate_unfinished", d.row(), "owner %s is this ledger's own instance: no other ledger pays it", owner)
			case o == nil:
				a.add("owner_missing", d.row(), "owned by instance %s, whose ledger is not among the files audited", owner)
			default:
				lookups[o] = append(lookups[o], ref{a: a, d: d, owner: owner})
			}
		}
	}
	for _, o := range auditors {
		refs := lookups[o]
		if len(refs) == 0 {
			continue
		}
		ds := make([]dupRow, len(refs))
		for i, r := range refs {
			ds[i] = r.d
		}
		found, err := o.rowsByKey(ctx, ds)
		if err != nil {
			return fmt.Errorf("audit %s: owners' rows: %w", o.path, err)
		}
		for _, r := range refs {
			p, ok := found[r.d.mchID+"."+r.d.key]
			switch {
			case !ok:
				r.a.add("duplicate_unfinished", r.d.row(), "owner %s never finished it: no row in %s", r.owner, o.path)
			case p.state == PayoutDuplicate:
				r.a.add("duplicate_unfinished", r.d.row(), "owner %s never finished it: DUPLICATE there too (%s) in %s", r.owner, p.fail, o.path)
			case p.state == PayoutReceived || p.state == PayoutClaimed:
				if age := now.Sub(fromMS(p.updated)); age > StuckIntake {
					r.a.add("duplicate_unfinished", r.d.row(), "owner %s never finished it: %s for %s in %s", r.owner, p.state, age.Round(time.Minute), o.path)
				}
			}
		}
	}
	return nil
}

// rowsByKey returns this file's payouts with the keys (mchid and out_detail_no) of ds, by
// "mchid.out_detail_no". It scans the small (seq, key_hash) index and reads only the rows
// whose key hash matches.
func (a *auditor) rowsByKey(ctx context.Context, ds []dupRow) (map[string]ownerRow, error) {
	want := make(map[string]bool, len(ds))
	seen := map[int64]bool{}
	var hashes []int64
	for _, d := range ds {
		want[d.mchID+"."+d.key] = true
		if h := keyHash(d.key); !seen[h] {
			seen[h] = true
			hashes = append(hashes, h)
		}
	}
	found := map[string]ownerRow{}
	err := eachSeqChunk(hashes, func(part []int64) error {
		return eachRow(ctx, a.tx, `SELECT mchid, out_detail_no, state, fail_reason, updated_at FROM payouts
			WHERE seq IN (SELECT seq FROM payouts INDEXED BY payouts_keys WHERE key_hash IN (`+placeholders(len(part))+`))`,
			int64Args(part), func(s func(...any) error) error {
				var mchID, key string
				var p ownerRow
				if err := s(&mchID, &key, &p.state, &p.fail, &p.updated); err != nil {
					return err
				}
				if k := mchID + "." + key; want[k] {
					found[k] = p
				}
				return nil
			})
	})
	return found, err
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
		case kindBillCreate, kindBill, kindCancel:
			// Facts about one payout that leave its state as it was.
			for _, seq := range seqs {
				switch p := payouts[seq]; {
				case p == nil:
					a.add("event_replay", evRow(&e), "payout seq=%d has a %s event before it was inserted", seq, e.Kind)
				case p.state != e.From || e.To != e.From:
					a.add("event_replay", evRow(&e), "payout seq=%d was %s, %s event says %s → %s", seq, p.state, e.Kind, e.From, e.To)
				}
			}
		case kindRetryNow:
			if st, ok := batches[e.OutBatchNo]; !ok || st != e.From || e.To != e.From {
				a.add("event_replay", evRow(&e), "batch was %q, %s event says %s → %s", st, e.Kind, e.From, e.To)
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
	var billBatches []string
	err = eachRow(ctx, tx, `SELECT b.out_batch_no, b.rail, b.state, coalesce(bb.body, x'') FROM batches b
		LEFT JOIN batch_bodies bb ON bb.out_batch_no = b.out_batch_no ORDER BY b.out_batch_no`, nil, func(s func(...any) error) error {
		var no, rail, state string
		var body []byte
		if err := s(&no, &rail, &state, &body); err != nil {
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
		case rail != RailBills && !bytes.Equal(sum[:], bodyDigest[no]), rail == RailBills && !bytes.HasPrefix(bodyDigest[no], sum[:]):
			a.add("event_replay", row, "body differs from the body sealed")
		case rail == RailBills:
			billBatches = append(billBatches, no)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A rail-bills seal digest is SHA-256(manifest) ‖ billsDigest(bill bodies in member order).
	for _, no := range billBatches {
		bodies, err := billBodies(ctx, tx, no)
		if err != nil {
			return err
		}
		if d := bodyDigest[no]; len(d) != 2*sha256.Size || !bytes.Equal(d[sha256.Size:], billsDigest(bodies)) {
			a.add("event_replay", "batches out_batch_no="+no, "bill bodies (%d) differ from those sealed", len(bodies))
		}
	}
	return nil
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
	if err := eachRow(ctx, tx, `SELECT b.out_batch_no, b.total_amount, b.total_num, coalesce(bb.body, x'')
		FROM batches b LEFT JOIN batch_bodies bb ON bb.out_batch_no = b.out_batch_no ORDER BY b.out_batch_no`, nil, func(s func(...any) error) error {
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

// bills flags bills open well past their expiry, cancels that do not end, and bills WeChat
// never accepted (still SEALED) long after their batch was sealed, each with its own last
// answer (a rail-bills batch has none of its own). Final bills are settled, so only
// unsettled rows are read.
func (a *auditor) bills(ctx context.Context, tx *sql.Tx, now time.Time) error {
	return eachRow(ctx, tx, `SELECT b.out_bill_no, p.state, b.expire_at, b.cancel_requested_at, b.cancel_closed, b.last_error_code,
			t.sealed_at
		FROM bills b JOIN payouts p ON p.seq = b.seq JOIN batches t ON t.out_batch_no = b.out_batch_no
		WHERE b.settled = 0 ORDER BY b.out_bill_no`, nil,
		func(s func(...any) error) error {
			var no, state, closed, code string
			var expire, cancelAt, sealedAt int64
			if err := s(&no, &state, &expire, &cancelAt, &closed, &code, &sealedAt); err != nil {
				return err
			}
			if PayoutFinal(state) {
				return nil
			}
			row := "bills out_bill_no=" + no
			if state == PayoutSealed {
				a.unaccepted(row, now, sealedAt, code)
			}
			if expire != 0 && now.Sub(fromMS(expire)) > BillOverdueMargin {
				a.add("bill_overdue", row, "%s %s past its expiry (over %s)", state, now.Sub(fromMS(expire)).Round(time.Minute), BillOverdueMargin)
			}
			if cancelAt != 0 && closed == cancelOpen && now.Sub(fromMS(cancelAt)) > StuckCancel {
				a.add("cancel_stuck", row, "%s with a cancel requested %s ago still open (over %s)", state,
					now.Sub(fromMS(cancelAt)).Round(time.Minute), StuckCancel)
			}
			return nil
		})
}

// unaccepted flags row (a batch or bill still SEALED: WeChat never accepted it) as stuck
// when its batch was sealed over StuckUnaccepted before now; code is the last one recorded
// for it (a WeChat code or a transport class).
func (a *auditor) unaccepted(row string, now time.Time, sealedAt int64, code string) {
	age := now.Sub(fromMS(sealedAt))
	if age <= StuckUnaccepted {
		return
	}
	last := "no code recorded"
	if code != "" {
		last = "last code " + code
		if ParkedCode(code) {
			last += ", parked: an operator must act"
		}
	}
	a.add("stuck", row, "SEALED %s after sealing and never accepted by WeChat (over %s; %s)", age.Round(time.Minute), StuckUnaccepted, last)
}

// outbox flags outcome and notice events written over StuckOutbox ago and not yet published.
func (a *auditor) outbox(ctx context.Context, tx *sql.Tx, now time.Time) error {
	return eachRow(ctx, tx, `SELECT 'outcomes', o.id, p.out_detail_no, o.state, o.at FROM outcomes o JOIN payouts p ON p.seq = o.seq
			WHERE o.published_at = 0
		UNION ALL SELECT 'notices', n.id, p.out_detail_no, n.kind, n.at FROM notices n JOIN payouts p ON p.seq = n.seq
			WHERE n.published_at = 0
		ORDER BY 1, 2`, nil,
		func(s func(...any) error) error {
			var table, key, kind string
			var id, at int64
			if err := s(&table, &id, &key, &kind, &at); err != nil {
				return err
			}
			if age := now.Sub(fromMS(at)); age > StuckOutbox {
				a.add("outbox_stuck", fmt.Sprintf("%s id=%d out_detail_no=%s", table, id, key), "%s event unpublished for %s (over %s): upstream has not been told",
					kind, age.Round(time.Minute), StuckOutbox)
			}
			return nil
		})
}

// stuck flags batches that need a human, that WeChat never accepted long after sealing (on
// rail bills, bills checks each bill instead), or that are running out of query window.
func (a *auditor) stuck(ctx context.Context, tx *sql.Tx, now time.Time) error {
	return eachRow(ctx, tx, `SELECT out_batch_no, rail, state, state_at, sealed_at, last_error_code FROM batches WHERE settled = 0
		ORDER BY out_batch_no`, nil,
		func(s func(...any) error) error {
			var no, rail, state, code string
			var stateAt, sealedAt int64
			if err := s(&no, &rail, &state, &stateAt, &sealedAt, &code); err != nil {
				return err
			}
			row := "batches out_batch_no=" + no
			if state == BatchSealed && rail != RailBills {
				a.unaccepted(row, now, sealedAt, code)
			}
			if (state == BatchWaitPay || state == BatchAccepted) && now.Sub(fromMS(stateAt)) > StuckAccepted {
				a.add("stuck", row, "%s for %s (over %s)", state, now.Sub(fromMS(stateAt)).Round(time.Minute), StuckAccepted)
			}
			if age := now.Sub(fromMS(sealedAt)); age > QueryHorizon-HorizonMargin {
				a.add("stuck", row, "%s and unsettled %s after sealing; queries stop at %s", state, age.Round(time.Hour), QueryHorizon)
			}
			return nil
		})
}
