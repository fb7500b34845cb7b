package wechatpay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// payNamed creates a direct batch whose details carry the payee's real name (a receipt needs it),
// one per openid, 100 fen each, and moves the clock until the sandbox settled it.
func (w *flowWorld) payNamed(t *testing.T, outBatchNo string, openIDs ...string) {
	t.Helper()
	req := &wechatpay.CreateBatchRequest{AppID: wechatpaytest.DefaultAppID, OutBatchNo: outBatchNo, BatchName: "佣金",
		BatchRemark: "佣金结算", TotalNum: len(openIDs)}
	for i, o := range openIDs {
		name, err := w.c.EncryptUserName("张三")
		if err != nil {
			t.Fatal(err)
		}
		req.TransferDetailList = append(req.TransferDetailList, wechatpay.TransferDetailInput{
			OpenID: o, OutDetailNo: fmt.Sprintf("%sD%d", outBatchNo, i), TransferAmount: 100, TransferRemark: "佣金", UserName: name,
		})
		req.TotalAmount += 100
	}
	if _, err := w.c.CreateTransferBatch(context.Background(), req); err != nil {
		t.Fatalf("create %s: %v", outBatchNo, err)
	}
	w.clk.Add(time.Second)
}

// payBillNamed creates a transfer bill with the payee's real name and moves the clock until the
// simulated payee confirmed it and it was paid (the world needs WithBillAutoConfirm).
func (w *flowWorld) payBillNamed(t *testing.T, outBillNo string) {
	t.Helper()
	name, err := w.c.EncryptUserName("李四")
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.c.CreateTransferBill(context.Background(), &wechatpay.CreateTransferBillRequest{
		AppID: wechatpaytest.DefaultAppID, OutBillNo: outBillNo, TransferSceneID: "1000", OpenID: "o-bill",
		TransferAmount: 888, TransferRemark: "奖励", UserName: name,
		TransferSceneReportInfos: []wechatpay.TransferSceneReportInfo{{InfoType: "活动名称", InfoContent: "新春"}, {InfoType: "奖励说明", InfoContent: "红包"}},
	})
	if err != nil {
		t.Fatalf("create bill %s: %v", outBillNo, err)
	}
	w.clk.Add(2 * time.Second)
}

// clockWait is a ReceiptWait on the test clock: each wait moves it by step, at most n times.
func (w *flowWorld) clockWait(step time.Duration, n int, waits *int) wechatpay.ReceiptWait {
	return func(ctx context.Context, pending int) error {
		*waits = pending
		if pending > n {
			return wechatpay.ErrReceiptPending
		}
		w.clk.Add(step)
		return nil
	}
}

func TestFetchReceipt(t *testing.T) {
	w := newFlowWorld(t, wechatpaytest.WithBillAutoConfirm(time.Millisecond))
	w.payNamed(t, "RB1", "o-a", "o-b")
	w.payBillNamed(t, "RBILL1")

	tests := []struct {
		name  string
		ref   wechatpay.ReceiptRef
		names []string // what the file must name
	}{
		{"whole batch", wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: "RB1"}, []string{"batch RB1", "RB1D0", "RB1D1"}},
		{"one detail", wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: "RB1", OutDetailNo: "RB1D1"}, []string{"detail RB1D1 of batch RB1", "100 fen"}},
		{"transfer bill", wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBill, OutBillNo: "RBILL1"}, []string{"bill RBILL1", "888 fen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var waits int
			pdf, err := wechatpay.FetchReceipt(context.Background(), w.c, tc.ref, w.clockWait(time.Minute, 10, &waits))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(pdf, []byte("%PDF-1.4")) {
				t.Fatalf("not a PDF: %q", pdf)
			}
			for _, n := range tc.names {
				if !bytes.Contains(pdf, []byte(n)) {
					t.Errorf("the receipt does not name %q:\n%s", n, pdf)
				}
			}
			if waits == 0 {
				t.Error("never polled: the first answer must be a receipt still being generated")
			}
			again, err := wechatpay.FetchReceipt(context.Background(), w.c, tc.ref, w.clockWait(time.Minute, 10, &waits))
			if err != nil {
				t.Fatalf("second fetch (ALREADY_EXISTS → query): %v", err)
			}
			if !bytes.Equal(again, pdf) {
				t.Error("the second fetch got another file")
			}
		})
	}
}

