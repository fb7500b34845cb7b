package pipeline

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/paystream/paystream/pkg/wechatpay"
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
//
// The window is the one the refused request was sent in, not the one its answer came in: a
// request sent at the end of a second is answered in the next one. Judged by its answer, such
// a 429 paused the whole next second and, seeming early in it, took a twentieth off the rate
// (beside `make test`, 14 of 99 429s came back within 10 ms of a new second, and the bills
// drain ran at 90/s of 98). Its own window is over: there is nothing to pause, nothing to learn.
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

// Wait blocks until a request may be sent or ctx is done, and returns when the request's
// turn came (what Slow takes if it is refused). A wait that let a request go is observed
// (paystream_rate_limiter_wait_seconds); one ended by ctx is not.
func (t *throttle) Wait(ctx context.Context) (time.Time, error) {
	start := time.Now()
	if err := t.wait(ctx); err != nil {
		return time.Time{}, err
	}
	if t.waited != nil {
		t.waited.Observe(time.Since(start).Seconds())
	}
	return t.now(), nil
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

// Slow reacts to a 429 for a request sent at sent (its Wait's time): while the second it was
// sent in lasts, a pause until its end and, when it filled early (within lateShare), a
// twentieth less, at most once a second.
func (t *throttle) Slow(sent time.Time) {
	if t.max == rate.Inf {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	window := sent.Truncate(time.Second)
	next := window.Add(time.Second)
	if !now.Before(next) {
		return // its second is over
	}
	if next.After(t.pausedUntil) {
		t.pausedUntil = next
	}
	if now.Sub(window) >= lateShare || now.Sub(t.lastSlow) < time.Second {
		return
	}
	t.lastSlow = now
	t.lim.SetLimitAt(now, max(t.floor, t.lim.Limit()*19/20))
}

// throttled makes one call through cb in its turn of th: a wait cut short is ErrNotSent (the
// call was not made), and a 429 slows th down.
func throttled[T any](ctx context.Context, cb *gobreaker.CircuitBreaker[T], th *throttle, call func() (T, error)) (T, error) {
	var sent time.Time
	res, err := cb.Execute(func() (T, error) {
		var err error
		if sent, err = th.Wait(ctx); err != nil {
			var none T
			return none, fmt.Errorf("%w: %w", wechatpay.ErrNotSent, err)
		}
		return call()
	})
	if is429(err) {
		th.Slow(sent)
	}
	return res, err
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
