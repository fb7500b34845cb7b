package pipeline

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// throttle is a per-endpoint rate limiter for this replica's share of the merchant's quota
// (docs/wechatpay.md §8: 50 QPS per merchant for each old API, shared by all replicas). Its burst
// is 1, so no one-second window sees more than the rate plus one request. A 429 takes the rate down
// by a fifth (to a floor, at most once a second); every quiet recoverEvery it climbs back by a
// quarter of the configured rate. Every replica sees the same 429s, so all of them slow down
// together.
type throttle struct {
	mu       sync.Mutex
	lim      *rate.Limiter
	max      rate.Limit
	floor    rate.Limit
	lastSlow time.Time
	now      func() time.Time
}

const recoverEvery = 5 * time.Second

func newThrottle(qps float64, now func() time.Time) *throttle {
	if qps <= 0 {
		return &throttle{lim: rate.NewLimiter(rate.Inf, 1), max: rate.Inf, now: now}
	}
	return &throttle{lim: rate.NewLimiter(rate.Limit(qps), 1), max: rate.Limit(qps), floor: rate.Limit(qps / 16), now: now}
}

// Wait blocks until a request may be sent or ctx is done.
func (t *throttle) Wait(ctx context.Context) error {
	t.recover()
	return t.lim.Wait(ctx)
}

// Slow reacts to a 429: a fifth less, at most once a second.
func (t *throttle) Slow() {
	if t.max == rate.Inf {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if now.Sub(t.lastSlow) < time.Second {
		return
	}
	t.lastSlow = now
	t.lim.SetLimitAt(now, max(t.floor, t.lim.Limit()*4/5))
}

// Limit is the current rate.
func (t *throttle) Limit() rate.Limit { return t.lim.Limit() }

func (t *throttle) recover() {
	if t.max == rate.Inf {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if cur := t.lim.Limit(); cur < t.max && now.Sub(t.lastSlow) >= recoverEvery {
		t.lastSlow = now // next step after another quiet period
		t.lim.SetLimitAt(now, min(t.max, cur+t.max/4))
	}
}
