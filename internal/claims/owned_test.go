package claims

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/natstest"
)

// keysOf returns the keys of hs, in order.
func keysOf(hs []Held) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Key
	}
	return out
}

func TestOwnedBy(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)

	if got, err := OwnedBy(ctx, js, kv, "abc"); err != nil || len(got) != 0 {
		t.Fatalf("OwnedBy of an empty bucket = %v, %v; want none, nil", keysOf(got), err)
	}

	// abc claims D00001, D00003 (with digests) and, written before digests, L1; abcd (abc is
	// its prefix) claims D00000, D00002; D00004 was abc's and was deleted.
	its := items("D", 5)
	abc, abcd := New(js, kv, "abc"), New(js, kv, "abcd")
	if _, err := abc.Claim(ctx, []Item{its[3], its[1], its[4]}); err != nil {
		t.Fatal(err)
	}
	if _, err := abcd.Claim(ctx, []Item{its[0], its[2]}); err != nil {
		t.Fatal(err)
	}
	legacy := Key("1900000001", "L1")
	if _, err := kv.Put(ctx, legacy, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, its[4].Key); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name     string
		instance string
		want     []Item // in key order
	}{
		{name: "with and without a digest, in key order", instance: "abc",
			want: []Item{its[1], its[3], {Key: legacy}}},
		{name: "an instance whose id extends another's", instance: "abcd", want: []Item{its[0], its[2]}},
		{name: "a prefix of both", instance: "ab"},
		{name: "nobody's", instance: "zzz"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OwnedBy(ctx, js, kv, tt.instance)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("OwnedBy(%s) = %v, want %d keys", tt.instance, keysOf(got), len(tt.want))
			}
			for i, h := range got {
				w := tt.want[i]
				d := w.Digest[:min(len(w.Digest), DigestSize)] // what a claim stores
				if h.Key != w.Key || h.Owner.Instance != tt.instance || !bytes.Equal(h.Owner.Digest, d) {
					t.Fatalf("OwnedBy(%s)[%d] = %s %+v, want %s with digest %x", tt.instance, i, h.Key, h.Owner, w.Key, d)
				}
				e, err := kv.Get(ctx, h.Key)
				if err != nil {
					t.Fatal(err)
				}
				if h.Revision != e.Revision() {
					t.Fatalf("%s: revision %d, want the stored %d", h.Key, h.Revision, e.Revision())
				}
			}
		})
	}
}

