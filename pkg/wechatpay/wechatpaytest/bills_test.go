package wechatpaytest

// Transfer bills through the real pkg/wechatpay client on the sandbox clock: simulated
// users, cancels, idempotent creates, products, scene rules, lost and late callbacks and
// the admin API.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// billWorld is a sandbox on a manual clock at Speed 1 and a client on the same clock.
type billWorld struct {
	srv *Server
	clk *clock
	c   *wechatpay.Client
}

func newBillWorld(t *testing.T, opts ...Option) *billWorld {
	t.Helper()
	srv, clk := manual(t, opts...)
	return &billWorld{srv: srv, clk: clk, c: newClient(t, srv, wechatpay.WithClock(clk.Now))}
}

func (w *billWorld) create(t *testing.T, r *wechatpay.CreateTransferBillRequest) *wechatpay.CreateTransferBillResponse {
	t.Helper()
	res, err := w.c.CreateTransferBill(context.Background(), r)
	if err != nil {
		t.Fatalf("create %s: %v", r.OutBillNo, err)
	}
	return res
}

func (w *billWorld) query(t *testing.T, no string) *wechatpay.TransferBill {
	t.Helper()
	b, err := w.c.QueryTransferBillByOutBillNo(context.Background(), no)
	if err != nil {
		t.Fatalf("query %s: %v", no, err)
	}
	return b
}

// expect checks the state and fail_reason a query answers for each bill.
func (w *billWorld) expect(t *testing.T, when string, want map[string][2]string) {
	t.Helper()
	for no, sr := range want {
		b := w.query(t, no)
		if got := [2]string{b.State, b.FailReason}; got != sr {
			t.Fatalf("%s: bill %s is %v, want %v", when, no, got, sr)
		}
	}
}

// TestBills_SimulatedUsers: each kind of payee, chosen by openid, reaches its state at its
// time on the sandbox clock; only the confirmed bill is paid, once.
func TestBills_SimulatedUsers(t *testing.T) {
	const lag = 2 * time.Hour
	w := newBillWorld(t, WithBillAutoConfirm(time.Minute), func(o *Options) { o.BillCloseLag = lag })
	for no, openID := range map[string]string{
		"CONFIRM": "o-1", "DECLINE": DeclineOpenIDPrefix + "2", "NOCONFIRM": NoConfirmOpenIDPrefix + "3",
		"FAILR": FailOpenIDPrefix + "NAME_NOT_CORRECT-4",
	} {
		if res := w.create(t, billRequest(no, openID, 500)); res.PackageInfo == "" || res.TransferBillNo == "" {
			t.Fatalf("create %s: %+v", no, res)
		}
	}
	const (
		wait = wechatpay.BillWaitUserConfirm
		fail = wechatpay.BillFail
	)
	w.clk.Add(DefaultAcceptDelay)
	w.expect(t, "accepted", map[string][2]string{"CONFIRM": {wait}, "DECLINE": {wait}, "NOCONFIRM": {wait}, "FAILR": {wait}})
	w.clk.Add(time.Minute - DefaultAcceptDelay)
	w.expect(t, "at the users' act", map[string][2]string{
		"CONFIRM": {wechatpay.BillTransfering}, "DECLINE": {fail, reasonUserDeclined}, "NOCONFIRM": {wait},
		"FAILR": {wechatpay.BillTransfering},
	})
	w.clk.Add(DefaultProcessDelay)
	w.expect(t, "processed", map[string][2]string{
		"CONFIRM": {wechatpay.BillSuccess}, "FAILR": {fail, "NAME_NOT_CORRECT"}, "NOCONFIRM": {wait},
	})
	w.clk.Add(DefaultBillConfirmTimeout + lag - time.Minute - DefaultProcessDelay - time.Second)
	w.expect(t, "a second before the late close", map[string][2]string{"NOCONFIRM": {wait}})
	w.clk.Add(time.Second)
	w.expect(t, "closed", map[string][2]string{"NOCONFIRM": {fail, reasonOverdueClose}})
	if got := w.srv.Paid(); len(got) != 1 || got["CONFIRM"] != 1 {
		t.Fatalf("Paid = %v, want CONFIRM once", got)
	}
	for _, b := range w.srv.Bills() {
		if b.Settled.IsZero() || !wechatpay.BillFinal(b.State) {
			t.Fatalf("bill %+v not settled", b)
		}
	}
}

