package wechatpay

import "log/slog"

// The LogValue methods below let these types be logged safely: openids, user_name and
// remarks are left out (STYLE, docs/wechatpay.md §11).

// LogValue logs the batch numbers and computed totals only.
func (r CreateBatchRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("out_batch_no", r.OutBatchNo), slog.Int64("total_amount", int64(r.TotalAmount)),
		slog.Int("total_num", r.TotalNum), slog.Int("details", len(r.TransferDetailList)))
}

// LogValue logs the partner batch numbers and computed totals only.
func (r PartnerCreateBatchRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("sub_mchid", r.SubMchID), slog.String("out_batch_no", r.OutBatchNo),
		slog.Int64("total_amount", int64(r.TotalAmount)), slog.Int("total_num", r.TotalNum))
}

// LogValue logs the detail number and amount, never the openid or user_name.
func (d TransferDetailInput) LogValue() slog.Value {
	return detailLog(d.OutDetailNo, d.TransferAmount, d.UserName)
}

// LogValue logs the detail number and amount, never the openid, user_name or id card.
func (d PartnerTransferDetailInput) LogValue() slog.Value {
	return detailLog(d.OutDetailNo, d.TransferAmount, d.UserName)
}

// LogValue logs the detail's numbers, status and fail reason, never the openid or user_name.
func (d DetailResponse) LogValue() slog.Value {
	return slog.GroupValue(slog.String("out_batch_no", d.OutBatchNo), slog.String("out_detail_no", d.OutDetailNo),
		slog.String("detail_status", d.DetailStatus), slog.String("fail_reason", d.FailReason))
}

// LogValue logs the bill number and amount, never the openid or user_name.
func (r CreateTransferBillRequest) LogValue() slog.Value {
	return detailLog(r.OutBillNo, r.TransferAmount, r.UserName)
}

func detailLog(no string, amount Fen, userName string) slog.Value {
	return slog.GroupValue(slog.String("out_no", no), slog.Int64("amount", int64(amount)), slog.Bool("has_user_name", userName != ""))
}
