package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// The tests of this file are the edges where the rules of money once broke (docs/money-rules.md;
// README "Failure model"): each reproduces a way a payout was lost, stranded or misrouted, end
// to end, against the real processor.

// nameKey is the TEST-ONLY WeChat Pay public key producers seal names with in these tests.
func nameKey() *payout.NameKey {
	return &payout.NameKey{ID: wechatpaytest.DefaultPlatformKeyID, Key: wechatpaytest.PlatformPublicKey()}
}

// request is a valid direct request for key, 1 yuan, for the sandbox's merchant.
func request(key string) payout.Request {
	return payout.Request{Schema: payout.SchemaV1, OutDetailNo: key, MchID: wechatpaytest.DefaultMchID,
		AppID: "wxa0000000000000001", OpenID: "o" + key, Amount: 100, Remark: "活动奖励"}
}

// sendRaw publishes data to subject as an upstream that skips pkg/payout could, and waits
// for the stream's ack.
func sendRaw(t *testing.T, js jetstream.JetStream, subject string, data []byte) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deadLetters returns the dead letters of class (all when ""), waiting until want have come.
func deadLetters(t *testing.T, js jetstream.JetStream, stream, class string, want int) []jetstream.Msg {
	t.Helper()
	var got []jetstream.Msg
	testingutil.PollEvery(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		got = got[:0]
		for _, m := range drain(t, js, stream, want+10) {
			if class == "" || m.Headers().Get(payout.HeaderReasonClass) == class {
				got = append(got, m)
			}
		}
		return len(got) >= want, fmt.Sprintf("%d %q dead letters, want %d", len(got), class, want)
	})
	return got
}

// TestRun_PaysOnlyItsMerchant: a processor configured for 1900000001 used to pay whatever
// reached it, signing another merchant's payout as its own. Requests for another merchant,
// whose subject disagrees with their body, or for a sub-merchant it has no partner setup
// for are dead-lettered as misrouted and never paid or stored; its own are paid.
func TestRun_PaysOnlyItsMerchant(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfg := testConfig(t, srv)
	p := startProcessor(t, cfg, os.Stderr)

	prefix := payout.DefaultSubjectPrefix
	other := request("M1")
	other.MchID = "1900000002"
	partner := request("M4")
	partner.AppID, partner.SubMchID, partner.SubAppID, partner.AuthorizationType = "", "1900000101", "wxs0000000000000001", payout.AuthInformation
	misrouted := []struct {
		subject string
		req     payout.Request
	}{
		{payout.Subject(prefix, "1900000002"), other},                                // another merchant's
		{payout.Subject(prefix, "1900000002"), request("M2")},                        // subject says another merchant
		{payout.Subject(prefix, wechatpaytest.DefaultMchID), withMchID(other, "M3")}, // body says another merchant
		{payout.Subject(prefix, wechatpaytest.DefaultMchID), partner},                // no partner setup
	}
	for _, m := range misrouted {
		sendRaw(t, p.js, m.subject, mustJSON(t, m.req))
	}
	ours := []string{"O1", "O2", "O3"}
	for _, k := range ours {
		sendRaw(t, p.js, payout.Subject(prefix, wechatpaytest.DefaultMchID), mustJSON(t, request(k)))
	}

	db, err := ledger.OpenReadOnly(context.Background(), cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, len(ours), time.Minute)
	dls := deadLetters(t, p.js, cfg.NATS.Topology.DeadLetterStream, payout.ClassMisrouted, len(misrouted))
	if got, want := len(dls), len(misrouted); got != want {
		t.Fatalf("%d misrouted dead letters, want %d", got, want)
	}
	for _, m := range dls {
		if !strings.Contains(m.Headers().Get(payout.HeaderReason), "mchid") {
			t.Errorf("dead letter reason %q does not name the merchant", m.Headers().Get(payout.HeaderReason))
		}
	}
	paid := srv.Paid()
	for _, m := range misrouted {
		if paid[m.req.OutDetailNo] != 0 {
			t.Errorf("%s (mchid %s on %s) was paid", m.req.OutDetailNo, m.req.MchID, m.subject)
		}
		if _, err := db.Payout(context.Background(), m.req.OutDetailNo); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("%s is in the ledger (%v)", m.req.OutDetailNo, err)
		}
	}
	for _, k := range ours {
		if paid[k] != 1 {
			t.Errorf("%s paid %d times, want 1", k, paid[k])
		}
	}
}

