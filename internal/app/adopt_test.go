package app

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/claims"
	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestAdopt_NoReplica: a replica with no ledger replica is lost (killed, its data dir
// deleted) while it holds 150 payouts sent to WeChat and waiting there, and 60 claimed but not
// yet batched; two of its payouts were redelivered to the other replica, which recorded them
// DUPLICATE of it. The other replica reports it silent; `processor adopt` lists its claims,
// retires it and takes them over: its batches resume under their own numbers (no new number
// for anything WeChat may hold), the 60 are paid under new ones, the two duplicates are
// reclaimed, and by the sandbox's own record every payout is paid once. On both products.
func TestAdopt_NoReplica(t *testing.T) {
	t.Run("batches", func(t *testing.T) {
		srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200), wechatpaytest.WithNoPasswordLimit(1)) // every detail waits for a confirm
		testAdopt(t, srv, testConfig, synth.ProductBatches, func() int {
			n := 0
			for _, b := range srv.Batches() {
				n += b.WaitPayNum
			}
			return n
		})
	})
	t.Run("bills", func(t *testing.T) {
		srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200), func(o *wechatpaytest.Options) {
			o.Product, o.BillAcceptDelay, o.BillConfirmTimeout = "bills", 0, 24*time.Hour // payees confirm only when told
		})
		testAdopt(t, srv, billsConfig, synth.ProductBills, func() int {
			n := 0
			for _, b := range srv.Bills() {
				if b.State == ledger.PayoutWaitUserConfirm {
					n++
				}
			}
			return n
		})
	})
}

