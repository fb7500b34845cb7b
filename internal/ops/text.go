package ops

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
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
	var head [][]string
	kv := func(k, format string, a ...any) { head = append(head, []string{k, fmt.Sprintf(format, a...)}) }
	rt := s.Runtime
	kv("processor", "%s", orDash(instance(s)))
	if s.RuntimeErr != "" {
		kv("runtime", "unknown: %s", s.RuntimeErr)
	} else {
		kv("merchant", "%s", orDash(rt.MchID))
		kv("product", "%s", orDash(rt.Product))
		kv("version", "%s", orDash(rt.Version))
		if rt.Ready {
			kv("ready", "yes")
		} else {
			kv("ready", "NO: %s", strings.Join(rt.NotReady, "; "))
		}
		kv("uptime", "%s", orDash(age(now, rt.Started)))
		if rt.ConsumerErr != "" {
			kv("consumer", "unknown: %s", rt.ConsumerErr)
		} else {
			kv("consumer", "%d pending, %d ack pending", rt.ConsumerPending, rt.ConsumerAckPending)
		}
		kv("in flight", "%d batches", rt.InFlight)
		for _, b := range rt.Breakers {
			kv("breaker "+b.Name, "%s", b.State)
		}
		for _, si := range rt.Silent {
			kv("SILENT "+si.Instance, "on %s, last seen %s ago (ledger seq %d, event %d): the payouts it claimed are stranded",
				orDash(si.Host), orDash(age(now, si.SeenAt)), si.LastSeq, si.LastEvent)
		}
	}
	if s.LedgerErr != "" {
		kv("ledger", "unknown: %s", s.LedgerErr)
		return table(w, "", nil, head)
	}
	l := s.Ledger
	kv("last minute", "%d received, %d paid (%s yuan)", l.Received1m, l.Paid1m.Count, Yuan(l.Paid1m.Amount))
	var outbox []string
	for _, k := range sortedKeys(l.OutboxPending) {
		outbox = append(outbox, fmt.Sprintf("%d %s", l.OutboxPending[k], k))
	}
	oldest := ""
	if !l.OldestUnpublishedAt.IsZero() {
		oldest = ", oldest " + age(now, l.OldestUnpublishedAt)
	}
	kv("unpublished", "%s%s", orDash(strings.Join(outbox, ", ")), oldest)
	kv("open batches", "%d, oldest %s", l.OpenTotal, orDash(age(now, l.OldestOpen)))
	for _, c := range l.Parked {
		kv("PARKED "+c.Kind, "%d with %s", c.Count, c.Code)
	}
	if err := table(w, "", nil, head); err != nil {
		return err
	}

	var rows [][]string
	var total ledger.StateTotal
	for _, st := range sortedKeys(l.Payouts) {
		t := l.Payouts[st]
		total.Count, total.Amount = total.Count+t.Count, total.Amount+t.Amount
		rows = append(rows, []string{st, fmt.Sprint(t.Count), Yuan(t.Amount)})
	}
	rows = append(rows, []string{"total", fmt.Sprint(total.Count), Yuan(total.Amount)})
	if err := table(w, "payouts by state:", []string{"state", "count", "yuan"}, rows); err != nil {
		return err
	}
	if len(l.Batches) > 0 {
		rows = rows[:0]
		for _, b := range l.Batches {
			rows = append(rows, []string{b.Rail, b.State, fmt.Sprint(b.Count)})
		}
		if err := table(w, "batches by rail and state:", []string{"rail", "state", "count"}, rows); err != nil {
			return err
		}
	}
	if len(l.Open) > 0 {
		rows = rows[:0]
		for _, b := range openRows(l.Open, now) {
			rows = append(rows, []string{b.OutBatchNo, b.Rail, b.State, flag(b), orDash(b.LastErrorCode), fmt.Sprint(b.Attempts),
				age(now, b.SealedAt), orDash(next(now, b.NextAt)), fmt.Sprint(b.ParkedBills), orDash(oneLine(b.LastErrorMessage))})
		}
		title := fmt.Sprintf("open batches (%d of %d), parked and stuck first:", len(l.Open), l.OpenTotal)
		if err := table(w, title, []string{"out_batch_no", "rail", "state", "flag", "code", "attempts", "age", "next try",
			"parked bills", "WeChat's message"}, rows); err != nil {
			return err
		}
	}
	if len(l.RecentFailures) > 0 {
		rows = rows[:0]
		for _, f := range l.RecentFailures {
			rows = append(rows, []string{f.OutDetailNo, orDash(f.Rail), f.State, orDash(f.FailReason), Yuan(f.Amount), orDash(f.OpenID),
				orDash(f.OutBatchNo), orDash(ts(f.UpdatedAt))})
		}
		if err := table(w, "recent failures:", []string{"out_detail_no", "rail", "state", "reason", "yuan", "openid",
			"out_batch_no", "at"}, rows); err != nil {
			return err
		}
	}
	return nil
}

// table writes an aligned table: a blank line and title first when title is set, then header
// (when set) and rows, indented under a title.
func table(w io.Writer, title string, header []string, rows [][]string) error {
	indent := ""
	if title != "" {
		fmt.Fprintf(w, "\n%s\n", title)
		indent = "  "
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if header != nil {
		fmt.Fprintln(tw, indent+strings.Join(header, "\t"))
	}
	for _, r := range rows {
		fmt.Fprintln(tw, indent+strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
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
