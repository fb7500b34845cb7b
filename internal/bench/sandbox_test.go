package bench

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestSandbox: the benchmarks' sandbox is cmd/sandbox in a process of its own, serving
// signed WeChat Pay calls; its admin routes read its record; Close stops the process.
func TestSandbox(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, err := buildSandbox(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	o := wechatpaytest.DefaultOptions()
	o.Speed, o.RateLimit = 120, drainQPS
	sb, err := startSandbox(ctx, bin, o, filepath.Join(dir, "sandbox.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	if pid := sb.cmd.Process.Pid; pid == os.Getpid() || pid <= 0 {
		t.Fatalf("sandbox pid %d, want a process of its own (this one is %d)", pid, os.Getpid())
	}
	c, err := wechatpay.NewClient(wechatpay.Config{
		BaseURL: sb.URL(), MchID: wechatpaytest.DefaultMchID, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial,
		PrivateKey: wechatpaytest.MerchantPrivateKey(), APIv3Key: wechatpaytest.DefaultAPIv3Key,
		WechatPayPublicKeyID: wechatpaytest.DefaultPlatformKeyID, WechatPayPublicKey: wechatpaytest.PlatformPublicKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueryBatchByOutBatchNo(ctx, "BENCHNOSUCHBATCH", wechatpay.BatchQuery{}); !errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("query of an unknown batch: %v, want NOT_FOUND", err)
	}
	st, err := sb.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Requests[wechatpaytest.EndpointBatchByOutNo], 1; got != want {
		t.Fatalf("sandbox counted %d batch queries, want %d: %+v", got, want, st)
	}
	if bs, err := sb.Batches(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("batches = %v, %v; want none", bs, err)
	}
	if bs, err := sb.Bills(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("bills = %v, %v; want none", bs, err)
	}
	if err := sb.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := http.Get(sb.URL()); err == nil {
		t.Fatal("the sandbox still answers after Close")
	}
}

// TestStartSandbox_Fails: a sandbox that cannot start (a flag it refuses) is an error
// naming its log, not a hang.
func TestStartSandbox_Fails(t *testing.T) {
	dir := t.TempDir()
	bin, err := buildSandbox(context.Background(), filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	o := wechatpaytest.DefaultOptions()
	o.Product = "neither"
	logPath := filepath.Join(dir, "sandbox.log")
	_, err = startSandbox(context.Background(), bin, o, logPath)
	if err == nil || !strings.Contains(err.Error(), logPath) {
		t.Fatalf("sandbox with --product neither: %v, want an error naming %s", err, logPath)
	}
}