// TestBills_CloseScalesWithSpeed: the close and its lag are divided by Speed like every
// other sandbox duration.
func TestBills_CloseScalesWithSpeed(t *testing.T) {
	w := newBillWorld(t, WithSpeed(60), WithBillAutoConfirm(time.Minute), func(o *Options) { o.BillCloseLag = 2 * time.Hour })
	w.create(t, billRequest("NC", NoConfirmOpenIDPrefix+"1", 500))
	w.clk.Add(26*time.Minute - time.Second) // (24 h + 2 h) / 60
	w.expect(t, "before", map[string][2]string{"NC": {wechatpay.BillWaitUserConfirm}})
	w.clk.Add(time.Second)
	w.expect(t, "after", map[string][2]string{"NC": {wechatpay.BillFail, reasonOverdueClose}})
}

// TestBills_ManualUsers: without BillAutoConfirm nobody acts by itself; ConfirmBill and
// DeclineBill act whatever the openid; an unconfirmed bill closes at the timeout.
func TestBills_ManualUsers(t *testing.T) {
	w := newBillWorld(t)
	for _, no := range []string{"M1", "M2", "M3"} {
		w.create(t, billRequest(no, DeclineOpenIDPrefix+no, 500))
	}
	if err := w.srv.ConfirmBill("M1"); !errors.Is(err, ErrNotWaiting) {
		t.Fatalf("confirm while ACCEPTED: %v", err)
	}
	w.clk.Add(DefaultAcceptDelay)
	if err := w.srv.ConfirmBill("M1"); err != nil {
		t.Fatal(err)
	}
	if err := w.srv.DeclineBill("M2"); err != nil {
		t.Fatal(err)
	}
	if err := w.srv.DeclineBill("M2"); !errors.Is(err, ErrNotWaiting) {
		t.Fatalf("second decline: %v", err)
	}
	if err := w.srv.DeclineBill("NOPE"); !errors.Is(err, ErrNoBatch) {
		t.Fatalf("unknown bill: %v", err)
	}
	w.clk.Add(DefaultProcessDelay)
	w.expect(t, "decided", map[string][2]string{
		"M1": {wechatpay.BillSuccess}, "M2": {wechatpay.BillFail, reasonUserDeclined}, "M3": {wechatpay.BillWaitUserConfirm},
	})
	w.clk.Add(DefaultBillConfirmTimeout)
	w.expect(t, "expired", map[string][2]string{"M3": {wechatpay.BillFail, reasonOverdueClose}})
}

