package payout

import (
	"testing"
)

// benchLine is a typical request as a producer publishes it.
var benchLine = []byte(`{"schema":"paystream.payout.v1","out_detail_no":"S1N123456","mchid":"1900000001",` +
	`"appid":"wxa0000000000000001","openid":"oAbCdEfGhIjKlMnOpQrStUvWxYz1","amount":1234,"remark":"活动奖励",` +
	`"transfer_scene_id":"1001","source":"gen","created_at":"2025-03-01T10:00:00Z"}`)

// BenchmarkDecodeAndValidate is the per-message cost of intake's strict decode and
// validation.
func BenchmarkDecodeAndValidate(b *testing.B) {
	l := DefaultLimits()
	b.ReportAllocs()
	b.SetBytes(int64(len(benchLine)))
	for b.Loop() {
		if _, err := DecodeAndValidate(benchLine, l); err != nil {
			b.Fatal(err)
		}
	}
}
