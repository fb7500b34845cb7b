package abnormal

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// world is a sandbox over real HTTP, a client of it with no retries of its own, and a ledger.
type world struct {
	srv *wechatpaytest.Server
	c   *wechatpay.Client
	db  *ledger.Instructions
}

func newWorld(t *testing.T, opts ...wechatpaytest.Option) *world {
	t.Helper()
	srv := wechatpaytest.NewServer(t, append([]wechatpaytest.Option{wechatpaytest.WithSpeed(1000), wechatpaytest.WithRateLimit(0)}, opts...)...)
	c, err := wechatpay.NewClient(srv.ClientConfig(), wechatpay.WithLogger(slog.New(slog.DiscardHandler)), wechatpay.WithRetries(0),
		wechatpay.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	db, err := ledger.OpenInstructions(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), ledger.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	srv.AddReceipt("R1", 1234)
	return &world{srv: srv, c: c, db: db}
}

var fastOpts = []Option{WithPoll(5 * time.Millisecond), WithBackoff(time.Millisecond, 5*time.Millisecond), WithLogger(slog.New(slog.DiscardHandler))}

// recorder is a Client that records every body it sends and may spoil calls.
type recorder struct {
	c      Client
	mu     sync.Mutex
	bodies [][]byte
	// spoil, when set, runs after a create reached WeChat and replaces its result.
	spoil func(n int, err error) error
}

func (r *recorder) Do(ctx context.Context, method, path string, body []byte, out any) error {
	err := r.c.Do(ctx, method, path, body, out)
	if method != http.MethodPost {
		return err
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, bytes.Clone(body))
	n := len(r.bodies)
	r.mu.Unlock()
	if r.spoil != nil {
		err = r.spoil(n, err)
	}
	return err
}

// mustOne fails unless the sandbox holds exactly one instruction for R1, numbered as in the
// ledger, in state want.
func (w *world) mustOne(t *testing.T, in ledger.Instruction, want string) {
	t.Helper()
	var got []wechatpaytest.InstructionSummary
	for _, s := range w.srv.Instructions() {
		if s.ReceiptID == "R1" {
			got = append(got, s)
		}
	}
	if len(got) != 1 || got[0].OutInstructionNo != in.OutInstructionNo || got[0].State != want {
		t.Fatalf("sandbox holds %+v; want one %s numbered %s", got, want, in.OutInstructionNo)
	}
}

func TestInstruct(t *testing.T) {
	alreadyExists := &wechatpay.APIError{StatusCode: http.StatusBadRequest, Code: "ALREADY_EXISTS"}
	tests := []struct {
		name         string
		faults       []wechatpaytest.Fault // on the sandbox's creates, in order
		spoil        func(n int, err error) error
		receipt      string
		wantErr      error
		wantState    string
		wantAttempts int
	}{
		{name: "answered at once", wantState: ledger.InstrCompleted, wantAttempts: 1},
		{name: "committed, answer lost: same body resent", faults: []wechatpaytest.Fault{wechatpaytest.DropAfterCommit},
			wantState: ledger.InstrCompleted, wantAttempts: 2},
		{name: "SYSTEM_ERROR then 429 then answered", faults: []wechatpaytest.Fault{wechatpaytest.SystemError, wechatpaytest.FrequencyLimited},
			wantState: ledger.InstrCompleted, wantAttempts: 3},
		{name: "ALREADY_EXISTS for our own number: queried", spoil: func(int, error) error { return alreadyExists },
			wantState: ledger.InstrCompleted, wantAttempts: 1},
		{name: "unknown receipt", receipt: "R404", wantErr: ErrRejected, wantState: ledger.InstrRejected, wantAttempts: 1},
		{name: "ambiguous every time", faults: []wechatpaytest.Fault{wechatpaytest.DropBeforeCommit, wechatpaytest.DropBeforeCommit, wechatpaytest.DropBeforeCommit},
			wantErr: ErrUnacknowledged, wantState: ledger.InstrRecorded, wantAttempts: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.srv.Fail(wechatpaytest.EndpointCreateInstr, tc.faults...)
			rec := &recorder{c: w.c, spoil: tc.spoil}
			receipt := cmp(tc.receipt, "R1")
			in, err := Instruct(context.Background(), w.db, rec, receipt, []string{wechatpaytest.DefaultAppID}, "", append(fastOpts, WithAttempts(3))...)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Instruct: %v, want %v", err, tc.wantErr)
			}
			if in.State != tc.wantState || in.Attempts != tc.wantAttempts {
				t.Fatalf("instruction %s after %d attempts, want %s after %d (last error %s)", in.State, in.Attempts, tc.wantState, tc.wantAttempts, in.LastError)
			}
			for i, b := range rec.bodies { // the same bytes, the ledger's, every time
				if !bytes.Equal(b, in.Body) {
					t.Fatalf("send %d carried %s, the ledger holds %s", i+1, b, in.Body)
				}
			}
			if tc.wantState == ledger.InstrCompleted {
				w.mustOne(t, in, wechatpay.ReceiptStateCompleted)
				if in.Amount != 1234 || in.SuccessTime == "" {
					t.Errorf("WeChat's fields not kept: %+v", in)
				}
			}
		})
	}
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestInstruct_OtherNumber: a receipt WeChat shows instructed under another number rejects
// ours, and a second Instruct with other app ids is refused while one is live.
func TestInstruct_OtherNumber(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.c.CreateTransferInstruction(ctx, "R1", &wechatpay.CreateTransferInstructionRequest{OutInstructionNo: "SOMEONE-ELSE",
		AppID: []string{wechatpaytest.DefaultAppID}, TransferMode: wechatpay.TransferModeOriginalReceiveUser}); err != nil {
		t.Fatal(err)
	}
	in, err := Instruct(ctx, w.db, w.c, "R1", []string{wechatpaytest.DefaultAppID}, "", fastOpts...)
	if !errors.Is(err, ErrRejected) || in.State != ledger.InstrRejected || !strings.Contains(in.LastError, "SOMEONE-ELSE") {
		t.Fatalf("Instruct: %v, %s (%s); want ErrRejected naming SOMEONE-ELSE", err, in.State, in.LastError)
	}

	w.srv.AddReceipt("R2", 50)
	if _, err := ledgerRecord(w, "R2", "wxa"); err != nil {
		t.Fatal(err)
	}
	if _, err := Instruct(ctx, w.db, w.c, "R2", []string{"wxb"}, "", fastOpts...); !errors.Is(err, ledger.ErrInstructionLive) {
		t.Fatalf("Instruct with other app ids: %v, want ledger.ErrInstructionLive", err)
	}
}

