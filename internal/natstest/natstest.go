// Package natstest runs real, in-process NATS JetStream servers for tests.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Run starts a JetStream server on a free loopback port, storing under t.TempDir(), and shuts
// it down in t.Cleanup.
func Run(t testing.TB) *server.Server {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port, opts.JetStream, opts.StoreDir = server.RANDOM_PORT, true, t.TempDir()
	s := natsserver.RunServer(&opts)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect returns a JetStream context on s whose connection t.Cleanup closes.
func Connect(t testing.TB, s *server.Server) jetstream.JetStream {
	t.Helper()
	return ConnectURL(t, s.ClientURL())
}

// ConnectURL returns a JetStream context on the server at url; t.Cleanup closes it.
func ConnectURL(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
