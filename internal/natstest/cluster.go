package natstest

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"

	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/testingutil"
)

// Cluster is a JetStream cluster of in-process servers whose routes run through fault
// proxies, one per ordered pair of servers, so that a test can cut one server off from the
// others while its own clients still reach it.
type Cluster struct {
	Servers []*server.Server
	routes  [][]*faultproxy.Proxy // routes[i][j]: the proxy server i dials to reach server j
}

// RunCluster starts n (≥ 3) servers named n0, n1, … on loopback ports of their own choosing,
// storing under t.TempDir(), and returns once every server can hold a replica (ready);
// t.Cleanup shuts them down. The proxies are made first, aimed at deadRoute, and aimed at
// their servers once each listens: ports picked free beforehand were sometimes taken by
// another test before the server bound them, and that server then ran without a route
// listener and the cluster never formed. A route dialled before its proxy is aimed fails and
// is dialled again.
// The servers only ever meet through the proxies: each advertises a cluster address that
// refuses connections (deadRoute). A server tells the others about each server it meets,
// and a server that heard of one before its own proxied route to it was up dialled the
// address it heard, a route no proxy could cut (3 of 20 clusters had one, and Isolate then
// left that pair connected). RunCluster fails the test if any route is not a configured one.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("a cluster of %d servers: JetStream needs a quorum of at least 3", n)
	}
	c := &Cluster{routes: make([][]*faultproxy.Proxy, n)}
	for i := range n {
		c.routes[i] = make([]*faultproxy.Proxy, n)
		for j := range n {
			if i == j {
				continue
			}
			p, err := faultproxy.Start("127.0.0.1:0", deadRoute)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			c.routes[i][j] = p
		}
	}
	for i := range n {
		opts := natsserver.DefaultTestOptions
		opts.ServerName = fmt.Sprintf("n%d", i)
		opts.Port, opts.JetStream, opts.StoreDir = server.RANDOM_PORT, true, t.TempDir()
		opts.Cluster = server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoAdvertise: true, Advertise: deadRoute}
		for j, p := range c.routes[i] {
			if j != i {
				opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: p.Addr()})
			}
		}
		s := natsserver.RunServer(&opts)
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		c.Servers = append(c.Servers, s)
	}
	for j, s := range c.Servers {
		addr := s.ClusterAddr() // RunServer returns once the route listener is up
		for i := range c.Servers {
			if i != j {
				c.routes[i][j].Retarget(addr.String())
			}
		}
	}
	testingutil.WaitFor(t, 30*time.Second, c.ready)
	for _, s := range c.Servers {
		rz, err := s.Routez(&server.RoutezOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rz.Routes {
			if r.DidSolicit && !r.IsConfigured {
				t.Fatalf("%s dialled %s at %s:%d, not through its proxy: Isolate could not cut that route", s.Name(), r.RemoteName, r.IP, r.Port)
			}
		}
	}
	return c
}

// ready reports whether the cluster can place a replica on every server: a meta leader that
// counts every server as a peer with JetStream and current stats, and every server caught up
// with it. A meta leader alone is not enough: two servers elect one, and until the leader has
// the third's stats, creating a three-replica stream fails with "no suitable peers for
// placement".
func (c *Cluster) ready() (bool, string) {
	var leader *server.Server
	for _, s := range c.Servers {
		if s.JetStreamIsLeader() {
			leader = s
		}
	}
	if leader == nil {
		return false, "the cluster has no JetStream meta leader"
	}
	if peers := leader.JetStreamClusterPeers(); len(peers) != len(c.Servers) {
		return false, fmt.Sprintf("meta leader %s places on %v, want all %d servers", leader.Name(), peers, len(c.Servers))
	}
	for _, s := range c.Servers {
		if !s.JetStreamIsCurrent() {
			return false, fmt.Sprintf("%s is not caught up with the meta leader", s.Name())
		}
	}
	return true, ""
}

// deadRoute is the cluster address every server of a Cluster advertises: port 1, where
// nothing listens (binding it needs privileges), so a route dialled there fails at once.
const deadRoute = "127.0.0.1:1"

// Index returns the index in Servers of the server named name; it fails the test if none is.
func (c *Cluster) Index(t testing.TB, name string) int {
	t.Helper()
	for i, s := range c.Servers {
		if s.Name() == name {
			return i
		}
	}
	t.Fatalf("no server named %q in the cluster", name)
	return -1
}

// Isolate cuts server i off from every other server, both ways, for good: the proxies its
// routes run through close, and with them every route connection. Its clients still reach
// it.
func (c *Cluster) Isolate(i int) {
	for j := range c.Servers {
		if j != i {
			c.routes[i][j].Close()
			c.routes[j][i].Close()
		}
	}
}
