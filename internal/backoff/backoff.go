// Package backoff computes the capped, jittered exponential waits between retries that the
// WeChat Pay client, the driver and the claims store share.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Jittered returns the wait before retry n (n ≥ 0): base doubled n times, capped at limit,
// then drawn uniformly from its upper half, so that replicas retrying together spread out.
// It never exceeds limit.
func Jittered(base, limit time.Duration, n int) time.Duration {
	d := limit
	if n < 30 {
		d = min(base<<max(n, 0), limit)
	}
	if d <= 1 {
		return max(d, 0)
	}
	return d/2 + rand.N(d/2+1)
}
