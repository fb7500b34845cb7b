package pipeline

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	th := newThrottle(40, clock)
	if got := th.Limit(); got != 40 {
		t.Fatalf("limit %v, want 40", got)
	}
	t.Run("a 429 takes a fifth off, at most once a second", func(t *testing.T) {
		th.Slow()
		th.Slow()
		if got := th.Limit(); got != 32 {
			t.Fatalf("limit %v after two 429s in the same second, want 32", got)
		}
		now = now.Add(time.Second)
		th.Slow()
		if got := th.Limit(); got != rate.Limit(32*4/5.0) {
			t.Fatalf("limit %v, want %v", got, 32*4/5.0)
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
		for range 10 {
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
