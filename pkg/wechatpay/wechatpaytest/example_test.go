package wechatpaytest_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// A create answered by a reset after the sandbox committed it is retried with the same
// bytes; the sandbox's record shows each detail paid once.
func Example() {
	o := wechatpaytest.DefaultOptions() // in a test: srv := wechatpaytest.NewServer(t)
	o.Speed = 1000
	srv, err := wechatpaytest.New(o)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		panic(err)
	}
	c, _ := wechatpay.NewClient(srv.ClientConfig(), wechatpay.WithRetries(3), wechatpay.WithLogger(slog.New(slog.DiscardHandler)))
	srv.Fail(wechatpaytest.EndpointCreateBatch, wechatpaytest.DropAfterCommit)
	body, _ := wechatpay.MarshalBody(&wechatpay.CreateBatchRequest{
		AppID: wechatpaytest.DefaultAppID, OutBatchNo: "EX1", BatchName: "佣金", BatchRemark: "佣金",
		TotalAmount: 100, TotalNum: 1,
		TransferDetailList: []wechatpay.TransferDetailInput{{OpenID: "o-1", OutDetailNo: "EX1D1", TransferAmount: 100, TransferRemark: "佣金"}},
	})
	if _, err := c.CreateTransferBatchBody(context.Background(), body); err != nil {
		fmt.Println(err)
	}
	fmt.Println(srv.Stats().Faults["drop_after_commit"], "reset,", len(srv.Batches()), "batch")
	// Output: 1 reset, 1 batch
}
