package soak

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsNode is one nats-server process of a JetStream cluster on loopback.
type natsNode struct {
	name        string
	bin, conf   string
	dir         string
	clientPort  int
	clusterPort int
	proc        *proc
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort) }

func (n *natsNode) start() error {
	p, err := start(n.name, n.bin, []string{"-c", n.conf}, filepath.Join(n.dir, "server.log"), nil)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// startCluster starts size nats-server nodes clustered together with JetStream and waits
// until JetStream answers (a meta leader is elected). The nodes keep the default 1 MiB
// max_payload, and do not advertise each other to clients: a client reconnects only to the
// URLs it was given, so a processor that reaches the cluster through fault proxies stays
// behind them.
func startCluster(ctx context.Context, bin, dir string, size int) ([]*natsNode, error) {
	nodes := make([]*natsNode, size)
	for i := range nodes {
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		rp, err := freePort()
		if err != nil {
			return nil, err
		}
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), bin: bin, dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), clientPort: cp, clusterPort: rp}
	}
	for _, n := range nodes {
		var routes []string
		for _, o := range nodes {
			if o != n {
				routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://127.0.0.1:%d", o.clusterPort)))
			}
		}
		conf := fmt.Sprintf(`server_name: %s
host: 127.0.0.1
port: %d
jetstream { store_dir: %q }
cluster {
  name: soak
  host: 127.0.0.1
  port: %d
  routes: [%s]
  no_advertise: true
}
`, n.name, n.clientPort, filepath.Join(n.dir, "js"), n.clusterPort, strings.Join(routes, ", "))
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
		n.conf = filepath.Join(n.dir, "nats.conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		if err := n.start(); err != nil {
			stopNodes(nodes)
			return nil, err
		}
	}
	// A port freePort picked may be taken before the node binds it (other tests run beside
	// the soak): the node then exits and the cluster never places a replicated stream.
	if err := waitNodes(ctx, nodes, time.Minute); err != nil {
		stopNodes(nodes)
		return nil, err
	}
	return nodes, waitJetStream(ctx, clusterURL(nodes), time.Minute)
}

// startClusterRetrying is startCluster, tried again on fresh ports (in a fresh directory)
// when a node does not come up.
func startClusterRetrying(ctx context.Context, bin, dir string, size int, logf func(string, ...any)) ([]*natsNode, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var nodes []*natsNode
		if nodes, err = startCluster(ctx, bin, filepath.Join(dir, fmt.Sprintf("try%d", attempt)), size); err == nil {
			return nodes, nil
		}
		logf("the JetStream cluster did not come up (attempt %d): %v", attempt, err)
	}
	return nil, err
}

// stopNodes kills the nodes started so far.
func stopNodes(nodes []*natsNode) {
	for _, n := range nodes {
		if n != nil && n.proc != nil {
			n.proc.kill()
		}
	}
}

// waitNodes waits until every node accepts clients on its own port; a node that exited is
// reported at once.
func waitNodes(ctx context.Context, nodes []*natsNode, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, n := range nodes {
		for {
			nc, err := nats.Connect(n.url(), nats.Timeout(time.Second))
			if err == nil {
				nc.Close()
				break
			}
			if n.proc.exited() || time.Now().After(deadline) {
				return fmt.Errorf("nats node %s not serving %s (its log: %s): %w", n.name, n.url(), filepath.Join(n.dir, "server.log"), err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	return nil
}

func clusterURL(nodes []*natsNode) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.url()
	}
	return strings.Join(urls, ",")
}

// waitJetStream polls until the JetStream API answers through url.
func waitJetStream(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			js, _ := jetstream.New(nc)
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = js.AccountInfo(actx)
			cancel()
			nc.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("jetstream not ready after %s: %w", limit, last)
}
