package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// waitLog waits (a minute at most) for the line w is watching for; failing, it prints the
// processor's log.
func waitLog(t *testing.T, w *testingutil.LogWatch, what string) {
	t.Helper()
	select {
	case <-w.Seen():
	case <-time.After(time.Minute):
		t.Fatalf("no %s in the processor's log after a minute; the log:\n%s", what, w.String())
	}
}

// ghostClaimsFirst starts a processor on a fresh sandbox and, before o's payouts are
// published, claims the first of them for instance ghost0001 and the stream sequence its
// message will get (it is published first): an instance that claimed it and stopped before
// committing it. It returns the processor, its config, its log watch (for "handed back"), the
// key and that sequence.
func ghostClaimsFirst(t *testing.T, o synth.Options) (*running, Config, *testingutil.LogWatch, *wechatpaytest.Server, string, uint64) {
	t.Helper()
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfg := testConfig(t, srv)
	logs := testingutil.NewLogWatch("handed back")
	r := startProcessor(t, cfg, logs)
	ctx := context.Background()
	var first string
	stop := errors.New("stop")
	if err := synth.Each(ctx, o, func(rec synth.Record) error { first = rec.Req.OutDetailNo; return stop }); !errors.Is(err, stop) {
		t.Fatal(err)
	}
	st, err := r.js.Stream(ctx, cfg.NATS.Topology.Stream)
	if err != nil {
		t.Fatal(err)
	}
	seq := st.CachedInfo().State.LastSeq + 1
	kv := mustKV(t, r.js, cfg.NATS.Topology.ClaimsBucket)
	if _, err := claims.New(r.js, kv, "ghost0001").Claim(ctx, []claims.Item{{Key: claims.Key(o.MchID, first), StreamSeq: seq}}); err != nil {
		t.Fatal(err)
	}
	return r, cfg, logs, srv, first, seq
}

// TestRun_HandsBackAnotherInstancesMessage: intake claims before it commits, so a key
// another instance claimed for this very message (same stream sequence) may not be in that
// instance's ledger yet. It is never recorded here as that instance's duplicate (and acked:
// nobody would pay it): the message is handed back while its neighbours are paid. Once the
// claim is this instance's (an adoption moves it), the payout is taken in and paid once.
func TestRun_HandsBackAnotherInstancesMessage(t *testing.T) {
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 20, 7, 0, 0, 0
	r, cfg, logs, srv, first, _ := ghostClaimsFirst(t, o)
	ctx := context.Background()
	kv := mustKV(t, r.js, cfg.NATS.Topology.ClaimsBucket)
	sent := publish(t, r.js, o)
	waitLog(t, logs, "hand-back")

	db, err := ledger.OpenReadOnly(ctx, cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, len(sent.valid)-1, time.Minute)
	if p, err := db.Payout(ctx, first); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("%s recorded here as %s (%v) while another instance's claim on its message stood", first, p.State, err)
	}
	if n := srv.Paid()[first]; n != 0 {
		t.Fatalf("%s paid %d times before its claim moved here", first, n)
	}

	held, err := claims.OwnedBy(ctx, r.js, kv, "ghost0001")
	if err != nil || len(held) != 1 {
		t.Fatalf("ghost's claims %v, %v", held, err)
	}
	if err := claims.Transfer(ctx, r.js, kv, held[0], db.InstanceID()); err != nil {
		t.Fatal(err)
	}
	waitPaidOnce(t, cfg.Ledger, srv, sent.valid)
}

