package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/testingutil"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// start serves the sandbox with args and returns its URL, a stop function that returns serve's
// error, and its stderr.
func start(t *testing.T, args ...string) (string, func() error, *testingutil.LockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	stderr := &testingutil.LockedBuffer{}
	done := make(chan error, 1)
	go func() {
		err := serve(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), func(string) string { return "" }, pw, stderr)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("no first line: %v; stderr %s; run: %v", err, stderr, <-done)
	}
	go io.Copy(io.Discard, pr)
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "sandbox listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })
	return url, stop, stderr
}

func client(t *testing.T, url string) *wechatpay.Client {
	t.Helper()
	c, err := wechatpay.NewClient(wechatpay.Config{
		BaseURL: url, MchID: wechatpaytest.DefaultMchID, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial,
		PrivateKey: wechatpaytest.MerchantPrivateKey(), WechatPayPublicKeyID: wechatpaytest.DefaultPlatformKeyID,
		WechatPayPublicKey: wechatpaytest.PlatformPublicKey(),
	}, wechatpay.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func batch(no string) *wechatpay.CreateBatchRequest {
	return &wechatpay.CreateBatchRequest{
		AppID: wechatpaytest.DefaultAppID, OutBatchNo: no, BatchName: "n", BatchRemark: "r", TotalAmount: 200, TotalNum: 2,
		TransferDetailList: []wechatpay.TransferDetailInput{
			{OpenID: "o-1", OutDetailNo: no + "D1", TransferAmount: 100, TransferRemark: "r"},
			{OpenID: "fail-ACCOUNT_FROZEN-2", OutDetailNo: no + "D2", TransferAmount: 100, TransferRemark: "r"},
		},
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestRun_StateSurvivesRestart: a batch paid before a restart is still there, and still
// paid once, after it; the admin API reports the record; stderr gets the counters.
func TestRun_StateSurvivesRestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	url, stop, stderr := start(t, "--state", state, "--admin", "--speed", "1000", "--save-interval", "10ms")
	c := client(t, url)
	ctx := context.Background()
	res, err := c.CreateTransferBatch(ctx, batch("RUN1"))
	if err != nil {
		t.Fatal(err)
	}
	var paid wechatpaytest.PaidReport
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for getJSON(t, url+"/sandbox/paid", &paid); len(paid.Paid) == 0; getJSON(t, url+"/sandbox/paid", &paid) {
		select {
		case <-deadline:
			t.Fatal("nothing paid")
		case <-tick.C:
		}
	}
	if paid.Paid["RUN1D1"] != 1 || paid.Total != 100 || len(paid.DoublePaid) != 0 {
		t.Fatalf("paid %+v", paid)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), `"requests":{"POST /v3/transfer/batches":1}`) {
		t.Fatalf("stderr has no counters: %s", stderr)
	}

	url, _, _ = start(t, "--state", state, "--admin")
	c = client(t, url)
	got, err := c.QueryBatchByOutBatchNo(ctx, "RUN1", wechatpay.BatchQuery{})
	if err != nil || got.TransferBatch.BatchID != res.BatchID || got.TransferBatch.BatchStatus != wechatpay.BatchFinished {
		t.Fatalf("after restart: %+v, %v", got, err)
	}
	if again, err := c.CreateTransferBatch(ctx, batch("RUN1")); err != nil || again.BatchID != res.BatchID {
		t.Fatalf("retry after restart: %+v, %v", again, err)
	}
	getJSON(t, url+"/sandbox/paid", &paid)
	if len(paid.Paid) != 1 || paid.Paid["RUN1D1"] != 1 {
		t.Fatalf("paid after restart %+v", paid)
	}
}

func TestRun_AdminIsOffByDefault(t *testing.T) {
	url, _, _ := start(t)
	resp, err := http.Get(url + "/sandbox/paid")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized { // an unsigned API call, not the admin API
		t.Fatalf("HTTP %d without --admin", resp.StatusCode)
	}
}

func TestRun_Errors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		field   string // a *config.ConfigError for this field, or "" for any error
		wantErr bool
	}{
		{name: "help", args: []string{"--help"}},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: true},
		{name: "bad rate", args: []string{"--drop-after-commit-rate", "1.5"}, field: "drop-after-commit-rate", wantErr: true},
		{name: "short apiv3 key", args: []string{"--apiv3-key", "short"}, field: "apiv3-key", wantErr: true},
		{name: "bad balance", args: []string{"--balance", "-2"}, field: "balance", wantErr: true},
		{name: "bad log level", args: []string{"--log-level", "loud"}, field: "log-level", wantErr: true},
		{name: "zero speed", args: []string{"--speed", "0"}, field: "speed", wantErr: true},
		{name: "speed not a number", args: []string{"--speed", "fast"}, field: "speed", wantErr: true},
		{name: "delay not a duration", args: []string{"--accept-delay", "soon"}, field: "accept-delay", wantErr: true},
		{name: "a zero delay without a unit", args: []string{"--accept-delay", "0"}},
		{name: "empty product is both", args: []string{"--product", ""}},
		{name: "bad value in the file", args: []string{"--config", writeConfig(t, "speed: fast\n")}, field: "speed", wantErr: true},
		{name: "unknown key in the file", args: []string{"--config", writeConfig(t, "sped: 2\n")}, field: "sped", wantErr: true},
		{name: "a flag overrides a bad file value", args: []string{"--config", writeConfig(t, "speed: 0\n"), "--speed", "2"}},
		{name: "negative accept delay", args: []string{"--accept-delay", "-1s"}, field: "accept-delay", wantErr: true},
		{name: "negative save interval", args: []string{"--save-interval", "-1s"}, field: "save-interval", wantErr: true},
		{name: "negative rate limit", args: []string{"--rate-limit", "-5"}, field: "rate-limit", wantErr: true},
		{name: "zero rate limit is no limit", args: []string{"--rate-limit", "0"}},
		{name: "missing config", args: []string{"--config", "/nonexistent.yaml"}, wantErr: true},
		{name: "missing key file", args: []string{"--merchant-public-key", "/nonexistent.pem"}, field: "merchant-public-key", wantErr: true},
		{name: "products", args: []string{"--product", "bills", "--bill-confirm-timeout", "1h", "--bill-close-lag", "1m", "--notify-loss", "0.5", "--notify-delay", "1s"}},
		{name: "unknown product", args: []string{"--product", "both"}, field: "product", wantErr: true},
		{name: "notify loss above 1", args: []string{"--notify-loss", "1.5"}, field: "notify-loss", wantErr: true},
		{name: "negative notify delay", args: []string{"--notify-delay", "-1s"}, field: "notify-delay", wantErr: true},
		{name: "negative confirm timeout", args: []string{"--bill-confirm-timeout", "-1s"}, field: "bill-confirm-timeout", wantErr: true},
		{name: "negative close lag", args: []string{"--bill-close-lag", "-1s"}, field: "bill-close-lag", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a valid configuration returns at once
			err := serve(ctx, append([]string{"--listen", "127.0.0.1:0"}, tc.args...), func(string) string { return "" }, io.Discard, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			var ce *config.ConfigError
			if tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field) {
				t.Fatalf("err = %v, want a ConfigError for %s", err, tc.field)
			}
		})
	}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sandbox.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigFile parses configs/sandbox.yaml and checks that flags override it.
