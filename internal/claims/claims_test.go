package claims

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/natstest"
)

// claimsBucket creates the bucket as broker.Ensure does (History 1, a TTL).
func claimsBucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{
		Bucket: "claims", History: 1, TTL: time.Hour, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// through connects to the server behind p, reconnecting quickly, and opens the claims bucket.
func through(t *testing.T, p *faultproxy.Proxy) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	js := natstest.ConnectURL(t, p.URL(), nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1))
	kv, err := js.KeyValue(context.Background(), "claims")
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}

func startProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func digestOf(s string) []byte { d := sha256.Sum256([]byte(s)); return d[:] }

// items returns n items "<prefix>00000"… whose digests hash their key.
func items(prefix string, n int) []Item {
	its := make([]Item, n)
	for i := range its {
		k := Key("1900000001", fmt.Sprintf("%s%05d", prefix, i))
		its[i] = Item{Key: k, Digest: digestOf(k)}
	}
	return its
}

// wantOwner fails unless every owner is instance.
func wantOwner(t *testing.T, owners []Owner, its []Item, instance string) {
	t.Helper()
	if got, want := len(owners), len(its); got != want {
		t.Fatalf("%d owners, want %d", got, want)
	}
	for i, o := range owners {
		if o.Instance != instance {
			t.Fatalf("%s: owner %q, want %q", its[i].Key, o.Instance, instance)
		}
	}
}

// logRecorder is a slog.Handler that keeps every record and signals each on warned when it
// is a warning.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
	warned  chan struct{}
}

func newLogRecorder() *logRecorder { return &logRecorder{warned: make(chan struct{}, 1)} }

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
	if r.Level >= slog.LevelWarn {
		select {
		case h.warned <- struct{}{}:
		default:
		}
	}
	return nil
}

func (h *logRecorder) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var m []string
	for _, r := range h.records {
		m = append(m, r.Message)
	}
	return m
}

func TestStore_Claim(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	a, b := New(js, kv, "instanceA"), New(js, kv, "instanceB")

	its := items("D", 500)
	owners, err := a.Claim(ctx, its[:300])
	if err != nil {
		t.Fatal(err)
	}
	wantOwner(t, owners, its[:300], "instanceA")
	for i, o := range owners {
		if o.Conflicts(its[i].Digest) {
			t.Fatalf("%s: own claim conflicts with its digest", its[i].Key)
		}
	}

	t.Run("another instance loses overlapping keys and wins new ones", func(t *testing.T) {
		owners, err := b.Claim(ctx, its[200:])
		if err != nil {
			t.Fatal(err)
		}
		wantOwner(t, owners[:100], its[200:300], "instanceA")
		wantOwner(t, owners[100:], its[300:], "instanceB")
	})

	t.Run("a restarted owner finds its own claims", func(t *testing.T) {
		owners, err := New(js, kv, "instanceA").Claim(ctx, its[:10])
		if err != nil {
			t.Fatal(err)
		}
		wantOwner(t, owners, its[:10], "instanceA")
	})

	t.Run("the same key twice in one call has one owner", func(t *testing.T) {
		k := Key("1900000001", "TWICE")
		owners, err := b.Claim(ctx, []Item{{Key: k, Digest: digestOf(k)}, {Key: k, Digest: digestOf(k)}})
		if err != nil {
			t.Fatal(err)
		}
		if owners[0].Instance != "instanceB" || owners[1].Instance != "instanceB" {
			t.Fatalf("owners = %v, want both instanceB", owners)
		}
	})

	t.Run("Owner reads a claim without making one", func(t *testing.T) {
		o, ok, err := b.Owner(ctx, its[0].Key)
		if err != nil || !ok || o.Instance != "instanceA" || o.Conflicts(its[0].Digest) {
			t.Fatalf("Owner(%s) = %+v, %v, %v; want instanceA with its digest", its[0].Key, o, ok, err)
		}
		free := Key("1900000001", "NOBODY")
		if _, ok, err := b.Owner(ctx, free); err != nil || ok {
			t.Fatalf("Owner(unclaimed) ok = %v, err = %v; want false, nil", ok, err)
		}
		if owners, err := a.Claim(ctx, []Item{{Key: free, Digest: digestOf(free)}}); err != nil || owners[0].Instance != "instanceA" {
			t.Fatalf("after Owner, Claim(%s) = %v, %v; want instanceA (Owner must not claim)", free, owners, err)
		}
	})

	if got, want := a.Resolved()+b.Resolved(), int64(0); got != want {
		t.Fatalf("Resolved = %d, want %d with no faults", got, want)
	}
}

