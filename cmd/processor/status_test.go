package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

const statusOpenID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"

// statusLedger is a processor's ledger as ops.Handler reads it: one parked batch and one failure.
type statusLedger struct{}

func (statusLedger) Ops(_ context.Context, now time.Time, _ int) (ledger.OpsSnapshot, error) {
	return ledger.OpsSnapshot{At: now, Instance: "P1",
		Payouts: map[string]ledger.StateTotal{ledger.PayoutSealed: {Count: 1, Amount: 12345}},
		Open: []ledger.OpenBatch{{OutBatchNo: "BP1000000000000000000002", Rail: "direct", State: ledger.BatchSealed,
			LastErrorCode: "NOT_ENOUGH", LastErrorMessage: "balance too low", Parked: true, Attempts: 3, SealedAt: now.Add(-time.Hour)}},
		OpenTotal:      1,
		Parked:         []ledger.ParkedCount{{Kind: "batch", Code: "NOT_ENOUGH", Count: 1}},
		RecentFailures: []ledger.PayoutBrief{{OutDetailNo: "D2", State: ledger.PayoutFail, OpenID: statusOpenID, Amount: 5}},
	}, nil
}

func (statusLedger) Lookup(context.Context, string) (ledger.PayoutView, error) {
	return ledger.PayoutView{}, ledger.ErrNotFound
}

