package pipeline

import (
	"context"

	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// created is what a batch create answers, whichever rail.
type created struct {
	BatchID, Status string
}

// batchPage is one batch query answer, whichever rail: the direct API wraps the batch in
// transfer_batch (spec §6), the partner API is flat (spec §7).
type batchPage struct {
	Batch   wechatpay.TransferBatch
	Details []wechatpay.DetailBrief
}

// createBatch sends a frozen body to the create endpoint of its rail.
func createBatch(ctx context.Context, api *wechatpay.Client, rail string, body []byte) (created, error) {
	if rail == payout.RailPartner {
		r, err := api.PartnerCreateTransferBatchBody(ctx, body)
		if err != nil {
			return created{}, err
		}
		return created{BatchID: r.BatchID}, nil // the partner answer has no status (spec §7)
	}
	r, err := api.CreateTransferBatchBody(ctx, body)
	if err != nil {
		return created{}, err
	}
	return created{BatchID: r.BatchID, Status: r.BatchStatus}, nil
}

// queryBatch queries a batch by out_batch_no on its rail.
func queryBatch(ctx context.Context, api *wechatpay.Client, rail, outBatchNo string, q wechatpay.BatchQuery) (*batchPage, error) {
	if rail == payout.RailPartner {
		r, err := api.PartnerQueryBatchByOutBatchNo(ctx, outBatchNo, q)
		if err != nil {
			return nil, err
		}
		return &batchPage{Batch: wechatpay.TransferBatch{
			MchID: r.SpMchID, OutBatchNo: r.OutBatchNo, BatchID: r.BatchID, BatchStatus: r.BatchStatus,
			CloseReason: r.CloseReason, TotalAmount: r.TotalAmount, TotalNum: r.TotalNum,
			SuccessAmount: r.SuccessAmount, SuccessNum: r.SuccessNum, FailAmount: r.FailAmount, FailNum: r.FailNum,
		}, Details: r.TransferDetailList}, nil
	}
	r, err := api.QueryBatchByOutBatchNo(ctx, outBatchNo, q)
	if err != nil {
		return nil, err
	}
	return &batchPage{Batch: r.TransferBatch, Details: r.TransferDetailList}, nil
}

// detail is one single-detail query answer, whichever rail: the only answer that carries
// fail_reason (spec §6, §7). The openid and name ciphertext of the answer are not kept.
type detail struct {
	OutDetailNo, DetailID, Status, FailReason string
}

// queryDetail queries one detail by out_batch_no and out_detail_no on its rail.
func queryDetail(ctx context.Context, api *wechatpay.Client, rail, outBatchNo, outDetailNo string) (detail, error) {
	if rail == payout.RailPartner {
		r, err := api.PartnerQueryDetailByOutDetailNo(ctx, outBatchNo, outDetailNo)
		if err != nil {
			return detail{}, err
		}
		return detail{OutDetailNo: r.OutDetailNo, DetailID: r.DetailID, Status: r.DetailStatus, FailReason: r.FailReason}, nil
	}
	r, err := api.QueryDetailByOutDetailNo(ctx, outBatchNo, outDetailNo)
	if err != nil {
		return detail{}, err
	}
	return detail{OutDetailNo: r.OutDetailNo, DetailID: r.DetailID, Status: r.DetailStatus, FailReason: r.FailReason}, nil
}
