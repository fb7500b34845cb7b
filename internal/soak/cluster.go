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
			return nil, err
		}
	}
	return nodes, waitJetStream(ctx, clusterURL(nodes), time.Minute)
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
