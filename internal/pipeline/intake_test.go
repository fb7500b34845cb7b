package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/metrics"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// TestCommit_WritesEachRowOnce: intake's commit stage writes each row once, in its state. A
// key another instance owns is recorded DUPLICATE at once; owned payouts are held (not in the
// ledger, their messages unacked) until a batch of them fills, which is sealed with them in
// one transaction (cap 4: six owned rows → one batch of four, two held); when a fetch comes
// back short (no backlog), the held rows are committed CLAIMED and handed to the sealer, which
// seals them as before. A held payout's message stays unacked until its row commits, and is
// acked then through its reply subject alone (ackRef).
func TestCommit_WritesEachRowOnce(t *testing.T) {
	ctx := context.Background()
	db, js, kv := claimsSetup(t)
	key := batching.GroupKeyFor(payout.RailDirect, &payout.Request{MchID: "1900000001", AppID: "wxa"})
	rows := testRows("W", 7)
	for i := range rows {
		rows[i].GroupKey = key
	}
	if _, err := db.InsertPayouts(ctx, testRows("OLD", 3)); err != nil { // seqs 1-3 are taken
		t.Fatal(err)
	}
	d := &driver{log: slog.New(slog.DiscardHandler), now: time.Now}
	br := newBatchRail(d, batching.DefaultNames, "", BreakerConfig{Failures: 5, OpenTimeout: time.Second})
	bcfg := batching.Config{InstanceID: db.InstanceID(), CapDirect: 4}
	hold, err := newHolding(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	sealed := 0
	toSealer := make(chan []ledger.Payout, 1)
	in := &intake{m: metrics.New(""), prog: &progress{}, db: db, claims: claims.New(js, kv, db.InstanceID()), log: slog.New(slog.DiscardHandler),
		rails: map[string]rail{payout.RailDirect: br}, hold: hold, claimed: toSealer, sealed: func() { sealed++ }, nc: js.Conn()}
	cons, msgs := deliveries(t, js, len(rows))
	g := claimedGroup{msgs: msgs, rows: rows}
	for i := range rows {
		g.fresh = append(g.fresh, i)
		g.owners = append(g.owners, claims.Owner{Instance: db.InstanceID()})
	}
	g.owners[6] = claims.Owner{Instance: "otherInstance", Digest: rows[6].ContentHash[:claims.DigestSize]}

	state := func(k string) string {
		t.Helper()
		p, err := db.Payout(ctx, k)
		if err != nil {
			return err.Error()
		}
		return p.State
	}
	if err := in.commit(ctx, nil, g); err != nil {
		t.Fatal(err)
	}
	batch := batching.OutBatchNo(db.InstanceID(), 5) // W6, the duplicate, took seq 4
	for k, want := range map[string]string{"W0": ledger.PayoutSealed, "W3": ledger.PayoutSealed, "W6": ledger.PayoutDuplicate,
		"W4": ledger.ErrNotFound.Error(), "W5": ledger.ErrNotFound.Error()} {
		if got := state(k); !strings.Contains(got, want) {
			t.Errorf("after a full group: %s is %q, want %q", k, got, want)
		}
	}
	b, err := db.Batch(ctx, batch)
	if err != nil || b.State != ledger.BatchSealed || b.TotalNum != 4 || b.TotalAmount != 400 || sealed != 1 {
		t.Fatalf("batch %s: %+v, %v (driver woken %d times); want SEALED, 4 details, 400 fen, woken once", batch, b, err, sealed)
	}
	if len(hold.rows) != 2 {
		t.Fatalf("held %d payouts, want W4 and W5", len(hold.rows))
	}
	waitAckPending(t, cons, 2) // W4's and W5's

	if err := in.commit(ctx, nil, claimedGroup{short: true}); err != nil {
		t.Fatal(err)
	}
	waitAckPending(t, cons, 0)
	rest := <-toSealer
	var restKeys []string
	for _, p := range rest {
		restKeys = append(restKeys, p.OutDetailNo)
		if state(p.OutDetailNo) != ledger.PayoutClaimed || p.Seq == 0 {
			t.Errorf("%s handed to the sealer as %s seq %d, want CLAIMED with its seq", p.OutDetailNo, state(p.OutDetailNo), p.Seq)
		}
	}
	if want := []string{"W4", "W5"}; !slices.Equal(restKeys, want) || len(hold.rows) != 0 {
		t.Fatalf("handed to the sealer %v (still held %d), want %v", restKeys, len(hold.rows), want)
	}
	if got, want := db.NextSeq(), int64(11); got != want {
		t.Errorf("NextSeq = %d, want %d", got, want)
	}

	// The rest seals through the sealer, as CLAIMED members.
	s := &sealer{db: db, rails: in.rails, pending: newPendingSet(), sealed: func() {}, now: time.Now, log: in.log, open: map[int64]ledger.Payout{}}
	if s.b, err = batching.New(bcfg); err != nil {
		t.Fatal(err)
	}
	if err := s.add(ctx, rest); err != nil {
		t.Fatal(err)
	}
	if err := s.seal(ctx, s.b.Flush()); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"W4", "W5"} {
		if got := state(k); got != ledger.PayoutSealed {
			t.Errorf("%s after the sealer: %s, want SEALED", k, got)
		}
	}
	rep, err := ledger.Audit(ctx, []string{db.Path()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// otherInstance's own file is not audited here: its ownership of W6 is all it reports.
	if len(rep.Violations) != 1 || rep.Violations[0].Check != "owner_missing" || !strings.Contains(rep.Violations[0].Row, "W6") {
		var b strings.Builder
		_ = rep.WriteText(&b)
		t.Fatalf("audit:\n%s", b.String())
	}
}

// deliveries publishes n messages to a stream of their own on js and fetches them through an
// explicit-ack consumer, which it returns with them: deliveries in hand, unacked.
func deliveries(t *testing.T, js jetstream.JetStream, n int) (jetstream.Consumer, []jetstream.Msg) {
	t.Helper()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REQ", Subjects: []string{"req"}}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, "req", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "REQ", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.FetchNoWait(n)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d", len(msgs), n)
	}
	return cons, msgs
}

