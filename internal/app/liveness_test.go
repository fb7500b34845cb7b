package app

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/instances"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// TestRun_SilentInstance: another instance that stops beating without a clean stop (its
// connection dies) is reported by a running replica: at ERROR in the log, on the status page
// and in paystream_instances_silent; once it stops cleanly it is cleared. The replica itself
// beats, and its clean shutdown leaves its own record Stopped.
func TestRun_SilentInstance(t *testing.T) {
	srv := wechatpaytest.NewServer(t)
	cfg := testConfig(t, srv)
	ns := natstest.Run(t) // outlives the processor: its own record is read after it stops
	cfg.NATS.URL = ns.ClientURL()
	cfg.HTTP = HTTPConfig{Listen: "127.0.0.1:0"}
	cfg.NATS.Topology.HeartbeatEvery, cfg.NATS.Topology.SilentAfter = 50*time.Millisecond, 300*time.Millisecond
	logs := testingutil.NewLogWatch("silent_instance=ghost0001")
	addrs := make(chan Addrs, 1)
	r := startProcessorWith(t, cfg, logs, func(a Addrs) { addrs <- a })
	a := <-addrs
	base := "http://" + a.HTTP
	ctx := context.Background()

	// A ghost instance beats on its own connection, then its connection dies.
	nc, err := nats.Connect(a.NATS)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, cfg.NATS.Topology.InstancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	ghost, err := instances.Start(ctx, instances.BeatConfig{JS: js, KV: kv, Self: instances.Info{Instance: "ghost0001", Host: "lost-host"},
		Every: 50 * time.Millisecond, Status: func() instances.LedgerPos { return instances.LedgerPos{LastSeq: 42, LastEvent: 7} }})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close() // no clean stop can be written

	testingutil.PollEvery(t, 30*time.Second, 50*time.Millisecond, func() (bool, string) {
		var s ops.Status
		if err := getJSON(base+"/status.json", &s); err != nil {
			return false, err.Error()
		}
		si := s.Runtime.Silent
		return len(si) == 1 && si[0].Instance == "ghost0001" && si[0].LastSeq == 42, fmt.Sprintf("silent %+v", si)
	})
	select {
	case <-logs.Seen():
	case <-time.After(10 * time.Second):
		t.Error("the silent instance was not logged")
	}
	if _, m := get(t, base+"/metrics"); !strings.Contains(m, "paystream_instances_silent 1") {
		t.Error("paystream_instances_silent is not 1")
	}
	if _, page := get(t, base+"/"); !strings.Contains(page, "ghost0001") || !strings.Contains(page, "lost-host") {
		t.Error("the status page does not name the silent instance")
	}
	_ = ghost.Stop(ctx) // its connection is gone: nothing is written

	// The ghost comes back and stops cleanly: no longer silent.
	nc2, err := nats.Connect(a.NATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	kv2, err := js2.KeyValue(ctx, cfg.NATS.Topology.InstancesBucket)
	if err != nil {
		t.Fatal(err)
	}
	back, err := instances.Start(ctx, instances.BeatConfig{JS: js2, KV: kv2, Self: instances.Info{Instance: "ghost0001"}, Every: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	testingutil.PollEvery(t, 30*time.Second, 50*time.Millisecond, func() (bool, string) {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, "paystream_instances_silent 0"), "paystream_instances_silent still set"
	})

	// This replica's own clean shutdown leaves its record Stopped.
	r.shutdown(t)
	recs, err := instances.List(ctx, js2, kv2)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, st := range instances.Classify(recs, time.Now(), cfg.NATS.Topology.SilentAfter) {
		states = append(states, fmt.Sprintf("%s=%s", st.Instance, st.State))
		if st.Instance != "ghost0001" && st.State != instances.Stopped {
			t.Errorf("the processor's own record is %s after a clean shutdown, want stopped", st.State)
		}
	}
	if len(recs) != 2 {
		t.Errorf("records %v, want the ghost and the processor", states)
	}
}
