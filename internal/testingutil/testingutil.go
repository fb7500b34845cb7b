// Package testingutil holds small helpers that tests of several packages share.
package testingutil

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// LockedBuffer is a bytes.Buffer that a writer on another goroutine (a log handler, a
// command's stderr) and the reading test may share.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// LogWatch is a log sink that closes Seen once a line containing its want is written: a test
// waits on the processor's own word rather than on a clock.
type LogWatch struct {
	LockedBuffer
	want string
	once sync.Once
	seen chan struct{}
}

// NewLogWatch returns a LogWatch waiting for a line that contains want.
func NewLogWatch(want string) *LogWatch {
	return &LogWatch{want: want, seen: make(chan struct{})}
}

// Write appends p and closes Seen the first time want appears in a write.
func (w *LogWatch) Write(p []byte) (int, error) {
	n, err := w.LockedBuffer.Write(p)
	if bytes.Contains(p, []byte(w.want)) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

// Seen is closed once want was written.
func (w *LogWatch) Seen() <-chan struct{} { return w.seen }

// WaitFor calls cond every 5 ms until it reports done, and fails t when it has not after
// limit, with the state cond last described: a test waits on a condition, not on a clock.
func WaitFor(t testing.TB, limit time.Duration, cond func() (done bool, state string)) {
	t.Helper()
	PollEvery(t, limit, 5*time.Millisecond, cond)
}

// PollEvery is WaitFor calling cond every every: for a cond that costs something (a ledger
// read, an HTTP call, a metrics scrape).
func PollEvery(t testing.TB, limit, every time.Duration, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.After(limit)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		done, state := cond()
		if done {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("after %s: %s", limit, state)
		case <-tick.C:
		}
	}
}