// TestBills_Cancel: a cancel before the user confirms goes CANCELING for ProcessDelay, then
// CANCELLED, and repeats answer the same; after the confirmation it is refused.
func TestBills_Cancel(t *testing.T) {
	w := newBillWorld(t, WithBillAutoConfirm(time.Minute), WithBalance(10000))
	ctx := context.Background()
	cancel := func(no string) (*wechatpay.CancelTransferBillResponse, error) { return w.c.CancelTransferBill(ctx, no) }
	for _, no := range []string{"C1", "C2", "C3"} {
		w.create(t, billRequest(no, "o-"+no, 500))
	}
	if r, err := cancel("C3"); err != nil || r.State != wechatpay.BillCanceling {
		t.Fatalf("cancel while ACCEPTED: %+v, %v", r, err)
	}
	w.clk.Add(DefaultAcceptDelay)
	r, err := cancel("C1")
	if err != nil || r.State != wechatpay.BillCanceling || r.OutBillNo != "C1" || r.TransferBillNo == "" {
		t.Fatalf("cancel in WAIT_USER_CONFIRM: %+v, %v", r, err)
	}
	w.expect(t, "canceling", map[string][2]string{"C1": {wechatpay.BillCanceling}})
	if r, err := cancel("C1"); err != nil || r.State != wechatpay.BillCanceling {
		t.Fatalf("repeated cancel: %+v, %v", r, err)
	}
	w.clk.Add(time.Minute - DefaultAcceptDelay) // C2's user confirms; C1 does not
	if _, err := cancel("C2"); !errors.Is(err, wechatpay.ErrInvalidRequest) {
		t.Fatalf("cancel after the confirmation: %v", err)
	}
	w.clk.Add(DefaultProcessDelay)
	w.expect(t, "final", map[string][2]string{
		"C1": {wechatpay.BillCancelled}, "C2": {wechatpay.BillSuccess}, "C3": {wechatpay.BillCancelled},
	})
	if r, err := cancel("C1"); err != nil || r.State != wechatpay.BillCancelled {
		t.Fatalf("cancel of a cancelled bill: %+v, %v", r, err)
	}
	if _, err := cancel("C2"); !errors.Is(err, wechatpay.ErrInvalidRequest) {
		t.Fatalf("cancel of a paid bill: %v", err)
	}
	if _, err := cancel("C9"); !errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("cancel of an unknown bill: %v", err)
	}
	if bal, held, _ := w.srv.Balance(); bal != 10000-500 || held != 0 {
		t.Fatalf("balance %d, held %d: want 9500 and 0", bal, held)
	}
}

