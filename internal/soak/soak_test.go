package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestSoakShort is the soak of make test: 5000 requests through 3 processors on a 3-node
// cluster, a processor SIGKILLed every 2 s (at least 5 times), one NATS node restarted, and
// every check of the full soak (make soak) asserted. The binaries are built into the test's
// temporary directory; the go build cache makes that quick.
func TestSoakShort(t *testing.T) {
	cfg := DefaultConfig()
	// A small load still meets 429s: three processors at 10/s each against a quota of 20/s.
	// (At 20/s each, every restart comes back at the full rate, and with a kill every 2 s the
	// 429 storm that makes decides whether the run ends inside its 4 minutes.)
	cfg.Payouts, cfg.Quota, cfg.Share = 5000, 20, 10
	rep := runShort(t, cfg, 10)
	if rep.Kills < 5 || rep.NATSRestarts < 1 {
		t.Errorf("%d kills and %d NATS restarts, want ≥ 5 and ≥ 1", rep.Kills, rep.NATSRestarts)
	}
}

// runShort runs a short soak of cfg in the test's temporary directory, a processor
// SIGKILLed every 2 s (at least 5 times), and fails t on any failed check or on fewer than
// minChecks checks. On failure it logs the end of each processor's log.
func runShort(t *testing.T, cfg Config, minChecks int) *Report {
	t.Helper()
	cfg.Dir = t.TempDir()
	cfg.KillEvery, cfg.MinKills, cfg.Timeout = 2*time.Second, 5, 4*time.Minute
	cfg.DiskLoss = false // make soak runs it: a litestream, a clean stop and a restore more than make test needs
	cfg.Adopt = false    // make soak runs it: a lost processor, its silence and an adoption
	var progress strings.Builder
	cfg.Log = &progress
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("soak could not run: %v\n%s", err, progress.String())
	}
	var b strings.Builder
	rep.WriteText(&b)
	t.Log("\n" + b.String() + "\nprogress:\n" + progress.String())
	if n := rep.Failed(); n > 0 {
		t.Errorf("%d of %d checks failed", n, len(rep.Checks))
	}
	if len(rep.Checks) < minChecks {
		t.Errorf("only %d checks ran", len(rep.Checks))
	}
	if t.Failed() {
		// t.TempDir goes away with the test: keep the end of each processor's log here.
		for i := range cfg.Processors {
			path := filepath.Join(cfg.Dir, fmt.Sprintf("p%d", i+1), "processor.log")
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last lines of %s:\n%s", path, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			if d := stackDump(b); d != "" {
				t.Logf("paystream goroutines of %s when the run stalled:\n%s", path, d)
			}
		}
	}
	return rep
}

