package wechatpaytest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// TestAbnormal_Receipt: the receipt query answers PENDING with no instruction until one is
// made, then that instruction, its state following the sandbox clock.
func TestAbnormal_Receipt(t *testing.T) {
	srv, clk := manual(t)
	srv.AddReceipt("R1", 1234)
	query := func(receipt string) (reply, wechatpay.TransferInstructionResponse) {
		t.Helper()
		rep := send(t, srv, "GET", "/v3/abnormal-fund-processing/receipts/"+receipt, nil)
		var r wechatpay.TransferInstructionResponse
		if rep.status == http.StatusOK {
			rep.decode(t, &r)
		}
		return rep, r
	}
	if rep, _ := query("R9"); rep.status != http.StatusNotFound || rep.code() != "NOT_FOUND" {
		t.Fatalf("unknown receipt: HTTP %d %s", rep.status, rep.code())
	}
	if _, r := query("R1"); r.ReceiptState != wechatpay.ReceiptStatePending || r.Instruction != nil || r.TransferAmount.Total != 1234 {
		t.Fatalf("a receipt not instructed: %+v", r)
	}
	body := mustJSON(t, &wechatpay.CreateTransferInstructionRequest{OutInstructionNo: "I1", AppID: []string{DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser})
	const uri = "/v3/abnormal-fund-processing/receipts/R1/transfer-instructions"
	if rep := send(t, srv, "POST", uri, body); rep.status != http.StatusOK {
		t.Fatalf("create: HTTP %d %s", rep.status, rep.body)
	}
	// The same number and body again is answered; another number is ALREADY_EXISTS.
	if rep := send(t, srv, "POST", uri, body); rep.status != http.StatusOK {
		t.Fatalf("resend: HTTP %d %s", rep.status, rep.body)
	}
	other := mustJSON(t, &wechatpay.CreateTransferInstructionRequest{OutInstructionNo: "I2", AppID: []string{DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser})
	if rep := send(t, srv, "POST", uri, other); rep.status != http.StatusBadRequest || rep.code() != "ALREADY_EXISTS" {
		t.Fatalf("another number: HTTP %d %s", rep.status, rep.code())
	}
	for _, step := range []struct {
		d    time.Duration
		want string
	}{
		{0, wechatpay.ReceiptStatePending},
		{DefaultAcceptDelay, wechatpay.ReceiptStateProgress},
		{DefaultProcessDelay, wechatpay.ReceiptStateCompleted},
	} {
		clk.Add(step.d)
		_, r := query("R1")
		if r.ReceiptState != step.want || r.Instruction == nil || r.Instruction.OutInstructionNo != "I1" {
			t.Fatalf("after %v: %+v, want %s of I1", step.d, r, step.want)
		}
	}
	got := srv.Instructions()
	if len(got) != 1 || got[0].OutInstructionNo != "I1" || got[0].State != wechatpay.ReceiptStateCompleted || got[0].Amount != 1234 {
		t.Fatalf("Instructions() = %+v", got)
	}
}

// TestAbnormal_Hold: a create held before commit commits nothing when its client goes away;
// one held after commit is committed though its client never hears it; a released one goes
// on as usual.
func TestAbnormal_Hold(t *testing.T) {
	tests := []struct {
		name      string
		at        HoldPoint
		cancel    bool // the client goes away while held; else the hold is released
		wantInstr int
		wantErr   bool
	}{
		{name: "before commit, client gone", at: HoldBeforeCommit, cancel: true, wantInstr: 0, wantErr: true},
		{name: "after commit, client gone", at: HoldAfterCommit, cancel: true, wantInstr: 1, wantErr: true},
		{name: "before commit, released", at: HoldBeforeCommit, wantInstr: 1},
		{name: "after commit, released", at: HoldAfterCommit, wantInstr: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := NewServer(t, WithSpeed(fast))
			c := newClient(t, srv, wechatpay.WithRetries(0))
			srv.AddReceipt("R1", 100)
			held, release := srv.HoldInstr(tc.at)
			defer release()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := c.CreateTransferInstruction(ctx, "R1", &wechatpay.CreateTransferInstructionRequest{
					OutInstructionNo: "I1", AppID: []string{DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser})
				done <- err
			}()
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatal("the create never reached the hold")
			}
			if tc.cancel {
				cancel()
			} else {
				release()
			}
			err := <-done
			if (err != nil) != tc.wantErr {
				t.Fatalf("create: %v, want error %v", err, tc.wantErr)
			}
			// The handler ends on its own once its client is gone: wait for the commit it may make.
			checkFor(t, 5*time.Second, func() error {
				if n := len(srv.Instructions()); n != tc.wantInstr {
					return errors.New("instructions not yet as wanted")
				}
				return nil
			})
		})
	}
}
