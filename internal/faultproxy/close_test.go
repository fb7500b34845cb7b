package faultproxy

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestClose_Listener: Close closes the proxy's listener. It is checked on the listener itself,
// not by dialling its port: on a busy machine another process can take the freed port at
// once, and a dial then succeeds (seen with three processes of these tests side by side).
func TestClose_Listener(t *testing.T) {
	p, err := Start("127.0.0.1:0", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	ln := p.ln.(*net.TCPListener)
	if err := ln.SetDeadline(time.Time{}); err != nil {
		t.Fatalf("listener before Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ln.SetDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener after Close: %v, want net.ErrClosed", err)
	}
}