func TestFetchReceipt_refused(t *testing.T) {
	w := newFlowWorld(t)
	w.payNamed(t, "RF1", "o-ok", "fail-ACCOUNT_FROZEN-x")
	w.pay(t, "RNONAME", []wechatpay.Fen{100}) // no user_name
	w.payBillNamed(t, "RWAIT")                // no auto-confirm: waits for the payee

	batch := func(b, d string) wechatpay.ReceiptRef {
		return wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: b, OutDetailNo: d}
	}
	tests := []struct {
		name     string
		ref      wechatpay.ReceiptRef
		wantCode error
	}{
		{"failed detail", batch("RF1", "RF1D1"), wechatpay.ErrParamError},
		{"unknown detail", batch("RF1", "NOPE"), wechatpay.ErrNotFound},
		{"unknown batch", batch("NOBATCH", ""), wechatpay.ErrNotFound},
		{"detail sent without a name", batch("RNONAME", "RNONAMED0"), wechatpay.ErrParamError},
		{"batch sent without names", batch("RNONAME", ""), wechatpay.ErrInvalidRequest},
		{"bill not paid", wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBill, OutBillNo: "RWAIT"}, wechatpay.ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var waits int
			_, err := wechatpay.FetchReceipt(context.Background(), w.c, tc.ref, w.clockWait(time.Minute, 3, &waits))
			var r *wechatpay.ReceiptRefusal
			if !errors.Is(err, wechatpay.ErrReceiptRefused) || !errors.Is(err, tc.wantCode) || !errors.As(err, &r) {
				t.Fatalf("err = %v, want a refusal with %v", err, tc.wantCode)
			}
			if r.Ref != tc.ref || !strings.Contains(err.Error(), tc.ref.String()) || r.Reason == "" {
				t.Errorf("refusal %+v does not name %s with a reason", r, tc.ref)
			}
			if waits != 0 {
				t.Errorf("polled %d times after a refusal", waits)
			}
		})
	}
	// The successful detail of the same batch has its receipt.
	var waits int
	if _, err := wechatpay.FetchReceipt(context.Background(), w.c, batch("RF1", "RF1D0"), w.clockWait(time.Minute, 10, &waits)); err != nil {
		t.Fatalf("the successful detail: %v", err)
	}
}

func TestFetchReceipt_wrongHash(t *testing.T) {
	w := newFlowWorld(t, wechatpaytest.WithReceiptWrongHash(true))
	w.payNamed(t, "RH1", "o-a")
	var waits int
	pdf, err := wechatpay.FetchReceipt(context.Background(), w.c,
		wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: "RH1", OutDetailNo: "RH1D0"}, w.clockWait(time.Minute, 10, &waits))
	if !errors.Is(err, wechatpay.ErrReceiptHash) || pdf != nil {
		t.Fatalf("pdf %d bytes, err %v; want no bytes and ErrReceiptHash", len(pdf), err)
	}
	if got := w.srv.Stats().Faults[wechatpaytest.FaultReceiptWrongHash]; got != 1 {
		t.Errorf("%d wrong hashes served, want 1: the mismatch is not retried", got)
	}
}

func TestFetchReceipt_pending(t *testing.T) {
	w := newFlowWorld(t)
	w.payNamed(t, "RP1", "o-a")
	ref := wechatpay.ReceiptRef{Rail: wechatpay.ReceiptRailBatch, OutBatchNo: "RP1"}
	var waits int
	_, err := wechatpay.FetchReceipt(context.Background(), w.c, ref, w.clockWait(0, 3, &waits)) // the clock stands still
	if !errors.Is(err, wechatpay.ErrReceiptPending) || waits != 4 {
		t.Fatalf("err %v after %d waits; want ErrReceiptPending after 3 queries", err, waits)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := wechatpay.FetchReceipt(ctx, w.c, ref, wechatpay.PollEvery(time.Hour, 5)); err == nil {
		t.Fatal("a cancelled fetch succeeded")
	}
	_, err = wechatpay.FetchReceipt(context.Background(), w.c, ref, func(ctx context.Context, pending int) error {
		tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		return wechatpay.PollEvery(time.Hour, 5)(tctx, pending)
	})
	if !errors.Is(err, wechatpay.ErrReceiptPending) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrReceiptPending wrapping the context's deadline", err)
	}
}