// testAdopt plays TestAdopt_NoReplica on srv with configs made by config, for product;
// waiting counts the payouts waiting at WeChat for their payee or merchant.
func testAdopt(t *testing.T, srv *wechatpaytest.Server, config func(*testing.T, *wechatpaytest.Server) Config, product string, waiting func() int) {
	ns := natstest.Run(t)
	ctx := context.Background()
	js := natstest.Connect(t, ns)
	cfgX := lostConfig(t, config(t, srv), ns.ClientURL())

	// X pays 150 payouts: every batch reaches WeChat and waits there.
	x := startProcessor(t, cfgX, io.Discard)
	o := synth.DefaultOptions()
	o.Product, o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate, o.NoConfirmRate, o.DeclineRate = product, 150, 21, 0, 0, 0.2, 0, 0
	sent := publish(t, x.js, o)
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		return waiting() == len(sent.valid), "payouts not all waiting at WeChat yet"
	})
	x.shutdown(t)
	numbers := batchNumbers(t, cfgX.Ledger)

	// X runs again, now batching slowly: 60 more are claimed and acked, never sealed.
	lost := instanceOf(t, cfgX.Ledger)
	cfgX.Pipeline.Batching.MaxWait = time.Hour
	x = startProcessor(t, cfgX, io.Discard)
	o.Count, o.Seed = 60, 22
	more := publish(t, x.js, o)
	claimsKV, err := js.KeyValue(ctx, cfgX.NATS.Topology.ClaimsBucket)
	if err != nil {
		t.Fatal(err)
	}
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		held, err := claims.OwnedBy(ctx, js, claimsKV, lost)
		if err != nil {
			return false, err.Error()
		}
		info, err := x.js.Consumer(ctx, cfgX.NATS.Topology.Stream, cfgX.NATS.Topology.Consumer)
		if err != nil {
			return false, err.Error()
		}
		ci := info.CachedInfo()
		return len(held) == 210 && ci.NumAckPending == 0 && ci.NumPending == 0, "not every payout claimed and acked yet"
	})
	x.shutdown(t)
	// It dies: its last heartbeat is an hour old, with no clean stop, and its disk is gone.
	silence(t, js, cfgX, lost)
	if err := os.RemoveAll(cfgX.DataDir); err != nil {
		t.Fatal(err)
	}
	for k, v := range more.valid {
		sent.valid[k], sent.records[k] = v, more.records[k]
	}

	// Y runs beside it, reports it silent, and receives two of its payouts again.
	cfgY := lostConfig(t, config(t, srv), ns.ClientURL())
	logs := testingutil.NewLogWatch("silent_instance=" + lost)
	y := startProcessor(t, cfgY, logs)
	select {
	case <-logs.Seen():
	case <-time.After(30 * time.Second):
		t.Fatal("the lost instance was not reported silent")
	}
	var batched, unbatched string
	for k := range sent.valid {
		if _, late := more.valid[k]; late && unbatched == "" {
			unbatched = k
		} else if !late && batched == "" {
			batched = k
		}
	}
	for _, k := range []string{batched, unbatched} {
		sendRaw(t, y.js, payout.Subject(payout.DefaultSubjectPrefix, o.MchID), sent.records[k].Line)
	}
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		s, err := summary(cfgY.Ledger)
		if err != nil {
			return false, err.Error()
		}
		return s.Payouts[ledger.PayoutDuplicate].Count == 2, "the redeliveries are not DUPLICATE yet"
	})
	y.shutdown(t)
	// On bills, the lost instance had told upstream one of its unbatched payouts was
	// CANCELLED (as a local cancel does): that promise is kept, it is never sent.
	var told string
	if product == synth.ProductBills {
		for k := range more.valid {
			if k != unbatched {
				told = k
				break
			}
		}
		ev := mustJSON(t, payout.OutcomeEvent{OutDetailNo: told, MchID: o.MchID, State: ledger.PayoutCancelled, OutBillNo: told, At: time.Now()})
		sendRaw(t, js, payout.ResultSubject(resultsPrefix(cfgX.NATS.Topology.ResultsSubjects), ledger.PayoutCancelled), ev)
		delete(sent.valid, told)
	}

	// The plan names every stranded key and changes nothing.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	plan, err := Adopt(ctx, cfgY, AdoptOptions{Instance: lost, Plan: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(plan.Transfer), 210; got != want || len(plan.Left) != 0 {
		t.Fatalf("plan: %d claims to take over and %d left (%v), want %d and 0", got, len(plan.Left), plan.Left, want)
	}
	if got, want := len(plan.BatchOf), 150; got != want {
		t.Errorf("plan: %d keys in batches to resume, want %d", got, want)
	}
	if rec := record(t, js, cfgX, lost); rec.RetiredBy != "" {
		t.Fatalf("a plan retired the instance: %+v", rec)
	}
	// Had the instance never promised a complete journal (an older version), the payouts in
	// no journaled batch might have been sent: they are left, never paid anew.
	withRecord(t, js, cfgX, lost, func(r *instances.Record) { r.Journaled = false })
	old, err := Adopt(ctx, cfgY, AdoptOptions{Instance: lost, Plan: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(old.Left), 60; got != want || len(old.BatchOf) != 150 {
		t.Fatalf("plan for an instance without a journal promise: %d left, %d in batches; want %d and 150", got, len(old.BatchOf), want)
	}
	withRecord(t, js, cfgX, lost, func(r *instances.Record) { r.Journaled = true })

	a, err := Adopt(ctx, cfgY, AdoptOptions{Instance: lost, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Batches, numbers) || a.InBatches != 150 || a.ToPay != 60 || a.Reclaimed != 2 {
		t.Fatalf("adopted batches %v (%d payouts), %d to pay, %d reclaimed; want %v (150), 60, 2", a.Batches, a.InBatches, a.ToPay, a.Reclaimed, numbers)
	}
	adopter := instanceOf(t, cfgY.Ledger)
	if rec := record(t, js, cfgX, lost); rec.RetiredBy != adopter {
		t.Fatalf("lost instance record %+v, want retired by %s", rec, adopter)
	}
	if held, err := claims.OwnedBy(ctx, js, claimsKV, lost); err != nil || len(held) != 0 {
		t.Fatalf("the lost instance still holds %d claims (%v)", len(held), err)
	}
	if _, err := Adopt(ctx, cfgY, AdoptOptions{Instance: lost, Log: log}); err != nil {
		t.Fatalf("adopting again: %v", err) // a finished adoption run again finds nothing left
	}

	// Y pays: the lost instance's batches under their numbers, the rest under new ones.
	startProcessor(t, cfgY, io.Discard)
	stop := confirmAll(srv)
	var unpaid []string
	if told != "" {
		unpaid = append(unpaid, told)
	}
	waitPaidOnce(t, cfgY.Ledger, srv, sent.valid, unpaid...)
	stop()
	if told != "" {
		p, err := lookup(cfgY.Ledger, told)
		if err != nil || p.State != ledger.PayoutCancelled || srv.Paid()[told] != 0 {
			t.Errorf("%s, reported CANCELLED by the lost instance: %s (%v), paid %d times; want CANCELLED, never paid", told, p.State, err, srv.Paid()[told])
		}
		if _, err := srv.Bill(told); err == nil {
			t.Errorf("%s, reported CANCELLED by the lost instance, was sent to WeChat", told)
		}
	}
	after := batchNumbers(t, cfgY.Ledger)
	if got := len(after) - len(numbers); got < 1 {
		t.Errorf("%d new batches, want some for the 60 never sent", got)
	}
	for _, no := range numbers {
		if !slices.Contains(after, no) {
			t.Errorf("batch %s is gone", no)
		}
	}
	if d := srv.DoublePaid(); len(d) != 0 {
		t.Errorf("paid twice by the sandbox's record: %v", d)
	}
	auditClean(t, time.Now(), cfgY.Ledger)
}

// batchNumbers lists the out_batch_no of every batch in the ledger at path, in order.
func batchNumbers(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT out_batch_no FROM batches ORDER BY out_batch_no`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var no string
		if err := rows.Scan(&no); err != nil {
			t.Fatal(err)
		}
		out = append(out, no)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAdopt_runsAgainAfterALostReply: the reply to adoption's read of the claims stream's
// leader is lost (the proxy cuts the connection once the request is through). A single run
// fails on it, as a timeout; allowed more runs, the adoption runs again on a new connection
// and lists every claim of the lost instance. A failure that does not pass (an alive
// instance) is never run again.
func TestAdopt_runsAgainAfterALostReply(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Run(t)
	proxy, err := faultproxy.Start("127.0.0.1:0", ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	cfg := lostConfig(t, testConfig(t, wechatpaytest.NewServer(t)), proxy.URL())
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	plan := AdoptOptions{Instance: "lost0001", Plan: true, Log: quiet, Pause: 10 * time.Millisecond}
	if _, err := Adopt(ctx, cfg, plan); err != nil { // makes the buckets
		t.Fatal(err)
	}
	js := natstest.Connect(t, ns)
	kv, err := js.KeyValue(ctx, cfg.NATS.Topology.ClaimsBucket)
	if err != nil {
		t.Fatal(err)
	}
	var items []claims.Item
	for _, no := range []string{"A1", "A2", "A3"} {
		items = append(items, claims.Item{Key: claims.Key(cfg.WeChatPay.MchID, no)})
	}
	if _, err := claims.New(js, kv, "lost0001").Claim(ctx, items); err != nil {
		t.Fatal(err)
	}
	leaderRead := []byte("STREAM.MSG.GET.KV_" + cfg.NATS.Topology.ClaimsBucket)

	proxy.CutAfter(leaderRead, 1)
	if _, err := Adopt(ctx, cfg, plan); !errors.Is(err, context.DeadlineExceeded) || proxy.Cuts() != 1 {
		t.Fatalf("one run with its reply lost = %v after %d cuts; want a timeout after 1", err, proxy.Cuts())
	}
	proxy.CutAfter(leaderRead, 1)
	var logs bytes.Buffer
	plan.Runs, plan.Log = 3, slog.New(slog.NewTextHandler(&logs, nil))
	a, err := Adopt(ctx, cfg, plan)
	if err != nil || a.Held != 3 || proxy.Cuts() != 2 || strings.Count(logs.String(), "runs again") != 1 {
		t.Fatalf("three runs allowed, the first reply lost = %d held, %v after %d cuts, logging %q; want 3 held after 2 cuts and 1 run again",
			a.Held, err, proxy.Cuts(), logs.String())
	}

	// An instance that is alive is refused at once, however many runs are allowed.
	logs.Reset()
	ikv, err := js.KeyValue(ctx, cfg.NATS.Topology.InstancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec, err := json.Marshal(instances.Record{Instance: "alive0001", Host: "h", StartedAt: now, SeenAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ikv.Put(ctx, "alive0001", rec); err != nil {
		t.Fatal(err)
	}
	alive := AdoptOptions{Instance: "alive0001", Plan: true, Log: slog.New(slog.NewTextHandler(&logs, nil)), Runs: 5, Pause: time.Millisecond}
	if _, err := Adopt(ctx, cfg, alive); !errors.Is(err, instances.ErrAlive) || strings.Contains(logs.String(), "runs again") {
		t.Fatalf("adopting an alive instance = %v, logging %q; want instances.ErrAlive in one run", err, logs.String())
	}
}

// TestTransientNATS: adoption runs again on the NATS failures that pass, a claim move's
// publish finding no stream among them, and on nothing else.
func TestTransientNATS(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("read request stream: %w", nats.ErrNoResponders), true},
		{fmt.Errorf("transfer claim k: %w", jetstream.ErrNoStreamResponse), true},
		{fmt.Errorf("get x from the leader: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("claims of i: %w", broker.ErrShortRead), true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{fmt.Errorf("instance i: %w", instances.ErrAlive), false},
		{fmt.Errorf("retire: %w", instances.ErrRetired), false},
		{&jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{errors.New("adopted payout k: this ledger holds it with other content"), false},
	} {
		if got := transientNATS(c.err); got != c.want {
			t.Errorf("transientNATS(%v) = %t, want %t", c.err, got, c.want)
		}
	}
}

// TestRun_AdoptionUnfinished: a ledger marked by an adoption that has not moved its claims
// never runs: its sweep would record the adopted payouts DUPLICATE of the lost instance.
func TestRun_AdoptionUnfinished(t *testing.T) {
	cfg := testConfig(t, wechatpaytest.NewServer(t))
	db, err := ledger.Open(context.Background(), cfg.Ledger, ledger.WithMerchant(cfg.WeChatPay.MchID))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.BeginAdoption(context.Background(), "lost0001"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, ErrAdoptionUnfinished) {
		t.Fatalf("Run = %v, want ErrAdoptionUnfinished", err)
	}
}

// lostConfig is cfg on the shared NATS server at url, with the key file off the data dir
// (the disk these tests lose).
func lostConfig(t *testing.T, cfg Config, url string) Config {
	t.Helper()
	cfg.NATS.URL = url
	key := filepath.Join(t.TempDir(), "merchant.pem")
	if err := os.Rename(cfg.WeChatPay.PrivateKeyFile, key); err != nil {
		t.Fatal(err)
	}
	cfg.WeChatPay.PrivateKeyFile = key
	return cfg
}

// silence makes instance's heartbeat that of a process killed an hour ago (what it promised
// of its journal kept).
func silence(t *testing.T, js jetstream.JetStream, cfg Config, instance string) {
	t.Helper()
	ago := time.Now().Add(-time.Hour)
	withRecord(t, js, cfg, instance, func(r *instances.Record) {
		r.Host, r.StartedAt, r.SeenAt, r.StoppedAt = "lost-host", ago, ago, time.Time{}
	})
}

// withRecord rewrites instance's heartbeat record as change says.
func withRecord(t *testing.T, js jetstream.JetStream, cfg Config, instance string, change func(*instances.Record)) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), cfg.NATS.Topology.InstancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	r, err := instances.Get(context.Background(), js, kv, instance)
	if err != nil {
		t.Fatal(err)
	}
	change(&r)
	v, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), instance, v); err != nil {
		t.Fatal(err)
	}
}

// record reads instance's heartbeat record.
func record(t *testing.T, js jetstream.JetStream, cfg Config, instance string) instances.Record {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), cfg.NATS.Topology.InstancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	r, err := instances.Get(context.Background(), js, kv, instance)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// confirmAll confirms, every 50 ms until stopped, every batch and bill waiting at the sandbox.
func confirmAll(srv *wechatpaytest.Server) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, b := range srv.Batches() {
				if b.WaitPayNum > 0 {
					_, _ = srv.Confirm(b.OutBatchNo, "")
				}
			}
			for _, b := range srv.Bills() {
				if b.State == ledger.PayoutWaitUserConfirm {
					_ = srv.ConfirmBill(b.OutBillNo)
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// TestTransferClaims: an adoption moves its claims many at a time, and a move whose reply is
// lost (the connection cut once the update is through, twice) is tried again within the
// run, not by running the whole adoption again: every claim ends with the adopter, its
// digest kept. A context that ends before every move started is an error, never done.
func TestTransferClaims(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Run(t)
	direct := natstest.Connect(t, ns)
	kv, err := direct.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims"})
	if err != nil {
		t.Fatal(err)
	}
	items := make([]claims.Item, 300)
	for i := range items {
		k := claims.Key("1900000001", fmt.Sprintf("T%05d", i))
		items[i] = claims.Item{Key: k, Digest: bytes.Repeat([]byte{byte(i)}, 32)}
	}
	if _, err := claims.New(direct, kv, "lost0001").Claim(ctx, items); err != nil {
		t.Fatal(err)
	}
	held, err := claims.OwnedBy(ctx, direct, kv, "lost0001")
	if err != nil || len(held) != len(items) {
		t.Fatalf("lost0001 holds %d claims (%v), want %d", len(held), err, len(items))
	}
	proxy, err := faultproxy.Start("127.0.0.1:0", ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	js := natstest.ConnectURL(t, proxy.URL())
	pkv, err := js.KeyValue(ctx, "claims")
	if err != nil {
		t.Fatal(err)
	}

	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := transferClaims(ended, js, pkv, held, "adopter1"); err == nil {
		t.Fatal("transferClaims with an ended context = nil, want an error")
	}

	proxy.CutAfter([]byte("$KV.claims."), 2)
	if err := transferClaims(ctx, js, pkv, held, "adopter1"); err != nil || proxy.Cuts() != 2 {
		t.Fatalf("transferClaims = %v after %d cuts, want nil after 2", err, proxy.Cuts())
	}
	if left, err := claims.OwnedBy(ctx, direct, kv, "lost0001"); err != nil || len(left) != 0 {
		t.Fatalf("lost0001 still holds %d claims (%v), want 0", len(left), err)
	}
	moved, err := claims.OwnedBy(ctx, direct, kv, "adopter1")
	if err != nil || len(moved) != len(items) {
		t.Fatalf("adopter1 holds %d claims (%v), want %d", len(moved), err, len(items))
	}
	for i, h := range moved {
		if h.Key != items[i].Key || h.Owner.Conflicts(items[i].Digest) {
			t.Fatalf("claim %d: %s %+v, want %s with its digest kept", i, h.Key, h.Owner, items[i].Key)
		}
	}
}
