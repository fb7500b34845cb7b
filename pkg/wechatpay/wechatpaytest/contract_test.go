package wechatpaytest

// The contract suite: the real pkg/wechatpay client against the sandbox, endpoint by
// endpoint and error code by error code.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

const fast = 1000 // accept after 2 ms, pay 60 ms later

func newClient(t *testing.T, srv *Server, opts ...wechatpay.Option) *wechatpay.Client {
	t.Helper()
	c, err := wechatpay.NewClient(srv.ClientConfig(), append([]wechatpay.Option{
		wechatpay.WithLogger(slog.New(slog.DiscardHandler)), wechatpay.WithBackoff(time.Millisecond, 5*time.Millisecond),
		wechatpay.WithTimeout(5 * time.Second),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFinished polls the batch until it is final and returns the last answer.
func waitFinished(t *testing.T, c *wechatpay.Client, outBatchNo string) *wechatpay.BatchQueryResponse {
	t.Helper()
	var last *wechatpay.BatchQueryResponse
	checkFor(t, 10*time.Second, func() error {
		r, err := c.QueryBatchByOutBatchNo(context.Background(), outBatchNo, wechatpay.BatchQuery{})
		if err != nil {
			return err
		}
		last = r
		if s := r.TransferBatch.BatchStatus; s != wechatpay.BatchFinished && s != wechatpay.BatchClosed {
			return fmt.Errorf("batch %s is %s", outBatchNo, s)
		}
		return nil
	})
	return last
}

func TestContract_DirectBatch(t *testing.T) {
	srv := NewServer(t, WithSpeed(fast))
	c := newClient(t, srv)
	ctx := context.Background()
	req := batchBody("CT1", 130, 300000)
	req.NotifyURL = "https://example.com/notify"
	for i := range req.TransferDetailList {
		name, err := c.EncryptUserName("张三")
		if err != nil {
			t.Fatal(err)
		}
		req.TransferDetailList[i].UserName = name
	}
	req.TransferDetailList[3].OpenID = "fail-NAME_NOT_CORRECT-x"
	res, err := c.CreateTransferBatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateTransferBatch(ctx, req)
	if err != nil || again.BatchID != res.BatchID {
		t.Fatalf("retry: %+v, %v; want batch %s", again, err, res.BatchID)
	}
	final := waitFinished(t, c, "CT1")
	if tb := final.TransferBatch; tb.SuccessNum != 129 || tb.FailNum != 1 || tb.SuccessAmount != 129*300000 || tb.BatchID != res.BatchID {
		t.Fatalf("final batch %+v", tb)
	}
	var rows []wechatpay.DetailBrief
	for offset := 0; ; offset += wechatpay.MaxQueryLimit {
		page, err := c.QueryBatchByBatchID(ctx, res.BatchID, wechatpay.BatchQuery{NeedQueryDetail: true, Offset: offset, Limit: wechatpay.MaxQueryLimit, DetailStatus: wechatpay.DetailStatusAll})
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, page.TransferDetailList...)
		if len(page.TransferDetailList) < wechatpay.MaxQueryLimit {
			break
		}
	}
	if len(rows) != 130 || rows[3].DetailStatus != wechatpay.DetailFail {
		t.Fatalf("%d rows, row 3 %+v", len(rows), rows[3])
	}
	d, err := c.QueryDetailByOutDetailNo(ctx, "CT1", rows[3].OutDetailNo)
	if err != nil || d.FailReason != "NAME_NOT_CORRECT" {
		t.Fatalf("detail %+v, %v", d, err)
	}
	if name, err := wechatpay.DecryptOAEP(MerchantPrivateKey(), d.UserName); err != nil || name != "张三" {
		t.Fatalf("user_name in the answer decrypts to %q, %v", name, err)
	}
	byID, err := c.QueryDetailByDetailID(ctx, res.BatchID, rows[3].DetailID)
	if err != nil || byID.OutDetailNo != d.OutDetailNo || byID.DetailStatus != d.DetailStatus {
		t.Fatalf("by id %+v, %v", byID, err)
	}
}

func TestContract_PartnerBatch(t *testing.T) {
	srv := NewServer(t, WithSpeed(fast), WithRateLimit(0))
	c := newClient(t, srv)
	ctx := context.Background()
	direct := batchBody("PT1", wechatpay.MaxDetailsPartner, 100)
	req := &wechatpay.PartnerCreateBatchRequest{
		AuthorizationType: wechatpay.AuthorizationFund, SpAppID: DefaultAppID, SubMchID: "1900000109",
		OutBatchNo: "PT1", BatchName: "partner", BatchRemark: "partner", TotalAmount: direct.TotalAmount,
		TotalNum: direct.TotalNum, TransferPurpose: wechatpay.PurposeCommission,
	}
	for _, d := range direct.TransferDetailList {
		req.TransferDetailList = append(req.TransferDetailList, wechatpay.PartnerTransferDetailInput{OpenID: d.OpenID, OutDetailNo: d.OutDetailNo, TransferAmount: d.TransferAmount, TransferRemark: d.TransferRemark})
	}
	res, err := c.PartnerCreateTransferBatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		r, err := c.PartnerQueryBatchByOutBatchNo(ctx, "PT1", wechatpay.BatchQuery{NeedQueryDetail: true, Limit: 100, DetailStatus: wechatpay.DetailStatusSuccess})
		switch {
		case err != nil:
			return err
		case r.BatchStatus != wechatpay.BatchFinished:
			return fmt.Errorf("status %s", r.BatchStatus)
		case r.SubMchID != "1900000109" || r.SuccessNum != 3000 || len(r.TransferDetailList) != 100 || r.BatchID != res.BatchID:
			t.Fatalf("partner answer %+v", r)
		}
		return nil
	})
	d, err := c.PartnerQueryDetailByDetailID(ctx, res.BatchID, res.BatchID+"03000")
	if err != nil || d.OutDetailNo != "PT1D2999" || d.SpMchID != DefaultMchID {
		t.Fatalf("partner detail %+v, %v", d, err)
	}
	if _, err := c.QueryBatchByOutBatchNo(ctx, "PT1", wechatpay.BatchQuery{}); !errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("a partner batch through the direct API: %v", err)
	}
	if got := len(srv.Paid()); got != 3000 {
		t.Fatalf("%d paid, want 3000", got)
	}
}

