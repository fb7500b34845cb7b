package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/natstest"
)

// TestPublisher: every message reaches the stream exactly once, through a window of one or
// two, with every ack lost (an ack timeout shorter than any round trip: each publish is
// retried with its Nats-Msg-Id, which JetStream deduplicates), and with no stream at first
// (no responders until it is created: publishes are retried until they are stored).
func TestPublisher(t *testing.T) {
	tests := []struct {
		name        string
		n, window   int
		ackTimeout  time.Duration
		noStream    bool // create the stream only once a publish has been retried
		wantRetries bool
	}{
		{name: "window of one", n: 300, window: 1, ackTimeout: 10 * time.Second},
		{name: "window of two", n: 300, window: 2, ackTimeout: 10 * time.Second},
		{name: "every ack lost", n: 20, window: 4, ackTimeout: time.Nanosecond, wantRetries: true},
		{name: "no stream at first", n: 20, window: 4, ackTimeout: 10 * time.Second, noStream: true, wantRetries: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			srv := natstest.Run(t)
			js := natstest.Connect(t, srv)
			cfg := jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Duplicates: time.Hour}
			if !tt.noStream {
				if _, err := js.CreateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			}
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			p, err := newPublisher(ctx, nc, tt.window, tt.ackTimeout, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			created := make(chan error, 1)
			made := !tt.noStream
			p.onRetry = func(*nats.Msg, error) { // on the publisher's one collecting goroutine
				if !made {
					made = true
					_, err := js.CreateStream(ctx, cfg)
					created <- err
				}
			}
			for i := range tt.n {
				m := nats.NewMsg("t.x")
				m.Data = []byte(fmt.Sprint(i))
				m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("id", i))
				if err := p.publish(m); err != nil {
					t.Fatal(err)
				}
			}
			st, err := p.wait()
			if err != nil {
				t.Fatalf("wait: %v (%+v)", err, st)
			}
			if tt.noStream {
				if err := <-created; err != nil {
					t.Fatal(err)
				}
			}
			if got, want := st.Stored+st.Duplicates, tt.n; got != want || st.Failed != 0 {
				t.Fatalf("%d acknowledged, %d failed, want %d acknowledged: %+v", got, st.Failed, want, st)
			}
			if got := st.Retries > 0; got != tt.wantRetries {
				t.Fatalf("retries = %d, want some: %v", st.Retries, tt.wantRetries)
			}
			checkOnce(t, js, tt.n)
		})
	}
}

// checkOnce checks that stream T holds exactly n messages, ids id0…id<n-1>, each once.
func checkOnce(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.CachedInfo().State.Msgs, uint64(n); got != want {
		t.Fatalf("stream holds %d messages, want %d", got, want)
	}
	seen := map[string]bool{}
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if seen[id] {
			t.Fatalf("%s stored twice", id)
		}
		seen[id] = true
	}
	for i := range n {
		if id := fmt.Sprint("id", i); !seen[id] {
			t.Fatalf("%s not stored", id)
		}
	}
}
