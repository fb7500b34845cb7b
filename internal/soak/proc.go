package soak

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process with its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start runs bin with args, appending stdout and stderr to logPath.
func start(name, bin string, args []string, logPath string, env []string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) && ee.ExitCode() != 0 {
			return fmt.Errorf("%s exited %d", p.name, ee.ExitCode())
		}
		return nil
	case <-time.After(grace):
		p.kill()
		return fmt.Errorf("%s did not stop within %s", p.name, grace)
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePort returns a loopback TCP port that was free a moment ago and that no earlier
// freePort of this process returned.
func freePort() (int, error) { return ports.pick() }

// ports picks the soak's ports.
var ports = portPicker{listen: listenBelowEphemeral}

// listenBelowEphemeral listens on a random loopback port below the kernel's ephemeral range
// (from which it gives outgoing connections their local ports): a processor or NATS node is
// restarted on its ports while the soak's clients connect and reconnect, and a port in that
// range may meanwhile be the local end of someone's connection. Where the range cannot be
// read or leaves no room below it, the kernel picks (":0").
func listenBelowEphemeral() (net.Listener, error) {
	const low = 10000
	if start := ephemeralStart(); start > low+1000 {
		for range 50 {
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", low+rand.IntN(start-low))); err == nil {
				return ln, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// ephemeralStart is the first port of the kernel's ephemeral range, or 0 when unknown.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// portPicker hands out loopback ports, each once. A port picked for a process that has not
// bound it yet is free again, and the kernel may pick it again: two processors of one soak
// were given the same callback port, and whichever started second could never run (its
// restarts failed on "address already in use" until the soak ended).
type portPicker struct {
	mu     sync.Mutex
	given  map[int]bool
	listen func() (net.Listener, error) // a listener on some free port
}

// pick returns a port that was free a moment ago and that p never returned before. The
// listeners of ports refused stay open until it returns, so the next listen cannot pick
// them again.
func (p *portPicker) pick() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var refused []net.Listener
	defer func() {
		for _, ln := range refused {
			ln.Close()
		}
	}()
	for range 100 {
		ln, err := p.listen()
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if p.given[port] {
			refused = append(refused, ln)
			continue
		}
		ln.Close()
		if p.given == nil {
			p.given = map[int]bool{}
		}
		p.given[port] = true
		return port, nil
	}
	return 0, errors.New("no port that was not handed out already in 100 tries")
}