// TestConfigValidate: a config the harness cannot run is refused before anything starts.
func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Dir = t.TempDir()
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr error
	}{
		{"default with a dir", func(*Config) {}, nil},
		{"bills default", func(c *Config) { *c = DefaultBillsConfig(); c.Dir = ok.Dir }, nil},
		{"unknown product", func(c *Config) { c.Product = "cheques" }, ErrConfig},
		{"no dir", func(c *Config) { c.Dir = "" }, ErrConfig},
		{"too few payouts", func(c *Config) { c.Payouts = 10 }, ErrConfig},
		{"no processors", func(c *Config) { c.Processors = 0 }, ErrConfig},
		{"ack-wait under a second", func(c *Config) { c.AckWait = time.Millisecond }, ErrConfig},
		{"no kill interval", func(c *Config) { c.KillEvery = 0 }, ErrConfig},
		{"no quota", func(c *Config) { c.Quota = 0 }, ErrConfig},
		{"recovery drill and disk loss on one processor", func(c *Config) { c.Processors = 1 }, ErrConfig},
		{"recovery drill alone on one processor", func(c *Config) { c.Processors, c.DiskLoss = 1, false }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if err := c.Validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

// TestSoakShortBills is the transfer bills soak of make test: 2000 requests through 3
// processors with their own callback listeners, payees who confirm, decline or never
// confirm, a fifth of the callbacks lost, upstream cancels mid-run and after, a processor
// SIGKILLed every 2 s (at least 5 times) and one NATS node restarted; every check of make
// soak asserted.
func TestSoakShortBills(t *testing.T) {
	cfg := DefaultBillsConfig()
	cfg.Payouts, cfg.Quota, cfg.Share = 2000, 40, 20 // a small load still meets 429s
	rep := runShort(t, cfg, 20)
	if rep.Kills < 5 || rep.NATSRestarts < 1 || rep.Cancels == 0 {
		t.Errorf("%d kills, %d NATS restarts and %d cancels, want ≥ 5, ≥ 1 and > 0", rep.Kills, rep.NATSRestarts, rep.Cancels)
	}
}

// TestNames: a plaintext name is found wherever it rests, and nothing else is taken for one.
func TestNames(t *testing.T) {
	var n names
	n.add("王伟")
	n.add("欧阳秀英")
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"alone", "王伟", true},
		{"in a JSON line", `{"user_name":"王伟","amount":300000}`, true},
		{"after other Chinese text", "活动奖励王伟", true},
		{"a longer name", "x 欧阳秀英 y", true},
		{"a prefix of a name", "欧阳秀", false},
		{"split by ASCII", "王 伟", false},
		{"other text", "现金奖励 OVERDUE_CLOSE", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := n.in([]byte(tt.in)); got != tt.want {
				t.Fatalf("in(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if got, want := n.len(), 2; got != want {
		t.Fatalf("len() = %d, want %d", got, want)
	}
}

// TestWriteWorkload_Bills: on transfer bills every other payee who never confirms and every
// 100th who would are cancelled mid-run, and misrouted requests are for another merchant
// (a sub_mchid is invalid there, not misrouted); the batch workload cancels nothing.
func TestWriteWorkload_Bills(t *testing.T) {
	ctx := context.Background()
	w, err := writeWorkload(ctx, t.TempDir(), ProductBills, 5000, 1)
	if err != nil {
		t.Fatal(err)
	}
	count := map[payee]int{}
	cancelled := map[payee]int{}
	for k, p := range w.valid {
		count[p]++
		if w.cancel[k] {
			cancelled[p]++
			if !slices.Contains(w.finals(k), ledger.PayoutCancelled) {
				t.Errorf("%s is cancelled but may not end CANCELLED: %v", k, w.finals(k))
			}
		}
	}
	if count[payeeNeverConfirms] == 0 || count[payeeDeclines] == 0 || count[payeeFails] == 0 {
		t.Fatalf("payees %v: want some of each kind", count)
	}
	if got, want := cancelled[payeeNeverConfirms], (count[payeeNeverConfirms]+1)/2; got != want {
		t.Errorf("%d payees who never confirm cancelled, want %d", got, want)
	}
	if got, want := cancelled[payeePays], count[payeePays]/cancelPaysEach; got != want {
		t.Errorf("%d payees who confirm cancelled, want %d", got, want)
	}
	if got := cancelled[payeeDeclines] + cancelled[payeeFails]; got != 0 {
		t.Errorf("%d declining or failing payees cancelled, want 0", got)
	}
	b, err := os.ReadFile(w.cancelFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(strings.Fields(string(b))), len(w.cancel); got != want {
		t.Errorf("%s has %d keys, want %d", w.cancelFile, got, want)
	}
	if w.misrouted == 0 {
		t.Error("no misrouted request")
	}
	for i := range 2 {
		if r := misroute(payout.Request{OutDetailNo: "S1N1", MchID: wechatpaytest.DefaultMchID}, i, true); r.MchID == wechatpaytest.DefaultMchID || r.SubMchID != "" {
			t.Errorf("misrouted bills request %d: mchid %s, sub_mchid %q; want another merchant's", i, r.MchID, r.SubMchID)
		}
	}
	batches, err := writeWorkload(ctx, t.TempDir(), ProductBatches, 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches.cancel) != 0 {
		t.Errorf("the batch workload cancels %d payouts, want none", len(batches.cancel))
	}
}

// billsFixture is a settled transfer bills run in miniature, healthy: A paid; B never
// confirms and was cancelled at WeChat; C would confirm and was cancelled before it was
// sent; D declined (DUPLICATE in the other ledger); E never confirmed and was cancelled
// too late (WeChat refused); A cancelled once settled, and an unknown key.
func billsFixture() (*soak, *evidence, *results) {
	s := &soak{cfg: Config{Product: ProductBills}, rep: &Report{}, settledCancels: []string{"A"}, unknownCancel: "NOSUCH1",
		work: &workload{
			valid:  map[string]payee{"A": payeePays, "B": payeeNeverConfirms, "C": payeePays, "D": payeeDeclines, "E": payeeNeverConfirms},
			amount: map[string]int64{"A": 100, "B": 200, "C": 300, "D": 400, "E": 500},
			cancel: map[string]bool{"B": true, "C": true, "E": true},
		}}
	bill := func(no, state, reason string, amount int64) wechatpaytest.BillSummary {
		return wechatpaytest.BillSummary{OutBillNo: no, TransferBillNo: "T" + no, State: state, FailReason: reason, Amount: wechatpay.Fen(amount)}
	}
	ev := &evidence{bills: true, ledgerSuccess: 100,
		rows: map[string][]row{
			"A": {{proc: "p1", state: ledger.PayoutSuccess, amount: 100}},
			"B": {{proc: "p1", state: ledger.PayoutCancelled, amount: 200}},
			"C": {{proc: "p2", state: ledger.PayoutCancelled, amount: 300}},
			"D": {{proc: "p1", state: ledger.PayoutDuplicate, amount: 400}, {proc: "p2", state: ledger.PayoutFail, failReason: "USER_DECLINED", amount: 400}},
			"E": {{proc: "p2", state: ledger.PayoutFail, failReason: "OVERDUE_CLOSE", amount: 500}},
		},
		paid: &wechatpaytest.PaidReport{Paid: map[string]int{"A": 1}, Total: 100,
			Payments: []wechatpaytest.Payment{{Kind: wechatpaytest.KindBill, OutDetailNo: "A", DetailID: "TA", Amount: 100}}},
		sandbox: map[string]wechatpaytest.BillSummary{
			"A": bill("A", ledger.PayoutSuccess, "", 100), "B": bill("B", ledger.PayoutCancelled, "", 200),
			"D": bill("D", ledger.PayoutFail, "USER_DECLINED", 400), "E": bill("E", ledger.PayoutFail, "OVERDUE_CLOSE", 500),
		},
	}
	wait := func(k string) payout.WaitUserConfirmEvent {
		return payout.WaitUserConfirmEvent{OutDetailNo: k, MchID: wechatpaytest.DefaultMchID, AppID: "wxa0000000000000001", OutBillNo: k,
			TransferBillNo: "T" + k, PackageInfo: "pkg", Amount: s.work.amount[k], ExpireAt: time.Unix(1, 0)}
	}
	refusal := func(k, code string) []payout.CancelRefusedEvent {
		return []payout.CancelRefusedEvent{{OutDetailNo: k, MchID: wechatpaytest.DefaultMchID, Code: code}}
	}
	res := &results{
		waits: map[string][]payout.WaitUserConfirmEvent{"A": {wait("A")}, "B": {wait("B")}, "E": {wait("E")}},
		refusals: map[string][]payout.CancelRefusedEvent{
			"E": refusal("E", payout.CancelTooLate), "A": refusal("A", payout.CancelFinal), "NOSUCH1": refusal("NOSUCH1", payout.CancelUnknown)},
	}
	return s, ev, res
}

// TestChecks_Bills: the bills checks pass on a healthy run and each fails on the violation
// it exists for (others may fail with it), the first of them the one a soak found: a bill cancelled locally as never
// sent, which WeChat had (the create was sent just before a SIGKILL) and paid.
func TestChecks_Bills(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(*soak, *evidence, *results)
		wantFail string // the check that must fail (a prefix of its name); "" none
	}{
		{"healthy", func(*soak, *evidence, *results) {}, ""},
		{"cancelled locally but paid at WeChat", func(_ *soak, ev *evidence, _ *results) {
			ev.sandbox["C"] = wechatpaytest.BillSummary{OutBillNo: "C", TransferBillNo: "TC", State: ledger.PayoutSuccess, Amount: 300}
			ev.paid.Paid["C"], ev.paid.Total = 1, 400
		}, "every final ledger state equals the sandbox's"},
		{"paid twice", func(_ *soak, ev *evidence, _ *results) { ev.paid.Paid["A"] = 2 }, "every valid payout paid exactly once"},
		{"a payee who never confirms paid", func(_ *soak, ev *evidence, _ *results) {
			ev.paid.Paid["E"] = 1
		}, "every valid payout paid exactly once"},
		{"a FAIL with another reason than WeChat's", func(_ *soak, ev *evidence, _ *results) {
			ev.rows["E"][0].failReason = "USER_DECLINED"
		}, "every FAIL carries WeChat's fail_reason"},
		{"CANCELLED without a cancel", func(s *soak, _ *evidence, _ *results) { delete(s.work.cancel, "B") },
			"every final state is what its payee did"},
		{"final in two ledgers", func(_ *soak, ev *evidence, _ *results) {
			ev.rows["D"][0].state = ledger.PayoutFail
		}, "each key final in exactly one ledger"},
		{"a CANCELLED payout refused too", func(_ *soak, _ *evidence, res *results) {
			res.refusals["B"] = []payout.CancelRefusedEvent{{OutDetailNo: "B", Code: payout.CancelFinal}}
		}, "cancels:"},
		{"a cancel too late never answered", func(_ *soak, _ *evidence, res *results) { delete(res.refusals, "E") }, "cancels:"},
		{"a cancel refused twice", func(_ *soak, _ *evidence, res *results) {
			res.refusals["E"] = append(res.refusals["E"], payout.CancelRefusedEvent{OutDetailNo: "E", Code: payout.CancelFinal})
		}, "cancels:"},
		{"a cancel answered by a lost instance, then by its adopter", func(s *soak, ev *evidence, res *results) {
			s.rep.AdoptInstance, ev.rows["E"][0].batch = "LOST1", batching.OutBatchNo("LOST1", 5)
			res.refusals["E"] = append(res.refusals["E"], payout.CancelRefusedEvent{OutDetailNo: "E", Code: payout.CancelFinal})
		}, ""},
		{"a cancel refused twice in a batch of a live instance", func(s *soak, ev *evidence, res *results) {
			s.rep.AdoptInstance, ev.rows["E"][0].batch = "LOST1", batching.OutBatchNo("LIVE1", 5)
			res.refusals["E"] = append(res.refusals["E"], payout.CancelRefusedEvent{OutDetailNo: "E", Code: payout.CancelFinal})
		}, "cancels:"},
		{"an unknown payout refused as final", func(_ *soak, _ *evidence, res *results) {
			res.refusals["NOSUCH1"][0].Code = payout.CancelFinal
		}, "cancels:"},
		{"a refusal nobody asked for", func(_ *soak, _ *evidence, res *results) {
			res.refusals["D"] = []payout.CancelRefusedEvent{{OutDetailNo: "D", Code: payout.CancelFinal}}
		}, "cancels:"},
		{"wait_user_confirm twice", func(_ *soak, _ *evidence, res *results) { res.waits["A"] = append(res.waits["A"], res.waits["A"][0]) },
			"wait_user_confirm"},
		{"wait_user_confirm for a bill WeChat never had", func(_ *soak, _ *evidence, res *results) {
			res.waits["C"] = []payout.WaitUserConfirmEvent{res.waits["A"][0]}
			res.waits["C"][0].OutDetailNo, res.waits["C"][0].OutBillNo = "C", "C"
		}, "wait_user_confirm"},
		{"wait_user_confirm without package_info", func(_ *soak, _ *evidence, res *results) { res.waits["B"][0].PackageInfo = "" },
			"wait_user_confirm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ev, res := billsFixture()
			tt.breakIt(s, ev, res)
			s.checkPayouts(ev)
			s.checkWaits(res, ev)
			s.checkCancels(res, ev)
			found := false
			for _, c := range s.rep.Checks {
				named := tt.wantFail != "" && strings.HasPrefix(c.Name, tt.wantFail)
				found = found || named
				if named && c.OK || tt.wantFail == "" && !c.OK {
					t.Errorf("%s: ok %v (%s)", c.Name, c.OK, c.Detail)
				}
			}
			if tt.wantFail != "" && !found {
				t.Fatalf("no check named %q", tt.wantFail)
			}
		})
	}
}

// TestStackDump: the last dump of a log is read back with only the goroutines that run
// paystream code; a log without a whole dump gives "".
func TestStackDump(t *testing.T) {
	var log bytes.Buffer
	log.WriteString("time=… level=INFO msg=one\n")
	cli.DumpStacks(&log)
	log.WriteString("time=… level=INFO msg=two\n")
	cli.DumpStacks(&log)
	log.WriteString("time=… level=INFO msg=three\n")
	got := stackDump(log.Bytes())
	if !strings.HasPrefix(got, cli.DumpBegin+" at ") || !strings.Contains(got, "soak.TestStackDump") {
		t.Fatalf("dump lacks its header or this test's goroutine:\n%s", got)
	}
	for _, g := range strings.Split(got, "\n\n")[1:] {
		if !strings.HasPrefix(g, "goroutine ") || !strings.Contains(g, "github.com/paystream/paystream/") {
			t.Fatalf("kept a goroutine without paystream code, or a piece of one:\n%s", g)
		}
	}
	if strings.Contains(got, "msg=") || strings.Contains(got, cli.DumpEnd) {
		t.Fatalf("log lines or the end line kept:\n%s", got)
	}
	if n := strings.Count(got, cli.DumpBegin); n != 1 {
		t.Fatalf("%d dumps returned, want the last one", n)
	}
	cut := log.Bytes()[:bytes.LastIndex(log.Bytes(), []byte(cli.DumpBegin))+5]
	if got := stackDump(cut); !strings.HasPrefix(got, cli.DumpBegin) {
		t.Fatalf("a log whose last dump is cut short should give the one before, got %.100q", got)
	}
	if got := stackDump([]byte("time=… level=INFO msg=no dump\n")); got != "" {
		t.Fatalf("no dump: got %q", got)
	}
}

// TestCheckStuckStages: a processor's (or a lost processor's) report of a stuck stage fails
// the check, naming the log; logs without one pass it.
func TestCheckStuckStages(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name, "processor.log")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	healthy := "time=… level=INFO msg=progress\n"
	stuck := `time=… level=ERROR msg="` + stuckStageLine + `: on one piece of work far longer than it ever takes" stage=commit for=1m0s` + "\n"
	for _, tc := range []struct {
		name     string
		p1, lost string
		wantOK   bool
		wantIn   string
	}{
		{"none", healthy, healthy, true, "reports []"},
		{"a running processor", healthy + stuck, healthy, false, "p1/processor.log: 1"},
		{"a lost processor", healthy, stuck + stuck, false, "lost/processor.log: 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &soak{rep: &Report{}, procs: []*processor{{name: "p1", logPath: write("p1", tc.p1)}}, lostLogs: []string{write("lost", tc.lost)}}
			s.checkStuckStages()
			c := s.rep.Checks[0]
			if c.OK != tc.wantOK || !strings.Contains(c.Detail, tc.wantIn) {
				t.Fatalf("check %+v, want ok %v with %q", c, tc.wantOK, tc.wantIn)
			}
		})
	}
}

// TestCheckAdoption_RunsAgain: an adoption that ran once must have done what its plan said;
// one the command ran again by itself after a NATS failure (its first run moved some claims)
// is judged on what is left behind, not against the plan.
func TestCheckAdoption_RunsAgain(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	topo := broker.DefaultTopology()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: topo.ClaimsBucket}); err != nil {
		t.Fatal(err)
	}
	plan := Adoption{Listed: 14222, Held: 14222, Batches: 129, InBatches: 13112, ToPay: 1110}
	got := plan
	got.Listed, got.Held = 14220, 14220 // two claims moved by the first run
	for _, tc := range []struct {
		name string
		runs int
		want bool
	}{{"one run", 1, false}, {"run again", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := &soak{js: js, topo: topo, adopterKilled: true, rep: &Report{Adoptions: 1, AdoptInstance: "lostInstance", AdoptPlan: plan, Adopted: got,
				AdoptAttempts: 1, AdoptRuns: tc.runs}}
			s.checkAdoption(ctx)
			if c := s.rep.Checks[0]; c.OK != tc.want {
				t.Fatalf("check %+v, want ok %v", c, tc.want)
			}
		})
	}
}
