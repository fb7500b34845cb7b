package cli

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// DumpSignal makes a command started by Main write every goroutine's stack to its standard
// error and go on running: what an operator (or the soak) sends a replica that looks stuck,
// to see where each stage waits. Unlike SIGQUIT it does not end the process. The stacks
// hold code locations and raw argument words, never the bytes a string or slice points to.
const DumpSignal = syscall.SIGUSR1

// DumpEnd is the line that ends each goroutine dump (DumpStacks); a dump starts with a line
// holding DumpBegin.
const (
	DumpBegin = "-- goroutine dump"
	DumpEnd   = "-- end of goroutine dump --"
)

// DumpStacksOn writes a goroutine dump to w whenever the process receives sig, until the
// returned stop is called.
func DumpStacksOn(w io.Writer, sig os.Signal) (stop func()) {
	c := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(c, sig)
	go func() {
		for {
			select {
			case <-c:
				DumpStacks(w)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(c)
		close(done)
	}
}

// DumpStacks writes every goroutine's stack to w in one Write, between a DumpBegin line
// (with the time) and a DumpEnd line, so that log lines written meanwhile do not split it.
func DumpStacks(w io.Writer) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := fmt.Appendf(nil, "%s at %s --\n", DumpBegin, time.Now().UTC().Format(time.RFC3339Nano))
	out = append(out, buf...)
	out = append(out, "\n"+DumpEnd+"\n"...)
	_, _ = w.Write(out)
}
