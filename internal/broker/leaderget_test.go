package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/testingutil"
)

// TestLeaderGet_notAnsweredByALaggingCopy: a mirror of the bucket's stream that serves direct
// gets and lacks the key (natstest.LaggingCopy) stands in for a replica behind the leader.
// KeyValue.Get is answered by either copy, so it sometimes reads "not found" for a key that
// exists; LeaderGet never.
func TestLeaderGet_notAnsweredByALaggingCopy(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "m.k1", []byte("owner"))
	if err != nil {
		t.Fatal(err)
	}
	natstest.LaggingCopy(t, js, kv)

	const reads = 60
	stale := 0
	for range reads {
		_, err := kv.Get(ctx, "m.k1")
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			stale++
		case err != nil:
			t.Fatal(err)
		}
	}
	if stale == 0 {
		t.Fatalf("KeyValue.Get read the key %d times of %d: the copy never answered, so this test shows nothing", reads, reads)
	}
	for i := range reads {
		e, err := LeaderGet(ctx, js, kv, "m.k1")
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(e.Value, []byte("owner")) || e.Revision != rev {
			t.Fatalf("read %d: %q at revision %d, want %q at %d", i, e.Value, e.Revision, "owner", rev)
		}
	}
	t.Logf("KeyValue.Get read \"not found\" %d times of %d; LeaderGet never", stale, reads)
}

// TestLeaderGet_absentDeletedPurged: a key never written, deleted, or purged has no value;
// a key written again after its delete has the new one.
func TestLeaderGet_absentDeletedPurged(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "instances", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"deleted", "purged", "back"} {
		if _, err := kv.Put(ctx, k, []byte("v1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "purged"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "back"); err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, "back", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"never", "deleted", "purged"} {
		if e, err := LeaderGet(ctx, js, kv, k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("%s: %+v, %v; want ErrKeyNotFound", k, e, err)
		}
	}
	e, err := LeaderGet(ctx, js, kv, "back")
	if err != nil || string(e.Value) != "v2" || e.Revision != rev {
		t.Errorf("back: %+v, %v; want v2 at revision %d", e, err, rev)
	}
}

// TestLeaderGet_errorsAreNotAbsence: a read that gets no answer fails, and never says
// "not found", which callers would take as nobody's key.
func TestLeaderGet_errorsAreNotAbsence(t *testing.T) {
	ctx := context.Background()
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims"})
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := LeaderGet(done, js, kv, "k"); err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("with its context ended: %v, want an error other than ErrKeyNotFound", err)
	}
	if err := js.DeleteKeyValue(ctx, "claims"); err != nil {
		t.Fatal(err)
	}
	if _, err := LeaderGet(ctx, js, kv, "k"); !errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("with the bucket gone: %v, want ErrBucketNotFound", err)
	}
}

// TestLeaderGet_anIsolatedFollowerIsNotRead runs the lagging copy for real: a three-server
// cluster whose bucket has three replicas, one follower cut off from the other two servers
// (natstest.Cluster.Isolate), and a new owner written by the two that still form a quorum.
// Through the cut-off server, KeyValue.Get reads the old owner (the follower keeps serving
// direct gets from what it holds); LeaderGet never does: through that server it fails, as
// no leader answers there, and through a server that reaches the leader it reads the new
// owner.
func TestLeaderGet_anIsolatedFollowerIsNotRead(t *testing.T) {
	ctx := context.Background()
	c := natstest.RunCluster(t, 3)
	js := natstest.ConnectURL(t, c.Servers[0].ClientURL())
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "m.k1", []byte("old owner"))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_claims")
	if err != nil {
		t.Fatal(err)
	}
	// Every replica must hold the key before the cut, or the follower has nothing old to read.
	var leader, follower int
	testingutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cl := info.Cluster
		if cl != nil && cl.Leader != "" && len(cl.Replicas) == 2 && cl.Replicas[0].Current && cl.Replicas[1].Current &&
			cl.Replicas[0].Lag == 0 && cl.Replicas[1].Lag == 0 {
			leader, follower = c.Index(t, cl.Leader), c.Index(t, cl.Replicas[0].Name)
			return true, ""
		}
		return false, fmt.Sprintf("the bucket's replicas have not caught up: %+v", cl)
	})
	// A follower joins the direct gets' queue group a few seconds after it caught up (its
	// server checks every 2 s): wait until the follower's server holds that subscription.
	testingutil.WaitFor(t, 15*time.Second, func() (bool, string) {
		return servesDirectGets(t, c.Servers[follower], "KV_claims"), "the follower has not joined the direct gets' queue group"
	})
	// Handles on both sides, made while every server is reachable (making one asks the API).
	jsCut := natstest.ConnectURL(t, c.Servers[follower].ClientURL())
	kvCut, err := jsCut.KeyValue(ctx, "claims")
	if err != nil {
		t.Fatal(err)
	}
	jsLeader := natstest.ConnectURL(t, c.Servers[leader].ClientURL())
	kvLeader, err := jsLeader.KeyValue(ctx, "claims")
	if err != nil {
		t.Fatal(err)
	}

	c.Isolate(follower)
	newRev, err := kvLeader.Update(ctx, "m.k1", []byte("new owner"), rev)
	if err != nil {
		t.Fatalf("the two connected servers did not take the new owner: %v", err)
	}

	const reads = 5
	stale := 0
	for range reads {
		e, err := kvCut.Get(ctx, "m.k1")
		if err == nil && string(e.Value()) == "old owner" {
			stale++
		}
	}
	if stale == 0 {
		t.Fatalf("KeyValue.Get through the cut-off follower never read the old owner in %d reads: it shows no lag, so this test shows nothing", reads)
	}
	for i := range reads {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		e, err := LeaderGet(rctx, jsCut, kvCut, "m.k1")
		cancel()
		if err == nil {
			t.Fatalf("read %d through the cut-off follower: %q at revision %d; want an error, no leader answers there", i, e.Value, e.Revision)
		}
	}
	e, err := LeaderGet(ctx, jsLeader, kvLeader, "m.k1")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Value) != "new owner" || e.Revision != newRev {
		t.Fatalf("through the leader's server: %q at revision %d, want %q at %d", e.Value, e.Revision, "new owner", newRev)
	}
	t.Logf("KeyValue.Get through the cut-off follower read the old owner %d times of %d; LeaderGet failed there every time", stale, reads)
}

// servesDirectGets reports whether s itself (not a route to another server) subscribes to
// the direct gets of stream.
func servesDirectGets(t *testing.T, s *server.Server, stream string) bool {
	t.Helper()
	sz, err := s.Subsz(&server.SubszOptions{Subscriptions: true, Test: "$JS.API.DIRECT.GET." + stream + ".x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range sz.Subs {
		if d.Queue != "" {
			return true
		}
	}
	return false
}
