package payout

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/natstest"
)

// TestOutcomeEvent_JSON pins the wire shape upstream services decode: the fields of
// internal/pipeline's OutcomeEvent, in order, plus the bill numbers (left out when empty).
func TestOutcomeEvent_JSON(t *testing.T) {
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ev   OutcomeEvent
		want string
	}{
		{"batch success", OutcomeEvent{OutDetailNo: "D1", MchID: "1900000001", State: "SUCCESS", Amount: 100,
			OutBatchNo: "B1", BatchID: "1030000071100999991182020050700019480001", DetailID: "1040000071100999991182020050700019500100", At: at},
			`{"out_detail_no":"D1","mchid":"1900000001","state":"SUCCESS","amount":100,"out_batch_no":"B1",` +
				`"batch_id":"1030000071100999991182020050700019480001","detail_id":"1040000071100999991182020050700019500100",` +
				`"at":"2025-03-01T10:00:00Z"}`},
		{"rejected", OutcomeEvent{OutDetailNo: "D1", MchID: "1900000001", State: "REJECTED", Amount: 100, FailReason: "PARAM_ERROR", At: at},
			`{"out_detail_no":"D1","mchid":"1900000001","state":"REJECTED","amount":100,"fail_reason":"PARAM_ERROR","at":"2025-03-01T10:00:00Z"}`},
		{"bill cancelled", OutcomeEvent{OutDetailNo: "D1", MchID: "1900000001", State: "CANCELLED", Amount: 100, OutBatchNo: "B1",
			OutBillNo: "D1", TransferBillNo: "1330000071100999991182020050700019480001", At: at},
			`{"out_detail_no":"D1","mchid":"1900000001","state":"CANCELLED","amount":100,"out_batch_no":"B1",` +
				`"at":"2025-03-01T10:00:00Z","out_bill_no":"D1","transfer_bill_no":"1330000071100999991182020050700019480001"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != tt.want {
				t.Fatalf("JSON = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestEvents_JSON pins the wire names of the bills events.
func TestEvents_JSON(t *testing.T) {
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	w, err := json.Marshal(WaitUserConfirmEvent{OutDetailNo: "D1", MchID: "19", AppID: "wxa1", OutBillNo: "D1", TransferBillNo: "T1",
		PackageInfo: "affffddafdfafddffda==", Amount: 100, ExpireAt: at.Add(24 * time.Hour), At: at})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(w), `{"out_detail_no":"D1","mchid":"19","appid":"wxa1","out_bill_no":"D1","transfer_bill_no":"T1",`+
		`"package_info":"affffddafdfafddffda==","amount":100,"expire_at":"2025-03-02T10:00:00Z","at":"2025-03-01T10:00:00Z"}`; got != want {
		t.Fatalf("WaitUserConfirmEvent = %s, want %s", got, want)
	}
	c, err := json.Marshal(CancelRefusedEvent{OutDetailNo: "D1", MchID: "19", Code: CancelFinal, State: "SUCCESS", Detail: "payout is final", At: at})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(c), `{"out_detail_no":"D1","mchid":"19","code":"ALREADY_FINAL","state":"SUCCESS","detail":"payout is final",`+
		`"at":"2025-03-01T10:00:00Z"}`; got != want {
		t.Fatalf("CancelRefusedEvent = %s, want %s", got, want)
	}
}

// TestContractNames pins subjects, header names and classes: they are what upstream
// services and the dead-letter tooling match on.
func TestContractNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{ResultSubject(ResultsPrefix, "SUCCESS"), "payouts.results.success"},
		{ResultSubject(ResultsPrefix, StateWaitUserConfirm), "payouts.results.wait_user_confirm"},
		{ResultSubject(ResultsPrefix, StateCancelRefused), "payouts.results.cancel_refused"},
		{CancelSubject(CancelPrefix, "1900000001"), "payouts.cancel.1900000001"},
		{OutcomeMsgID("1900000001", "S1N42", "SUCCESS"), "1900000001.S1N42.SUCCESS"},
		{DeadLetterPrefix, "payouts.deadletter"},
		{HeaderReason, "Paystream-Reason"},
		{HeaderReasonClass, "Paystream-Reason-Class"},
		{HeaderOrigSubject, "Paystream-Orig-Subject"},
		{HeaderOrigStreamSeq, "Paystream-Orig-Stream-Seq"},
		{HeaderDeliveries, "Paystream-Deliveries"},
		{HeaderBody, "Paystream-Body"},
		{ClassInvalid + ClassConflict + ClassMisrouted, "invalidconflictmisrouted"},
		{CancelMsgID(CancelRequest{OutDetailNo: "D1"}), "cancel.D1"},
	} {
		if c.got != c.want {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
}

func TestCancelRequest_Validate(t *testing.T) {
	valid := func() CancelRequest {
		return CancelRequest{Schema: CancelSchemaV1, OutDetailNo: "D0001", MchID: "1900000001", Reason: "用户申请取消"}
	}
	tests := []struct {
		name    string
		edit    func(*CancelRequest)
		wantErr error
		field   string
	}{
		{"valid", func(*CancelRequest) {}, nil, ""},
		{"no reason", func(c *CancelRequest) { c.Reason = "" }, nil, ""},
		{"reason 64 characters", func(c *CancelRequest) { c.Reason = strings.Repeat("取", 64) }, nil, ""},
		{"schema", func(c *CancelRequest) { c.Schema = SchemaV1 }, ErrInvalid, "schema"},
		{"out_detail_no required", func(c *CancelRequest) { c.OutDetailNo = "" }, ErrInvalid, "out_detail_no"},
		{"out_detail_no charset", func(c *CancelRequest) { c.OutDetailNo = "SECRET-1" }, ErrInvalid, "out_detail_no"},
		{"out_detail_no 33", func(c *CancelRequest) { c.OutDetailNo = strings.Repeat("S", 33) }, ErrInvalid, "out_detail_no"},
		{"mchid required", func(c *CancelRequest) { c.MchID = "" }, ErrInvalid, "mchid"},
		{"mchid charset", func(c *CancelRequest) { c.MchID = "SECRET 19" }, ErrInvalid, "mchid"},
		{"reason 65 characters", func(c *CancelRequest) { c.Reason = strings.Repeat("秘", 65) }, ErrInvalid, "reason"},
		{"reason control", func(c *CancelRequest) { c.Reason = "秘密\n" }, ErrInvalid, "reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.edit(&c)
			err := c.Validate()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Field != tt.field {
				t.Fatalf("err = %v, want one problem on %s", err, tt.field)
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "秘") {
				t.Fatalf("%q leaks a value", err)
			}
		})
	}
}

func TestDecodeCancel(t *testing.T) {
	c, err := DecodeCancel([]byte(` {"schema":"paystream.cancel.v1","out_detail_no":"D1","mchid":"1900000001","reason":"\u53d6\u6d88"} `))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c, (CancelRequest{Schema: CancelSchemaV1, OutDetailNo: "D1", MchID: "1900000001", Reason: "取消"}); got != want {
		t.Fatalf("DecodeCancel = %+v, want %+v", got, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		in        string
		wantErr   error
		wantField string
	}{
		{"empty", ``, ErrSyntax, ""},
		{"array", `[]`, ErrSyntax, ""},
		{"unknown field", `{"out_detail_no":"D1","amount":1}`, ErrUnknownField, `"amount"`},
		{"case differs", `{"MchID":"1"}`, ErrUnknownField, `"MchID"`},
		{"duplicate key", `{"out_detail_no":"D1","out_detail_no":"D2"}`, ErrDuplicateKey, "out_detail_no"},
		{"number", `{"mchid":1900000001}`, ErrWrongType, "mchid"},
		{"null", `{"reason":null}`, ErrWrongType, "reason"},
		{"nested", `{"reason":{"a":"b"}}`, ErrWrongType, "reason"},
		{"trailing data", `{"mchid":"1"}{}`, ErrSyntax, ""},
		{"invalid utf-8", "{\"reason\":\"\xff\"}", ErrInvalidUTF8, ""},
		{"too large", `{"reason":"` + strings.Repeat("a", MaxMessageSize) + `"}`, ErrTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeCancel([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Field != tt.wantField {
				t.Fatalf("err = %#v, want field %q", err, tt.wantField)
			}
		})
	}
}

// FuzzDecodeCancel: DecodeCancel never panics, errors are *DecodeErrors, and what it
// accepts survives a JSON round trip.
func FuzzDecodeCancel(f *testing.F) {
	f.Add([]byte(`{"schema":"paystream.cancel.v1","out_detail_no":"D1","mchid":"1900000001","reason":"x"}`))
	f.Add([]byte(`{"reason":"\ud800"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCancel(data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %#v, want *DecodeError", err)
			}
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if c2, err := DecodeCancel(out); err != nil || c2 != c {
			t.Fatalf("round trip: %+v, %v; want %+v", c2, err, c)
		}
	})
}

