package broker

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/natstest"
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