// ledgerRecord records an instruction of receipt with app id appid, as Instruct would, and
// returns it: a process that died right after.
func ledgerRecord(w *world, receipt, appid string) (ledger.Instruction, error) {
	o := newOptions(fastOpts)
	return record(context.Background(), w.db, o, receipt, []string{appid}, "")
}

// TestResume_SendsBeforeFollowing: an instruction the payee has not collected (PENDING at
// WeChat for as long as the run lasts: the sandbox's clock stands still) does not keep a later
// recorded one from being sent: Resume sends every recorded instruction before it follows any.
func TestResume_SendsBeforeFollowing(t *testing.T) {
	at := time.Now()
	w := newWorld(t, wechatpaytest.WithClock(func() time.Time { return at }))
	ctx := context.Background()
	w.srv.AddReceipt("R2", 200)
	pending, err := ledgerRecord(w, "R1", wechatpaytest.DefaultAppID)
	if err != nil {
		t.Fatal(err)
	}
	if pending, err = Send(ctx, w.db, w.c, pending, fastOpts...); err != nil || pending.State != ledger.InstrPending {
		t.Fatalf("Send: %v %s", err, pending.State)
	}
	later, err := ledgerRecord(w, "R2", wechatpaytest.DefaultAppID)
	if err != nil {
		t.Fatal(err)
	}

	run, cancel := context.WithTimeout(ctx, 2*time.Second) // the run's --wait: the PENDING one uses it up
	defer cancel()
	got, err := Resume(run, w.db, w.c, fastOpts...)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 2 {
		t.Fatalf("Resume: %d, %v; want both, and the deadline of the one still PENDING", len(got), err)
	}
	sent := false
	for _, s := range w.srv.Instructions() {
		sent = sent || (s.ReceiptID == "R2" && s.OutInstructionNo == later.OutInstructionNo)
	}
	if in, err := w.db.Get(ctx, later.ID); err != nil || in.State == ledger.InstrRecorded || !sent {
		t.Fatalf("the later instruction is %s at home (%v), at WeChat %v; want it sent", in.State, err, sent)
	}
}

// TestResume: instructions left open by a dead process are continued by their numbers:
// one recorded and never sent, one committed at WeChat whose answer never came back, one
// acknowledged and not yet final.
func TestResume(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.srv.AddReceipt("R2", 200)
	w.srv.AddReceipt("R3", 300)
	never, err := ledgerRecord(w, "R1", wechatpaytest.DefaultAppID)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := ledgerRecord(w, "R2", wechatpaytest.DefaultAppID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.db.Attempt(ctx, lost.ID); err != nil {
		t.Fatal(err)
	}
	if err := w.c.Do(ctx, http.MethodPost, "/v3/abnormal-fund-processing/receipts/R2/transfer-instructions", lost.Body, nil); err != nil {
		t.Fatal(err)
	}
	acked, err := ledgerRecord(w, "R3", wechatpaytest.DefaultAppID)
	if err != nil {
		t.Fatal(err)
	}
	if acked, err = Send(ctx, w.db, w.c, acked, fastOpts...); err != nil || acked.State != ledger.InstrPending {
		t.Fatalf("Send: %v %s", err, acked.State)
	}

	got, err := Resume(ctx, w.db, w.c, fastOpts...)
	if err != nil || len(got) != 3 {
		t.Fatalf("Resume: %d, %v", len(got), err)
	}
	want := map[string]string{"R1": never.OutInstructionNo, "R2": lost.OutInstructionNo, "R3": acked.OutInstructionNo}
	for _, in := range got {
		if in.State != ledger.InstrCompleted || in.OutInstructionNo != want[in.ReceiptID] {
			t.Errorf("%s: %s numbered %s, want COMPLETED numbered %s", in.ReceiptID, in.State, in.OutInstructionNo, want[in.ReceiptID])
		}
	}
	all := w.srv.Instructions()
	if len(all) != 3 {
		t.Fatalf("sandbox holds %+v, want three", all)
	}
	for _, s := range all {
		if s.OutInstructionNo != want[s.ReceiptID] {
			t.Errorf("sandbox: %s numbered %s, ledger %s", s.ReceiptID, s.OutInstructionNo, want[s.ReceiptID])
		}
	}
	if open, _ := w.db.Open(ctx); len(open) != 0 {
		t.Errorf("still open: %+v", open)
	}
}
