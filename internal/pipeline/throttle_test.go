package pipeline

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0).Add(400 * time.Millisecond)
	clock := func() time.Time { return now }
	th := newThrottle(40, clock)
	if got := th.Limit(); got != 40 {
		t.Fatalf("limit %v, want 40", got)
	}
	t.Run("a 429 late in its second pauses but does not slow down", func(t *testing.T) {
		at := time.Unix(1000, 0).Add(lateShare)
		late := newThrottle(40, func() time.Time { return at })
		late.Slow(at)
		if got := late.Limit(); got != 40 {
			t.Fatalf("limit %v after a 429 late in its second, want 40", got)
		}
		if got, want := late.pausedUntil, time.Unix(1001, 0); !got.Equal(want) {
			t.Fatalf("paused until %v, want %v (the second after the 429)", got, want)
		}
	})
	t.Run("a 429 early in its second takes a twentieth off, at most once a second", func(t *testing.T) {
		th.Slow(now)
		th.Slow(now)
		if got := th.Limit(); got != 38 {
			t.Fatalf("limit %v after two 429s in the same second, want 38", got)
		}
		now = now.Add(time.Second)
		th.Slow(now)
		if got := th.Limit(); got != rate.Limit(38*19/20.0) {
			t.Fatalf("limit %v, want %v", got, 38*19/20.0)
		}
	})
	t.Run("a 429 pauses sending until the next whole second", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if _, err := th.Wait(ctx); err == nil {
			t.Fatal("Wait went through during the pause")
		}
		if got, want := th.pausedUntil, time.Unix(1002, 0); !got.Equal(want) {
			t.Fatalf("paused until %v, want %v (the second after the 429)", got, want)
		}
		now = time.Unix(1002, 0)
		sent, err := th.Wait(context.Background())
		if err != nil || !sent.Equal(now) {
			t.Fatalf("Wait after the pause = (%v, %v), want (%v, nil)", sent, err, now)
		}
	})
	t.Run("a 429 answered after the second it was sent in changes nothing", func(t *testing.T) {
		limit := th.Limit()
		now = time.Unix(1003, 0).Add(4 * time.Millisecond)
		th.Slow(time.Unix(1002, 0).Add(990 * time.Millisecond))
		if got := th.Limit(); got != limit {
			t.Fatalf("limit %v, want %v", got, limit)
		}
		if got, want := th.pausedUntil, time.Unix(1002, 0); !got.Equal(want) {
			t.Fatalf("paused until %v, want %v (no new pause)", got, want)
		}
	})
	t.Run("it never drops under the floor", func(t *testing.T) {
		for range 100 {
			now = now.Add(time.Second)
			th.Slow(now)
		}
		if got := th.Limit(); got != 40.0/16 {
			t.Fatalf("limit %v, want the floor %v", got, 40.0/16)
		}
	})
	t.Run("quiet periods climb back to the configured rate and no further", func(t *testing.T) {
		for range 20 {
			now = now.Add(recoverEvery)
			if _, err := th.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if got := th.Limit(); got != 40 {
			t.Fatalf("limit %v, want 40", got)
		}
	})
	t.Run("zero means unlimited", func(t *testing.T) {
		off := newThrottle(0, clock)
		off.Slow(now)
		if off.Limit() != rate.Inf {
			t.Fatalf("limit %v, want Inf", off.Limit())
		}
	})
}