func withMchID(r payout.Request, key string) payout.Request {
	r.OutDetailNo, r.OpenID = key, "o"+key
	return r
}

// TestRun_PoisonDoesNotHarmNeighbours: on a server with the default 1 MiB max_payload, a
// request just under 1 MiB could not be dead-lettered (its copy plus headers is over the
// limit), so its whole fetch group failed on every redelivery, and at max-deliver JetStream
// dropped it and every valid payout fetched with it. Now the dead letter is cut to fit, the
// group goes on, and every valid payout is paid once.
func TestRun_PoisonDoesNotHarmNeighbours(t *testing.T) {
	ns := natstest.Run(t) // a default server: max_payload 1 MiB
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfg := testConfig(t, srv)
	cfg.NATS.URL = ns.ClientURL()
	p := startProcessor(t, cfg, os.Stderr)

	poison := append([]byte(`{"schema":"paystream.payout.v1","out_detail_no":"P1","remark":"`),
		append(bytes.Repeat([]byte("a"), 1<<20-1024), `"}`...)...)
	sendRaw(t, p.js, payout.Subject(payout.DefaultSubjectPrefix, wechatpaytest.DefaultMchID), poison)
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate = 600, 12, 0, 0
	sent := publish(t, p.js, o)

	waitPaidOnce(t, cfg.Ledger, srv, sent.valid)
	dls := deadLetters(t, p.js, cfg.NATS.Topology.DeadLetterStream, payout.ClassInvalid, 1)
	if got := dls[0].Headers().Get(payout.HeaderBody); !strings.HasPrefix(got, "truncated") {
		t.Errorf("dead letter body note %q, want truncated", got)
	}
	if got, max := len(dls[0].Data()), payout.MaxMessageSize; got > max {
		t.Errorf("dead letter body %d bytes, over %d", got, max)
	}
}

// TestRun_LostClaimReplies: two replicas; the KV creates of one of them land but their
// replies are lost (its connection is cut right after it sends them). That replica used to
// give up on the group; the redelivery went to the other replica, which found the keys owned
// and marked them DUPLICATE, and the payouts stayed RECEIVED in the first replica's ledger
// until it restarted. Now the claim is resolved (and the sweep catches what is left), so
// every payout is paid exactly once and none stays RECEIVED.
func TestRun_LostClaimReplies(t *testing.T) {
	ns := natstest.Run(t)
	proxy, err := faultproxy.Start("127.0.0.1:0", ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfgA, cfgB := testConfig(t, srv), testConfig(t, srv)
	cfgA.NATS.URL, cfgB.NATS.URL = proxy.URL(), ns.ClientURL()
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.NATS.Topology.AckWait = time.Second // redeliveries come at once
		c.Pipeline.Intake.FetchBatch = 100
		c.Pipeline.Intake.SweepEvery = 500 * time.Millisecond
	}
	startProcessor(t, cfgA, os.Stderr)
	b := startProcessor(t, cfgB, os.Stderr)
	// A's next claim publishes (PUB or HPUB to $KV.<bucket>.<key>) land, and its connection
	// is cut before their replies come back.
	proxy.CutAfter([]byte("PUB $KV."+cfgA.NATS.Topology.ClaimsBucket+"."), 6)

	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate = 3000, 21, 0, 0
	sent := publish(t, b.js, o)

	ledgers := []string{cfgA.Ledger, cfgB.Ledger}
	testingutil.PollEvery(t, 2*time.Minute, 250*time.Millisecond, func() (bool, string) {
		final, open := 0, 0
		for _, path := range ledgers {
			s, err := summary(path)
			if err != nil {
				return false, err.Error()
			}
			for st, n := range s.Payouts {
				switch {
				case st == ledger.PayoutDuplicate:
				case ledger.PayoutFinal(st):
					final += n.Count
				default:
					open += n.Count
				}
			}
		}
		return final == len(sent.valid) && open == 0, fmt.Sprintf("%d of %d paid or failed, %d open, %d cuts", final, len(sent.valid), open, proxy.Cuts())
	})
	if proxy.Cuts() == 0 {
		t.Fatal("no claim reply was lost: the test tested nothing")
	}
	paid := srv.Paid()
	for key := range sent.valid {
		if paid[key] != 1 {
			t.Errorf("%s paid %d times, want 1", key, paid[key])
		}
	}
	auditClean(t, time.Now(), ledgers...)
}

