package faultproxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/natstest"
)

// echoServer echoes every byte it receives and records them all, so a test can see what
// reached the server even when the client never sees the echo.
type echoServer struct {
	ln    net.Listener
	mu    sync.Mutex
	got   bytes.Buffer
	conns map[net.Conn]*bytes.Buffer // open connections, with what each received; guarded by mu
	recv  chan struct{}              // signalled after each read
	wg    sync.WaitGroup
}

// echoCloseBound is how long the server waits, after its test, for its peers to close their
// connections before it fails the test and closes them itself.
const echoCloseBound = 5 * time.Second

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, conns: map[net.Conn]*bytes.Buffer{}, recv: make(chan struct{}, 1024)}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen := &bytes.Buffer{}
			e.mu.Lock()
			e.conns[c] = seen
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer func() {
					e.mu.Lock()
					delete(e.conns, c)
					e.mu.Unlock()
					c.Close()
				}()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						e.mu.Lock()
						e.got.Write(buf[:n])
						seen.Write(buf[:n])
						e.mu.Unlock()
						e.recv <- struct{}{}
						c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { // after the proxy's own cleanup, which closes its connections
		ln.Close()
		done := make(chan struct{})
		go func() { e.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(echoCloseBound):
			e.mu.Lock()
			for c, seen := range e.conns {
				// Every exchange of these tests sends bytes through the proxy, so a connection
				// that carried none is not one of them: another process dialled a port it
				// believed closed (its own listener's, or a server's it was reconnecting to)
				// after this server had taken it, and sends nothing, as a NATS client waiting
				// for the server's greeting does. A cleanup that waited for such a connection
				// hung .ci/run once. It is logged and closed; one that carried bytes fails.
				report := t.Errorf
				if seen.Len() == 0 {
					report = t.Logf
				}
				report("echo server: the connection from %s (it received %q) is still open %s after the test: its peer never closed it",
					c.RemoteAddr(), seen, echoCloseBound)
				c.Close()
			}
			e.mu.Unlock()
			<-done
		}
	})
	return e
}

// waitFor waits until the server has received want, or fails after a bound.
func (e *echoServer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		e.mu.Lock()
		ok := bytes.Contains(e.got.Bytes(), []byte(want))
		e.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-e.recv:
		case <-deadline:
			t.Fatalf("server never received %q", want)
		}
	}
}

func startProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *faultproxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrip writes s and reads its echo.
func roundTrip(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(s))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != s {
		t.Fatalf("echo = %q, want %q", got, s)
	}
}

// expectCut writes s, which must fire a cut: the server receives it, the client reads
// nothing more and sees its connection end.
func expectCut(t *testing.T, e *echoServer, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, s)
	n, err := c.Read(make([]byte, 64))
	if err == nil || errors.Is(err, context.DeadlineExceeded) || n > 0 {
		t.Fatalf("client read %d bytes, err %v; want the connection closed with no reply", n, err)
	}
}

func TestProxy_CutAfter(t *testing.T) {
	e := startEcho(t)
	p := startProxy(t, e.ln.Addr().String())
	if got, want := p.URL(), "nats://"+p.Addr(); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}

	t.Run("unarmed, bytes flow both ways", func(t *testing.T) {
		c := dial(t, p)
		roundTrip(t, c, "hello CUT")
		if got, want := p.Cuts(), 0; got != want {
			t.Fatalf("Cuts = %d, want %d", got, want)
		}
	})

	t.Run("a match forwards the chunk and loses the reply", func(t *testing.T) {
		p.CutAfter([]byte("CUT"), 1)
		c := dial(t, p)
		roundTrip(t, c, "before")
		expectCut(t, e, c, "abc CUT 1 def")
		if got, want := p.Cuts(), 1; got != want {
			t.Fatalf("Cuts = %d, want %d", got, want)
		}
		// One fault was armed: the next connection is left alone.
		roundTrip(t, dial(t, p), "again CUT")
		if got, want := p.Cuts(), 1; got != want {
			t.Fatalf("Cuts = %d, want %d", got, want)
		}
	})

	t.Run("a match across two reads fires", func(t *testing.T) {
		p.CutAfter([]byte("SPLIT"), 1)
		c := dial(t, p)
		roundTrip(t, c, "xxSP") // echoed, so the next write is a separate read
		expectCut(t, e, c, "LITyy")
		if got, want := p.Cuts(), 2; got != want {
			t.Fatalf("Cuts = %d, want %d", got, want)
		}
	})

	t.Run("n < 0 cuts every match until disarmed", func(t *testing.T) {
		p.CutAfter([]byte("ALL"), -1)
		expectCut(t, e, dial(t, p), "ALL a")
		expectCut(t, e, dial(t, p), "ALL b")
		p.CutAfter(nil, 0)
		roundTrip(t, dial(t, p), "ALL c")
		if got, want := p.Cuts(), 4; got != want {
			t.Fatalf("Cuts = %d, want %d", got, want)
		}
	})

	t.Run("close ends every connection", func(t *testing.T) {
		c := dial(t, p)
		roundTrip(t, c, "open")
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 8)); err == nil || n > 0 {
			t.Fatalf("read after Close: %d bytes, err %v; want the connection closed", n, err)
		}
		// That Close also closes the listener is TestClose_Listener's: a dial to the port
		// after Close can reach another process that has just taken the freed port.
	})
}

// TestProxy_NATSPublishLandsReplyLost: a JetStream publish whose connection is cut is
// stored on the server while the publisher gets an error.
func TestProxy_NATSPublishLandsReplyLost(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t)
	direct := natstest.Connect(t, srv)
	stream, err := direct.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, srv.Addr().String())
	js := natstest.ConnectURL(t, p.URL(), nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1))
	if _, err := js.Publish(ctx, "s.ok", []byte("through the proxy")); err != nil {
		t.Fatal(err)
	}

	p.CutAfter([]byte("s.lost"), 1)
	// A synchronous publish waits for its reply until its context ends.
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := js.Publish(lctx, "s.lost", []byte("stored, reply lost")); err == nil {
		t.Fatal("publish through a cut connection succeeded; want an error")
	}
	if got, want := p.Cuts(), 1; got != want {
		t.Fatalf("Cuts = %d, want %d", got, want)
	}
	m, err := stream.GetLastMsgForSubject(ctx, "s.lost")
	if err != nil {
		t.Fatalf("the publish did not reach the stream: %v", err)
	}
	if got, want := string(m.Data), "stored, reply lost"; got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
	// The client reconnects through the proxy and goes on.
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.Publish(actx, "s.after", []byte("after the cut")); err != nil {
		t.Fatalf("publish after reconnect: %v", err)
	}
}
