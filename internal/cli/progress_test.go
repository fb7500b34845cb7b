package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestStartProgress_notATerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf strings.Builder
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		line := func() string { calls++; return "published 1/2" }
		stopFile, stopBuf := StartProgress(f, time.Millisecond, line), StartProgress(&buf, time.Millisecond, line)
		time.Sleep(10 * time.Millisecond) // fake time: ten ticks, were it drawing
		stopFile()
		stopBuf()
		if got, want := calls, 0; got != want {
			t.Fatalf("line called %d times, want %d", got, want)
		}
	})
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 0 || buf.Len() != 0 {
		t.Fatalf("wrote %d bytes to a file and %q to a buffer; want nothing", st.Size(), buf.String())
	}
}

func TestDrawProgress(t *testing.T) {
	var buf strings.Builder
	synctest.Test(t, func(t *testing.T) {
		n := 0
		stop := drawProgress(&buf, time.Second, func() string { n++; return "published " + strings.Repeat("#", n) })
		time.Sleep(2500 * time.Millisecond)
		stop()
		stop() // again: nothing more, no panic
	})
	if got, want := buf.String(), "\r\x1b[Kpublished #\r\x1b[Kpublished ##\r\x1b[K"; got != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
}

func TestPerSecond(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int64
		since time.Duration
		want  int64
	}{
		{name: "rate", n: 12000, since: 3 * time.Second, want: 4000},
		{name: "too soon to say", n: 5, since: time.Millisecond, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PerSecond(tc.n, tc.since); got != tc.want {
				t.Fatalf("PerSecond(%d, %v) = %d, want %d", tc.n, tc.since, got, tc.want)
			}
		})
	}
}