// TestBills_CreateAnswer: a create answers package_info; the same content again answers the
// same bill while it is not final and ALREADY_EXISTS once it is; other content is
// INVALID_REQUEST; a create committed but unanswered and retried pays once.
func TestBills_CreateAnswer(t *testing.T) {
	w := newBillWorld(t)
	ctx := context.Background()
	req := billRequest("IDEM", "o-1", 500)
	first := w.create(t, req)
	if first.PackageInfo == "" || first.State != wechatpay.BillAccepted {
		t.Fatalf("first answer %+v", first)
	}
	w.clk.Add(DefaultAcceptDelay)
	again := w.create(t, req)
	if again.State != wechatpay.BillWaitUserConfirm || again.PackageInfo != first.PackageInfo ||
		again.TransferBillNo != first.TransferBillNo || again.CreateTime != first.CreateTime {
		t.Fatalf("replay %+v, first %+v", again, first)
	}
	named := *req
	named.OutBillNo = "NAMED"
	enc := func() string {
		s, err := w.c.EncryptUserName("张三")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	named.UserName = enc()
	n1 := w.create(t, &named)
	named.UserName = enc() // another ciphertext of the same name: the same content
	if n2 := w.create(t, &named); n2.TransferBillNo != n1.TransferBillNo {
		t.Fatalf("name encrypted again made bill %s, want %s", n2.TransferBillNo, n1.TransferBillNo)
	}
	changed := *req
	changed.TransferRemark = "另一个"
	if _, err := w.c.CreateTransferBill(ctx, &changed); !errors.Is(err, wechatpay.ErrInvalidRequest) {
		t.Fatalf("other content: %v", err)
	}
	if err := w.srv.ConfirmBill("IDEM"); err != nil {
		t.Fatal(err)
	}
	w.clk.Add(DefaultProcessDelay)
	if _, err := w.c.CreateTransferBill(ctx, req); !errors.Is(err, wechatpay.ErrAlreadyExists) {
		t.Fatalf("same content of a final bill: %v", err)
	}
	if _, err := w.c.CreateTransferBill(ctx, &changed); !errors.Is(err, wechatpay.ErrInvalidRequest) {
		t.Fatalf("other content of a final bill: %v", err)
	}

	w.srv.Fail(EndpointCreateBill, DropAfterCommit)
	drop := billRequest("DROP", "o-2", 700)
	if _, err := w.c.CreateTransferBill(ctx, drop); wechatpay.Classify(err) != wechatpay.ClassAmbiguous {
		t.Fatalf("dropped create: %v, want an ambiguous error", err)
	}
	// Maybe created: the same number and content again, answered this time.
	w.create(t, drop)
	if err := w.srv.ConfirmBill("DROP"); !errors.Is(err, ErrNotWaiting) { // one bill, ACCEPTED
		t.Fatalf("confirm DROP: %v", err)
	}
	w.clk.Add(DefaultAcceptDelay)
	if err := w.srv.ConfirmBill("DROP"); err != nil {
		t.Fatal(err)
	}
	w.clk.Add(DefaultProcessDelay)
	if _, err := w.c.CreateTransferBill(ctx, drop); !errors.Is(err, wechatpay.ErrAlreadyExists) {
		t.Fatalf("create after payment: %v", err)
	}
	if got := w.srv.Paid(); len(got) != 2 || got["IDEM"] != 1 || got["DROP"] != 1 {
		t.Fatalf("Paid = %v", got)
	}
	if got := w.srv.PaidBills(); len(got) != 2 {
		t.Fatalf("PaidBills = %v", got)
	}
	if n := w.srv.Stats().Faults["drop_after_commit"]; n != 1 {
		t.Fatalf("%d drops injected, want 1", n)
	}
	if d := w.srv.DoublePaid(); len(d) != 0 {
		t.Fatalf("DoublePaid = %v", d)
	}
}

// TestBills_PaidCoversBills: the same number paid as a batch detail and as a bill is paid
// twice in the sandbox's record.
func TestBills_PaidCoversBills(t *testing.T) {
	w := newBillWorld(t)
	create(t, w.srv, batchBody("X", 1, 500)) // pays XD0
	w.create(t, billRequest("XD0", "o-1", 500))
	w.clk.Add(DefaultAcceptDelay)
	if err := w.srv.ConfirmBill("XD0"); err != nil {
		t.Fatal(err)
	}
	w.clk.Add(DefaultProcessDelay)
	if got := w.srv.Paid()["XD0"]; got != 2 {
		t.Fatalf("Paid[XD0] = %d, want 2", got)
	}
	if got := w.srv.DoublePaid(); len(got) != 1 || got[0] != "XD0" {
		t.Fatalf("DoublePaid = %v", got)
	}
}

// TestBills_Product: a merchant of one product gets 403 NO_AUTH on the other's creates.
func TestBills_Product(t *testing.T) {
	ctx := context.Background()
	partner := &wechatpay.PartnerCreateBatchRequest{
		SubMchID: "1900000109", SubAppID: DefaultAppID, AuthorizationType: wechatpay.AuthorizationInformation,
		OutBatchNo: "P1", BatchName: "n", BatchRemark: "r", TotalAmount: 100, TotalNum: 1,
		TransferDetailList: []wechatpay.PartnerTransferDetailInput{{OutDetailNo: "P1D1", TransferAmount: 100, TransferRemark: "r", OpenID: "o"}},
	}
	for _, tc := range []struct {
		product          string
		batches, bills   error // nil: allowed
		wantMessageWords string
	}{
		{product: ProductBoth},
		{product: ProductBills, batches: wechatpay.ErrNoAuth, wantMessageWords: "暂不支持使用升级前功能"},
		{product: ProductBatches, bills: wechatpay.ErrNoAuth, wantMessageWords: "未接入升级版本功能"},
	} {
		t.Run("product "+tc.product, func(t *testing.T) {
			w := newBillWorld(t, WithProduct(tc.product))
			check := func(what string, err, want error) {
				t.Helper()
				if want == nil && err != nil || want != nil && !errors.Is(err, want) {
					t.Fatalf("%s: err = %v, want %v", what, err, want)
				}
				var ae *wechatpay.APIError
				if want != nil && (!errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || !strings.Contains(ae.Message, tc.wantMessageWords) || wechatpay.Classify(err) != wechatpay.ClassBlocked) {
					t.Fatalf("%s: %#v", what, err)
				}
			}
			_, err := w.c.CreateTransferBatch(ctx, batchBody("B1", 1, 100))
			check("batch create", err, tc.batches)
			_, err = w.c.CreateTransferBatch(ctx, batchBody("B1", 1, 100)) // a replay of the same bytes
			check("batch replay", err, tc.batches)
			_, err = w.c.PartnerCreateTransferBatch(ctx, partner)
			check("partner batch create", err, tc.batches)
			_, err = w.c.CreateTransferBill(ctx, billRequest("BL1", "o-1", 500))
			check("bill create", err, tc.bills)
		})
	}
}

// TestBills_SceneRules: transfer_scene_report_infos must carry exactly the scene's info
// types, once each; perceptions must be the scene's; the scene must be in the table.
func TestBills_SceneRules(t *testing.T) {
	info := func(pairs ...string) []wechatpay.TransferSceneReportInfo {
		var out []wechatpay.TransferSceneReportInfo
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, wechatpay.TransferSceneReportInfo{InfoType: pairs[i], InfoContent: pairs[i+1]})
		}
		return out
	}
	custom := func(o *Options) {
		o.BillScenes = map[string]BillSceneRule{"1006": {ReportInfos: []string{"报销说明"}}}
	}
	for _, tc := range []struct {
		name    string
		opts    []Option
		edit    func(r *wechatpay.CreateTransferBillRequest)
		wantErr error // nil: created
	}{
		{name: "1000 as required"},
		{name: "1000 in the other order", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("奖励说明", "红包", "活动名称", "新年")
		}},
		{name: "1000 with a perception", edit: func(r *wechatpay.CreateTransferBillRequest) { r.UserRecvPerception = "现金奖励" }},
		{name: "1005 as required", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneID, r.UserRecvPerception = "1005", "劳务报酬"
			r.TransferSceneReportInfos = info("岗位类型", "外卖骑手", "报酬说明", "7月报酬")
		}},
		{name: "missing info type", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("活动名称", "新年")
		}, wantErr: wechatpay.ErrParamError},
		{name: "no report infos", edit: func(r *wechatpay.CreateTransferBillRequest) { r.TransferSceneReportInfos = nil }, wantErr: wechatpay.ErrParamError},
		{name: "extra info type", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("活动名称", "新年", "奖励说明", "红包", "岗位类型", "x")
		}, wantErr: wechatpay.ErrParamError},
		{name: "duplicate info type", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("活动名称", "新年", "奖励说明", "红包", "奖励说明", "又一个")
		}, wantErr: wechatpay.ErrParamError},
		{name: "duplicate in place of a missing one", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("活动名称", "新年", "活动名称", "春节")
		}, wantErr: wechatpay.ErrParamError},
		{name: "another scene's info types", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("岗位类型", "外卖骑手", "报酬说明", "7月报酬")
		}, wantErr: wechatpay.ErrParamError},
		{name: "info content too long", edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneReportInfos = info("活动名称", strings.Repeat("长", 33), "奖励说明", "红包")
		}, wantErr: wechatpay.ErrParamError},
		{name: "bad perception", edit: func(r *wechatpay.CreateTransferBillRequest) { r.UserRecvPerception = "现金" }, wantErr: wechatpay.ErrParamError},
		{name: "another scene's perception", edit: func(r *wechatpay.CreateTransferBillRequest) { r.UserRecvPerception = "劳务报酬" }, wantErr: wechatpay.ErrParamError},
		{name: "unknown scene", edit: func(r *wechatpay.CreateTransferBillRequest) { r.TransferSceneID = "1006" }, wantErr: wechatpay.ErrParamError},
		{name: "custom scene", opts: []Option{custom}, edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneID, r.TransferSceneReportInfos = "1006", info("报销说明", "差旅")
		}},
		{name: "custom scene allows no perception", opts: []Option{custom}, edit: func(r *wechatpay.CreateTransferBillRequest) {
			r.TransferSceneID, r.TransferSceneReportInfos, r.UserRecvPerception = "1006", info("报销说明", "差旅"), "报销"
		}, wantErr: wechatpay.ErrParamError},
		{name: "custom table drops the defaults", opts: []Option{custom}, wantErr: wechatpay.ErrParamError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newBillWorld(t, tc.opts...)
			r := billRequest("S1", "o-1", 500)
			if tc.edit != nil {
				tc.edit(r)
			}
			// The frozen-body call skips the client's own checks: the sandbox judges.
			_, err := w.c.CreateTransferBillBody(context.Background(), mustJSON(t, r))
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && len(w.srv.Bills()) != 0 {
				t.Fatal("a refused create made a bill")
			}
		})
	}
	w := newBillWorld(t)
	r := billRequest("S2", "o-1", 500)
	r.TransferSceneReportInfos = r.TransferSceneReportInfos[:1]
	_, err := w.c.CreateTransferBillBody(context.Background(), mustJSON(t, r))
	var ae *wechatpay.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "需传入转账场景报备信息") {
		t.Fatalf("missing info type: %v, want the message of docs/transfer-bills.md", err)
	}
}

