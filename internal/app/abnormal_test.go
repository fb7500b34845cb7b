package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/abnormal"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestRun_AbnormalFundCallback: an abnormal-fund instruction sent with the processor's
// callback URL is completed in the ledger by WeChat's ABNORMAL_FUND_PROCESSING.TRANSFER.SUCCESS
// callback alone (issue 15: followed "by query and callback"): its follow never gets to query.
// A callback for an instruction this ledger does not hold is refused, so WeChat delivers it
// again (to the replica that holds it).
func TestRun_AbnormalFundCallback(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	srv.AddReceipt("R-OURS", 4321)
	srv.AddReceipt("R-ELSEWHERE", 99)
	cfg := billsConfig(t, srv) // a callback listener and its URL
	startProcessor(t, cfg, io.Discard)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	instrs, err := ledger.OpenInstructions(ctx, cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { instrs.Close() })
	api, err := cfg.WeChatPay.Client(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// An instruction of another ledger, at the same callback URL.
	var foreign wechatpay.TransferInstructionResponse
	body, err := wechatpay.MarshalBody(&wechatpay.CreateTransferInstructionRequest{OutInstructionNo: abnormal.NewInstructionNo(),
		AppID: []string{wechatpaytest.DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser, NotifyURL: cfg.Pipeline.NotifyURL})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Do(ctx, http.MethodPost, "/v3/abnormal-fund-processing/receipts/R-ELSEWHERE/transfer-instructions", body, &foreign); err != nil {
		t.Fatal(err)
	}

	// Ours: recorded and sent; its follow would query only after an hour.
	type result struct {
		in  ledger.Instruction
		err error
	}
	done := make(chan result, 1)
	go func() {
		in, err := abnormal.Instruct(ctx, instrs, api, "R-OURS", []string{wechatpaytest.DefaultAppID}, cfg.Pipeline.NotifyURL,
			abnormal.WithPoll(time.Hour))
		done <- result{in, err}
	}()
	testingutil.PollEvery(t, time.Minute, 20*time.Millisecond, func() (bool, string) {
		all, err := instrs.All(ctx)
		if err != nil || len(all) != 1 {
			return false, "no instruction yet"
		}
		return all[0].State == ledger.InstrCompleted, all[0].State
	})
	cancel()
	if r := <-done; !errors.Is(r.err, context.Canceled) {
		t.Errorf("Instruct: %v; want it still following (cancelled) when the callback completed it", r.err)
	}
	// The sandbox counts our acknowledgement when it reads the answer, which can come after
	// the ledger shows the instruction completed (the handler commits, then answers).
	testingutil.PollEvery(t, time.Minute, 20*time.Millisecond, func() (bool, string) {
		st := srv.Stats()
		return st.NotifyFails > 0 && st.Notified >= 1,
			fmt.Sprintf("callbacks acknowledged %d (want ours), refused %d (want the other ledger's)", st.Notified, st.NotifyFails)
	})
	st := srv.Stats()
	for _, ep := range []string{wechatpaytest.EndpointReceipt, wechatpaytest.EndpointInstrByOutNo} {
		if n := st.Requests[ep]; n != 0 {
			t.Errorf("%s called %d times: the callback alone should have completed the instruction", ep, n)
		}
	}
}
