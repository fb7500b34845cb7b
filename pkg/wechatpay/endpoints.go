package wechatpay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// API paths (docs/wechatpay.md §4–§7; docs/transfer-bills.md; docs/abnormal-funds.md).
const (
	pathBatches        = "/v3/transfer/batches"
	pathPartnerBatches = "/v3/partner-transfer/batches"
	pathTransferBills  = "/v3/fund-app/mch-transfer/transfer-bills"
	pathAbnormalFunds  = "/v3/abnormal-fund-processing/receipts"
)

// MarshalBody encodes v the way the official SDK does (json.Encoder: HTML escaping on, one trailing
// LF), so the bytes match the golden vectors. Callers that freeze a body before the first attempt
// (docs/wechatpay.md §11) freeze these bytes and send them with a …Body method.
func MarshalBody(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		return nil, fmt.Errorf("%w: encode body: %w", ErrNotSent, err)
	}
	return b.Bytes(), nil
}

func call[T any](ctx context.Context, c *Client, method, uri string, body []byte) (*T, error) {
	var out T
	if err := c.Do(ctx, method, uri, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// postBody sends frozen JSON bytes exactly as given.
func postBody[T any](ctx context.Context, c *Client, uri string, body []byte) (*T, error) {
	if !json.Valid(body) {
		return nil, invalid("POST %s: body is not valid JSON", uri)
	}
	return call[T](ctx, c, http.MethodPost, uri, body)
}

// postValidated validates v, encodes it with MarshalBody and sends it.
func postValidated[T any](ctx context.Context, c *Client, uri string, v interface{ Validate() error }) (*T, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	body, err := MarshalBody(v)
	if err != nil {
		return nil, err
	}
	return call[T](ctx, c, http.MethodPost, uri, body)
}

// segment returns a path parameter escaped with url.PathEscape, or an error if it is empty.
func segment(name, v string) (string, error) {
	if v == "" {
		return "", invalid("%s is required", name)
	}
	return url.PathEscape(v), nil
}

// path joins prefix with "/kind/value" pairs, escaping each value.
func path(prefix string, kindValue ...string) (string, error) {
	for i := 0; i+1 < len(kindValue); i += 2 {
		v, err := segment(kindValue[i], kindValue[i+1])
		if err != nil {
			return "", err
		}
		prefix += "/" + kindValue[i] + "/" + v
	}
	return prefix, nil
}

func get[T any](ctx context.Context, c *Client, prefix, query string, kindValue ...string) (*T, error) {
	p, err := path(prefix, kindValue...)
	if err != nil {
		return nil, err
	}
	return call[T](ctx, c, http.MethodGet, p+query, nil)
}

// encode returns the ?query of a batch query with keys sorted, as url.Values.Encode and the
// SDK do (docs/wechatpay.md §8). Offset, Limit and DetailStatus are only sent with NeedQueryDetail.
func (q BatchQuery) encode() (string, error) {
	if !q.NeedQueryDetail {
		if q.Offset != 0 || q.Limit != 0 || q.DetailStatus != "" {
			return "", invalid("batch query: offset, limit and detail_status need NeedQueryDetail")
		}
		return "?need_query_detail=false", nil
	}
	switch {
	case q.Offset < 0:
		return "", invalid("batch query: offset %d is negative", q.Offset)
	case q.Limit < MinQueryLimit || q.Limit > MaxQueryLimit:
		return "", invalid("batch query: limit %d, want %d to %d", q.Limit, MinQueryLimit, MaxQueryLimit)
	}
	switch q.DetailStatus {
	case DetailStatusAll, DetailStatusSuccess, DetailStatusFail, DetailStatusWaitPay:
	default:
		return "", invalid("batch query: detail_status %q, want ALL, SUCCESS, FAIL or WAIT_PAY", q.DetailStatus)
	}
	v := url.Values{
		"need_query_detail": {"true"},
		"offset":            {strconv.Itoa(q.Offset)},
		"limit":             {strconv.Itoa(q.Limit)},
		"detail_status":     {q.DetailStatus},
	}
	return "?" + v.Encode(), nil
}

func queryBatch[T any](ctx context.Context, c *Client, prefix, kind, no string, q BatchQuery) (*T, error) {
	query, err := q.encode()
	if err != nil {
		return nil, err
	}
	return get[T](ctx, c, prefix, query, kind, no)
}

// CreateTransferBatch validates req, encodes it with MarshalBody and creates the batch (POST
// /v3/transfer/batches, docs/wechatpay.md §4). Prefer freezing MarshalBody's bytes and calling
// CreateTransferBatchBody, so that every retry sends the same bytes.
func (c *Client) CreateTransferBatch(ctx context.Context, req *CreateBatchRequest) (*CreateBatchResponse, error) {
	return postValidated[CreateBatchResponse](ctx, c, pathBatches, req)
}

// CreateTransferBatchBody sends frozen body bytes to POST /v3/transfer/batches exactly as given
// (docs/wechatpay.md §11), with Wechatpay-Serial set. It only checks that body is JSON.
func (c *Client) CreateTransferBatchBody(ctx context.Context, body []byte) (*CreateBatchResponse, error) {
	return postBody[CreateBatchResponse](ctx, c, pathBatches, body)
}

// QueryBatchByOutBatchNo queries a batch by out_batch_no (docs/wechatpay.md §5). A NOT_FOUND answer
// classifies ClassNotFound: not a failure.
func (c *Client) QueryBatchByOutBatchNo(ctx context.Context, outBatchNo string, q BatchQuery) (*BatchQueryResponse, error) {
	return queryBatch[BatchQueryResponse](ctx, c, pathBatches, "out-batch-no", outBatchNo, q)
}

// QueryBatchByBatchID queries a batch by WeChat's batch_id (docs/wechatpay.md §5).
func (c *Client) QueryBatchByBatchID(ctx context.Context, batchID string, q BatchQuery) (*BatchQueryResponse, error) {
	return queryBatch[BatchQueryResponse](ctx, c, pathBatches, "batch-id", batchID, q)
}

// QueryDetailByOutDetailNo queries one detail by out_batch_no and out_detail_no (docs/wechatpay.md
// §5).
func (c *Client) QueryDetailByOutDetailNo(ctx context.Context, outBatchNo, outDetailNo string) (*DetailResponse, error) {
	return get[DetailResponse](ctx, c, pathBatches, "", "out-batch-no", outBatchNo, "details/out-detail-no", outDetailNo)
}

// QueryDetailByDetailID queries one detail by batch_id and detail_id (docs/wechatpay.md §5).
func (c *Client) QueryDetailByDetailID(ctx context.Context, batchID, detailID string) (*DetailResponse, error) {
	return get[DetailResponse](ctx, c, pathBatches, "", "batch-id", batchID, "details/detail-id", detailID)
}

// PartnerCreateTransferBatch validates and creates a partner batch
// (POST /v3/partner-transfer/batches, docs/wechatpay.md §6).
func (c *Client) PartnerCreateTransferBatch(ctx context.Context, req *PartnerCreateBatchRequest) (*PartnerCreateBatchResponse, error) {
	return postValidated[PartnerCreateBatchResponse](ctx, c, pathPartnerBatches, req)
}

// PartnerCreateTransferBatchBody sends frozen body bytes to POST /v3/partner-transfer/batches
// exactly as given (docs/wechatpay.md §6, §11).
func (c *Client) PartnerCreateTransferBatchBody(ctx context.Context, body []byte) (*PartnerCreateBatchResponse, error) {
	return postBody[PartnerCreateBatchResponse](ctx, c, pathPartnerBatches, body)
}

// PartnerQueryBatchByOutBatchNo queries a partner batch by out_batch_no (docs/wechatpay.md §6).
func (c *Client) PartnerQueryBatchByOutBatchNo(ctx context.Context, outBatchNo string, q BatchQuery) (*PartnerBatchQueryResponse, error) {
	return queryBatch[PartnerBatchQueryResponse](ctx, c, pathPartnerBatches, "out-batch-no", outBatchNo, q)
}

// PartnerQueryBatchByBatchID queries a partner batch by batch_id (docs/wechatpay.md §6).
func (c *Client) PartnerQueryBatchByBatchID(ctx context.Context, batchID string, q BatchQuery) (*PartnerBatchQueryResponse, error) {
	return queryBatch[PartnerBatchQueryResponse](ctx, c, pathPartnerBatches, "batch-id", batchID, q)
}

// PartnerQueryDetailByOutDetailNo queries one partner detail by out_batch_no and
// out_detail_no (docs/wechatpay.md §6).
func (c *Client) PartnerQueryDetailByOutDetailNo(ctx context.Context, outBatchNo, outDetailNo string) (*PartnerDetailResponse, error) {
	return get[PartnerDetailResponse](ctx, c, pathPartnerBatches, "", "out-batch-no", outBatchNo, "details/out-detail-no", outDetailNo)
}

// PartnerQueryDetailByDetailID queries one partner detail by batch_id and detail_id
// (docs/wechatpay.md §6).
func (c *Client) PartnerQueryDetailByDetailID(ctx context.Context, batchID, detailID string) (*PartnerDetailResponse, error) {
	return get[PartnerDetailResponse](ctx, c, pathPartnerBatches, "", "batch-id", batchID, "details/detail-id", detailID)
}

// CreateTransferBill validates and creates a transfer bill (docs/transfer-bills.md). On any error
// keep out_bill_no until a query shows FAIL (docs/transfer-bills.md §10).
func (c *Client) CreateTransferBill(ctx context.Context, req *CreateTransferBillRequest) (*CreateTransferBillResponse, error) {
	return postValidated[CreateTransferBillResponse](ctx, c, pathTransferBills, req)
}

// CreateTransferBillBody sends frozen body bytes to the transfer bill create exactly as given.
func (c *Client) CreateTransferBillBody(ctx context.Context, body []byte) (*CreateTransferBillResponse, error) {
	return postBody[CreateTransferBillResponse](ctx, c, pathTransferBills, body)
}

// QueryTransferBillByOutBillNo queries a transfer bill by out_bill_no (docs/transfer-bills.md).
func (c *Client) QueryTransferBillByOutBillNo(ctx context.Context, outBillNo string) (*TransferBill, error) {
	return get[TransferBill](ctx, c, pathTransferBills, "", "out-bill-no", outBillNo)
}

// QueryTransferBillByTransferBillNo queries a transfer bill by WeChat's transfer_bill_no.
func (c *Client) QueryTransferBillByTransferBillNo(ctx context.Context, transferBillNo string) (*TransferBill, error) {
	return get[TransferBill](ctx, c, pathTransferBills, "", "transfer-bill-no", transferBillNo)
}

// CancelTransferBill asks to cancel a bill (POST …/out-bill-no/{out_bill_no}/cancel, no body,
// docs/transfer-bills.md). The answer only acknowledges the request; query for the final state.
func (c *Client) CancelTransferBill(ctx context.Context, outBillNo string) (*CancelTransferBillResponse, error) {
	p, err := path(pathTransferBills, "out-bill-no", outBillNo)
	if err != nil {
		return nil, err
	}
	return call[CancelTransferBillResponse](ctx, c, http.MethodPost, p+"/cancel", nil)
}

// CreateTransferInstruction creates an abnormal-fund transfer instruction for receiptID
// (docs/abnormal-funds.md). A 400 ALREADY_EXISTS means the instruction is in progress or done.
func (c *Client) CreateTransferInstruction(ctx context.Context, receiptID string, req *CreateTransferInstructionRequest) (*TransferInstructionResponse, error) {
	id, err := segment("receipt_id", receiptID)
	if err != nil {
		return nil, err
	}
	return postValidated[TransferInstructionResponse](ctx, c, pathAbnormalFunds+"/"+id+"/transfer-instructions", req)
}