func TestClient_DownloadReceipt(t *testing.T) {
	w := newFlowWorld(t)
	w.payNamed(t, "RD1", "o-a")
	ctx := context.Background()
	if _, err := w.c.ApplyDetailReceipt(ctx, "RD1", "RD1D0"); err != nil {
		t.Fatal(err)
	}
	w.clk.Add(time.Hour)
	r, err := w.c.QueryDetailReceipt(ctx, "RD1", "RD1D0")
	if err != nil || r.SignatureStatus != wechatpay.SignatureFinished || r.HashType != wechatpay.HashSHA256 {
		t.Fatalf("query: %+v, %v", r, err)
	}
	if _, err := w.c.DownloadReceipt(ctx, r.ReceiptFile); err != nil {
		t.Fatalf("download: %v", err)
	}

	tests := []struct {
		name    string
		change  func(f *wechatpay.ReceiptFile)
		wantErr error
	}{
		{"SM3 cannot be checked", func(f *wechatpay.ReceiptFile) { f.HashType = wechatpay.HashSM3 }, wechatpay.ErrNotSent},
		{"hash_value not a SHA256", func(f *wechatpay.ReceiptFile) { f.HashValue = "abc" }, wechatpay.ErrBadInput},
		{"another host", func(f *wechatpay.ReceiptFile) {
			f.DownloadURL = strings.Replace(f.DownloadURL, "127.0.0.1", "localhost", 1)
		}, wechatpay.ErrForeignDownload},
		{"hash of another file", func(f *wechatpay.ReceiptFile) { f.HashValue = strings.Repeat("0", 64) }, wechatpay.ErrReceiptHash},
		{"expired URL", func(*wechatpay.ReceiptFile) { w.clk.Add(wechatpaytest.ReceiptURLValidity) }, wechatpay.ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := r.ReceiptFile
			tc.change(&f)
			pdf, err := w.c.DownloadReceipt(ctx, f)
			if !errors.Is(err, tc.wantErr) || pdf != nil {
				t.Fatalf("got %d bytes, err %v; want %v", len(pdf), err, tc.wantErr)
			}
		})
	}
}

func TestDetailReceiptRequest_Validate(t *testing.T) {
	tests := []struct {
		name    string
		r       wechatpay.DetailReceiptRequest
		wantErr error
	}{
		{"ok", wechatpay.DetailReceiptRequest{AcceptType: wechatpay.AcceptTypeBatchTransfer, OutBatchNo: "B", OutDetailNo: "D"}, nil},
		{"other accept_type", wechatpay.DetailReceiptRequest{AcceptType: "TRANSFER_TO_POCKET", OutBatchNo: "B", OutDetailNo: "D"}, wechatpay.ErrBadInput},
		{"no batch", wechatpay.DetailReceiptRequest{AcceptType: wechatpay.AcceptTypeBatchTransfer, OutDetailNo: "D"}, wechatpay.ErrBadInput},
		{"detail too long", wechatpay.DetailReceiptRequest{AcceptType: wechatpay.AcceptTypeBatchTransfer, OutBatchNo: "B", OutDetailNo: strings.Repeat("D", 33)}, wechatpay.ErrBadInput},
		{"batch not [0-9A-Za-z]", wechatpay.DetailReceiptRequest{AcceptType: wechatpay.AcceptTypeBatchTransfer, OutBatchNo: "B-1", OutDetailNo: "D"}, wechatpay.ErrBadInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.r.Validate(); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
	for _, ref := range []wechatpay.ReceiptRef{
		{Rail: "partner", OutBatchNo: "B"}, {Rail: wechatpay.ReceiptRailBill, OutBatchNo: "B"}, {Rail: wechatpay.ReceiptRailBatch, OutBillNo: "X"},
		{Rail: wechatpay.ReceiptRailBill, OutBillNo: "X/../Y"}, {Rail: wechatpay.ReceiptRailBatch, OutBatchNo: "B", OutDetailNo: "D 1"},
	} {
		if _, err := wechatpay.FetchReceipt(context.Background(), nil, ref, nil); !errors.Is(err, wechatpay.ErrBadInput) {
			t.Errorf("%+v: err = %v, want ErrBadInput", ref, err)
		}
	}
}