func TestTransfer(t *testing.T) {
	ctx := context.Background()
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	kv := claimsBucket(t, js)
	lost, adopter := New(js, kv, "lost1"), New(js, kv, "adopter1")

	its := items("T", 4)
	if _, err := lost.Claim(ctx, its); err != nil {
		t.Fatal(err)
	}
	legacy := Key("1900000001", "L1")
	if _, err := kv.Put(ctx, legacy, []byte("lost1")); err != nil {
		t.Fatal(err)
	}
	held, err := OwnedBy(ctx, js, kv, "lost1")
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 5 {
		t.Fatalf("lost1 holds %v, want 5 keys", keysOf(held))
	}
	heldBy := map[string]Held{}
	for _, h := range held {
		heldBy[h.Key] = h
	}
	// wantValue fails unless key's stored value is exactly want (instance, digest and all).
	wantValue := func(t *testing.T, key, want string) {
		t.Helper()
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(e.Value()); got != want {
			t.Fatalf("%s holds %q, want %q", key, got, want)
		}
	}

	t.Run("moves the claim keeping its digest", func(t *testing.T) {
		h := heldBy[its[0].Key]
		if err := Transfer(ctx, js, kv, h, "adopter1"); err != nil {
			t.Fatal(err)
		}
		o, ok, err := adopter.Owner(ctx, h.Key)
		if err != nil || !ok {
			t.Fatalf("Owner(%s) = %v, %v", h.Key, ok, err)
		}
		if o.Instance != "adopter1" || !bytes.Equal(o.Digest, its[0].Digest[:DigestSize]) {
			t.Fatalf("Owner(%s) = %+v, want adopter1 with digest %x", h.Key, o, its[0].Digest[:DigestSize])
		}
		if o.Conflicts(its[0].Digest) {
			t.Fatalf("the moved claim conflicts with the payout's own digest")
		}
		// Repeated (an earlier reply lost): done, and nothing is written again.
		before, _ := kv.Get(ctx, h.Key)
		if err := Transfer(ctx, js, kv, h, "adopter1"); err != nil {
			t.Fatalf("Transfer again = %v, want nil", err)
		}
		after, _ := kv.Get(ctx, h.Key)
		if after.Revision() != before.Revision() {
			t.Fatalf("Transfer again wrote revision %d over %d", after.Revision(), before.Revision())
		}
	})

	t.Run("a claim without a digest stays without one", func(t *testing.T) {
		if err := Transfer(ctx, js, kv, heldBy[legacy], "adopter1"); err != nil {
			t.Fatal(err)
		}
		wantValue(t, legacy, "adopter1")
	})

	t.Run("a key that changed owner in between is not taken", func(t *testing.T) {
		h := heldBy[its[1].Key]
		thief := string(encode(Owner{Instance: "thief1", Digest: its[1].Digest}))
		if _, err := kv.Update(ctx, h.Key, []byte(thief), h.Revision); err != nil {
			t.Fatal(err)
		}
		if err := Transfer(ctx, js, kv, h, "adopter1"); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Transfer = %v, want ErrNotHeld", err)
		}
		wantValue(t, h.Key, thief)
	})

	t.Run("a key deleted in between is not recreated", func(t *testing.T) {
		h := heldBy[its[2].Key]
		if err := kv.Delete(ctx, h.Key); err != nil {
			t.Fatal(err)
		}
		if err := Transfer(ctx, js, kv, h, "adopter1"); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Transfer = %v, want ErrNotHeld", err)
		}
		if _, err := kv.Get(ctx, h.Key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("Get(%s) = %v, want ErrKeyNotFound", h.Key, err)
		}
	})

	t.Run("an unreadable key after a lost race is an error, not ErrNotHeld", func(t *testing.T) {
		h := heldBy[its[3].Key]
		if err := Transfer(ctx, js, kv, h, "adopter1"); err != nil {
			t.Fatal(err)
		}
		// The move landed but its reply was lost, and the read that would tell so fails: it
		// goes through a connection that is closed.
		down := natstest.Connect(t, s)
		down.Conn().Close()
		err := Transfer(ctx, down, kv, h, "adopter1")
		if !errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, ErrNotHeld) {
			t.Fatalf("Transfer = %v, want the read's error and not ErrNotHeld", err)
		}
	})

	t.Run("a copy that lags is not read", func(t *testing.T) {
		// Every key has moved. A replica that lacks the keys would answer the read back of a
		// Transfer repeated (its reply lost) with "not found", which says ErrNotHeld.
		natstest.LaggingCopy(t, js, kv)
		for i := range 20 {
			if err := Transfer(ctx, js, kv, heldBy[its[0].Key], "adopter1"); err != nil {
				t.Fatalf("Transfer again, %d: %v", i, err)
			}
			if o, ok, err := adopter.Owner(ctx, its[0].Key); err != nil || !ok || o.Instance != "adopter1" {
				t.Fatalf("Owner(%s), %d: %+v, %v, %v; want adopter1", its[0].Key, i, o, ok, err)
			}
		}
	})
}

// shortWatch is a claims bucket whose watches end, with the end mark, after their first
// value: as a watch whose consumer runs on a replica behind the stream's leader.
type shortWatch struct{ jetstream.KeyValue }

func (s shortWatch) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := s.KeyValue.WatchAll(ctx, opts...)
	if err != nil {
		return nil, err
	}
	short := make(chan jetstream.KeyValueEntry, 2)
	short <- <-w.Updates()
	short <- nil
	return shortWatcher{w, short}, nil
}

type shortWatcher struct {
	jetstream.KeyWatcher
	updates chan jetstream.KeyValueEntry
}

func (w shortWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// TestOwnedBy_aShortWatchIsAnError: a watch that ends before the last message the stream's
// leader holds is an error, never the claims read so far: an adopter leaves a claim missing
// from the list unpaid.
func TestOwnedBy_aShortWatchIsAnError(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	if _, err := New(js, kv, "lost1").Claim(ctx, items("S", 5)); err != nil {
		t.Fatal(err)
	}
	if got, err := OwnedBy(ctx, js, shortWatch{kv}, "lost1"); !errors.Is(err, broker.ErrShortRead) {
		t.Fatalf("OwnedBy through a watch that ended after one value = %v, %v; want broker.ErrShortRead", keysOf(got), err)
	}
	if got, err := OwnedBy(ctx, js, kv, "lost1"); err != nil || len(got) != 5 {
		t.Fatalf("OwnedBy = %v, %v; want 5 keys", keysOf(got), err)
	}
}
