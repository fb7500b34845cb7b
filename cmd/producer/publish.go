package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/config"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/pkg/payout"
)

const publishUsage = `usage: producer publish --file F [flags]

Validates every record with pkg/payout (for the merchant's product: --product bills checks
every record for the transfer bills rail, with its scene's report rows) and publishes the valid ones to <subject-prefix>.<mchid>
with Nats-Msg-Id = out_detail_no + "." + a digest of what it pays to whom (payout.MsgID), then
waits for every ack: an identical re-publish counts as a duplicate, while the same key with
other content is published (the processor refuses it as a conflict). A user_name is sealed
with WeChat Pay's public key (--wechatpay-public-key-file/-id) and never published in plain
text; without the key a record with a name is invalid. Invalid records are reported with
their line number and not published. Ends with one summary line on stdout; exits 1 if any
publish failed (or, with --strict, on the first invalid record).
`

// cmdPublish implements "producer publish".
func cmdPublish(ctx context.Context, args []string, e cli.Env) int {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	cli.SetUsage(fs, publishUsage+"\nflags:\n")
	file := fs.String("file", "", "input file: JSON lines or CSV; - for stdin (required)")
	format := fs.String("format", "", "jsonl or csv (default: from the file extension, else jsonl)")
	strict := fs.Bool("strict", false, "stop at the first invalid record")
	raw := fs.Bool("raw", false, "publish JSON lines as they are, without validation or sealing (dead-letter tests)")
	path := configFlags(fs, map[string]string{
		"product":                   "WeChat Pay product of the merchant: batches or bills; bills checks every record for transfer bills",
		"subject-prefix":            "subject prefix",
		"max-in-flight":             "most unacknowledged publishes",
		"retry-for":                 "re-publish after a passing failure (no answer, id in process) this long (0: never)",
		"wechatpay-public-key-file": "WeChat Pay public key (PEM) that seals user_name",
		"wechatpay-public-key-id":   "its id, PUB_KEY_ID_… (or the platform certificate serial)",
	})
	if ok, code := cli.Parse(fs, args, e); !ok {
		return code
	}
	if *file == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cfg, err := loadConfig(*path, e.Getenv, config.Overrides(fs)...)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	if *format == "" {
		*format = "jsonl"
		if strings.EqualFold(filepath.Ext(*file), ".csv") {
			*format = "csv"
		}
	}
	if *format != "jsonl" && *format != "csv" {
		fmt.Fprintf(e.Stderr, "producer: --format %q: want jsonl or csv\n", *format)
		return 2
	}
	if *raw && *format != "jsonl" {
		fmt.Fprintln(e.Stderr, "producer: --raw needs JSON lines")
		return 2
	}

	pubOpts, err := cfg.publisherOptions()
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	in, size, err := openInput(*file, e.Stdin)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	defer in.Close()
	nc, err := connect(cfg)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return 1
	}
	pub := payout.NewPublisher(js, pubOpts...)

	out := &syncWriter{w: e.Stderr}
	s := newSender(cfg.MaxInFlight, out, retrier{js: js, ctx: ctx, window: cfg.RetryFor})
	counted := &countingReader{r: in}
	started := time.Now()
	stopProgress := cli.StartProgress(e.Stderr, 100*time.Millisecond, func() string {
		return progressLine(s, counted.n.Load(), size, time.Since(started))
	})
	readErr := readRecords(counted, *format, func(rec record) bool {
		if ctx.Err() != nil {
			return false
		}
		var f jetstream.PubAckFuture
		err := rec.err
		if err == nil && *raw {
			f, err = s.publish(func() (jetstream.PubAckFuture, error) { return publishRaw(js, cfg.SubjectPrefix, rec.data) })
		} else if err == nil {
			var r payout.Request
			if r, err = payout.Decode(rec.data); err == nil {
				f, err = s.publish(func() (jetstream.PubAckFuture, error) { return pub.PublishAsync(r) })
			}
		}
		switch {
		case err == nil:
			s.track(rec.line, f)
		case isBadInput(err):
			s.invalid.Add(1)
			out.printf("line %d: %v\n", rec.line, err)
			return !*strict
		default:
			s.failed.Add(1)
			out.printf("line %d: publish failed: %v\n", rec.line, err)
		}
		return true
	})
	s.wait()
	stopProgress()
	fmt.Fprintf(e.Stdout, "published %d, duplicates %d, invalid %d, failed %d\n",
		s.published.Load(), s.duplicates.Load(), s.invalid.Load(), s.failed.Load())
	switch {
	case readErr != nil:
		fmt.Fprintln(e.Stderr, "producer: read:", readErr)
		return 1
	case ctx.Err() != nil:
		fmt.Fprintln(e.Stderr, "producer: interrupted")
		return 1
	case s.failed.Load() > 0 || *strict && s.invalid.Load() > 0:
		return 1
	}
	return 0
}

// isBadInput reports whether err is about the record itself (not published, not retried).
func isBadInput(err error) bool {
	return errors.Is(err, payout.ErrMalformed) || errors.Is(err, payout.ErrInvalid) || errors.Is(err, errBadRecord)
}