// waitAckPending waits until cons has want deliveries unacked.
func waitAckPending(t *testing.T, cons jetstream.Consumer, want int) {
	t.Helper()
	testingutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		info, err := cons.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return info.NumAckPending == want, fmt.Sprintf("%d unacked, want %d", info.NumAckPending, want)
	})
}

// TestGiveBack_NaksHeld: when a commit of held rows fails, each delivery of their messages is
// naked through its reply subject and JetStream delivers it again after handBackDelay.
func TestGiveBack_NaksHeld(t *testing.T) {
	_, js, _ := claimsSetup(t)
	cons, msgs := deliveries(t, js, 2)
	in := &intake{nc: js.Conn(), log: slog.New(slog.DiscardHandler)}
	rows := testRows("G", 2)
	held := []*heldRow{{row: rows[0], acks: []ackRef{refOf(msgs[0])}}, {row: rows[1], acks: []ackRef{refOf(msgs[1])}}}
	want := errors.New("disk full")
	if err := in.giveBack(want, [][]*heldRow{held[:1]}, held[1:]); err != want {
		t.Fatalf("giveBack = %v, want its error back", err)
	}
	start := time.Now()
	b, err := cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var again []string
	for m := range b.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, fmt.Sprintf("%s×%d", m.Data(), md.NumDelivered))
	}
	if slices.Sort(again); !slices.Equal(again, []string{"0×2", "1×2"}) {
		t.Fatalf("delivered again: %v, want both messages a second time", again)
	}
	if waited := time.Since(start); waited < handBackDelay/2 {
		t.Fatalf("delivered again after %v: the nak's delay (%v) was not sent", waited, handBackDelay)
	}
}