// runningProcessor serves a processor's operator endpoints and returns their base URL.
func runningProcessor(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(ops.Handler(ops.Config{Ledger: statusLedger{},
		Runtime: func(context.Context) ops.Runtime {
			return ops.Runtime{Instance: "P1", MchID: "1900000109", Version: "v9", InFlight: 1, ConsumerPending: 42,
				Breakers: []ops.Breaker{{Name: "direct/create", State: "open"}}}
		}}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// deadURL is a loopback URL nothing listens on.
func deadURL(t *testing.T) string {
	srv := httptest.NewServer(nil)
	srv.Close()
	return srv.URL
}

func runStatus(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb strings.Builder
	code = run(context.Background(), append([]string{"status"}, args...), func(string) string { return "" }, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCmdStatus(t *testing.T) {
	live, dead := runningProcessor(t), deadURL(t)
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{name: "the running processor's picture", args: []string{"--url", live}, wantCode: 0,
			want: []string{"P1", "1900000109", "42 pending", "breaker direct/create", "open", "PARKED batch", "NOT_ENOUGH", "balance too low",
				ops.Mask(statusOpenID)}},
		{name: "nothing reachable", args: []string{"--url", dead}, wantCode: 1,
			want: []string{"unknown: processor not reachable at " + dead, "no ledger given"}},
		{name: "an unreadable ledger and no processor", args: []string{"--url", dead, "--ledger", filepath.Join(t.TempDir(), "none", "ledger.db")},
			wantCode: 1, want: []string{"processor not reachable", "no such file"}},
		{name: "extra argument", args: []string{"--url", live, "extra"}, wantCode: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runStatus(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.wantCode, out, errOut)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, statusOpenID) {
				t.Errorf("stdout shows the full openid")
			}
		})
	}
}

func TestCmdStatus_JSON(t *testing.T) {
	code, out, errOut := runStatus(t, "--url", runningProcessor(t), "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var st ops.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if got, want := st.Runtime.ConsumerPending, uint64(42); got != want {
		t.Errorf("consumer pending %d, want %d", got, want)
	}
	if got, want := st.Ledger.Open[0].LastErrorCode, "NOT_ENOUGH"; got != want {
		t.Errorf("open[0] code %q, want %q", got, want)
	}
	if strings.Contains(out, statusOpenID) {
		t.Errorf("JSON shows the full openid")
	}
}

// statusConfig writes a processor config with this ledger and http.listen.
func statusConfig(t *testing.T, ledgerPath, listen string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "processor.yaml")
	yaml := fmt.Sprintf("data-dir: %s\nledger: %s\nhttp:\n  listen: %s\nwechatpay:\n  mchid: \"1900000001\"\n  merchant-serial-no: S\n"+
		"  private-key-file: k.pem\n  wechatpay-public-key-file: p.pem\n  apiv3-key: 0123456789abcdef0123456789abcdef\n", dir, ledgerPath, listen)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCmdStatus_ConfigURL: --config gives the processor's URL from http.listen.
func TestCmdStatus_ConfigURL(t *testing.T) {
	cfg := statusConfig(t, auditLedger(t, "k1"), strings.TrimPrefix(runningProcessor(t), "http://"))
	code, out, errOut := runStatus(t, "--config", cfg)
	if code != 0 || !strings.Contains(out, "42 pending") {
		t.Fatalf("exit %d, want 0 and the runtime of the processor at http.listen; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

// TestCmdStatus_LedgerOnly: with the processor down, the config's ledger is still read and
// printed, exit 0.
func TestCmdStatus_LedgerOnly(t *testing.T) {
	path := auditLedger(t, "k1")
	dead := strings.TrimPrefix(deadURL(t), "http://")
	code, out, errOut := runStatus(t, "--config", statusConfig(t, path, dead))
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"processor not reachable at http://" + dead, ledger.PayoutReceived} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

// TestCmdStatus_Parked runs `processor run` on the demo config against a sandbox merchant
// without money, and `processor status` on the same config: the parked batch is shown with its
// code and WeChat's message, and the running processor's part (ready, breakers) is there.
func TestCmdStatus_Parked(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithBalance(1))
	dir := t.TempDir()
	copyFile(t, dir, "merchant_TEST_ONLY_private_key.pem", 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	lite, err := replica.Binary("../..") // the demo config replicates the ledger
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATA_DIR": dir, "SANDBOX_URL": srv.URL(), "PRODUCT": "batches", "CALLBACK_LISTEN": "127.0.0.1:0",
		"NOTIFY_URL": "http://127.0.0.1:1/wechatpay/notify", "HTTP_LISTEN": listen, "ADMIN_TOKEN": "0123456789abcdef",
		"REPLICA_URL": "file://" + filepath.Join(t.TempDir(), "replica"), "LITESTREAM": lite}
	getenv := func(k string) string { return env[k] }
	t.Chdir("../..") // the demo config names the sandbox's key by its path in the repository
	config := "configs/demo-processor.yaml"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	logs := testingutil.NewLogWatch(`msg="processor running"`) // written after nats.url
	go func() {
		done <- run(ctx, []string{"run", "--config", config}, getenv, strings.NewReader(""), io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("processor run exited %d:\n%s", code, logs.String())
		}
	})
	select {
	case <-logs.Seen():
	case <-done:
		t.Fatalf("processor run stopped before running:\n%s", logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("processor not running after a minute:\n%s", logs.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "nats.url"))
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSpace(string(b))
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pub := payout.NewPublisher(js)
	for i := range 3 {
		r := payout.Request{Schema: payout.SchemaV1, OutDetailNo: fmt.Sprintf("P%d", i), MchID: wechatpaytest.DefaultMchID,
			AppID: "wxa0000000000000001", OpenID: fmt.Sprintf("o-status-%d", i), Amount: 1000, Remark: "奖励",
			SceneID: "1001", CreatedAt: time.Now()}
		if _, err := pub.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	// The batch parks once the sandbox refuses its create; ask until status shows it.
	deadline, tick := time.After(time.Minute), time.NewTicker(100*time.Millisecond)
	defer tick.Stop()
	for {
		var out, errOut strings.Builder
		code := run(ctx, []string{"status", "--config", config}, getenv, strings.NewReader(""), &out, &errOut)
		if code == 0 && strings.Contains(out.String(), "NOT_ENOUGH") {
			for _, want := range []string{"PARKED", "balance 1 fen is not enough", "ready", "wechatpay-create"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("status lacks %q:\n%s", want, out.String())
				}
			}
			return
		}
		select {
		case <-deadline:
			t.Fatalf("no parked batch in processor status after a minute (exit %d):\n%s\n%s", code, out.String(), errOut.String())
		case <-tick.C:
		}
	}
}

func TestCmdStatus_ListenURL(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"127.0.0.1:8091", "http://127.0.0.1:8091"},
		{":8091", "http://127.0.0.1:8091"},
		{"0.0.0.0:8091", "http://127.0.0.1:8091"},
		{"[::]:8091", "http://127.0.0.1:8091"},
		{"[::1]:8091", "http://[::1]:8091"},
		{"ops.internal:8091", "http://ops.internal:8091"},
	} {
		if got := listenURL(tc.listen); got != tc.want {
			t.Errorf("listenURL(%q) = %q, want %q", tc.listen, got, tc.want)
		}
	}
}