// TestStore_ClaimConflicts: the digest in a claim tells a loser a harmless duplicate (same
// content) from a conflicting request (different content); a legacy claim tells nothing.
func TestStore_ClaimConflicts(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	a, b := New(js, kv, "instanceA"), New(js, kv, "instanceB")
	same, diff, legacy := Key("1900000001", "SAME"), Key("1900000001", "DIFF"), Key("1900000001", "OLD")
	if _, err := a.Claim(ctx, []Item{{Key: same, Digest: digestOf("one")}, {Key: diff, Digest: digestOf("one")}}); err != nil {
		t.Fatal(err)
	}
	// The previous version wrote the bare instance id.
	if _, err := kv.Create(ctx, legacy, []byte("instanceOld")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name         string
		item         Item
		wantOwner    string
		wantDigest   bool
		wantConflict bool
	}{
		{"same digest is a duplicate", Item{Key: same, Digest: digestOf("one")}, "instanceA", true, false},
		{"different digest conflicts", Item{Key: diff, Digest: digestOf("two")}, "instanceA", true, true},
		{"legacy claim has no digest and never conflicts", Item{Key: legacy, Digest: digestOf("two")}, "instanceOld", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owners, err := b.Claim(ctx, []Item{tt.item})
			if err != nil {
				t.Fatal(err)
			}
			o := owners[0]
			if got, want := o.Instance, tt.wantOwner; got != want {
				t.Fatalf("owner = %q, want %q", got, want)
			}
			if got, want := o.Digest != nil, tt.wantDigest; got != want {
				t.Fatalf("digest known = %v (%x), want %v", got, o.Digest, want)
			}
			if got, want := o.Conflicts(tt.item.Digest), tt.wantConflict; got != want {
				t.Fatalf("Conflicts = %v, want %v", got, want)
			}
		})
	}
}

