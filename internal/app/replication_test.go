package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/internal/synth"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestRun_DiskLost: a replica's data dir is lost for good while its batches wait at WeChat
// (WAIT_PAY). A fresh processor started with the same config restores the ledger from its
// litestream replica, checks it and resumes as the same instance: every batch keeps its
// number, and every payout is paid exactly once by the sandbox's own record.
func TestRun_DiskLost(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200), wechatpaytest.WithNoPasswordLimit(1)) // every detail waits for a confirm
	cfg, _ := replicatedConfig(t, srv)

	a := startProcessor(t, cfg, io.Discard)
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 300, 5, 0, 0, 0
	sent := publish(t, a.js, o)
	var numbers []string
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
		numbers = numbers[:0]
		waiting := 0
		for _, b := range srv.Batches() {
			numbers = append(numbers, b.OutBatchNo)
			waiting += b.WaitPayNum
		}
		return waiting == len(sent.valid), "payouts not all waiting at WeChat yet"
	})
	a.shutdown(t)
	instance := instanceOf(t, cfg.Ledger)
	if err := os.RemoveAll(cfg.DataDir); err != nil { // the disk is gone
		t.Fatal(err)
	}

	startProcessor(t, cfg, io.Discard)
	if got := instanceOf(t, cfg.Ledger); got != instance {
		t.Fatalf("the replacement runs as instance %s, want the restored %s", got, instance)
	}
	for _, no := range numbers {
		if _, err := srv.Confirm(no, ""); err != nil {
			t.Fatalf("confirm %s: %v", no, err)
		}
	}
	waitPaidOnce(t, cfg.Ledger, srv, sent.valid)
	onlyBatches(t, srv, numbers)
	auditClean(t, time.Now(), cfg.Ledger)
}

// onlyBatches fails t unless the batches at the sandbox are exactly numbers: nothing paid
// under a new number.
func onlyBatches(t *testing.T, srv *wechatpaytest.Server, numbers []string) {
	t.Helper()
	var after []string
	for _, b := range srv.Batches() {
		after = append(after, b.OutBatchNo)
	}
	slices.Sort(after)
	if want := slices.Sorted(slices.Values(numbers)); !slices.Equal(after, want) {
		t.Errorf("batches at WeChat %v, want only the ones sent before the loss %v", after, want)
	}
}

// instanceOf reads the instance id of the ledger file at path.
func instanceOf(t *testing.T, path string) string {
	t.Helper()
	db, err := ledger.OpenReadOnly(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return db.InstanceID()
}

// TestRun_DiskLostAfterCrash: the lost replica did not stop cleanly, and its replica lacks
// its last commits (here: a copy of the replica taken before 100 more payouts were batched
// and sent). The replacement restores the old copy, waits until the lost process is silent,
// and completes the copy from NATS before any work: the batches it lacks come back from the
// journal under their own numbers, and by the sandbox's record every payout is paid once.
func TestRun_DiskLostAfterCrash(t *testing.T) {
	srv := wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200), wechatpaytest.WithNoPasswordLimit(1)) // every detail waits for a confirm
	cfg, ns := replicatedConfig(t, srv)
	js := natstest.Connect(t, ns)
	waiting := func(n int) func() (bool, string) {
		return func() (bool, string) {
			w := 0
			for _, b := range srv.Batches() {
				w += b.WaitPayNum
			}
			return w == n, fmt.Sprintf("%d of %d payouts waiting at WeChat", w, n)
		}
	}

	a := startProcessor(t, cfg, io.Discard)
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 100, 6, 0, 0, 0
	sent := publish(t, a.js, o)
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, waiting(100))
	a.shutdown(t) // the replica holds all of it
	replicaDir := strings.TrimPrefix(cfg.Replica.URL, "file://")
	old := filepath.Join(t.TempDir(), "old-replica")
	if err := os.CopyFS(old, os.DirFS(replicaDir)); err != nil {
		t.Fatal(err)
	}

	a = startProcessor(t, cfg, io.Discard)
	o.Seed = 7
	for k, v := range publish(t, a.js, o).valid {
		sent.valid[k] = v
	}
	testingutil.PollEvery(t, time.Minute, 100*time.Millisecond, waiting(200))
	a.shutdown(t)
	var numbers []string
	for _, b := range srv.Batches() {
		numbers = append(numbers, b.OutBatchNo)
	}
	instance := instanceOf(t, cfg.Ledger)
	// It dies uncleanly, its disk with it, and its replica had not shipped the last batches.
	silence(t, js, cfg, instance)
	for _, dir := range []string{cfg.DataDir, replicaDir} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(replicaDir, os.DirFS(old)); err != nil {
		t.Fatal(err)
	}

	logs := testingutil.NewLogWatch("restored ledger completed from NATS")
	startProcessor(t, cfg, logs)
	select {
	case <-logs.Seen():
	case <-time.After(time.Minute):
		t.Fatal("the restored copy was not completed")
	}
	if got := instanceOf(t, cfg.Ledger); got != instance {
		t.Fatalf("the replacement runs as instance %s, want the restored %s", got, instance)
	}
	stop := confirmAll(srv)
	waitPaidOnce(t, cfg.Ledger, srv, sent.valid)
	stop()
	onlyBatches(t, srv, numbers)
	auditClean(t, time.Now(), cfg.Ledger)
}

// replicatedConfig is testConfig on a NATS server of its own (it outlives the processors) with
// the ledger replicated by litestream into a directory, and the key file off the data dir
// (the disk these tests lose).
func replicatedConfig(t *testing.T, srv *wechatpaytest.Server) (Config, *server.Server) {
	t.Helper()
	bin, err := replica.Binary("../..")
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t)
	cfg := testConfig(t, srv)
	cfg.NATS.URL = ns.ClientURL()
	cfg.Replica = ReplicaConfig{URL: "file://" + filepath.Join(t.TempDir(), "replica"), SyncInterval: 100 * time.Millisecond, Litestream: bin}
	key := filepath.Join(t.TempDir(), "merchant.pem")
	if err := os.Rename(cfg.WeChatPay.PrivateKeyFile, key); err != nil {
		t.Fatal(err)
	}
	cfg.WeChatPay.PrivateKeyFile = key
	return cfg, ns
}