// TestGroupKey_Remembered: intake's remembered group keys are batching.GroupKeyFor's strings
// for every rail and field that makes a key, one string per key, and the memory is bounded.
func TestGroupKey_Remembered(t *testing.T) {
	in := &intake{}
	base := payout.Request{MchID: "1900000001", AppID: "wxa", SceneID: "1001"}
	reqs := []struct {
		rail string
		req  payout.Request
	}{
		{payout.RailDirect, base},
		{payout.RailBills, base},
		{payout.RailDirect, func() payout.Request { r := base; r.UserNameCipher = "c"; return r }()},
		{payout.RailDirect, func() payout.Request { r := base; r.BatchName = "a&b=c"; return r }()},
		{payout.RailPartner, func() payout.Request { r := base; r.SubMchID, r.TransferPurpose = "1900000109", "GOODS"; return r }()},
	}
	seen := map[string]bool{}
	for round := 0; round < 2; round++ { // the second round is answered from memory
		for i, c := range reqs {
			want := batching.GroupKeyFor(c.rail, &c.req)
			if got := in.groupKey(c.rail, &c.req); got != want {
				t.Fatalf("round %d, request %d: group key %q, want %q", round, i, got, want)
			}
			seen[want] = true
		}
	}
	if len(seen) != len(reqs) || len(in.groupKeys) != len(reqs) {
		t.Fatalf("%d distinct keys, %d remembered, want %d", len(seen), len(in.groupKeys), len(reqs))
	}
	for i := range maxGroupKeys + 10 {
		r := base
		r.BatchRemark = fmt.Sprint("hint", i)
		if got, want := in.groupKey(payout.RailDirect, &r), batching.GroupKeyFor(payout.RailDirect, &r); got != want {
			t.Fatalf("hint %d: group key %q, want %q", i, got, want)
		}
	}
	if len(in.groupKeys) > maxGroupKeys {
		t.Fatalf("%d group keys remembered, bound %d", len(in.groupKeys), maxGroupKeys)
	}
}

// TestHolding_CopiesRows: a held row is a copy, not a pointer into its fetched group's rows,
// which would keep the whole group alive while one row of a rare key waits for its batch.
func TestHolding_CopiesRows(t *testing.T) {
	hold, err := newHolding(batching.Config{InstanceID: "i", CapDirect: 4})
	if err != nil {
		t.Fatal(err)
	}
	rows := testRows("H", 1)
	hold.add(&rows[0], nil, time.Now())
	rows[0].OutDetailNo = "changed"
	if len(hold.rows) != 1 {
		t.Fatalf("%d rows held, want 1", len(hold.rows))
	}
	for _, hr := range hold.rows {
		if hr.row.OutDetailNo != "H0" {
			t.Fatalf("held row %q: it shares its group's memory", hr.row.OutDetailNo)
		}
	}
}

// TestEndsBacklog: a group ends the backlog when its fetch came back short or when the
// server had nothing more for the consumer as it delivered the group's last message; a full
// group with more behind it does not, so intake keeps holding payouts for fuller batches.
func TestEndsBacklog(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// publish stores n messages and waits until the consumer counts them pending: the count
	// a delivered message carries is the consumer's, which under load can trail the stream.
	publish := func(n int) {
		t.Helper()
		for range n {
			if _, err := js.Publish(ctx, "s.x", []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
		testingutil.WaitFor(t, 10*time.Second, func() (bool, string) {
			info, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return info.NumPending == uint64(n), fmt.Sprintf("the consumer counts %d messages pending, %d were stored", info.NumPending, n)
		})
	}
	fetch := func(batch int) []jetstream.Msg {
		t.Helper()
		b, err := cons.Fetch(batch, jetstream.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		return msgs
	}
	publish(5)
	for _, c := range []struct {
		batch, got int
		ends       bool
	}{
		{3, 3, false}, // two more behind
		{3, 2, true},  // short
		{3, 0, true},  // nothing at all
	} {
		msgs := fetch(c.batch)
		if len(msgs) != c.got || endsBacklog(msgs, c.batch) != c.ends {
			t.Fatalf("fetch %d of a backlog: %d messages, endsBacklog %v; want %d, %v", c.batch, len(msgs), endsBacklog(msgs, c.batch), c.got, c.ends)
		}
	}
	publish(3)
	if msgs := fetch(3); len(msgs) != 3 || !endsBacklog(msgs, 3) {
		t.Fatalf("a full group that drained the backlog: %d messages, endsBacklog %v; want 3, true", len(msgs), endsBacklog(msgs, 3))
	}
}