func TestOwner_Conflicts(t *testing.T) {
	d := digestOf("x")
	tests := []struct {
		name  string
		owner Owner
		d     []byte
		want  bool
	}{
		{"same stored prefix", Owner{Instance: "a", Digest: d[:DigestSize]}, d, false},
		{"different", Owner{Instance: "a", Digest: digestOf("y")[:DigestSize]}, d, true},
		{"owner without digest", Owner{Instance: "a"}, d, false},
		{"no digest to compare", Owner{Instance: "a", Digest: d[:DigestSize]}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.owner.Conflicts(tt.d); got != tt.want {
				t.Fatalf("Conflicts = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestStore_ClaimRepliesLost: the creates of a group land on the server but their replies
// are lost with the connection. The keys are this instance's: Claim must say so, not fail
// (which left the payouts stranded while another replica marked them DUPLICATE).
func TestStore_ClaimRepliesLost(t *testing.T) {
	srv := natstest.Run(t)
	direct := natstest.Connect(t, srv)
	kv := claimsBucket(t, direct)
	p := startProxy(t, srv.Addr().String())
	js, pkv := through(t, p)

	tests := []struct {
		name string
		cuts int // connections cut: the first loses the creates' replies, later ones the reads
	}{
		{"one cut", 1},
		{"the resolving reads are cut too", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			log := newLogRecorder()
			a := New(js, pkv, "instanceA", WithLogger(slog.New(log)), WithAckTimeout(2*time.Second))
			its := items(fmt.Sprintf("L%d", tt.cuts), 300)
			before := p.Cuts()
			// Both the creates ("$KV.claims.<key>") and direct reads
			// ("$JS.API.DIRECT.GET.KV_claims.$KV.claims.<key>") carry this prefix.
			p.CutAfter([]byte("$KV.claims."), tt.cuts)
			defer p.CutAfter(nil, 0)

			owners, err := a.Claim(ctx, its)
			if err != nil {
				t.Fatalf("Claim: %v; want every key resolved", err)
			}
			if got, want := p.Cuts()-before, tt.cuts; got != want {
				t.Fatalf("cuts = %d, want %d", got, want)
			}
			wantOwner(t, owners, its, "instanceA")
			if a.Resolved() == 0 {
				t.Fatal("Resolved = 0, want the keys of lost replies counted")
			}

			// Another replica, given the redelivery, finds instanceA the owner.
			owners, err = New(direct, kv, "instanceB").Claim(ctx, its)
			if err != nil {
				t.Fatal(err)
			}
			wantOwner(t, owners, its, "instanceA")
			for i, o := range owners {
				if o.Conflicts(its[i].Digest) {
					t.Fatalf("%s: conflict with its own digest", its[i].Key)
				}
			}
			// One line for the episode (plus at most one per retry round), never one per key.
			t.Logf("log: %q", log.messages())
			if got := log.messages(); len(got) > 1+tt.cuts {
				t.Fatalf("%d log lines %q, want at most %d", len(got), got, 1+tt.cuts)
			}
		})
	}
}

// blackhole publishes for real but hands back futures that never resolve: the reply of every
// create is lost without the connection breaking.
type blackhole struct{ jetstream.JetStream }

func (b blackhole) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if _, err := b.JetStream.PublishMsgAsync(m, opts...); err != nil {
		return nil, err
	}
	return never{}, nil
}

type never struct{ jetstream.PubAckFuture }

func (never) Ok() <-chan *jetstream.PubAck { return nil }
func (never) Err() <-chan error            { return nil }

// TestStore_ClaimAckNeverArrives: creates whose acks never come are resolved once the ack
// timeout passes.
func TestStore_ClaimAckNeverArrives(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	if _, err := New(js, kv, "instanceB").Claim(ctx, items("N", 5)); err != nil {
		t.Fatal(err)
	}
	a := New(blackhole{js}, kv, "instanceA", WithLogger(slog.New(slog.DiscardHandler)), WithAckTimeout(50*time.Millisecond))
	its := items("N", 50)
	owners, err := a.Claim(ctx, its)
	if err != nil {
		t.Fatal(err)
	}
	wantOwner(t, owners[:5], its[:5], "instanceB")
	wantOwner(t, owners[5:], its[5:], "instanceA")
	if got, want := a.Resolved(), int64(len(its)); got != want {
		t.Fatalf("Resolved = %d, want %d", got, want)
	}
}

// TestStore_ClaimServerUnreachable: while the server cannot be reached, Claim keeps resolving
// until its context ends, then returns promptly with the context's error.
func TestStore_ClaimServerUnreachable(t *testing.T) {
	srv := natstest.Run(t)
	claimsBucket(t, natstest.Connect(t, srv))

	tests := []struct {
		name    string
		ctx     func(warned <-chan struct{}) (context.Context, context.CancelFunc)
		wantErr error
	}{
		{"deadline", func(<-chan struct{}) (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 500*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancelled while retrying", func(warned <-chan struct{}) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-warned: // the first failed round
					cancel()
				case <-ctx.Done():
				}
			}()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, srv.Addr().String())
			js, kv := through(t, p)
			log := newLogRecorder()
			a := New(js, kv, "instanceA", WithLogger(slog.New(log)), WithAckTimeout(100*time.Millisecond))
			if err := p.Close(); err != nil { // the server is now unreachable
				t.Fatal(err)
			}
			ctx, cancel := tt.ctx(log.warned)
			defer cancel()
			doneAt := make(chan time.Time, 1)
			context.AfterFunc(ctx, func() { doneAt <- time.Now() })
			_, err := a.Claim(ctx, items("U", 20))
			returned := time.Now()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Claim error = %v, want %v", err, tt.wantErr)
			}
			if late := returned.Sub(<-doneAt); late > time.Second {
				t.Fatalf("Claim returned %v after its context ended", late)
			}
		})
	}
}

