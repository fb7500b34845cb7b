package wechatpay

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestClient_NotificationHandler(t *testing.T) {
	v := loadVectors(t)
	vec := v.AEADNotifications[0]
	c := newTestClient(t, testConfig(t, "https://api.mch.weixin.qq.com"),
		WithClock(func() time.Time { return time.Unix(vec.Notification.VerifyNow, 0) }))
	post := func(body string, fn NotificationFunc) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/notify", strings.NewReader(body))
		for k, val := range vec.Notification.Headers {
			r.Header.Set(k, val)
		}
		w := httptest.NewRecorder()
		c.NotificationHandler(fn).ServeHTTP(w, r)
		return w
	}
	t.Run("verified notification is handed over", func(t *testing.T) {
		var got []byte
		w := post(vec.Notification.Body, func(_ context.Context, n *Notification, pt []byte) error {
			if n.EventType != EventBatchFinished {
				t.Errorf("event %q", n.EventType)
			}
			got = pt
			return nil
		})
		if w.Code != http.StatusNoContent || string(got) != vec.ExpectedPlaintext {
			t.Fatalf("status %d, plaintext %q", w.Code, got)
		}
	})
	t.Run("tampered body is refused unseen", func(t *testing.T) {
		w := post(strings.Replace(vec.Notification.Body, "FINISHED", "FINISHEd", 1), func(context.Context, *Notification, []byte) error {
			t.Error("handler called for an unverified notification")
			return nil
		})
		if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"code":"FAIL"`) {
			t.Fatalf("status %d body %s", w.Code, w.Body)
		}
	})
	t.Run("handler error asks for a retry", func(t *testing.T) {
		w := post(vec.Notification.Body, func(context.Context, *Notification, []byte) error { return errors.New("ledger busy") })
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("status %d", w.Code)
		}
	})
}

func TestCreateBatchRequest_Validate(t *testing.T) {
	detail := func(no string, amount Fen, name string) TransferDetailInput {
		return TransferDetailInput{OpenID: "o-1", OutDetailNo: no, TransferAmount: amount, TransferRemark: "佣金", UserName: name}
	}
	batch := func(details ...TransferDetailInput) *CreateBatchRequest {
		r := &CreateBatchRequest{AppID: "wx1", OutBatchNo: "B1", BatchName: "n", BatchRemark: "r", TransferDetailList: details}
		for _, d := range details {
			r.TotalAmount += d.TransferAmount
			r.TotalNum++
		}
		return r
	}
	tests := []struct {
		name    string
		req     *CreateBatchRequest
		wantErr error
	}{
		{"valid", batch(detail("D1", 100, ""), detail("D2", 200, "")), nil},
		{"named from 2000 yuan", batch(detail("D1", UserNameRequiredFrom, "cipher")), nil},
		{"no details", batch(), ErrBadInput},
		{"bad out_batch_no", func() *CreateBatchRequest { r := batch(detail("D1", 100, "")); r.OutBatchNo = "B-1"; return r }(), ErrBadInput},
		{"bad out_detail_no", batch(detail("D_1", 100, "")), ErrBadInput},
		{"duplicate detail", batch(detail("D1", 100, ""), detail("D1", 100, "")), ErrBadInput},
		{"zero amount", batch(detail("D1", 0, "")), ErrBadInput},
		{"total amount not computed", func() *CreateBatchRequest { r := batch(detail("D1", 100, "")); r.TotalAmount = 99; return r }(), ErrBadInput},
		{"total num not computed", func() *CreateBatchRequest { r := batch(detail("D1", 100, "")); r.TotalNum = 2; return r }(), ErrBadInput},
		{"name missing at 2000 yuan", batch(detail("D1", UserNameRequiredFrom, "")), ErrBadInput},
		{"name below 30 fen", batch(detail("D1", 29, "cipher")), ErrBadInput},
		{"names all or none", batch(detail("D1", 100, "cipher"), detail("D2", 100, "")), ErrBadInput},
		{"remark over 32 characters", batch(TransferDetailInput{OpenID: "o", OutDetailNo: "D1", TransferAmount: 100, TransferRemark: strings.Repeat("佣", 33)}), ErrBadInput},
		{"over the direct cap", func() *CreateBatchRequest {
			ds := make([]TransferDetailInput, MaxDetailsDirect+1)
			for i := range ds {
				ds[i] = detail("D"+strconv.Itoa(i), 100, "")
			}
			return batch(ds...)
		}(), ErrBadInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Validate = %v, want %v", err, tt.wantErr)
			}
			if err != nil && Classify(err) != ClassNotSent {
				t.Fatalf("class %s, want not sent", Classify(err))
			}
		})
	}
}

func TestLogValue_Redacts(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	d := TransferDetailInput{OpenID: "o-SECRETOPENID", OutDetailNo: "D1", TransferAmount: 100, TransferRemark: "r", UserName: "CIPHERNAME"}
	log.Info("x", "detail", d, "batch", CreateBatchRequest{OutBatchNo: "B1", TransferDetailList: []TransferDetailInput{d}},
		"bill", CreateTransferBillRequest{OutBillNo: "B2", OpenID: "o-SECRETOPENID", UserName: "CIPHERNAME"},
		"resp", DetailResponse{OutDetailNo: "D1", OpenID: "o-SECRETOPENID", UserName: "CIPHERNAME"})
	if out := b.String(); strings.Contains(out, "SECRET") || strings.Contains(out, "CIPHER") || !strings.Contains(out, "D1") {
		t.Fatalf("log line leaks or lacks the number: %s", out)
	}
}
