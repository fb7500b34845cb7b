package wechatpay_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

func TestEndpointName(t *testing.T) {
	tests := []struct {
		name, method, path, want string
	}{
		{"batch create", "POST", "/v3/transfer/batches", wechatpay.EndpointBatchCreate},
		{"batch query by out_batch_no", "GET", "/v3/transfer/batches/out-batch-no/B1?need_query_detail=false", wechatpay.EndpointBatchQuery},
		{"batch query by batch_id", "GET", "/v3/transfer/batches/batch-id/131000?need_query_detail=true&offset=0", wechatpay.EndpointBatchQuery},
		{"detail query", "GET", "/v3/transfer/batches/out-batch-no/B1/details/out-detail-no/D1", wechatpay.EndpointBatchDetailQuery},
		{"detail query by id", "GET", "/v3/transfer/batches/batch-id/X/details/detail-id/Y", wechatpay.EndpointBatchDetailQuery},
		{"numbers that look like path words", "GET", "/v3/transfer/batches/out-batch-no/details/details/out-detail-no/details", wechatpay.EndpointBatchDetailQuery},
		{"partner create", "POST", "/v3/partner-transfer/batches", wechatpay.EndpointPartnerBatchCreate},
		{"partner query", "GET", "/v3/partner-transfer/batches/out-batch-no/B1?need_query_detail=false", wechatpay.EndpointPartnerBatchQuery},
		{"partner detail", "GET", "/v3/partner-transfer/batches/batch-id/X/details/detail-id/Y", wechatpay.EndpointPartnerDetailQuery},
		{"bill create", "POST", "/v3/fund-app/mch-transfer/transfer-bills", wechatpay.EndpointBillCreate},
		{"bill query", "GET", "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/D1", wechatpay.EndpointBillQuery},
		{"bill query by number", "GET", "/v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/T1", wechatpay.EndpointBillQuery},
		{"bill cancel", "POST", "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/D1/cancel", wechatpay.EndpointBillCancel},
		{"abnormal funds", "POST", "/v3/abnormal-fund-processing/receipts/R1/transfer-instructions", wechatpay.EndpointOther},
		{"a GET of the create path", "GET", "/v3/transfer/batches", wechatpay.EndpointOther},
		{"a longer prefix", "POST", "/v3/transfer/batchesX", wechatpay.EndpointOther},
		{"unknown kind", "GET", "/v3/transfer/batches/out-detail-no/D1", wechatpay.EndpointOther},
		{"certificates", "GET", "/v3/certificates", wechatpay.EndpointOther},
		{"fund-flow bill", "GET", "/v3/bill/fundflowbill?bill_date=2026-12-04&account_type=OPERATION", wechatpay.EndpointFundFlowBill},
		{"bill download", "GET", "/v3/billdownload/file?token=T1", wechatpay.EndpointBillDownload},
		{"a POST to the bill path", "POST", "/v3/bill/fundflowbill", wechatpay.EndpointOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wechatpay.EndpointName(tt.method, tt.path); got != tt.want {
				t.Fatalf("EndpointName(%s, %s) = %q, want %q", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

// observations collects what WithObserver reports.
type observations struct {
	mu  sync.Mutex
	all []wechatpay.Observation
}

func (o *observations) add(ob wechatpay.Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, ob)
}

func (o *observations) take() []wechatpay.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	all := o.all
	o.all = nil
	return all
}

// records keeps the log records at Info and above.
type records struct {
	mu  sync.Mutex
	all []slog.Record
}

func (r *records) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) take() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := r.all
	r.all = nil
	return all
}

func TestClient_Observer(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	var obs observations
	logs := &records{}
	c, err := wechatpay.NewClient(srv.ClientConfig(), wechatpay.WithObserver(obs.add), wechatpay.WithLogger(slog.New(logs)))
	if err != nil {
		t.Fatal(err)
	}
	retrying, err := wechatpay.NewClient(srv.ClientConfig(), wechatpay.WithObserver(obs.add), wechatpay.WithLogger(slog.New(logs)),
		wechatpay.WithRetries(1), wechatpay.WithBackoff(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body, err := wechatpay.MarshalBody(&wechatpay.CreateBatchRequest{
		AppID: wechatpaytest.DefaultAppID, OutBatchNo: "OBS1", BatchName: "佣金", BatchRemark: "佣金", TotalAmount: 100, TotalNum: 1,
		TransferDetailList: []wechatpay.TransferDetailInput{{OpenID: "o-1", OutDetailNo: "OBS1D1", TransferAmount: 100, TransferRemark: "佣金"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	create := func(c *wechatpay.Client) func() error {
		return func() error { _, err := c.CreateTransferBatchBody(ctx, body); return err }
	}
	query := func() error {
		_, err := c.QueryBatchByOutBatchNo(ctx, "OBS1", wechatpay.BatchQuery{})
		return err
	}
	type want struct {
		status int
		class  wechatpay.Class
		code   string
	}
	tests := []struct {
		name     string
		fault    [2]string // the sandbox endpoint to fail once, and the fault (ParseFault); none when empty
		call     func() error
		endpoint string
		want     []want
		wantLogs int // records at Info and above
	}{
		{"create answered", [2]string{}, create(c), wechatpay.EndpointBatchCreate,
			[]want{{200, wechatpay.ClassOK, ""}}, 0},
		{"query not found", [2]string{wechatpaytest.EndpointBatchByOutNo, "not_found"}, query,
			wechatpay.EndpointBatchQuery, []want{{404, wechatpay.ClassNotFound, "NOT_FOUND"}}, 0},
		{"429", [2]string{wechatpaytest.EndpointCreateBatch, "frequency_limited"}, create(c),
			wechatpay.EndpointBatchCreate, []want{{429, wechatpay.ClassAmbiguous, "FREQUENCY_LIMITED"}}, 0},
		{"transport error is observed and not logged here", [2]string{wechatpaytest.EndpointCreateBatch, "drop_before_commit"},
			create(c), wechatpay.EndpointBatchCreate, []want{{0, wechatpay.ClassAmbiguous, ""}}, 0},
		{"a retried transport error is one line", [2]string{wechatpaytest.EndpointCreateBatch, "drop_after_commit"},
			create(retrying), wechatpay.EndpointBatchCreate, []want{{0, wechatpay.ClassAmbiguous, ""}, {200, wechatpay.ClassOK, ""}}, 1},
		{"not sent is not an exchange", [2]string{}, func() error {
			_, err := c.QueryBatchByOutBatchNo(ctx, "", wechatpay.BatchQuery{})
			return err
		}, "", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fault[0] != "" {
				f, err := wechatpaytest.ParseFault(tt.fault[1])
				if err != nil {
					t.Fatal(err)
				}
				srv.FailNext(tt.fault[0], f, 1)
			}
			_ = tt.call() // the observations say what happened
			got := obs.take()
			if len(got) != len(tt.want) {
				t.Fatalf("observations = %+v, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				o := got[i]
				if o.Endpoint != tt.endpoint || o.Status != w.status || o.Class != w.class || o.Code != w.code {
					t.Fatalf("observation %d = %+v, want endpoint %s status %d class %s code %q", i, o, tt.endpoint, w.status, w.class, w.code)
				}
				if o.Elapsed <= 0 || (o.Method != http.MethodPost && o.Method != http.MethodGet) {
					t.Fatalf("observation %d = %+v: want a method and an elapsed time", i, o)
				}
			}
			recs := logs.take()
			if got, want := len(recs), tt.wantLogs; got != want {
				var msgs []string
				for _, r := range recs {
					msgs = append(msgs, r.Message)
				}
				t.Fatalf("%d log lines at Info or above (%s), want %d", got, strings.Join(msgs, "; "), want)
			}
			for _, r := range recs {
				hasErr := false
				r.Attrs(func(a slog.Attr) bool { hasErr = hasErr || (a.Key == "error" && a.Value.String() != ""); return true })
				if !hasErr {
					t.Fatalf("log line %q does not carry the error", r.Message)
				}
			}
		})
	}
}