// openInput opens path ("-" is stdin) and returns its size when known (else -1).
func openInput(path string, stdin io.Reader) (io.ReadCloser, int64, error) {
	if path == "-" {
		return io.NopCloser(stdin), -1, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return f, -1, nil
	}
	return f, st.Size(), nil
}

// connect dials NATS with the credentials and TLS settings of cfg.
func connect(cfg Config) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("paystream-producer")}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", cfg.URL, err)
	}
	return nc, nil
}

// publishRaw publishes data as it is: unvalidated, and a user_name unsealed. The subject
// comes from mchid when the line is a JSON object with a valid one, else it is
// <prefix>.invalid. The Nats-Msg-Id is payout.MsgID of the line when payout.Decode accepts
// it; a line it refuses has none.
func publishRaw(js jetstream.JetStream, prefix string, data []byte) (jetstream.PubAckFuture, error) {
	var ids struct {
		MchID string `json:"mchid"`
	}
	_ = json.Unmarshal(data, &ids) // best effort: a malformed line is exactly what --raw is for
	subject := payout.Subject(prefix, "invalid")
	if payout.ValidNo(ids.MchID) {
		subject = payout.Subject(prefix, ids.MchID)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	if r, err := payout.Decode(data); err == nil {
		msg.Header.Set(jetstream.MsgIDHeader, payout.MsgID(&r))
	}
	return js.PublishMsgAsync(msg)
}

// retrier re-publishes a message whose asynchronous publish failed for a passing reason (no
// answer during a NATS node restart, or JetStream's "duplicate message id is in process"
// while an earlier publish of the same id is still being stored), with a capped backoff, for
// up to window. The Nats-Msg-Id is unchanged, so a retry can never store a payout twice.
type retrier struct {
	js     jetstream.JetStream
	ctx    context.Context
	window time.Duration
}

// retry re-publishes msg after err while the failure is passing (payout.Republish).
func (r retrier) retry(msg *nats.Msg, err error) (*jetstream.PubAck, error) {
	return payout.Republish(r.ctx, r.js, msg, err, r.window, nil)
}

// sender tracks publish futures with at most cap(slots) in flight and counts the outcomes.
type sender struct {
	slots   chan struct{}
	pending chan pendingAck
	done    chan struct{}
	out     *syncWriter
	retrier retrier

	sent, published, duplicates, invalid, failed atomic.Int64
}

type pendingAck struct {
	line int
	f    jetstream.PubAckFuture
}

func newSender(maxInFlight int, out *syncWriter, r retrier) *sender {
	s := &sender{
		retrier: r,
		slots:   make(chan struct{}, maxInFlight),
		pending: make(chan pendingAck, maxInFlight),
		done:    make(chan struct{}),
		out:     out,
	}
	go s.collect()
	return s
}

// publish takes an in-flight slot, blocking while maxInFlight acks are outstanding, and
// calls fn. The slot is released when fn fails, else by the collector once f resolves, so
// JetStream's own pending limit (the same number) is never hit.
func (s *sender) publish(fn func() (jetstream.PubAckFuture, error)) (jetstream.PubAckFuture, error) {
	s.slots <- struct{}{}
	f, err := fn()
	if err != nil {
		<-s.slots
	}
	return f, err
}

// track hands f, returned by a successful publish, to the collector.
func (s *sender) track(line int, f jetstream.PubAckFuture) {
	s.sent.Add(1)
	s.pending <- pendingAck{line: line, f: f}
}

// collect waits for each future in order. The async publish timeout guarantees each one
// resolves.
func (s *sender) collect() {
	defer close(s.done)
	for p := range s.pending {
		select {
		case ack := <-p.f.Ok():
			s.count(ack)
		case err := <-p.f.Err():
			if ack, err := s.retrier.retry(p.f.Msg(), err); err == nil {
				s.count(ack)
				break
			}
			s.failed.Add(1)
			s.out.printf("line %d: publish failed: %v\n", p.line, err)
		}
		<-s.slots
	}
}

func (s *sender) count(ack *jetstream.PubAck) {
	if ack.Duplicate {
		s.duplicates.Add(1)
	} else {
		s.published.Add(1)
	}
}

// wait returns when every tracked publish is acknowledged or failed.
func (s *sender) wait() {
	close(s.pending)
	<-s.done
}

// syncWriter serialises lines written from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) printf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.w, format, args...)
}

// countingReader counts the bytes read through it, for the progress bar.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

// Read implements io.Reader.
func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progressLine is publish's progress on a terminal: how far into the file, what was sent and
// acknowledged (and how fast), what was refused.
func progressLine(s *sender, read, size int64, elapsed time.Duration) string {
	acked := s.published.Load() + s.duplicates.Load()
	status := fmt.Sprintf("sent %d  acked %d (%d/s)  invalid %d  failed %d", s.sent.Load(), acked, cli.PerSecond(acked, elapsed), s.invalid.Load(), s.failed.Load())
	if size <= 0 {
		return status
	}
	const width = 30
	done := int(min(read, size) * width / size)
	return fmt.Sprintf("[%s%s] %3d%%  %s", strings.Repeat("#", done), strings.Repeat(".", width-done), read*100/size, status)
}
