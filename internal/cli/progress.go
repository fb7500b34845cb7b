package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// IsTerminal reports whether w is a character device: a terminal, where a progress line
// may be redrawn. A file, a pipe or a buffer is not one.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// StartProgress redraws line() on w every interval, over the previous one ("\r", then erase
// to the end of the line), while w is a terminal, and returns the function that stops and
// erases it; stop returns once nothing more will be written, and may be called again. When w is not a terminal
// nothing is ever written (logs and pipes get no control characters) and stop does nothing.
// line is called from another goroutine.
func StartProgress(w io.Writer, every time.Duration, line func() string) (stop func()) {
	if !IsTerminal(w) {
		return func() {}
	}
	return drawProgress(w, every, line)
}

// drawProgress is StartProgress on a writer known to be a terminal.
func drawProgress(w io.Writer, every time.Duration, line func() string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(w, "\r\x1b[K")
				return
			case <-t.C:
				fmt.Fprint(w, "\r\x1b[K"+line())
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) }
}

// PerSecond is n over the time since start, rounded down: a progress line's rate.
func PerSecond(n int64, since time.Duration) int64 {
	if since < time.Second/10 {
		return 0
	}
	return int64(float64(n) / since.Seconds())
}
