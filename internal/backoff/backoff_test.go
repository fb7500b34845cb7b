package backoff

import (
	"testing"
	"time"
)

func TestJittered(t *testing.T) {
	tests := []struct {
		name     string
		base     time.Duration
		limit    time.Duration
		n        int
		min, max time.Duration
	}{
		{name: "first retry", base: time.Second, limit: time.Minute, n: 0, min: 500 * time.Millisecond, max: time.Second},
		{name: "doubles", base: time.Second, limit: time.Minute, n: 3, min: 4 * time.Second, max: 8 * time.Second},
		{name: "capped", base: time.Second, limit: time.Minute, n: 10, min: 30 * time.Second, max: time.Minute},
		{name: "no overflow on a huge n", base: time.Second, limit: time.Minute, n: 1 << 20, min: 30 * time.Second, max: time.Minute},
		{name: "zero", base: 0, limit: 0, n: 2, min: 0, max: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				if got := Jittered(tt.base, tt.limit, tt.n); got < tt.min || got > tt.max {
					t.Fatalf("Jittered(%v, %v, %d) = %v, want %v..%v", tt.base, tt.limit, tt.n, got, tt.min, tt.max)
				}
			}
		})
	}
}
