package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/internal/synth"
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
	checkFor(t, time.Minute, 100*time.Millisecond, func() (bool, string) {
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
	var after []string
	for _, b := range srv.Batches() {
		after = append(after, b.OutBatchNo)
	}
	slices.Sort(numbers)
	slices.Sort(after)
	if !slices.Equal(after, numbers) {
		t.Errorf("batches at WeChat after the restore %v, want only the ones sealed before it %v", after, numbers)
	}
	auditClean(t, time.Now(), cfg.Ledger)
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

// TestRun_DiskLostAfterCrash: when the lost replica did not stop cleanly (its heartbeat was
// still beating), the restored copy may lack its last second of commits, among them maybe a
// batch already sent: the replacement restores the file but refuses to take work on it
// (ErrRestoredIncomplete), leaving it in place for recovery.
func TestRun_DiskLostAfterCrash(t *testing.T) {
	cfg, ns := replicatedConfig(t, wechatpaytest.NewServer(t, wechatpaytest.WithSpeed(200)))

	a := startProcessor(t, cfg, io.Discard)
	o := synth.DefaultOptions()
	o.Count, o.Seed, o.InvalidRate, o.FailRate, o.NamedRate = 50, 6, 0, 0, 0
	publish(t, a.js, o)
	a.shutdown(t)
	instance := instanceOf(t, cfg.Ledger)
	// The instance's last heartbeat is not a clean stop: as if it had been killed while beating.
	js := natstest.Connect(t, ns)
	kv, err := js.KeyValue(context.Background(), cfg.NATS.Topology.InstancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := instances.Start(context.Background(), instances.BeatConfig{KV: kv, Self: instances.Info{Instance: instance}}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a replacement that resumed would run until then
	defer cancel()
	err = Run(ctx, cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !errors.Is(err, ErrRestoredIncomplete) {
		t.Fatalf("Run on a copy of a crashed instance = %v, want ErrRestoredIncomplete", err)
	}
	if got := instanceOf(t, cfg.Ledger); got != instance {
		t.Fatalf("the restored copy is instance %s, want %s, left in place", got, instance)
	}
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