// goneBucket returns a connection and a handle of the claims bucket, which no longer exists.
func goneBucket(t *testing.T) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	if err := js.DeleteKeyValue(context.Background(), "claims"); err != nil {
		t.Fatal(err)
	}
	return js, kv
}

// TestStore_ClaimBucketGone: a deleted bucket is a permanent error, not an endless retry.
func TestStore_ClaimBucketGone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, kv := goneBucket(t)
	_, err := New(js, kv, "instanceA", WithLogger(slog.New(slog.DiscardHandler))).Claim(ctx, items("G", 3))
	if !errors.Is(err, ErrBucketNotFound) {
		t.Fatalf("Claim error = %v, want ErrBucketNotFound", err)
	}
}

// TestStore_ClaimDropsUnansweredCreates: creates whose replies never come (here a plain
// subscriber takes them where the bucket was) do not stay among the context's pending async
// publishes once Claim has given up waiting for them: lost replies must not add up to the
// limit that stalls every publish.
func TestStore_ClaimDropsUnansweredCreates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, kv := goneBucket(t)
	sub, err := js.Conn().SubscribeSync("$KV.claims.>") // takes the creates, answers none
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	its := items("U", 20)
	_, err = New(js, kv, "instanceA", WithLogger(slog.New(slog.DiscardHandler)), WithAckTimeout(100*time.Millisecond)).Claim(ctx, its)
	if !errors.Is(err, ErrBucketNotFound) {
		t.Fatalf("Claim error = %v, want ErrBucketNotFound", err)
	}
	if n, _, _ := sub.Pending(); n < len(its) {
		t.Fatalf("the subscriber took %d creates, want %d: the replies were not lost the way this test means", n, len(its))
	}
	if n := js.PublishAsyncPending(); n != 0 {
		t.Fatalf("%d creates still pending after Claim returned, want 0", n)
	}
}

// TestStore_ClaimConnectionClosed: a connection closed for good will never answer, so Claim
// gives up at once instead of retrying until its context ends.
func TestStore_ClaimConnectionClosed(t *testing.T) {
	srv := natstest.Run(t)
	claimsBucket(t, natstest.Connect(t, srv))
	js := natstest.Connect(t, srv)
	kv, err := js.KeyValue(context.Background(), "claims")
	if err != nil {
		t.Fatal(err)
	}
	js.Conn().Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = New(js, kv, "instanceA", WithLogger(slog.New(slog.DiscardHandler))).Claim(ctx, items("C", 3))
	if !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, jetstream.ErrConnectionClosed) {
		t.Fatalf("Claim error = %v, want the connection closed", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Claim waited for its context; want it to give up at once")
	}
}

// TestStore_Observer: every Claim and Owner is reported once, with its error.
func TestStore_Observer(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	type call struct {
		op  string
		err error
	}
	var mu sync.Mutex
	var calls []call
	s := New(js, kv, "instanceA", WithObserver(func(op string, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if d <= 0 {
			t.Errorf("%s observed with duration %v", op, d)
		}
		calls = append(calls, call{op, err})
	}))
	its := items("O", 3)
	if _, err := s.Claim(ctx, its); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Owner(ctx, its[0].Key); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, "claims"); err != nil {
		t.Fatal(err)
	}
	_, claimErr := s.Claim(ctx, items("P", 1))
	if !errors.Is(claimErr, ErrBucketNotFound) {
		t.Fatalf("Claim error = %v, want ErrBucketNotFound", claimErr)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []call{{"claim", nil}, {"owner", nil}, {"claim", claimErr}}
	if got := len(calls); got != len(want) {
		t.Fatalf("observed %v, want %v", calls, want)
	}
	for i, w := range want {
		if calls[i].op != w.op || !errors.Is(calls[i].err, w.err) || (w.err == nil) != (calls[i].err == nil) {
			t.Fatalf("call %d observed as %v, want %v", i, calls[i], w)
		}
	}
}