// TestPublisher_Cancel: a cancel is validated, published to payouts.cancel.<mchid> with
// Nats-Msg-Id cancel.<out_detail_no>, decodes strictly, and a repeat is deduplicated; an
// invalid one is never sent.
func TestPublisher_Cancel(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "cancels", Subjects: []string{CancelPrefix + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js)
	c := CancelRequest{OutDetailNo: "D0001", MchID: "1900000001", Reason: "用户申请取消"}
	for range 2 {
		if err := p.Cancel(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(1); got != want {
		t.Fatalf("stream holds %d cancels, want %d (the repeat is a duplicate)", got, want)
	}
	msg, err := st.GetLastMsgForSubject(ctx, "payouts.cancel.1900000001")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get(jetstream.MsgIDHeader), "cancel.D0001"; got != want {
		t.Fatalf("Nats-Msg-Id = %q, want %q", got, want)
	}
	got, err := DecodeCancel(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	c.Schema = CancelSchemaV1
	if got != c {
		t.Fatalf("published %+v, want %+v", got, c)
	}

	bad := CancelRequest{OutDetailNo: "D-2", MchID: "1900000001"}
	if err := p.Cancel(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	other := NewPublisher(js, WithCancelPrefix("payouts.cancel.x"))
	if err := other.Cancel(ctx, CancelRequest{OutDetailNo: "D3", MchID: "1900000001"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, "payouts.cancel.x.1900000001"); err != nil {
		t.Fatalf("WithCancelPrefix: %v", err)
	}
	if info, err = st.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream holds %d cancels (%v), want 2", info.State.Msgs, err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Cancel(ctx2, CancelRequest{OutDetailNo: "D4", MchID: "1900000001"}); err == nil || errors.Is(err, ErrInvalid) {
		t.Fatalf("cancelled context: err = %v, want a publish error", err)
	}
}

// TestPublisher_WithRail: WithRail(RailBills) checks requests for the bills rail, so a bill
// request is published and a batch request (no report rows) is refused; without it the
// bill request is refused by the batch rules.
func TestPublisher_WithRail(t *testing.T) {
	js, st := mustJetStream(t)
	ctx := t.Context()
	b := bill()
	if _, err := NewPublisher(js).Publish(ctx, b); !errors.Is(err, ErrInvalid) {
		t.Fatalf("batch publisher: err = %v, want ErrInvalid", err)
	}
	p := NewPublisher(js, WithRail(RailBills))
	if _, err := p.Publish(ctx, b); err != nil {
		t.Fatal(err)
	}
	mustHoldOne(t, st)
	msg, err := st.GetLastMsgForSubject(ctx, Subject(DefaultSubjectPrefix, b.MchID))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.ValidateFor(RailBills, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get(jetstream.MsgIDHeader), MsgID(&b); got != want {
		t.Fatalf("Nats-Msg-Id = %q, want %q", got, want)
	}
	d := direct()
	if _, err := p.Publish(ctx, d); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bills publisher, direct request: err = %v, want ErrInvalid", err)
	}
}