// TestRun_PausesBesideAnOlderVersion: an instance of an older version commits before it
// claims and reads a claim naming a stream sequence as a plain duplicate, so while one of the
// merchant is alive this one claims nothing (its groups go back at once); when it stops,
// the payouts are paid.
func TestRun_PausesBesideAnOlderVersion(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfg := testConfig(t, srv)
	ns := natstest.Run(t)
	cfg.NATS.URL = ns.ClientURL()
	// The older instance's clean stop ends the pause at the next listing, so nothing here
	// waits for silent-after; a long one keeps a loaded machine's late beats from reading as
	// the older instance gone (which would rightly lift the pause).
	cfg.NATS.Topology.HeartbeatEvery, cfg.NATS.Topology.SilentAfter = 200*time.Millisecond, time.Minute
	ctx := context.Background()
	js := natstest.Connect(t, ns)
	kv, err := instances.Ensure(ctx, js, cfg.NATS.Topology.InstancesBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	older, err := instances.Start(ctx, instances.BeatConfig{JS: js, KV: kv, Self: instances.Info{Instance: "older0001", MchID: cfg.WeChatPay.MchID},
		Every: cfg.NATS.Topology.HeartbeatEvery, Status: func() instances.LedgerPos { return instances.LedgerPos{} }})
	if err != nil {
		t.Fatal(err)
	}
	logs := testingutil.NewLogWatch("intake handed a group back")
	r := startProcessor(t, cfg, logs)

	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 20, 8, 0, 0, 0
	sent := publish(t, r.js, o)
	waitLog(t, logs, "group handed back")
	db, err := ledger.OpenReadOnly(ctx, cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if s, err := db.Summary(ctx); err != nil || len(s.Payouts) != 0 {
		t.Fatalf("payouts recorded beside an older version: %+v, %v", s.Payouts, err)
	}
	if held, err := claims.OwnedBy(ctx, r.js, mustKV(t, r.js, cfg.NATS.Topology.ClaimsBucket), db.InstanceID()); err != nil || len(held) != 0 {
		t.Fatalf("%d claims made beside an older version (%v)", len(held), err)
	}

	if err := older.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitPaidOnce(t, cfg.Ledger, srv, sent.valid)
}

func mustKV(t *testing.T, js jetstream.JetStream, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestRun_DuplicateDoesNotAckTheOwnersMessage: this replica records a re-publish of a key as
// another instance's DUPLICATE; that instance claimed the key for the first message and has
// not committed it. When the first message comes here again, the key is in this ledger, yet
// the message must still go back to its owner: acked here, nobody would ever pay it (the soak
// found exactly that).
func TestRun_DuplicateDoesNotAckTheOwnersMessage(t *testing.T) {
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 5, 9, 0, 0, 0
	r, cfg, logs, srv, first, seq := ghostClaimsFirst(t, o)
	ctx := context.Background()
	sent := publish(t, r.js, o)
	waitLog(t, logs, "hand-back")

	// The same request again, past the duplicate window (another message id).
	m := nats.NewMsg(payout.Subject(payout.DefaultSubjectPrefix, o.MchID))
	m.Data = sent.records[first].Line
	m.Header.Set(jetstream.MsgIDHeader, first+"-again")
	if _, err := r.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	db, err := ledger.OpenReadOnly(ctx, cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	testingutil.PollEvery(t, time.Minute, 20*time.Millisecond, func() (bool, string) {
		p, err := db.Payout(ctx, first)
		return err == nil && p.State == ledger.PayoutDuplicate, fmt.Sprintf("%s: %+v, %v", first, p.State, err)
	})
	// The first message comes back here at least once more, and is handed back again.
	handed := strings.Count(logs.String(), "handed back")
	testingutil.PollEvery(t, time.Minute, 20*time.Millisecond, func() (bool, string) {
		n := strings.Count(logs.String(), "handed back")
		return n > handed, fmt.Sprintf("%d hand-backs", n)
	})
	cons, err := r.js.Consumer(ctx, cfg.NATS.Topology.Stream, cfg.NATS.Topology.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.AckFloor.Stream >= seq {
		t.Fatalf("the owner's message (stream seq %d) was acked here (ack floor %d): nobody would pay %s", seq, ci.AckFloor.Stream, first)
	}
	if n := srv.Paid()[first]; n != 0 {
		t.Fatalf("%s paid %d times here", first, n)
	}
}
