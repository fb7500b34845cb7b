package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	// yield lowers every thread of the process, not only its first.
	if err := sb.yield(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueryBatchByOutBatchNo(ctx, "BENCHNOSUCHBATCH", wechatpay.BatchQuery{}); !errors.Is(err, wechatpay.ErrNotFound) {
		t.Fatalf("query of an unknown batch after yield: %v, want NOT_FOUND", err)
	}
	tids, err := threads(sb.cmd.Process.Pid)
	if err != nil || len(tids) < 2 {
		t.Fatalf("threads of the sandbox: %v, %v; want a Go process's several", tids, err)
	}
	for _, tid := range tids {
		if n := threadNice(t, sb.cmd.Process.Pid, tid); n != 19 {
			t.Errorf("thread %d of %d runs at nice %d, want 19", tid, len(tids), n)
		}
	}
	// Its own session (so its CPU is not the bench's share), lowered as a whole where the
	// kernel shares CPU by session.
	if sid := threadStat(t, sb.cmd.Process.Pid, sb.cmd.Process.Pid, 6); sid != sb.cmd.Process.Pid {
		t.Errorf("sandbox in session %d; want its own (%d)", sid, sb.cmd.Process.Pid)
	}
	if ag, err := os.ReadFile(fmt.Sprintf("/proc/%d/autogroup", sb.cmd.Process.Pid)); err == nil && !strings.HasSuffix(strings.TrimSpace(string(ag)), "nice 19") {
		t.Errorf("sandbox autogroup %q; want nice 19", ag)
	}
	st, err := sb.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Requests[wechatpaytest.EndpointBatchByOutNo], 2; got != want {
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
	// The process itself is checked, not its port: a request to the port after Close can reach
	// another process that has taken it meanwhile (seen with the faultproxy tests' ports).
	if ps := sb.cmd.ProcessState; ps == nil || !ps.Exited() {
		t.Fatalf("after Close the sandbox process is %v; want it exited", ps)
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

// threadNice reads thread tid's nice value from /proc (field 19 of its stat line).
func threadNice(t *testing.T, pid, tid int) int { return threadStat(t, pid, tid, 19) }

// threadStat reads field n (1-based) of thread tid's stat line in /proc, counted after the
// command name, which is in parentheses and may hold spaces.
func threadStat(t *testing.T, pid, tid, n int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	v, err := strconv.Atoi(f[n-3]) // f[0] is field 3
	if err != nil {
		t.Fatalf("stat of thread %d: %q", tid, b)
	}
	return v
}
