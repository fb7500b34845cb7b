package broker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/paystream/paystream/internal/natstest"
)

// TestEmbeddedAndEnsure starts the embedded server, creates the topology twice (every
// replica does at every start) and checks what it made.
func TestEmbeddedAndEnsure(t *testing.T) {
	dir := t.TempDir()
	emb, err := StartEmbedded(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("store not under the data dir: %v", err)
	}
	js := natstest.ConnectURL(t, emb.URL())
	ctx := context.Background()
	topo := DefaultTopology()
	for i := range 2 {
		cons, kv, err := Ensure(ctx, js, topo)
		if err != nil {
			t.Fatalf("Ensure #%d: %v", i+1, err)
		}
		ci := cons.CachedInfo()
		if ci.Config.Durable != topo.Consumer || ci.Config.AckPolicy != jetstream.AckExplicitPolicy || ci.Config.AckWait != topo.AckWait {
			t.Fatalf("consumer config %+v", ci.Config)
		}
		st, err := kv.Status(ctx)
		if err != nil || st.TTL() != topo.ClaimsTTL {
			t.Fatalf("claims bucket TTL %v (%v), want %v", st.TTL(), err, topo.ClaimsTTL)
		}
	}
	for _, name := range []string{topo.Stream, topo.ResultsStream, topo.DeadLetterStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if s.CachedInfo().Config.Storage != jetstream.FileStorage {
			t.Fatalf("stream %s is not on file storage", name)
		}
	}
	s, _ := js.Stream(ctx, topo.Stream)
	if got := s.CachedInfo().Config.Duplicates; got != topo.DuplicateWindow {
		t.Fatalf("duplicate window %v, want %v", got, topo.DuplicateWindow)
	}
}

func TestStartEmbedded_BadListen(t *testing.T) {
	if _, err := StartEmbedded(t.TempDir(), "no-port"); err == nil {
		t.Fatal("want an error for a listen address without a port")
	}
}

// TestEnsure_NeverDropsAndAges: a consumer made by an earlier version gave up after 20
// deliveries, silently dropping the request (and, when its group failed with it, its
// neighbours); Ensure updates it to never give up, and the request and dead-letter streams
// gain their age limits.
func TestEnsure_NeverDropsAndAges(t *testing.T) {
	js := natstest.Connect(t, natstest.Run(t))
	ctx := context.Background()
	old := DefaultTopology()
	old.MaxDeliver, old.MaxAge, old.DeadLetterMaxAge = 20, 0, 0
	if _, _, err := Ensure(ctx, js, old); err != nil {
		t.Fatal(err)
	}
	topo := DefaultTopology()
	cons, _, err := Ensure(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cons.CachedInfo().Config.MaxDeliver, -1; got != want {
		t.Fatalf("max deliver %d, want %d", got, want)
	}
	for name, want := range map[string]time.Duration{topo.Stream: topo.MaxAge, topo.DeadLetterStream: topo.DeadLetterMaxAge} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.MaxAge; got != want || got == 0 {
			t.Fatalf("stream %s max age %v, want %v", name, got, want)
		}
	}
}