func billRequest(no, openID string, amount wechatpay.Fen) *wechatpay.CreateTransferBillRequest {
	return &wechatpay.CreateTransferBillRequest{
		AppID: DefaultAppID, OutBillNo: no, TransferSceneID: "1000", OpenID: openID, TransferAmount: amount,
		TransferRemark: "奖励", TransferSceneReportInfos: []wechatpay.TransferSceneReportInfo{
			{InfoType: "活动名称", InfoContent: "新年"}, {InfoType: "奖励说明", InfoContent: "红包"},
		},
	}
}

func TestContract_TransferBills(t *testing.T) {
	srv := NewServer(t, WithSpeed(fast))
	c := newClient(t, srv)
	ctx := context.Background()
	state := func(no string) string {
		b, err := c.QueryTransferBillByOutBillNo(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		return b.State
	}
	waitState := func(no, want string) {
		checkFor(t, 10*time.Second, func() error {
			if got := state(no); got != want {
				return fmt.Errorf("bill %s is %s, want %s", no, got, want)
			}
			return nil
		})
	}
	for _, tc := range []struct{ no, openID, want string }{
		{"BILL1", "o-1", wechatpay.BillSuccess},
		{"BILL2", "fail-ACCOUNT_FROZEN-2", wechatpay.BillFail},
	} {
		res, err := c.CreateTransferBill(ctx, billRequest(tc.no, tc.openID, 500))
		if err != nil || res.PackageInfo == "" {
			t.Fatalf("create %s: %+v, %v", tc.no, res, err)
		}
		waitState(tc.no, wechatpay.BillWaitUserConfirm)
		if err := srv.ConfirmBill(tc.no); err != nil {
			t.Fatal(err)
		}
		waitState(tc.no, tc.want)
	}
	if _, err := c.CreateTransferBill(ctx, billRequest("BILL1", "o-1", 500)); !errors.Is(err, wechatpay.ErrAlreadyExists) {
		t.Fatalf("create of a final bill: %v", err)
	}
	if _, err := c.CreateTransferBill(ctx, billRequest("BILL3", "o-3", 500)); err != nil {
		t.Fatal(err)
	}
	cancel, err := c.CancelTransferBill(ctx, "BILL3")
	if err != nil || cancel.State != wechatpay.BillCanceling {
		t.Fatalf("cancel: %+v, %v", cancel, err)
	}
	waitState("BILL3", wechatpay.BillCancelled)
	if _, err := c.CancelTransferBill(ctx, "BILL1"); !errors.Is(err, wechatpay.ErrInvalidRequest) {
		t.Fatalf("cancel of a paid bill: %v", err)
	}
	if got := srv.PaidBills(); len(got) != 1 || got["BILL1"] != 1 {
		t.Fatalf("PaidBills = %v", got)
	}
}

func TestContract_Instruction(t *testing.T) {
	srv := NewServer(t, WithSpeed(fast))
	c := newClient(t, srv)
	srv.AddReceipt("R1", 1234)
	req := &wechatpay.CreateTransferInstructionRequest{OutInstructionNo: "I1", AppID: []string{DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser}
	res, err := c.CreateTransferInstruction(context.Background(), "R1", req)
	if err != nil || res.TransferAmount.Total != 1234 {
		t.Fatalf("instruction %+v, %v", res, err)
	}
	req.OutInstructionNo = "I2"
	if _, err := c.CreateTransferInstruction(context.Background(), "R1", req); !errors.Is(err, wechatpay.ErrAlreadyExists) {
		t.Fatalf("second instruction: %v", err)
	}
	if _, err := c.CreateTransferInstruction(context.Background(), "R2", req); !errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("unknown receipt: %v", err)
	}
}

// TestContract_Errors drives every error code and fault through the client and checks the
// sentinel and the class the product decides on.
func TestContract_Errors(t *testing.T) {
	ctx := context.Background()
	createB := func(no string) func(*wechatpay.Client) error {
		return func(c *wechatpay.Client) error {
			_, err := c.CreateTransferBatch(ctx, batchBody(no, 2, 100))
			return err
		}
	}
	query := func(c *wechatpay.Client) error {
		_, err := c.QueryBatchByOutBatchNo(ctx, "E1", wechatpay.BatchQuery{})
		return err
	}
	for _, tc := range []struct {
		name      string
		opts      []Option
		setup     func(*Server, *wechatpay.Client)
		config    func(*wechatpay.Config)
		call      func(*wechatpay.Client) error
		want      error // nil: not an APIError
		wantClass wechatpay.Class
	}{
		{name: "PARAM_ERROR", call: func(c *wechatpay.Client) error {
			_, err := c.CreateTransferBatchBody(ctx, []byte(`{"appid":"wx","out_batch_no":"E1","batch_name":"n","batch_remark":"r","total_amount":1,"total_num":1,"transfer_detail_list":[{"openid":"o","out_detail_no":"D","transfer_amount":100,"transfer_remark":"r"}]}`))
			return err
		}, want: wechatpay.ErrParamError, wantClass: wechatpay.ClassRejected},
		{name: "INVALID_REQUEST", setup: func(s *Server, c *wechatpay.Client) { createB("E1")(c) }, call: func(c *wechatpay.Client) error {
			r := batchBody("E1", 2, 100)
			r.BatchRemark = "changed"
			_, err := c.CreateTransferBatch(ctx, r)
			return err
		}, want: wechatpay.ErrInvalidRequest, wantClass: wechatpay.ClassBlocked},
		{name: "NOT_ENOUGH", opts: []Option{WithBalance(199)}, call: createB("E1"), want: wechatpay.ErrNotEnough, wantClass: wechatpay.ClassBlocked},
		{name: "NOT_FOUND", call: query, want: wechatpay.ErrNotFound, wantClass: wechatpay.ClassNotFound},
		{name: "NOT_FOUND lag", opts: []Option{WithNotFoundLag(time.Hour)}, setup: func(s *Server, c *wechatpay.Client) { createB("E1")(c) }, call: query, want: wechatpay.ErrNotFound, wantClass: wechatpay.ClassNotFound},
		{name: "SIGN_ERROR", config: func(c *wechatpay.Config) { c.PrivateKey = PlatformPrivateKey() }, call: query, want: wechatpay.ErrSignError, wantClass: wechatpay.ClassBlocked},
		{name: "APPID_MCHID_NOT_MATCH", opts: []Option{func(o *Options) { o.AppID = "wxother" }}, call: createB("E1"), want: wechatpay.ErrAppIDMchIDNotMatch, wantClass: wechatpay.ClassBlocked},
		{name: "FREQUENCY_LIMITED", opts: []Option{WithRateLimit(1)}, setup: func(s *Server, c *wechatpay.Client) { query(c) }, call: func(c *wechatpay.Client) error {
			// The limit counts whole wall-clock seconds: a query answered NOT_FOUND was the
			// first of a new second (on a loaded machine a signed call can take a good part
			// of one), so the next, in that second, is the one limited.
			for range 5 {
				if err := query(c); !errors.Is(err, wechatpay.ErrNotFound) {
					return err
				}
			}
			return errors.New("five queries in a row answered within a limit of one per second")
		}, want: wechatpay.ErrFrequencyLimited, wantClass: wechatpay.ClassAmbiguous},
		{name: "injected FREQUENCY_LIMITED", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, FrequencyLimited) }, call: createB("E1"), want: wechatpay.ErrFrequencyLimited, wantClass: wechatpay.ClassAmbiguous},
		{name: "SYSTEM_ERROR", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, SystemError) }, call: createB("E1"), want: wechatpay.ErrSystemError, wantClass: wechatpay.ClassAmbiguous},
		{name: "injected NOT_FOUND", setup: func(s *Server, c *wechatpay.Client) { createB("E1")(c); s.Fail(EndpointBatchByOutNo, NotFound) }, call: query, want: wechatpay.ErrNotFound, wantClass: wechatpay.ClassNotFound},
		{name: "unsigned", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, Unsigned) }, call: createB("E1"), want: wechatpay.ErrUnverified, wantClass: wechatpay.ClassAmbiguous},
		{name: "bad signature", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, BadSignature) }, call: createB("E1"), want: wechatpay.ErrUnverified, wantClass: wechatpay.ClassAmbiguous},
		{name: "truncated", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, Truncate) }, call: createB("E1"), wantClass: wechatpay.ClassAmbiguous},
		{name: "drop after commit", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, DropAfterCommit) }, call: createB("E1"), wantClass: wechatpay.ClassAmbiguous},
		{name: "drop before commit", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(AnyEndpoint, DropBeforeCommit) }, call: createB("E1"), wantClass: wechatpay.ClassAmbiguous},
		{name: "latency beyond the timeout", setup: func(s *Server, _ *wechatpay.Client) { s.Fail(EndpointCreateBatch, Latency(time.Second)) }, call: func(c *wechatpay.Client) error {
			ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, err := c.CreateTransferBatch(ctx, batchBody("E1", 2, 100))
			return err
		}, wantClass: wechatpay.ClassAmbiguous},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := NewServer(t, append([]Option{WithSpeed(fast)}, tc.opts...)...)
			cfg := srv.ClientConfig()
			if tc.config != nil {
				tc.config(&cfg)
			}
			c, err := wechatpay.NewClient(cfg, wechatpay.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(srv, c)
			}
			err = tc.call(c)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if got := wechatpay.Classify(err); got != tc.wantClass {
				t.Fatalf("Classify(%v) = %v, want %v", err, got, tc.wantClass)
			}
		})
	}
}

