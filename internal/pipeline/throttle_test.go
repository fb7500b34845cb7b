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
		late := newThrottle(40, func() time.Time { return time.Unix(1000, 0).Add(lateShare) })
		late.Slow()
		if got := late.Limit(); got != 40 {
			t.Fatalf("limit %v after a 429 late in its second, want 40", got)
		}
		if got, want := late.pausedUntil, time.Unix(1001, 0); !got.Equal(want) {
			t.Fatalf("paused until %v, want %v (the second after the 429)", got, want)
		}
	})
	t.Run("a 429 early in its second takes a twentieth off, at most once a second", func(t *testing.T) {
		th.Slow()
		th.Slow()
		if got := th.Limit(); got != 38 {
			t.Fatalf("limit %v after two 429s in the same second, want 38", got)
		}
		now = now.Add(time.Second)
		th.Slow()
		if got := th.Limit(); got != rate.Limit(38*19/20.0) {
			t.Fatalf("limit %v, want %v", got, 38*19/20.0)
		}
	})
	t.Run("a 429 pauses sending until the next whole second", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if err := th.Wait(ctx); err == nil {
			t.Fatal("Wait went through during the pause")
		}
		if got, want := th.pausedUntil, time.Unix(1002, 0); !got.Equal(want) {
			t.Fatalf("paused until %v, want %v (the second after the 429)", got, want)
		}
		now = time.Unix(1002, 0)
		if err := th.Wait(context.Background()); err != nil {
			t.Fatalf("Wait after the pause: %v", err)
		}
	})
	t.Run("it never drops under the floor", func(t *testing.T) {
		for range 100 {
			now = now.Add(time.Second)
			th.Slow()
		}
		if got := th.Limit(); got != 40.0/16 {
			t.Fatalf("limit %v, want the floor %v", got, 40.0/16)
		}
	})
	t.Run("quiet periods climb back to the configured rate and no further", func(t *testing.T) {
		for range 20 {
			now = now.Add(recoverEvery)
			if err := th.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if got := th.Limit(); got != 40 {
			t.Fatalf("limit %v, want 40", got)
		}
	})
	t.Run("zero means unlimited", func(t *testing.T) {
		off := newThrottle(0, clock)
		off.Slow()
		if off.Limit() != rate.Inf {
			t.Fatalf("limit %v, want Inf", off.Limit())
		}
	})
}