// TestRun_NoPlaintextNames: a name sealed by pkg/payout is paid (the sandbox decrypts and
// checks it); a plaintext one sent around pkg/payout is refused, and neither the dead
// letter nor the ledger file holds it.
func TestRun_NoPlaintextNames(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfg := testConfig(t, srv)
	p := startProcessor(t, cfg, os.Stderr)
	const name = "欧阳明华"

	sealed := request("N1")
	sealed.Amount, sealed.UserName = 250_000, name
	pub := payout.NewPublisher(p.js, payout.WithNameKey(*nameKey()))
	if _, err := pub.Publish(context.Background(), sealed); err != nil {
		t.Fatal(err)
	}
	plain := request("N2")
	plain.Amount, plain.UserName = 250_000, name
	sendRaw(t, p.js, payout.Subject(payout.DefaultSubjectPrefix, wechatpaytest.DefaultMchID), mustJSON(t, plain))

	db, err := ledger.OpenReadOnly(context.Background(), cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, 1, time.Minute)
	if got := srv.Paid()["N1"]; got != 1 {
		t.Fatalf("sealed-name payout paid %d times, want 1", got)
	}
	dls := deadLetters(t, p.js, cfg.NATS.Topology.DeadLetterStream, payout.ClassInvalid, 1)
	if reason := dls[0].Headers().Get(payout.HeaderReason); !strings.Contains(reason, "user_name") {
		t.Errorf("dead letter reason %q does not name user_name", reason)
	}
	for _, m := range dls {
		if bytes.Contains(m.Data(), []byte(name)) {
			t.Errorf("the plaintext name rests in the dead letter: %s", m.Data())
		}
	}
	files, _ := filepath.Glob(cfg.Ledger + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(name)) {
			t.Errorf("the plaintext name rests in %s", f)
		}
	}
}

// summary reads the summary of the ledger file at path.
func summary(path string) (ledger.Summary, error) {
	db, err := ledger.OpenReadOnly(context.Background(), path)
	if err != nil {
		return ledger.Summary{}, err
	}
	defer db.Close()
	return db.Summary(context.Background())
}

// TestRun_ConflictAcrossReplicas: the same out_detail_no with another amount used to be
// dropped by JetStream as a duplicate (its message id was the key alone), and had it been
// stored on another replica, that replica would have recorded a plain DUPLICATE: upstream
// never learned its request was refused. Now the message id covers the content, and the
// replica that finds the key owned with other content dead-letters the request as a
// conflict; the first request is paid once, for its own amount.
func TestRun_ConflictAcrossReplicas(t *testing.T) {
	ns := natstest.Run(t)
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200))
	cfgA, cfgB := testConfig(t, srv), testConfig(t, srv)
	cfgA.NATS.URL, cfgB.NATS.URL = ns.ClientURL(), ns.ClientURL()
	a := startProcessor(t, cfgA, os.Stderr)
	pub := payout.NewPublisher(a.js, payout.WithNameKey(*nameKey()))
	first := request("C1")
	if _, err := pub.Publish(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	dbA, err := ledger.OpenReadOnly(context.Background(), cfgA.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	waitFinal(t, dbA, 1, time.Minute)
	a.shutdown(t) // the owner is gone: the conflicting request can only reach B

	b := startProcessor(t, cfgB, os.Stderr)
	again := first
	again.Amount = 200
	dup, err := pub.Publish(context.Background(), again)
	if err != nil {
		t.Fatal(err)
	}
	if dup {
		t.Fatal("JetStream dropped a request with another amount as a duplicate")
	}
	if dup, err := pub.Publish(context.Background(), first); err != nil || !dup {
		t.Fatalf("an identical re-publish was not a duplicate: dup %v, %v", dup, err)
	}
	dls := deadLetters(t, b.js, cfgB.NATS.Topology.DeadLetterStream, payout.ClassConflict, 1)
	if got := len(dls); got != 1 {
		t.Fatalf("%d conflict dead letters, want 1", got)
	}
	dbB, err := ledger.OpenReadOnly(context.Background(), cfgB.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer dbB.Close()
	p, err := dbB.Payout(context.Background(), "C1")
	if err != nil {
		t.Fatal(err)
	}
	if p.State != ledger.PayoutDuplicate || !strings.Contains(p.FailReason, "other content") {
		t.Fatalf("B recorded C1 as %s (%q), want DUPLICATE with other content", p.State, p.FailReason)
	}
	if got := srv.Paid()["C1"]; got != 1 {
		t.Fatalf("C1 paid %d times, want 1", got)
	}
}
