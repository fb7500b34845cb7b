package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// throttle is a per-endpoint rate limiter for this replica's share of the merchant's quota
// (docs/wechatpay.md §8, docs/transfer-bills.md §8: per merchant and API, shared by all
// replicas). Its burst is 1, so no one-second window sees more than the rate plus one request.
//
// WeChat counts requests per one-second window; a 429 says the current window is full. So a
// 429 pauses sending until the next whole second: every request sent before then would be
// refused too. A window that filled within its first lateShare was filled by more than this
// rate (other replicas or systems share the quota), so such a 429 also takes a twentieth off
// the rate (to a floor, at most once a second), and every quiet recoverEvery the rate climbs
// back by a tenth of the configured rate. Every replica sees the same 429s, so all of them
// slow down together.
//
// A 429 late in its window is jitter: requests leave evenly spaced but reach WeChat a little
// bunched (a busy host delays some more than others), so a rate just under the limit
// overflows a window now and then by a request or two. The pause costs the rest of that
// second; slowing down as well, for seconds each time, cost more than the 429s it spared.
type throttle struct {
	mu          sync.Mutex
	lim         *rate.Limiter
	max         rate.Limit
	floor       rate.Limit
	lastSlow    time.Time
	pausedUntil time.Time // no request starts before this (the window after a 429)
	now         func() time.Time
	waited      prometheus.Observer // each Wait's duration in seconds; nil: none
}

const (
	recoverEvery = 5 * time.Second
	lateShare    = 750 * time.Millisecond
)

func newThrottle(qps float64, now func() time.Time) *throttle {
	if qps <= 0 {
		return &throttle{lim: rate.NewLimiter(rate.Inf, 1), max: rate.Inf, now: now}
	}
	return &throttle{lim: rate.NewLimiter(rate.Limit(qps), 1), max: rate.Limit(qps), floor: rate.Limit(qps / 16), now: now}
}

// Wait blocks until a request may be sent or ctx is done. A wait that let a request go is
// observed (paystream_rate_limiter_wait_seconds); one ended by ctx is not.
func (t *throttle) Wait(ctx context.Context) error {
	if t.waited == nil {
		return t.wait(ctx)
	}
	start := time.Now()
	err := t.wait(ctx)
	if err == nil {
		t.waited.Observe(time.Since(start).Seconds())
	}
	return err
}

func (t *throttle) wait(ctx context.Context) error {
	if d := t.recover(); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
	return t.lim.Wait(ctx)
}

// Slow reacts to a 429: a pause until the next whole second and, when the window filled
// early (within lateShare), a twentieth less, at most once a second.
func (t *throttle) Slow() {
	if t.max == rate.Inf {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	window := now.Truncate(time.Second)
	if next := window.Add(time.Second); next.After(t.pausedUntil) {
		t.pausedUntil = next
	}
	if now.Sub(window) >= lateShare || now.Sub(t.lastSlow) < time.Second {
		return
	}
	t.lastSlow = now
	t.lim.SetLimitAt(now, max(t.floor, t.lim.Limit()*19/20))
}

// Limit is the current rate.
func (t *throttle) Limit() rate.Limit { return t.lim.Limit() }

// recover climbs back after a quiet period and returns how long a pause still lasts.
func (t *throttle) recover() time.Duration {
	if t.max == rate.Inf {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if cur := t.lim.Limit(); cur < t.max && now.Sub(t.lastSlow) >= recoverEvery {
		t.lastSlow = now // next step after another quiet period
		t.lim.SetLimitAt(now, min(t.max, cur+t.max/10))
	}
	return t.pausedUntil.Sub(now)
}