// TestOptions_Validate: bad new options are refused by New.
func TestOptions_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(o *Options)
		wantErr error
	}{
		{name: "defaults", edit: func(*Options) {}},
		{name: "products", edit: func(o *Options) { o.Product = ProductBills }},
		{name: "unknown product", edit: func(o *Options) { o.Product = "both" }, wantErr: ErrOptions},
		{name: "notify loss above 1", edit: func(o *Options) { o.NotifyLoss = 1.5 }, wantErr: ErrOptions},
		{name: "negative notify loss", edit: func(o *Options) { o.NotifyLoss = -0.1 }, wantErr: ErrOptions},
		{name: "NaN notify loss", edit: func(o *Options) { o.NotifyLoss = math.NaN() }, wantErr: ErrOptions},
		{name: "negative notify delay", edit: func(o *Options) { o.NotifyDelay = -time.Second }, wantErr: ErrOptions},
		{name: "negative close lag", edit: func(o *Options) { o.BillCloseLag = -time.Second }, wantErr: ErrOptions},
		{name: "empty scene table", edit: func(o *Options) { o.BillScenes = map[string]BillSceneRule{} }, wantErr: ErrOptions},
		{name: "scene without info types", edit: func(o *Options) { o.BillScenes = map[string]BillSceneRule{"1000": {}} }, wantErr: ErrOptions},
		{name: "empty scene id", edit: func(o *Options) { o.BillScenes = map[string]BillSceneRule{"": {ReportInfos: []string{"a"}}} }, wantErr: ErrOptions},
		{name: "repeated info type", edit: func(o *Options) {
			o.BillScenes = map[string]BillSceneRule{"1000": {ReportInfos: []string{"a", "a"}}}
		}, wantErr: ErrOptions},
		{name: "long info type", edit: func(o *Options) {
			o.BillScenes = map[string]BillSceneRule{"1000": {ReportInfos: []string{strings.Repeat("a", 16)}}}
		}, wantErr: ErrOptions},
		{name: "empty perception", edit: func(o *Options) {
			o.BillScenes = map[string]BillSceneRule{"1000": {ReportInfos: []string{"a"}, Perceptions: []string{""}}}
		}, wantErr: ErrOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.edit(&o)
			s, err := New(o)
			if err == nil {
				s.Close()
			}
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// hook receives the sandbox's callbacks through the client's NotificationHandler.
type hook struct {
	url  string
	got  chan *wechatpay.Notification
	hits chan struct{}
}

func newHook(t *testing.T, c *wechatpay.Client) *hook {
	t.Helper()
	h := &hook{got: make(chan *wechatpay.Notification, 16), hits: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits <- struct{}{}
		c.NotificationHandler(func(_ context.Context, n *wechatpay.Notification, _ []byte) error {
			h.got <- n
			return nil
		}).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/notify"
	return h
}

func (h *hook) wait(t *testing.T) *wechatpay.Notification {
	t.Helper()
	select {
	case n := <-h.got:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
		return nil
	}
}

// TestBills_NotifyLost: with NotifyLoss 1 no callback of a bill or a batch is ever sent,
// while queries tell the truth.
func TestBills_NotifyLost(t *testing.T) {
	w := newBillWorld(t, WithNotify(1, 0))
	h := newHook(t, w.c)
	r := billRequest("L1", "o-1", 500)
	r.NotifyURL = h.url
	w.create(t, r)
	b := batchBody("LB", 2, 100)
	b.NotifyURL = h.url
	create(t, w.srv, b)
	w.clk.Add(DefaultAcceptDelay)
	if err := w.srv.ConfirmBill("L1"); err != nil {
		t.Fatal(err)
	}
	w.clk.Add(DefaultProcessDelay)
	if n := w.srv.tick(); n != 0 {
		t.Fatalf("%d deliveries started", n)
	}
	if st := w.srv.Stats(); st.NotifyLost != 2 || st.NotifyWaiting != 0 || st.Notified != 0 {
		t.Fatalf("stats %+v, want 2 lost and nothing waiting", st)
	}
	w.expect(t, "lost callback", map[string][2]string{"L1": {wechatpay.BillSuccess}})
	if _, got := queryBatch(t, w.srv, "LB", "need_query_detail=false"); got.TransferBatch.BatchStatus != wechatpay.BatchFinished {
		t.Fatalf("batch %+v", got.TransferBatch)
	}
	select {
	case <-h.hits:
		t.Fatal("a lost notification was delivered")
	default:
	}
}

// TestBills_NotifyLate: with NotifyDelay the callbacks of a bill and a batch are first sent
// that long (divided by Speed) after the state became final, on the sandbox clock.
func TestBills_NotifyLate(t *testing.T) {
	const delay = 10 * time.Minute
	w := newBillWorld(t, WithSpeed(60), WithNotify(0, delay)) // 10 s on the sandbox clock
	h := newHook(t, w.c)
	r := billRequest("LATE1", "fail-ACCOUNT_FROZEN-1", 500)
	r.NotifyURL = h.url
	w.create(t, r)
	b := batchBody("LATEB", 2, 100)
	b.NotifyURL = h.url
	create(t, w.srv, b)
	w.clk.Add(time.Second) // AcceptDelay / 60 < 1 s
	if err := w.srv.ConfirmBill("LATE1"); err != nil {
		t.Fatal(err)
	}
	w.clk.Add(time.Second) // ProcessDelay / 60: both final now
	w.expect(t, "final", map[string][2]string{"LATE1": {wechatpay.BillFail, "ACCOUNT_FROZEN"}})
	w.clk.Add(delay/60 - time.Millisecond)
	if n := w.srv.tick(); n != 0 {
		t.Fatalf("%d deliveries started before the delay", n)
	}
	if st := w.srv.Stats(); st.NotifyWaiting != 2 || st.Notified != 0 {
		t.Fatalf("stats %+v, want 2 waiting", st)
	}
	select {
	case <-h.hits:
		t.Fatal("delivered before the delay")
	default:
	}
	w.clk.Add(time.Millisecond)
	events := map[string]bool{}
	for range 2 {
		n := h.wait(t)
		events[n.EventType] = true
		switch n.EventType {
		case wechatpay.EventBillFinished:
			res, err := n.BillResource(DefaultAPIv3Key)
			if err != nil || res.OutBillNo != "LATE1" || res.State != wechatpay.BillFail || res.FailReason != "ACCOUNT_FROZEN" {
				t.Fatalf("bill resource %+v, %v", res, err)
			}
		case wechatpay.EventBatchFinished:
			res, err := n.BatchResource(DefaultAPIv3Key)
			if err != nil || res.OutBatchNo != "LATEB" || res.SuccessNum != 2 {
				t.Fatalf("batch resource %+v, %v", res, err)
			}
		}
	}
	if len(events) != 2 {
		t.Fatalf("events %v", events)
	}
}

// TestBills_NotifyRetryOnSandboxClock: a refused delivery is retried NotifyBackoff later on
// the sandbox clock, with the same id.
func TestBills_NotifyRetryOnSandboxClock(t *testing.T) {
	w := newBillWorld(t)
	ids := make(chan string, 4)
	var refused atomic.Bool
	hk := httptest.NewServer(w.c.NotificationHandler(func(_ context.Context, n *wechatpay.Notification, _ []byte) error {
		ids <- n.ID
		if refused.CompareAndSwap(false, true) {
			return errors.New("not now")
		}
		return nil
	}))
	defer hk.Close()
	r := billRequest("R1", "o-1", 500)
	r.NotifyURL = hk.URL + "/n"
	w.create(t, r)
	w.clk.Add(DefaultAcceptDelay)
	if err := w.srv.DeclineBill("R1"); err != nil {
		t.Fatal(err)
	}
	first := <-ids
	checkFor(t, 5*time.Second, func() error {
		if st := w.srv.Stats(); st.NotifyFails != 1 || st.NotifyWaiting != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	w.clk.Add(DefaultNotifyBackoff - time.Second)
	if n := w.srv.tick(); n != 0 {
		t.Fatalf("%d retries before the backoff", n)
	}
	w.clk.Add(time.Second)
	if second := <-ids; second != first {
		t.Fatalf("redelivery id %s, first %s", second, first)
	}
	checkFor(t, 5*time.Second, func() error {
		if st := w.srv.Stats(); st.Notified != 1 || st.NotifyWaiting != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// TestAdmin_Bills: the admin API lists bills and lets the user confirm or decline one.
func TestAdmin_Bills(t *testing.T) {
	w := newBillWorld(t, func(o *Options) { o.Admin = true })
	for _, no := range []string{"A1", "A2", "A3"} {
		w.create(t, billRequest(no, "o-"+no, 500))
	}
	post := func(path string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(w.srv.URL()+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, v
	}
	if code, _ := post("/sandbox/bills/A1/confirm"); code != http.StatusBadRequest {
		t.Fatalf("confirm while ACCEPTED: HTTP %d", code)
	}
	w.clk.Add(DefaultAcceptDelay)
	if code, v := post("/sandbox/bills/A1/confirm"); code != 200 || v["state"] != wechatpay.BillTransfering || v["out_bill_no"] != "A1" {
		t.Fatalf("confirm: HTTP %d %v", code, v)
	}
	if code, v := post("/sandbox/bills/A2/decline"); code != 200 || v["state"] != wechatpay.BillFail || v["fail_reason"] != reasonUserDeclined {
		t.Fatalf("decline: HTTP %d %v", code, v)
	}
	if code, _ := post("/sandbox/bills/NOPE/decline"); code != http.StatusNotFound {
		t.Fatalf("unknown bill: HTTP %d", code)
	}
	w.clk.Add(DefaultProcessDelay)
	resp, err := http.Get(w.srv.URL() + "/sandbox/bills")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []BillSummary
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("list %+v", list)
	}
	for i, want := range []struct{ no, state, reason string }{
		{"A1", wechatpay.BillSuccess, ""}, {"A2", wechatpay.BillFail, reasonUserDeclined}, {"A3", wechatpay.BillWaitUserConfirm, ""},
	} {
		b := list[i]
		if b.OutBillNo != want.no || b.State != want.state || b.FailReason != want.reason || b.Amount != 500 ||
			b.TransferBillNo == "" || !b.Created.Equal(newClock().t) || b.Settled.IsZero() != (want.state == wechatpay.BillWaitUserConfirm) {
			t.Fatalf("list[%d] = %+v, want %+v", i, b, want)
		}
	}
	var paid PaidReport
	r2, err := http.Get(w.srv.URL() + "/sandbox/paid")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if err := json.NewDecoder(r2.Body).Decode(&paid); err != nil {
		t.Fatal(err)
	}
	if paid.Paid["A1"] != 1 || paid.PaidBills["A1"] != 1 || len(paid.Paid) != 1 || paid.Total != 500 {
		t.Fatalf("paid %+v", paid)
	}
}