// TestStore_ClaimStreamSeq: a claim carries the stream sequence of the message it was made
// for, so a loser can tell "the owner claimed this very message" (it may not have committed
// it yet) from "the owner claimed the key for another message" (a re-publish). Claims of
// earlier versions read as carrying none, and a transfer keeps it.
func TestStore_ClaimStreamSeq(t *testing.T) {
	ctx := context.Background()
	js := natstest.Connect(t, natstest.Run(t))
	kv := claimsBucket(t, js)
	a, b := New(js, kv, "instanceA"), New(js, kv, "instanceB")
	k, legacy := Key("1900000001", "SEQ"), Key("1900000001", "OLDSEQ")
	mine, err := a.Claim(ctx, []Item{{Key: k, Digest: digestOf(k), StreamSeq: 42}})
	if err != nil || mine[0].Instance != "instanceA" || mine[0].StreamSeq != 42 {
		t.Fatalf("own claim = %+v, %v; want instanceA at stream seq 42", mine, err)
	}
	if _, err := kv.Create(ctx, legacy, encode(Owner{Instance: "instanceOld", Digest: digestOf(legacy)})); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		item    Item
		wantSeq uint64
	}{
		{"the owner's message", Item{Key: k, Digest: digestOf(k), StreamSeq: 42}, 42},
		{"a re-publish", Item{Key: k, Digest: digestOf(k), StreamSeq: 43}, 42},
		{"a claim of an earlier version", Item{Key: legacy, Digest: digestOf(legacy), StreamSeq: 7}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owners, err := b.Claim(ctx, []Item{tt.item})
			if err != nil {
				t.Fatal(err)
			}
			if o := owners[0]; o.Instance == "instanceB" || o.StreamSeq != tt.wantSeq || o.Conflicts(tt.item.Digest) {
				t.Fatalf("owner = %+v, want another instance's claim at stream seq %d with the same digest", o, tt.wantSeq)
			}
		})
	}
	held, err := OwnedBy(ctx, js, kv, "instanceA")
	if err != nil || len(held) != 1 {
		t.Fatalf("OwnedBy = %v, %v", held, err)
	}
	if err := Transfer(ctx, js, kv, held[0], "instanceC"); err != nil {
		t.Fatal(err)
	}
	if o, ok, err := b.Owner(ctx, k); err != nil || !ok || o.Instance != "instanceC" || o.StreamSeq != 42 || o.Conflicts(digestOf(k)) {
		t.Fatalf("after Transfer: %+v, %v, %v; want instanceC at stream seq 42 with the digest", o, ok, err)
	}
}

func TestParse(t *testing.T) {
	d := digestOf("x")[:DigestSize]
	tests := []struct {
		name  string
		value string
		want  Owner
	}{
		{"bare instance", "inst1", Owner{Instance: "inst1"}},
		{"digest", "inst1;" + hex.EncodeToString(d), Owner{Instance: "inst1", Digest: d}},
		{"digest and seq", "inst1;" + hex.EncodeToString(d) + ";99", Owner{Instance: "inst1", Digest: d, StreamSeq: 99}},
		{"seq without digest", "inst1;;5", Owner{Instance: "inst1", StreamSeq: 5}},
		{"bad digest", "inst1;zz;5", Owner{Instance: "inst1", StreamSeq: 5}},
		{"bad seq", "inst1;" + hex.EncodeToString(d) + ";x", Owner{Instance: "inst1", Digest: d}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parse([]byte(tt.value))
			if got.Instance != tt.want.Instance || !bytes.Equal(got.Digest, tt.want.Digest) || got.StreamSeq != tt.want.StreamSeq {
				t.Fatalf("parse(%q) = %+v, want %+v", tt.value, got, tt.want)
			}
			if back := parse(encode(got)); back.Instance != got.Instance || !bytes.Equal(back.Digest, got.Digest) || back.StreamSeq != got.StreamSeq {
				t.Fatalf("encode/parse round trip of %+v = %+v", got, back)
			}
		})
	}
}
