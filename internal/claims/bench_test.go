package claims

import (
	"context"
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
	keys := make([]string, 1000)
	b.ResetTimer()
	for i := range b.N {
		for j := range keys {
			keys[j] = Key("1900000001", fmt.Sprintf("K%09d", i*len(keys)+j))
		}
		if _, err := s.Claim(ctx, keys); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(keys))/b.Elapsed().Seconds(), "claims/s")
}