// TestContract_DropAfterCommitPaysOnce: with 30% of creates and queries answered by a reset
// after the batch was committed, retrying with the same number and bytes pays each of 3000
// details exactly once.
func TestContract_DropAfterCommitPaysOnce(t *testing.T) {
	srv := NewServer(t, WithSpeed(fast), WithRateLimit(0), func(o *Options) {
		o.Seed = 7
		o.Faults = []FaultRule{
			{Endpoint: EndpointCreateBatch, Fault: DropAfterCommit, Rate: 0.3},
			{Endpoint: EndpointBatchByOutNo, Fault: DropAfterCommit, Rate: 0.3},
		}
	})
	c := newClient(t, srv, wechatpay.WithRetries(30))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for b := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := wechatpay.MarshalBody(batchBody(fmt.Sprintf("DROP%d", b), wechatpay.MaxDetailsDirect, 100))
			if err != nil {
				errs <- err
				return
			}
			if _, err := c.CreateTransferBatchBody(ctx, body); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for b := range 3 {
		waitFinished(t, c, fmt.Sprintf("DROP%d", b))
	}
	paid := srv.Paid()
	if len(paid) != 3000 {
		t.Fatalf("%d details paid, want 3000", len(paid))
	}
	if d := srv.DoublePaid(); len(d) != 0 {
		t.Fatalf("paid twice: %v", d)
	}
	if n := srv.Stats().Faults["drop_after_commit"]; n == 0 {
		t.Fatal("no fault was injected")
	}
	if n := len(srv.Batches()); n != 3 {
		t.Fatalf("%d batches, want 3", n)
	}
}

