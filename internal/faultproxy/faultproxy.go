// Package faultproxy is a TCP proxy that injects connection faults, for tests and the soak.
//
// Its one fault is the one that makes a request ambiguous: the request reaches the server,
// the reply never reaches the client. Armed with CutAfter, the proxy watches the bytes each
// client sends; when they contain a pattern (for NATS, e.g. the subject prefix of the
// publishes to lose replies for), it forwards that chunk to the server, closes the client's
// connection at once and the server's shortly after. The server processes the request, its
// reply is dropped, and the client sees a lost connection (nats.go reconnects through the
// proxy, which keeps accepting).
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Linger is how long the server side of a cut connection stays open after the chunk that
// fired the cut was written to it, so the server surely reads and processes that chunk
// before it sees the connection end. Whatever the server sends meanwhile is discarded.
const Linger = 250 * time.Millisecond

// chunkSize is the size of one read from either side.
const chunkSize = 32 << 10

// Proxy forwards every connection accepted on its listener to the target address. All
// methods are safe for concurrent use. Close stops it.
type Proxy struct {
	ln     net.Listener
	ctx    context.Context // ends at Close: bounds dials and lingers
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cuts   atomic.Int64

	mu        sync.Mutex
	target    string
	closed    bool
	conns     map[net.Conn]struct{}
	pattern   []byte
	remaining int // faults still armed; < 0: unlimited
}

// Start listens on listen (host:port; "127.0.0.1:0" picks a free port) and forwards each
// accepted connection to target, dialled anew per connection. It returns once listening.
func Start(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy listen %s: %w", listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ln: ln, target: target, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the host:port the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Retarget sends the connections accepted from now on to target; those open stay where they
// are. A proxy can so be made before the server it fronts has a port.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// URL is the NATS URL of the proxy: "nats://" + Addr().
func (p *Proxy) URL() string { return "nats://" + p.Addr() }

// CutAfter arms n faults on pattern, replacing whatever was armed before; n < 0 arms one for
// every match until disarmed; CutAfter(nil, 0) disarms. A fault fires on the first
// client→server chunk whose bytes, together with the ones just before it on the same
// connection, contain pattern: the chunk is forwarded to the server, nothing more from the
// server reaches that client, the client connection is closed at once and the server
// connection after Linger. Each fault cuts one connection.
func (p *Proxy) CutAfter(pattern []byte, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(pattern) == 0 || n == 0 {
		p.pattern, p.remaining = nil, 0
		return
	}
	p.pattern, p.remaining = bytes.Clone(pattern), n
}

// Cuts is the number of faults fired so far.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// Close stops accepting, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// track adds c to the connections Close closes; false when the proxy is already closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// serve pipes one client connection to a fresh connection to the target.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	if !p.track(client) {
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	var d net.Dialer
	server, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		return
	}
	defer p.untrack(server)
	if !p.track(server) {
		return
	}
	var cut atomic.Bool
	p.wg.Add(1)
	go func() { // server → client
		defer p.wg.Done()
		buf := make([]byte, chunkSize)
		for {
			n, err := server.Read(buf)
			if n > 0 && !cut.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil && !cut.Load() {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if !cut.Load() {
			client.Close()
		}
	}()
	// client → server
	buf := make([]byte, chunkSize)
	var carry []byte // the last len(pattern)-1 bytes sent, for matches across reads
	for {
		n, err := client.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if p.fire(&carry, chunk) {
				cut.Store(true)
				client.Close()
				server.Write(chunk)
				select {
				case <-time.After(Linger):
				case <-p.ctx.Done():
				}
				server.Close()
				return
			}
			if _, err := server.Write(chunk); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	server.Close()
}

// fire reports whether chunk, following carry, completes a match of the armed pattern, and
// if so consumes one armed fault. It updates carry.
func (p *Proxy) fire(carry *[]byte, chunk []byte) bool {
	p.mu.Lock()
	pat := p.pattern
	p.mu.Unlock()
	if len(pat) == 0 {
		*carry = (*carry)[:0]
		return false
	}
	matched := bytes.Contains(chunk, pat)
	if !matched && len(*carry) > 0 {
		// A match across the boundary starts in carry and ends in chunk's first bytes.
		head := chunk[:min(len(chunk), len(pat)-1)]
		joined := append(append(make([]byte, 0, len(*carry)+len(head)), *carry...), head...)
		matched = bytes.Contains(joined, pat)
	}
	keep := len(pat) - 1
	*carry = append(*carry, chunk[max(0, len(chunk)-keep):]...)
	if len(*carry) > keep {
		*carry = append((*carry)[:0], (*carry)[len(*carry)-keep:]...)
	}
	if !matched {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remaining == 0 || !bytes.Equal(p.pattern, pat) {
		return false // disarmed, or used up by another connection, meanwhile
	}
	if p.remaining > 0 {
		p.remaining--
		if p.remaining == 0 {
			p.pattern = nil
		}
	}
	p.cuts.Add(1)
	return true
}
