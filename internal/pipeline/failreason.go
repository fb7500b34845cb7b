package pipeline

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// maxLoggedKeys bounds the out_detail_nos one log line names.
const maxLoggedKeys = 20

// reasonPass is the fail-reason work of one paging pass over one FINISHED batch. A page's detail
// briefs say FAIL but not why; only the single-detail query carries fail_reason (docs/wechatpay.md
// §5, §6), and upstream must know why before it pays again under a new number. So a FAIL row is
// applied only together with its reason, and one whose reason cannot be had now is left out of the
// apply: its payout keeps its state, the batch stays unsettled, and the next poll pages it again
// from offset 0. Only the worker handling the batch touches it.
type reasonPass struct {
	states   map[string]string // out_detail_no → ledger state when the pass began
	stop     string            // why fetching stopped for this pass (an error code); "" while fetching
	fetched  int               // reasons fetched and applied with their rows
	deferred []string          // FAIL rows left out, by out_detail_no
	why      map[string]int    // deferrals by cause (an error code or a disagreement)
	complete bool              // every page was read
}

func newReasonPass(states map[string]string) *reasonPass {
	return &reasonPass{states: states, why: map[string]int{}}
}

func (p *reasonPass) deferRow(outDetailNo, why string) {
	p.deferred = append(p.deferred, outDetailNo)
	p.why[why]++
}

// whyString renders the deferral causes as "CODE=n …", sorted, for one log line.
func (p *reasonPass) whyString() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(p.why)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, p.why[k])
	}
	return b.String()
}

// withReasons returns the rows of one page to apply, reusing rows' array. A FAIL row of a
// member not yet final gets its fail_reason from a detail query; when that reason cannot be
// had now, the row is left out. Every other row goes through as it is, without a query: the
// ledger ignores a member already FAIL and refuses rows for a member already SUCCESS or for
// a non-member.
func (d *batchRail) withReasons(ctx context.Context, b ledger.Batch, p *reasonPass, rows []ledger.DetailRow) []ledger.DetailRow {
	out := rows[:0]
	for _, r := range rows {
		if state, member := p.states[r.OutDetailNo]; r.Status != ledger.PayoutFail || !member || ledger.PayoutFinal(state) {
			out = append(out, r)
			continue
		}
		reason, why := d.fetchReason(ctx, b, p, r)
		if why != "" {
			p.deferRow(r.OutDetailNo, why)
			continue
		}
		r.FailReason = reason
		p.fetched++
		out = append(out, r)
	}
	return out
}

// fetchReason queries one FAIL detail for its fail_reason through the detail throttle (the detail
// API's own budget, rate-limit.detail) and the detail breaker. It returns the reason, or why there
// is none now: the error code, or a disagreement with the page. A 429, an open breaker, a cancelled
// wait or a rejection an operator must fix stops fetching for the rest of the pass; other failures
// (NOT_FOUND, ambiguous answers) are per detail, and the breaker trips on a run of ambiguous ones.
// A reason we do not know is returned as WeChat gives it.
func (d *batchRail) fetchReason(ctx context.Context, b ledger.Batch, p *reasonPass, r ledger.DetailRow) (reason, why string) {
	if p.stop != "" {
		return "", p.stop
	}
	res, err := throttled(ctx, d.cbDetail, d.detail, func() (detail, error) {
		return queryDetail(ctx, d.api, b.Rail, b.OutBatchNo, r.OutDetailNo)
	})
	if err != nil {
		code := errorCode(err)
		if c := classify(err); c == wechatpay.ClassNotSent || c == wechatpay.ClassBlocked || is429(err) {
			p.stop = code
		}
		return "", code
	}
	switch {
	case res.OutDetailNo != r.OutDetailNo || (res.DetailID != "" && r.DetailID != "" && res.DetailID != r.DetailID):
		d.log.Warn("detail query answered for another detail", "out_batch_no", b.OutBatchNo, "out_detail_no", r.OutDetailNo)
		return "", "OTHER_DETAIL"
	case res.Status != wechatpay.DetailFail:
		// Two verified answers disagree; the next pass reads both again.
		d.log.Warn("detail query disagrees with the page", "out_batch_no", b.OutBatchNo, "out_detail_no", r.OutDetailNo,
			"page", r.Status, "detail", res.Status)
		return "", "STATUS_" + res.Status
	case res.FailReason == "":
		return "", "NO_REASON"
	}
	return res.FailReason, ""
}

// reportReasons logs a pass's fail-reason work once: how many reasons were fetched and how
// many FAIL rows were deferred, and why. FAIL rows still without a reason once the batch has
// been finished for longer than the not-found grace are logged at ERROR, by out_detail_no
// (never openid or name), once per pass, at most once per half poll interval per batch
// (a failing batch query is retried sooner); the pass that brings the last of them in logs
// the recovery.
func (d *batchRail) reportReasons(ctx context.Context, b ledger.Batch, p *reasonPass, finishedAt time.Time) {
	if ctx.Err() != nil {
		return // shutting down: the next start pages the batch again
	}
	if p.fetched > 0 || len(p.deferred) > 0 {
		d.log.Info("fail reasons", "out_batch_no", b.OutBatchNo, "fetched", p.fetched, "deferred", len(p.deferred),
			"why", p.whyString())
	}
	now := d.now()
	if len(p.deferred) == 0 {
		if !p.complete {
			return
		}
		if since, ok := d.overdue.clear(b.OutBatchNo); ok {
			d.log.Info("fail reasons complete after the grace period", "out_batch_no", b.OutBatchNo, "overdue_since", since)
		}
		return
	}
	if now.Sub(finishedAt) <= d.poll.NotFoundGrace || !d.overdue.due(b.OutBatchNo, now, d.poll.Interval/2) {
		return
	}
	d.log.Error("FAIL details without a reason after the grace period: not applied nor published until WeChat gives it",
		"out_batch_no", b.OutBatchNo, "finished_at", finishedAt, "count", len(p.deferred), "why", p.whyString(),
		"out_detail_nos", p.deferred[:min(len(p.deferred), maxLoggedKeys)])
}

// overdueLog rate-limits the ERROR line of batches whose FAIL rows lack a reason past the
// grace period. The zero value is ready; it is safe for concurrent use by the workers.
type overdueLog struct {
	mu      sync.Mutex
	batches map[string]overdue // by out_batch_no
}

// overdue is when a batch's ERROR line was first and last logged.
type overdue struct{ first, last time.Time }

// due reports whether the batch's ERROR line may be logged now (at most once per every),
// and records it if so.
func (o *overdueLog) due(outBatchNo string, now time.Time, every time.Duration) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.batches == nil {
		o.batches = map[string]overdue{}
	}
	b, seen := o.batches[outBatchNo]
	if seen && now.Sub(b.last) < every {
		return false
	}
	if !seen {
		b.first = now
	}
	b.last = now
	o.batches[outBatchNo] = b
	return true
}

// clear forgets the batch and returns when its first ERROR line was logged, if any was.
func (o *overdueLog) clear(outBatchNo string) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	b, ok := o.batches[outBatchNo]
	delete(o.batches, outBatchNo)
	return b.first, ok
}
