package claims

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/natstest"
)

// BenchmarkClaim claims groups of 1000 fresh keys, as intake does: the per-payout cost of
// cross-replica ownership on an embedded server.
func BenchmarkClaim(b *testing.B) {
	ctx := context.Background()
	js := natstest.Connect(b, natstest.Run(b))
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	s := New(js, kv, "bench")
	items := make([]Item, 1000)
	d := sha256.Sum256([]byte("content"))
	b.ResetTimer()
	for i := range b.N {
		for j := range items {
			items[j] = Item{Key: Key("1900000001", fmt.Sprintf("K%09d", i*len(items)+j)), Digest: d[:]}
		}
		if _, err := s.Claim(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(items))/b.Elapsed().Seconds(), "claims/s")
}
