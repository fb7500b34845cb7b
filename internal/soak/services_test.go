package soak

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/config"
)

// configSoak is a soak as far as processorConfig looks: its settings, the cluster's URL, the
// sandbox's and the topology ensureTopology makes.
func configSoak(t *testing.T, cfg Config) *soak {
	t.Helper()
	root, err := ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	topo := broker.DefaultTopology()
	topo.Replicas, topo.DuplicateWindow, topo.AckWait = 3, cfg.DuplicateWindow, cfg.AckWait
	topo.Backoff, topo.MaxAckPending = nil, maxAckPending*cfg.Processors
	return &soak{cfg: cfg, root: root, procURL: "nats://127.0.0.1:4222,nats://127.0.0.1:4223", sandboxURL: "http://127.0.0.1:8443", topo: topo}
}

// TestWriteProcessorConfig: the processor reads back from the written file exactly the config
// the soak built, on both products (durations included: yaml.v3 writes them as "2s").
func TestWriteProcessorConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		listen string
	}{
		{"batches", DefaultConfig(), ""},
		{"bills with a callback listener", DefaultBillsConfig(), "127.0.0.1:18088"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			want := configSoak(t, tt.cfg).processorConfig(dir, filepath.Join(dir, "key.pem"), tt.listen)
			path := filepath.Join(dir, "processor.yaml")
			if err := writeProcessorConfig(path, want); err != nil {
				t.Fatal(err)
			}
			got, err := app.LoadConfig(path, func(string) string { return "" })
			if err != nil {
				t.Fatalf("LoadConfig(written file) = %v", err)
			}
			// The file says [] or {} for a nil and an empty slice or map alike, and the
			// processor reads both by their length.
			nilEmpty(reflect.ValueOf(&got).Elem())
			nilEmpty(reflect.ValueOf(&want).Elem())
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("LoadConfig(written file) =\n%+v\nwant\n%+v", got, want)
			}
			if got, want := got.Pipeline.NotifyURL != "", tt.listen != ""; got != want {
				t.Fatalf("notify-url set = %v, want %v", got, want)
			}
			if got, want := got.Pipeline.RateLimit.Create, float64(tt.cfg.Share); got != want {
				t.Fatalf("rate-limit.create = %v, want %v", got, want)
			}
			if got, want := got.NATS.Topology.AckWait, tt.cfg.AckWait; got != want {
				t.Fatalf("ack-wait = %v, want %v", got, want)
			}
		})
	}
}

// TestWriteProcessorConfig_Invalid: a config the processor would refuse is not written.
func TestWriteProcessorConfig_Invalid(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Share = 0 // a zero create rate
	dir := t.TempDir()
	path := filepath.Join(dir, "processor.yaml")
	err := writeProcessorConfig(path, configSoak(t, cfg).processorConfig(dir, filepath.Join(dir, "key.pem"), ""))
	var ce *config.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("writeProcessorConfig = %v, want a *config.ConfigError", err)
	}
	if got, want := ce.Field, "pipeline.rate-limit"; got != want {
		t.Fatalf("field = %q, want %q", got, want)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat %s = %v, want no file", path, err)
	}
}

// nilEmpty makes every empty slice and map in v nil, walking exported struct fields and slice
// elements; v must be settable.
func nilEmpty(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				nilEmpty(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		if v.Kind() == reflect.Slice {
			for i := range v.Len() {
				nilEmpty(v.Index(i))
			}
		}
	}
}

// TestPortPicker_eachPortOnce: the kernel picks a port it picked before (free again, since
// the process it was picked for has not bound it yet); the picker refuses it and hands out
// another, never the same port twice.
func TestPortPicker_eachPortOnce(t *testing.T) {
	first := 0
	calls := 0
	p := portPicker{listen: func() (net.Listener, error) {
		calls++
		if calls == 2 { // the kernel's second pick is the first port again
			return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", first))
		}
		return net.Listen("tcp", "127.0.0.1:0")
	}}
	a, err := p.pick()
	if err != nil {
		t.Fatal(err)
	}
	first = a
	b, err := p.pick()
	if err != nil {
		t.Fatal(err)
	}
	if b == a || calls != 3 {
		t.Fatalf("picked %d then %d in %d listens; want two ports in 3 listens (the repeat refused)", a, b, calls)
	}
	// The refused listener was closed: the port can be bound again.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", a))
	if err != nil {
		t.Fatalf("port %d still held after the pick: %v", a, err)
	}
	ln.Close()
}

// TestListenBelowEphemeral: the soak's ports lie below the kernel's ephemeral range, so no
// outgoing connection's local port can take one while its process restarts.
func TestListenBelowEphemeral(t *testing.T) {
	start := ephemeralStart()
	if start <= 11000 {
		t.Fatalf("ephemeral range starts at %d on this machine; the test needs room below it", start)
	}
	for range 20 {
		port, err := ports.pick()
		if err != nil {
			t.Fatal(err)
		}
		if port < 10000 || port >= start {
			t.Fatalf("picked port %d, want one in [10000, %d)", port, start)
		}
	}
}
