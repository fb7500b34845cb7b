package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/paystream/paystream/pkg/payout"
)

// maxReasonLen bounds the reason header, so a dead letter's headers stay small.
const maxReasonLen = 1024

// deadLetters publishes refused requests, with their reason, to <subject>.<class> through
// watermill (one message at a time is fine here: bad input is rare), then terminates the
// original so it is never redelivered. The message id ("dl-<stream>-<seq>") makes a
// repeated dead-letter of the same stream sequence a no-op.
//
// A dead letter always fits and never holds a real name in plain text: the body is the
// original without a top-level user_name, truncated to maxBody bytes; a body that cannot
// be parsed and may hold a name is withheld (payout.HeaderBody says which).
type deadLetters struct {
	pub     message.Publisher
	subject string
	maxBody int
	log     *slog.Logger
}

// send dead-letters m and terminates it. On error nothing was terminated: the caller
// leaves m unacknowledged (or naks it) so that it comes back.
func (d *deadLetters) send(ctx context.Context, m jetstream.Msg, class, reason string) error {
	md, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	if err := d.publish(ctx, md.Stream, seq, m.Subject(), m.Data(), class, reason, md.NumDelivered); err != nil {
		return err
	}
	if err := m.TermWithReason(class + ": " + truncate(reason, 200)); err != nil {
		d.log.Warn("term failed", "err", err)
	}
	return nil
}

// publish sends one dead letter for the stream message stream/seq.
func (d *deadLetters) publish(ctx context.Context, stream, seq, subject string, data []byte, class, reason string, deliveries uint64) error {
	body, note := deadLetterBody(data, d.maxBody)
	wm := message.NewMessage("dl-"+stream+"-"+seq, body)
	wm.SetContext(ctx)
	wm.Metadata.Set(payout.HeaderReason, truncate(reason, maxReasonLen))
	wm.Metadata.Set(payout.HeaderReasonClass, class)
	wm.Metadata.Set(payout.HeaderOrigSubject, truncate(subject, 256))
	wm.Metadata.Set(payout.HeaderOrigStreamSeq, seq)
	wm.Metadata.Set(payout.HeaderDeliveries, strconv.FormatUint(deliveries, 10))
	if note != "" {
		wm.Metadata.Set(payout.HeaderBody, note)
	}
	if err := d.pub.Publish(d.subject+"."+class, wm); err != nil {
		return fmt.Errorf("dead letter %s seq %s: %w", class, seq, err)
	}
	d.log.Warn("payout request dead-lettered", "class", class, "reason", truncate(reason, 200), "stream_seq", seq, "body", note)
	return nil
}

// deadLetterBody returns what a dead letter carries of data, and a note when that is not
// data unchanged. Valid JSON loses every user_name field, at any depth and however its key is
// escaped (a plaintext real name must not rest in the dead-letter stream); anything else
// that might hold one (it mentions "user" in any case, or has a \u escape) is withheld.
// What is kept is cut to max bytes.
func deadLetterBody(data []byte, max int) ([]byte, string) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // amounts keep their text
	var v any
	if dec.Decode(&v) == nil && dec.InputOffset() == int64(len(bytes.TrimRight(data, " \t\r\n"))) {
		if !dropUserName(v) {
			return cut(data, max, "")
		}
		if b, err := json.Marshal(v); err == nil {
			return cut(b, max, "user_name removed")
		}
	}
	if mentionsUser(data) {
		return nil, fmt.Sprintf("withheld: %d bytes that are not valid JSON and may hold a real name", len(data))
	}
	return cut(data, max, "")
}

// dropUserName deletes every "user_name" key in v, at any depth, and reports whether it did.
func dropUserName(v any) bool {
	dropped := false
	switch x := v.(type) {
	case map[string]any:
		if _, ok := x["user_name"]; ok {
			delete(x, "user_name")
			dropped = true
		}
		for _, e := range x {
			dropped = dropUserName(e) || dropped
		}
	case []any:
		for _, e := range x {
			dropped = dropUserName(e) || dropped
		}
	}
	return dropped
}

// cut truncates body to max bytes (at a UTF-8 boundary) and adds that to note.
func cut(body []byte, max int, note string) ([]byte, string) {
	if len(body) <= max {
		return body, note
	}
	n := max
	for n > 0 && !utf8.RuneStart(body[n]) {
		n--
	}
	t := fmt.Sprintf("truncated: %d bytes, first %d kept", len(body), n)
	if note != "" {
		t = note + "; " + t
	}
	return body[:n], t
}

// mentionsUser reports whether b contains "user" in any case or a \u escape (which could
// spell it): whether a user_name field could hide in it.
func mentionsUser(b []byte) bool {
	return bytes.Contains(bytes.ToLower(b), []byte("user")) || bytes.Contains(b, []byte(`\u`))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
