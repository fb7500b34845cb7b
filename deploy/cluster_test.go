package deploy_test

import (
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/internal/pipeline"
)

// TestProcessorYAML_SingleNode: the shipped config is one node throughout: an embedded
// server with one copy of everything, and the whole of the merchant's rate limits, so that
// with product: bills the transfer bills limits apply.
func TestProcessorYAML_SingleNode(t *testing.T) {
	cfg := loadConfig(t, "../configs/processor.yaml")
	if got, want := cfg.NATS.Topology.Replicas, 1; got != want {
		t.Errorf("nats.topology.replicas = %d, want %d (an embedded server is one node)", got, want)
	}
	if got, want := cfg.Pipeline.RateLimit, pipeline.DefaultConfig().RateLimit; got != want {
		t.Errorf("pipeline.rate-limit = %+v, want one replica's %+v", got, want)
	}
	cfg = loadConfig(t, "../configs/processor.yaml", config.Override{Key: "wechatpay.product", Value: "bills"})
	if got, want := cfg.Pipeline.RateLimit, pipeline.BillsRates(); got != want {
		t.Errorf("with product: bills, pipeline.rate-limit = %+v, want %+v", got, want)
	}
}

// natsNode is what the processors need to know of one deploy/nats/n*.conf.
type natsNode struct {
	clientURL, storeDir, cluster string
	routes                       int
}

func loadNATSConf(t *testing.T, path string) natsNode {
	t.Helper()
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !opts.JetStream || opts.StoreDir == "" {
		t.Errorf("%s: want JetStream with a store_dir", path)
	}
	return natsNode{
		clientURL: "nats://" + net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)),
		storeDir:  opts.StoreDir, cluster: opts.Cluster.Name, routes: len(opts.Routes),
	}
}

// TestCluster checks deploy/nats: three JetStream nodes of one cluster, each routed to the
// other two, and three processor configs that parse, name all three nodes, keep three copies
// of everything, share one topology (the shipped one but for replicas), have their own data
// dir, ledger and listener, and together stay within one replica's rate limits.
func TestCluster(t *testing.T) {
	shipped := loadConfig(t, "../configs/processor.yaml")
	var urls []string
	seen := map[string]string{}
	distinct := func(what, v, file string) {
		t.Helper()
		if other, ok := seen[what+v]; ok {
			t.Errorf("%s and %s have the same %s %q", other, file, what, v)
		}
		seen[what+v] = file
	}
	for i := 1; i <= 3; i++ {
		file := fmt.Sprintf("nats/n%d.conf", i)
		n := loadNATSConf(t, file)
		if n.cluster != "paystream" || n.routes != 2 {
			t.Errorf("%s: cluster %q with %d routes, want paystream with 2", file, n.cluster, n.routes)
		}
		distinct("client URL", n.clientURL, file)
		distinct("store dir", n.storeDir, file)
		urls = append(urls, n.clientURL)
	}

	var sum pipeline.RateConfig
	for i := 1; i <= 3; i++ {
		file := fmt.Sprintf("nats/processor-n%d.yaml", i)
		cfg := loadConfig(t, file)
		if got, want := cfg.NATS.URL, strings.Join(urls, ","); got != want {
			t.Errorf("%s: nats.url = %q, want every node: %q", file, got, want)
		}
		want := shipped.NATS.Topology
		want.Replicas = 3
		if got := cfg.NATS.Topology; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: nats.topology = %+v, want the shipped one with replicas 3: %+v", file, got, want)
		}
		distinct("data dir", cfg.DataDir, file)
		distinct("ledger", cfg.Ledger, file)
		distinct("http.listen", cfg.HTTP.Listen, file)
		if cfg.HTTP.Listen == "" {
			t.Errorf("%s: no http.listen: Prometheus scrapes it", file)
		}
		r := cfg.Pipeline.RateLimit
		sum.Create, sum.Query, sum.Detail, sum.Cancel = sum.Create+r.Create, sum.Query+r.Query, sum.Detail+r.Detail, sum.Cancel+r.Cancel
	}
	one := pipeline.DefaultConfig().RateLimit
	if sum.Create > one.Create || sum.Query > one.Query || sum.Detail > one.Detail || sum.Cancel > one.Cancel {
		t.Errorf("the three replicas' rate limits add up to %+v, more than one replica's %+v", sum, one)
	}
}
