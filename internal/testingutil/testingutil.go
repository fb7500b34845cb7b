// Package testingutil holds small helpers that tests of several packages share.
package testingutil

import (
	"bytes"
	"sync"
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