func TestConfigFile(t *testing.T) {
	const path = "../../configs/sandbox.yaml"
	cfg := DefaultConfig()
	if err := config.Load(path, func(string) string { return "" }, &cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.options(nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Speed != 10 || !cfg.Admin {
		t.Fatalf("config %+v", cfg)
	}
	url, _, _ := start(t, "--config", path, "--admin=false", "--speed", "1000")
	resp, err := http.Get(url + "/sandbox/paid")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("--admin=false did not override the file: HTTP %d", resp.StatusCode)
	}
}

// TestRun_BillsProduct: --product bills refuses batch creates with NO_AUTH; the simulated
// users act after --bill-auto-confirm, and a noconfirm- payee's bill closes after
// --bill-confirm-timeout plus --bill-close-lag; the admin API lists and decides bills.
func TestRun_BillsProduct(t *testing.T) {
	url, _, _ := start(t, "--product", "bills", "--admin", "--speed", "100", "--bill-auto-confirm", "3s",
		"--bill-confirm-timeout", "20s", "--bill-close-lag", "10s", "--notify-loss", "1")
	c := client(t, url)
	ctx := context.Background()
	if _, err := c.CreateTransferBatch(ctx, batch("NA1")); !errors.Is(err, wechatpay.ErrNoAuth) {
		t.Fatalf("batch create on product bills: %v", err)
	}
	want := map[string][2]string{
		"B1": {wechatpay.BillSuccess, ""},
		"B2": {wechatpay.BillFail, "USER_DECLINED"},
		"B3": {wechatpay.BillFail, "OVERDUE_CLOSE"},
		"B4": {wechatpay.BillFail, "USER_DECLINED"}, // declined by the admin API
	}
	for no, openID := range map[string]string{"B1": "o-1", "B2": "decline-2", "B3": "noconfirm-3", "B4": "noconfirm-4"} {
		if _, err := c.CreateTransferBill(ctx, bill(no, openID)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for { // B4 is ACCEPTED for 20 ms, then waits for its user until it closes 300 ms in
		resp, err := http.Post(url+"/sandbox/bills/B4/decline", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("decline B4: HTTP %d", resp.StatusCode)
		case <-tick.C:
		}
	}
	for {
		var bills []wechatpaytest.BillSummary
		getJSON(t, url+"/sandbox/bills", &bills)
		got := map[string][2]string{}
		for _, b := range bills {
			got[b.OutBillNo] = [2]string{b.State, b.FailReason}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("bills %v, want %v", got, want)
		case <-tick.C:
		}
	}
	var paid wechatpaytest.PaidReport
	getJSON(t, url+"/sandbox/paid", &paid)
	if len(paid.Paid) != 1 || paid.Paid["B1"] != 1 {
		t.Fatalf("paid %+v", paid)
	}
}

func bill(no, openID string) *wechatpay.CreateTransferBillRequest {
	return &wechatpay.CreateTransferBillRequest{
		AppID: wechatpaytest.DefaultAppID, OutBillNo: no, TransferSceneID: "1005", OpenID: openID, TransferAmount: 100,
		TransferRemark: "r", UserRecvPerception: "劳务报酬", TransferSceneReportInfos: []wechatpay.TransferSceneReportInfo{
			{InfoType: "岗位类型", InfoContent: "骑手"}, {InfoType: "报酬说明", InfoContent: "7月"},
		},
	}
}

// TestConfig_BillScenes: bill-scenes in a config file replaces the scene table; a bad one
// is a ConfigError.
func TestConfig_BillScenes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BillScenes = map[string]SceneConfig{"1006": {ReportInfos: []string{"报销说明"}}}
	o, err := cfg.options(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := o.BillScenes["1006"]; len(o.BillScenes) != 1 || !ok || r.ReportInfos[0] != "报销说明" {
		t.Fatalf("scenes %+v", o.BillScenes)
	}
	cfg.BillScenes = map[string]SceneConfig{"1006": {}}
	var ce *config.ConfigError
	if _, err := cfg.options(nil); !errors.As(err, &ce) || ce.Field != "bill-scenes" {
		t.Fatalf("err = %v, want a ConfigError for bill-scenes", err)
	}
}
