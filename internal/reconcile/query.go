package reconcile

import (
	"context"
	"fmt"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// ClientQuery is a Query through c (docs/wechatpay.md §5, §6; docs/transfer-bills.md): on the
// batch rails it reads each batch's detail pages once (ALL statuses, MaxQueryLimit a page)
// and answers its members from them, falling back to the detail query for a member the pages
// do not list (a batch not FINISHED lists none); on the bills rail it queries the bill by
// out_bill_no, whose answer carries the amount. Not safe for concurrent use (it caches the
// pages of one run).
//
// Build c with wechatpay.WithRetries(QueryRetries): an ambiguous answer (a timeout, 5xx,
// SYSTEM_ERROR, 429: docs/wechatpay.md §9) proves nothing about the payout, so it is asked
// again before the payout is reported with no answer.
func ClientQuery(c *wechatpay.Client) Query {
	q := &clientQuery{c: c, pages: map[string]map[string]wechatpay.DetailBrief{}}
	return q.ask
}

// QueryRetries is how many more times a reconciliation's client asks again after an
// ambiguous answer (wechatpay.WithRetries).
const QueryRetries = 5

type clientQuery struct {
	c     *wechatpay.Client
	pages map[string]map[string]wechatpay.DetailBrief // out_batch_no → out_detail_no → row
}

func (q *clientQuery) ask(ctx context.Context, p ledger.Paid) (Remote, error) {
	switch p.Rail {
	case ledger.RailBills:
		b, err := q.c.QueryTransferBillByOutBillNo(ctx, p.OutDetailNo)
		if err != nil {
			return Remote{}, err
		}
		return Remote{State: b.State, Voucher: b.TransferBillNo, Amount: int64(b.TransferAmount)}, nil
	case "partner":
		return q.detail(ctx, p, true)
	default:
		return q.detail(ctx, p, false)
	}
}

// detail answers a batch-rail payout from its batch's pages, or its own detail query.
func (q *clientQuery) detail(ctx context.Context, p ledger.Paid, partner bool) (Remote, error) {
	rows, ok := q.pages[p.OutBatchNo]
	if !ok {
		var err error
		if rows, err = q.readPages(ctx, p.OutBatchNo, partner); err != nil {
			return Remote{}, err
		}
		q.pages[p.OutBatchNo] = rows
	}
	if d, ok := rows[p.OutDetailNo]; ok {
		return Remote{State: d.DetailStatus, Voucher: d.DetailID}, nil
	}
	if partner {
		d, err := q.c.PartnerQueryDetailByOutDetailNo(ctx, p.OutBatchNo, p.OutDetailNo)
		if err != nil {
			return Remote{}, err
		}
		return Remote{State: d.DetailStatus, Voucher: d.DetailID, Amount: int64(d.TransferAmount)}, nil
	}
	d, err := q.c.QueryDetailByOutDetailNo(ctx, p.OutBatchNo, p.OutDetailNo)
	if err != nil {
		return Remote{}, err
	}
	return Remote{State: d.DetailStatus, Voucher: d.DetailID, Amount: int64(d.TransferAmount)}, nil
}

// readPages reads every detail row a batch query lists, page by page.
func (q *clientQuery) readPages(ctx context.Context, outBatchNo string, partner bool) (map[string]wechatpay.DetailBrief, error) {
	rows := map[string]wechatpay.DetailBrief{}
	for offset := 0; ; offset += wechatpay.MaxQueryLimit {
		bq := wechatpay.BatchQuery{NeedQueryDetail: true, Offset: offset, Limit: wechatpay.MaxQueryLimit, DetailStatus: wechatpay.DetailStatusAll}
		var page []wechatpay.DetailBrief
		if partner {
			r, err := q.c.PartnerQueryBatchByOutBatchNo(ctx, outBatchNo, bq)
			if err != nil {
				return nil, fmt.Errorf("batch %s: %w", outBatchNo, err)
			}
			page = r.TransferDetailList
		} else {
			r, err := q.c.QueryBatchByOutBatchNo(ctx, outBatchNo, bq)
			if err != nil {
				return nil, fmt.Errorf("batch %s: %w", outBatchNo, err)
			}
			page = r.TransferDetailList
		}
		for _, d := range page {
			rows[d.OutDetailNo] = d
		}
		if len(page) < wechatpay.MaxQueryLimit {
			return rows, nil
		}
	}
}
