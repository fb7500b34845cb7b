package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// freeAddr returns a loopback address nothing listens on (the callback listener's: its URL
// goes into every bill, so it is fixed before the processor starts).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// billsConfig is testConfig for a merchant on transfer bills, callbacks on.
func billsConfig(t *testing.T, srv *wechatpaytest.Server) Config {
	cfg := testConfig(t, srv)
	cfg.WeChatPay.Product, cfg.Pipeline.Product = pipeline.ProductBills, pipeline.ProductBills
	addr := freeAddr(t)
	cfg.Callback.Listen, cfg.Pipeline.NotifyURL = addr, "http://"+addr+cfg.Callback.Path
	p := &cfg.Pipeline
	p.Submit.BillWorkers = 16
	p.Poll.BillSweep, p.Poll.BillSweepMax = 500*time.Millisecond, 2*time.Second
	p.RateLimit = pipeline.RateConfig{Create: 100, Query: 100, Detail: 100, Cancel: 20}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// cancel publishes an upstream cancel of each key.
func cancel(t *testing.T, js jetstream.JetStream, mchid string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		req := payout.CancelRequest{Schema: payout.CancelSchemaV1, OutDetailNo: k, MchID: mchid, Reason: "test"}
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(payout.CancelSubject(payout.CancelPrefix, mchid))
		m.Data = body
		m.Header.Set(jetstream.MsgIDHeader, payout.CancelMsgID(req))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRun_EndToEndBills pays a workload through transfer bills with callbacks (a third of
// them lost), faults on creates and queries, payees who confirm, fail, decline or never
// confirm, and upstream cancels: every valid payout ends SUCCESS (paid exactly once, by the
// sandbox's own record), FAIL with WeChat's reason, or CANCELLED; payees' apps get
// package_info once per bill; refused cancels are answered; the audit is clean.
func TestRun_EndToEndBills(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200), wechatpaytest.WithNotFoundLag(100*time.Millisecond),
		func(o *wechatpaytest.Options) {
			o.Product = "bills"
			o.BillAcceptDelay = 0                // the create answers WAIT_USER_CONFIRM, as WeChat's does
			o.BillAutoConfirm = 20 * time.Second // 0.1 s
			o.BillConfirmTimeout = 2 * time.Hour // 36 s: cancels come well before, even under -race
			o.BillCloseLag = time.Minute         // 0.3 s more
			o.NotifyLoss = 0.3
		})
	srv.FailRate(wechatpaytest.EndpointCreateBill, wechatpaytest.SystemError, 0.05)
	srv.FailRate(wechatpaytest.EndpointCreateBill, wechatpaytest.DropAfterCommit, 0.05)
	srv.FailRate(wechatpaytest.EndpointBillByOutNo, wechatpaytest.FrequencyLimited, 0.05)
	srv.FailRate(wechatpaytest.EndpointCancelBill, wechatpaytest.DropAfterCommit, 0.2)
	cfg := billsConfig(t, srv)
	var logs bytes.Buffer
	p := startProcessor(t, cfg, &logs)

	o := synth.DefaultOptions()
	o.Product = synth.ProductBills
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate, o.NoConfirmRate, o.DeclineRate = 1000, 43, 0.01, 0.03, 0.02, 0.04, 0.03
	sent := publish(t, p.js, o)

	// Cancel every other payee who will never confirm: cancelled before the bill closes.
	want := map[string]string{} // out_detail_no → final state
	var cancelled []string
	noConfirm := 0
	for key, rec := range sent.records {
		if rec.NeverConfirms() {
			noConfirm++
		}
		switch {
		case rec.NeverConfirms() && noConfirm%2 == 1:
			cancelled = append(cancelled, key)
			want[key] = ledger.PayoutCancelled
		case rec.NeverConfirms(), rec.Declines(), rec.Fails():
			want[key] = ledger.PayoutFail
		default:
			want[key] = ledger.PayoutSuccess
		}
	}
	if len(cancelled) == 0 {
		t.Fatal("the workload has no payee who never confirms")
	}
	cancel(t, p.js, o.MchID, cancelled...)

	db, err := ledger.OpenReadOnly(context.Background(), cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitFinal(t, db, len(sent.valid), 3*time.Minute)

	// Cancels nobody can act on: a payout already final, and one nobody has.
	var success string
	for key, st := range want {
		if st == ledger.PayoutSuccess {
			success = key
			break
		}
	}
	cancel(t, p.js, o.MchID, success, "NOSUCHPAYOUT1")
	bad := nats.NewMsg(payout.CancelSubject(payout.CancelPrefix, o.MchID))
	bad.Data = []byte(`{"schema":"paystream.cancel.v1","out_detail_no":"BAD-KEY!","mchid":"` + o.MchID + `"}`)
	if _, err := p.js.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}

	paid := srv.PaidBills()
	t.Run("paid exactly once by the sandbox's record, the others never", func(t *testing.T) {
		for key, st := range want {
			n := 0
			if st == ledger.PayoutSuccess {
				n = 1
			}
			if got := paid[key]; got != n {
				t.Errorf("%s (%s) paid %d times, want %d", key, st, got, n)
			}
		}
		if d := srv.DoublePaid(); len(d) > 0 {
			t.Errorf("sandbox reports double payments: %v", d)
		}
	})
	t.Run("ledger states, reasons and bills agree with the sandbox", func(t *testing.T) {
		bills := map[string]wechatpaytest.BillSummary{}
		for _, b := range srv.Bills() {
			bills[b.OutBillNo] = b
		}
		for key, st := range want {
			got, err := db.Payout(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != st {
				t.Errorf("%s: ledger %s, want %s", key, got.State, st)
				continue
			}
			sb, known := bills[key]
			switch {
			case st == ledger.PayoutCancelled && !known:
				// cancelled before it was ever sent: nothing at WeChat
			case !known:
				t.Errorf("%s: %s in the ledger, no bill at the sandbox", key, st)
			case sb.State != st:
				t.Errorf("%s: ledger %s, sandbox %s", key, st, sb.State)
			case st == ledger.PayoutFail && got.FailReason != sb.FailReason:
				t.Errorf("%s: ledger fail_reason %q, sandbox %q", key, got.FailReason, sb.FailReason)
			}
		}
	})
	t.Run("payees' apps get package_info once per bill", func(t *testing.T) {
		msgs := drain(t, p.js, cfg.NATS.Topology.ResultsStream, 4*len(sent.valid))
		waits := map[string]int{}
		confirmable := 0
		for _, m := range msgs {
			if !strings.HasSuffix(m.Subject(), ".wait_user_confirm") {
				continue
			}
			var ev payout.WaitUserConfirmEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.PackageInfo == "" || ev.AppID == "" || ev.OutBillNo != ev.OutDetailNo || ev.TransferBillNo == "" || ev.ExpireAt.IsZero() {
				t.Errorf("wait_user_confirm event lacks what the app needs: %+v", ev)
			}
			waits[ev.OutDetailNo]++
		}
		for key, st := range want {
			if st == ledger.PayoutSuccess {
				confirmable++
			}
			if waits[key] > 1 {
				t.Errorf("%s: %d wait_user_confirm events", key, waits[key])
			}
		}
		// A create whose answer was lost may be first answered after the payee confirmed.
		if len(waits) < confirmable*8/10 {
			t.Errorf("%d wait_user_confirm events for %d confirmed bills", len(waits), confirmable)
		}
	})
	t.Run("refused cancels are answered, accepted ones end CANCELLED", func(t *testing.T) {
		testingutil.PollEvery(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
			got := map[string]string{}
			for _, m := range drain(t, p.js, cfg.NATS.Topology.ResultsStream, 4*len(sent.valid)) {
				if !strings.HasSuffix(m.Subject(), ".cancel_refused") {
					continue
				}
				var ev payout.CancelRefusedEvent
				if err := json.Unmarshal(m.Data(), &ev); err != nil {
					return false, err.Error()
				}
				got[ev.OutDetailNo] = ev.Code
			}
			ok := len(got) == 3 && got[success] == payout.CancelFinal && got["NOSUCHPAYOUT1"] == payout.CancelUnknown &&
				got["BAD-KEY!"] == payout.CancelInvalid
			return ok, fmt.Sprintf("refusals %v, want %s %s, NOSUCHPAYOUT1 %s and BAD-KEY! %s only", got, success,
				payout.CancelFinal, payout.CancelUnknown, payout.CancelInvalid)
		})
	})
	t.Run("audit is clean", func(t *testing.T) { auditClean(t, time.Now(), cfg.Ledger) })
	if t.Failed() {
		t.Logf("processor logs:\n%s", logs.String())
	}
}
