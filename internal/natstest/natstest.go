// Package natstest runs real, in-process NATS JetStream servers for tests.
package natstest

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/testingutil"
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

// LaggingCopy adds to kv's stream a mirror that serves direct gets (MirrorDirect) and holds
// none of kv's keys, as a replica that has not caught up would: from then on a KeyValue.Get
// is answered by either copy, about half the time "not found". A read from the stream's
// leader is not. It writes a probe key that the mirror copies (a mirror serves reads once it
// has copied something), then purges it.
func LaggingCopy(t testing.TB, js jetstream.JetStream, kv jetstream.KeyValue) {
	t.Helper()
	ctx := context.Background()
	probe := "lagging-copy-probe"
	mirror, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         "KV_" + kv.Bucket() + "_lagging",
		Mirror:       &jetstream.StreamSource{Name: "KV_" + kv.Bucket(), FilterSubject: "$KV." + kv.Bucket() + "." + probe},
		MirrorDirect: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, probe, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	testingutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		info, err := mirror.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs > 0, "the lagging copy copied nothing"
	})
	if err := kv.Purge(ctx, probe); err != nil {
		t.Fatal(err)
	}
}
