package cli

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// writes is an io.Writer that hands each Write to the test.
type writes chan string

func (w writes) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

// parkedForDump blocks until release closes: a goroutine the dump must show.
func parkedForDump(release <-chan struct{}) { <-release }

// TestDumpStacksOn: the signal makes the process write one whole dump (begin line, every
// goroutine, end line) and go on; the dump names where a parked goroutine waits.
func TestDumpStacksOn(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	go parkedForDump(release)
	w := make(writes, 4)
	stop := DumpStacksOn(w, DumpSignal)
	defer stop()
	for range 2 { // the process is still there for a second one
		if err := syscall.Kill(syscall.Getpid(), DumpSignal); err != nil {
			t.Fatal(err)
		}
		var got string
		select {
		case got = <-w:
		case <-time.After(10 * time.Second):
			t.Fatal("no dump within 10s of the signal")
		}
		if !strings.HasPrefix(got, DumpBegin+" at ") || !strings.HasSuffix(got, "\n"+DumpEnd+"\n") {
			t.Fatalf("dump not framed by its begin and end lines:\n%.300s\n…\n%s", got, got[max(0, len(got)-200):])
		}
		for _, want := range []string{"cli.parkedForDump", "cli.TestDumpStacksOn"} {
			if !strings.Contains(got, want) {
				t.Fatalf("dump lacks %s:\n%s", want, got)
			}
		}
	}
}