// TestContract_Notifications: the callback of a finished batch reaches the client's
// NotificationHandler verified and decrypted; a refused delivery is retried with the same id.
func TestContract_Notifications(t *testing.T) {
	got := make(chan *wechatpay.BatchFinishedResource, 4)
	ids := make(chan string, 4)
	var c *wechatpay.Client
	first := true
	var mu sync.Mutex
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.NotificationHandler(func(_ context.Context, n *wechatpay.Notification, _ []byte) error {
			mu.Lock()
			defer mu.Unlock()
			ids <- n.ID
			if first {
				first = false
				return errors.New("not now")
			}
			res, err := n.BatchResource(DefaultAPIv3Key)
			if err != nil {
				return err
			}
			got <- res
			return nil
		}).ServeHTTP(w, r)
	}))
	defer hook.Close()
	srv := NewServer(t, WithSpeed(fast))
	c = newClient(t, srv)
	r := batchBody("NT1", 3, 100)
	r.NotifyURL = hook.URL + "/notify"
	r.TransferDetailList[2].OpenID = "fail-ACCOUNT_FROZEN-2"
	if _, err := c.CreateTransferBatch(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		if res.BatchStatus != wechatpay.BatchFinished || res.OutBatchNo != "NT1" || res.SuccessNum != 2 || res.FailAmount != 100 {
			t.Fatalf("resource %+v", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	if a, b := <-ids, <-ids; a != b {
		t.Fatalf("redelivery has id %s, first %s", b, a)
	}
	checkFor(t, 5*time.Second, func() error {
		if st := srv.Stats(); st.Notified != 1 || st.NotifyFails != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// TestContract_DetailStatusOptional: detail_status is optional with need_query_detail=true
// (docs/wechatpay.md §5); without it the sandbox answers as for ALL.
func TestContract_DetailStatusOptional(t *testing.T) {
	srv, clk := manual(t)
	r := batchBody("DS1", 3, 100)
	r.TransferDetailList[1].OpenID = "fail-ACCOUNT_FROZEN-1"
	create(t, srv, r)
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	rep, without := queryBatch(t, srv, "DS1", "need_query_detail=true")
	if got, want := rep.status, http.StatusOK; got != want {
		t.Fatalf("without detail_status: HTTP %d %s, want %d", got, rep.body, want)
	}
	_, all := queryBatch(t, srv, "DS1", "need_query_detail=true&detail_status=ALL")
	if got, want := fmt.Sprint(without.TransferDetailList), fmt.Sprint(all.TransferDetailList); got != want {
		t.Fatalf("rows without detail_status %s, with ALL %s", got, want)
	}
	if got, want := len(without.TransferDetailList), 3; got != want {
		t.Fatalf("%d rows, want %d", got, want)
	}
	if rep, _ := queryBatch(t, srv, "DS1", "need_query_detail=true&detail_status=REFUND"); rep.code() != "PARAM_ERROR" {
		t.Fatalf("unknown detail_status: HTTP %d %s, want PARAM_ERROR", rep.status, rep.body)
	}
}

// TestContract_FinishedCallbackTotals: MCHTRANSFER.BATCH.FINISHED carries success_amount,
// success_num, fail_amount and fail_num even when they are 0.
func TestContract_FinishedCallbackTotals(t *testing.T) {
	got := make(chan map[string]json.RawMessage, 2)
	var c *wechatpay.Client
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.NotificationHandler(func(_ context.Context, n *wechatpay.Notification, _ []byte) error {
			pt, err := n.Decrypt(DefaultAPIv3Key)
			if err != nil {
				return err
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(pt, &m); err != nil {
				return err
			}
			got <- m
			return nil
		}).ServeHTTP(w, r)
	}))
	defer hook.Close()
	srv := NewServer(t, WithSpeed(fast))
	c = newClient(t, srv)
	ok, bad := batchBody("CB1", 2, 100), batchBody("CB2", 1, 100)
	bad.TransferDetailList[0].OpenID = "fail-ACCOUNT_FROZEN-0"
	for _, r := range []*wechatpay.CreateBatchRequest{ok, bad} {
		r.NotifyURL = hook.URL + "/notify"
		if _, err := c.CreateTransferBatch(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]map[string]string{
		`"CB1"`: {"success_amount": "200", "success_num": "2", "fail_amount": "0", "fail_num": "0"},
		`"CB2"`: {"success_amount": "0", "success_num": "0", "fail_amount": "100", "fail_num": "1"},
	}
	for range 2 {
		var m map[string]json.RawMessage
		select {
		case m = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no notification")
		}
		w, found := want[string(m["out_batch_no"])]
		if !found {
			t.Fatalf("resource %v", m)
		}
		for k, v := range w {
			if got, want := string(m[k]), v; got != want {
				t.Fatalf("%s: %s = %q, want %q", m["out_batch_no"], k, got, want)
			}
		}
	}
}

// TestContract_PartnerDetailAppID: a partner detail answer leaves out an empty appid rather
// than sending "appid":""; a direct one still carries its appid.
func TestContract_PartnerDetailAppID(t *testing.T) {
	srv, clk := manual(t)
	req := &wechatpay.PartnerCreateBatchRequest{
		AuthorizationType: wechatpay.AuthorizationFund, SpAppID: DefaultAppID, SubMchID: "1900000109",
		OutBatchNo: "PA1", BatchName: "partner", BatchRemark: "partner", TotalAmount: 100, TotalNum: 1,
		TransferDetailList: []wechatpay.PartnerTransferDetailInput{{OpenID: "o-1", OutDetailNo: "PA1D0", TransferAmount: 100, TransferRemark: "r"}},
	}
	if rep := send(t, srv, "POST", "/v3/partner-transfer/batches", mustJSON(t, req)); rep.status != http.StatusOK {
		t.Fatalf("partner create: HTTP %d %s", rep.status, rep.body)
	}
	create(t, srv, batchBody("DA1", 1, 100))
	clk.Add(DefaultAcceptDelay + DefaultProcessDelay)
	for _, tc := range []struct {
		name, uri string
		want      bool
	}{
		{"partner", "/v3/partner-transfer/batches/out-batch-no/PA1/details/out-detail-no/PA1D0", false},
		{"direct", "/v3/transfer/batches/out-batch-no/DA1/details/out-detail-no/DA1D0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := send(t, srv, "GET", tc.uri, nil)
			var m map[string]json.RawMessage
			rep.decode(t, &m)
			if _, got := m["appid"]; got != tc.want {
				t.Fatalf("appid present = %v, want %v: %s", got, tc.want, rep.body)
			}
		})
	}
}

// TestContract_InstructionStates: an abnormal-fund instruction starts RECEIPT_STATE_PENDING,
// is RECEIPT_STATE_PROGRESS from AcceptDelay and RECEIPT_STATE_COMPLETED ProcessDelay later.
func TestContract_InstructionStates(t *testing.T) {
	srv, clk := manual(t)
	srv.AddReceipt("R1", 1234)
	body := mustJSON(t, &wechatpay.CreateTransferInstructionRequest{OutInstructionNo: "I1", AppID: []string{DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser})
	state := func(rep reply) string {
		t.Helper()
		if rep.status != http.StatusOK {
			t.Fatalf("HTTP %d %s", rep.status, rep.body)
		}
		var r wechatpay.TransferInstructionResponse
		rep.decode(t, &r)
		return r.ReceiptState
	}
	const uri = "/v3/abnormal-fund-processing/receipts/R1/transfer-instructions"
	if got, want := state(send(t, srv, "POST", uri, body)), wechatpay.ReceiptStatePending; got != want {
		t.Fatalf("create answers %s, want %s", got, want)
	}
	for _, step := range []struct {
		d    time.Duration
		want string
	}{
		{0, wechatpay.ReceiptStatePending},
		{DefaultAcceptDelay - time.Second, wechatpay.ReceiptStatePending},
		{time.Second, wechatpay.ReceiptStateProgress},
		{DefaultProcessDelay - time.Second, wechatpay.ReceiptStateProgress},
		{time.Second, wechatpay.ReceiptStateCompleted},
	} {
		clk.Add(step.d)
		if got := state(send(t, srv, "GET", uri+"/I1", nil)); got != step.want {
			t.Fatalf("at +%v: %s, want %s", srv.now().Sub(newClock().t), got, step.want)
		}
	}
}

// TestContract_MillisecondTimestamp: a timestamp in milliseconds gets a SIGN_ERROR that says so,
// not a skew of thousands of hours.
func TestContract_MillisecondTimestamp(t *testing.T) {
	srv, _ := manual(t)
	const uri = "/v3/transfer/batches/out-batch-no/MS1?need_query_detail=false"
	for _, tc := range []struct {
		name string
		ts   int64
		want string
	}{
		{"milliseconds", srv.now().UnixMilli(), "milliseconds"},
		{"an hour old", srv.now().Unix() - 3600, "1h0m0s old"},
		{"far future", srv.now().Unix() + 1<<40, "not Unix seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := send(t, srv, "GET", uri, nil, func(r *http.Request) {
				r.Header.Set("Authorization", authHeader(t, MerchantPrivateKey(), DefaultMchID, DefaultMerchantSerial, "GET", uri, tc.ts, nil))
			})
			var e wechatpay.APIError
			rep.decode(t, &e)
			if e.Code != "SIGN_ERROR" || !strings.Contains(e.Message, tc.want) {
				t.Fatalf("HTTP %d %s, want SIGN_ERROR saying %q", rep.status, rep.body, tc.want)
			}
		})
	}
}
