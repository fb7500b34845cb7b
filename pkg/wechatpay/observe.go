package wechatpay

import (
	"net/http"
	"strings"
	"time"
)

// Observation is one HTTP exchange with WeChat Pay, as WithObserver reports it. It holds no
// body, header, key or path parameter: Endpoint is a bounded name (EndpointName), so it may
// become a metric label.
type Observation struct {
	Method   string        // e.g. "POST"
	Endpoint string        // EndpointName of the request
	Status   int           // HTTP status; 0 when no answer came (a transport error)
	Class    Class         // Classify of the exchange's own outcome; ClassAmbiguous for a transport error
	Code     string        // WeChat's error code of a non-2xx answer; "" otherwise
	Elapsed  time.Duration // from sending the request to reading (and verifying) the answer
}

// WithObserver calls observe once per HTTP exchange: every host tried on every attempt,
// transport errors included (Status 0, ClassAmbiguous). Requests refused before anything is
// sent (ErrNotSent) are not exchanges and are not observed. observe runs on the caller's
// goroutine, after the exchange and before any retry wait; it must be fast and safe for
// concurrent use.
func WithObserver(observe func(Observation)) Option { return func(c *Client) { c.observe = observe } }

// Endpoint names: the bounded values EndpointName returns (docs/wechatpay.md §4–§6;
// docs/transfer-bills.md).
const (
	EndpointBatchCreate        = "batch_create"         // POST /v3/transfer/batches
	EndpointBatchQuery         = "batch_query"          // GET /v3/transfer/batches/{out-batch-no|batch-id}/{no}
	EndpointBatchDetailQuery   = "batch_detail_query"   // GET …/batches/{kind}/{no}/details/{kind}/{no}
	EndpointPartnerBatchCreate = "partner_batch_create" // POST /v3/partner-transfer/batches
	EndpointPartnerBatchQuery  = "partner_batch_query"  // GET /v3/partner-transfer/batches/{kind}/{no}
	EndpointPartnerDetailQuery = "partner_detail_query" // GET …/partner-transfer/batches/{kind}/{no}/details/{kind}/{no}
	EndpointBillCreate         = "bill_create"          // POST /v3/fund-app/mch-transfer/transfer-bills
	EndpointBillQuery          = "bill_query"           // GET …/transfer-bills/{out-bill-no|transfer-bill-no}/{no}
	EndpointBillCancel         = "bill_cancel"          // POST …/transfer-bills/out-bill-no/{no}/cancel
	EndpointFundFlowBill       = "fundflow_bill"        // GET /v3/bill/fundflowbill
	EndpointBillDownload       = "bill_download"        // GET /v3/billdownload/file (a bill's download_url)
	EndpointOther              = "other"                // anything else (abnormal funds, certificates, …)
)

// EndpointName names the API a request goes to, from its method and its path (a ?query is
// ignored), with one of the Endpoint constants. It decides on the shape of the path, never on
// a path parameter's value, so its result set is bounded whatever the numbers are.
func EndpointName(method, pathAndQuery string) string {
	p, _, _ := strings.Cut(pathAndQuery, "?")
	for _, api := range []struct {
		prefix, create, query, detail string
	}{
		{pathBatches, EndpointBatchCreate, EndpointBatchQuery, EndpointBatchDetailQuery},
		{pathPartnerBatches, EndpointPartnerBatchCreate, EndpointPartnerBatchQuery, EndpointPartnerDetailQuery},
	} {
		rest, ok := strings.CutPrefix(p, api.prefix)
		if !ok {
			continue
		}
		seg := segments(rest)
		switch {
		case method == http.MethodPost && len(seg) == 0:
			return api.create
		case method == http.MethodGet && len(seg) == 2 && (seg[0] == "out-batch-no" || seg[0] == "batch-id"):
			return api.query
		case method == http.MethodGet && len(seg) == 5 && (seg[0] == "out-batch-no" || seg[0] == "batch-id") &&
			seg[2] == "details" && (seg[3] == "out-detail-no" || seg[3] == "detail-id"):
			return api.detail
		}
		return EndpointOther
	}
	switch {
	case method == http.MethodGet && p == pathFundFlowBill:
		return EndpointFundFlowBill
	case method == http.MethodGet && p == pathBillDownload:
		return EndpointBillDownload
	}
	if rest, ok := strings.CutPrefix(p, pathTransferBills); ok {
		seg := segments(rest)
		switch {
		case method == http.MethodPost && len(seg) == 0:
			return EndpointBillCreate
		case method == http.MethodGet && len(seg) == 2 && (seg[0] == "out-bill-no" || seg[0] == "transfer-bill-no"):
			return EndpointBillQuery
		case method == http.MethodPost && len(seg) == 3 && seg[0] == "out-bill-no" && seg[2] == "cancel":
			return EndpointBillCancel
		}
	}
	return EndpointOther
}

// segments splits the rest of a path after an API prefix ("" or "/a/b/…") into its segments
// (parameters are path-escaped, so none holds a "/"). A rest that does not start with "/"
// (another API whose path merely begins with the prefix) gives one segment that matches
// nothing.
func segments(rest string) []string {
	switch {
	case rest == "":
		return nil
	case !strings.HasPrefix(rest, "/"):
		return []string{rest}
	}
	return strings.Split(rest[1:], "/")
}
