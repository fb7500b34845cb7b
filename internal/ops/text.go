package ops

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// human formats a duration for a person: "45s", "12m3s", "5h4m", "3d7h".
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return d.Truncate(time.Second).String()
}

// age is how long ago t was, "" for a zero t.
func age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return human(now.Sub(t))
}

// next says when t comes: "now", "in 2m0s", "overdue 7m0s"; "" for a zero t.
func next(now, t time.Time) string {
	switch d := t.Sub(now); {
	case t.IsZero():
		return ""
	case d > time.Second:
		return "in " + human(d)
	case d < -time.Second:
		return "overdue " + human(d)
	}
	return "now"
}

// ts formats a time for the page and the text, "" for a zero t.
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

// WriteText writes s for a terminal (`processor status`): who and whether ready, throughput
// and backlog, breakers, payouts and batches by state, parked counts, the open batches
// (parked and stuck first) and the recent failures. Openids are masked; a part that could not
// be read is named with its error.
func WriteText(w io.Writer, s Status) error {
	s = s.Masked()
	now := s.Ledger.At
	if now.IsZero() {
		now = time.Now()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format+"\n", a...) }
	rt := s.Runtime
	p("processor\t%s", orDash(instance(s)))
	if s.RuntimeErr != "" {
		p("runtime\tunknown: %s", s.RuntimeErr)
	} else {
		p("merchant\t%s", orDash(rt.MchID))
		p("product\t%s", orDash(rt.Product))
		p("version\t%s", orDash(rt.Version))
		if rt.Ready {
			p("ready\tyes")
		} else {
			p("ready\tNO: %s", strings.Join(rt.NotReady, "; "))
		}
		p("uptime\t%s", age(now, rt.Started))
		if rt.ConsumerErr != "" {
			p("consumer\tunknown: %s", rt.ConsumerErr)
		} else {
			p("consumer\t%d pending, %d ack pending", rt.ConsumerPending, rt.ConsumerAckPending)
		}
		p("in flight\t%d batches", rt.InFlight)
		for _, b := range rt.Breakers {
			p("breaker %s\t%s", b.Name, b.State)
		}
	}
	if s.LedgerErr != "" {
		p("ledger\tunknown: %s", s.LedgerErr)
		return tw.Flush()
	}
	l := s.Ledger
	p("last minute\t%d received, %d paid (%s yuan)", l.Received1m, l.Paid1m.Count, Yuan(l.Paid1m.Amount))
	var outbox []string
	for _, k := range sortedKeys(l.OutboxPending) {
		outbox = append(outbox, fmt.Sprintf("%d %s", l.OutboxPending[k], k))
	}
	oldest := ""
	if !l.OldestUnpublishedAt.IsZero() {
		oldest = ", oldest " + age(now, l.OldestUnpublishedAt)
	}
	p("unpublished\t%s%s", orDash(strings.Join(outbox, ", ")), oldest)
	p("open batches\t%d, oldest %s", l.OpenTotal, orDash(age(now, l.OldestOpen)))
	for _, c := range l.Parked {
		p("PARKED %s\t%d with %s", c.Kind, c.Count, c.Code)
	}
	p("")
	p("payouts\tcount\tyuan")
	for _, st := range sortedKeys(l.Payouts) {
		t := l.Payouts[st]
		p("  %s\t%d\t%s", st, t.Count, Yuan(t.Amount))
	}
	p("batches\trail\tcount")
	for _, b := range l.Batches {
		p("  %s\t%s\t%d", b.State, b.Rail, b.Count)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	if len(l.Open) > 0 {
		fmt.Fprintf(w, "\nopen batches (%d of %d), parked and stuck first:\n", len(l.Open), l.OpenTotal)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		p("  out_batch_no\trail\tstate\tflag\tcode\tattempts\tage\tnext try\tparked bills\tmessage")
		for _, b := range openRows(l.Open, now) {
			p("  %s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s", b.OutBatchNo, b.Rail, b.State, flag(b), orDash(b.LastErrorCode),
				b.Attempts, age(now, b.SealedAt), orDash(next(now, b.NextAt)), b.ParkedBills, oneLine(b.LastErrorMessage))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	if len(l.RecentFailures) > 0 {
		fmt.Fprintln(w, "\nrecent failures:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		p("  out_detail_no\trail\tstate\treason\tyuan\topenid\tout_batch_no\tat")
		for _, f := range l.RecentFailures {
			p("  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", f.OutDetailNo, f.Rail, f.State, orDash(f.FailReason), Yuan(f.Amount),
				f.OpenID, orDash(f.OutBatchNo), ts(f.UpdatedAt))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	return nil
}

// flag names why an open batch is listed first: PARKED, STUCK or nothing.
func flag(b openRow) string {
	switch {
	case b.Parked:
		return "PARKED"
	case b.Stuck:
		return "STUCK"
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a message on one line of a table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
