package main

import (
	"testing"
	"time"
)

func TestProgressLine(t *testing.T) {
	var s sender
	s.sent.Store(12500)
	s.published.Store(11000)
	s.duplicates.Store(1000)
	s.invalid.Store(3)
	for _, tc := range []struct {
		name       string
		read, size int64
		want       string
	}{
		{name: "a file of known size", read: 250, size: 1000, want: "[#######.......................]  25%  sent 12500  acked 12000 (4000/s)  invalid 3  failed 0"},
		{name: "stdin", read: 250, size: -1, want: "sent 12500  acked 12000 (4000/s)  invalid 3  failed 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := progressLine(&s, tc.read, tc.size, 3*time.Second); got != tc.want {
				t.Fatalf("progressLine = %q, want %q", got, tc.want)
			}
		})
	}
}
