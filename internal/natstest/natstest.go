// Package natstest runs real, in-process NATS JetStream servers for tests.
package natstest

import (
	"io/fs"
	"os"
	"path/filepath"
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

// ConnectURL returns a JetStream context on the server at url, connected with opts;
// t.Cleanup closes it.
func ConnectURL(t testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
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

// StoreBytes shuts s down, so that JetStream has flushed everything, and returns the
// contents of every file in its store directory: what rests on its disk.
func StoreBytes(t testing.TB, s *server.Server) []byte {
	t.Helper()
	dir := s.JetStreamConfig().StoreDir
	s.Shutdown()
	s.WaitForShutdown()
	var all []byte
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		all = append(all, b...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}
