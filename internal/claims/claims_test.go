package claims

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/natstest"
)

func TestStore_Claim(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := New(js, kv, "instanceA"), New(js, kv, "instanceB")

	keys := make([]string, 500)
	for i := range keys {
		keys[i] = Key("1900000001", fmt.Sprintf("D%05d", i))
	}
	owners, err := a.Claim(ctx, keys[:300])
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range owners {
		if o != "instanceA" {
			t.Fatalf("key %d: owner %q, want instanceA (first claim)", i, o)
		}
	}

	t.Run("another instance loses overlapping keys and wins new ones", func(t *testing.T) {
		owners, err := b.Claim(ctx, keys[200:])
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range owners {
			want := "instanceB"
			if 200+i < 300 {
				want = "instanceA"
			}
			if o != want {
				t.Fatalf("key %d: owner %q, want %q", 200+i, o, want)
			}
		}
	})

	t.Run("a restarted owner finds its own claims", func(t *testing.T) {
		again := New(js, kv, "instanceA")
		owners, err := again.Claim(ctx, keys[:10])
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range owners {
			if o != "instanceA" {
				t.Fatalf("key %d: owner %q, want instanceA", i, o)
			}
		}
	})

	t.Run("the same key twice in one call has one owner", func(t *testing.T) {
		k := Key("1900000001", "TWICE")
		owners, err := b.Claim(ctx, []string{k, k})
		if err != nil {
			t.Fatal(err)
		}
		if owners[0] != "instanceB" || owners[1] != "instanceB" {
			t.Fatalf("owners = %v, want both instanceB", owners)
		}
	})
}
