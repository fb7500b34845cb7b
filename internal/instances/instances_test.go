package instances

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/faultproxy"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/testingutil"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newBucket starts a JetStream server and ensures the heartbeat bucket on it.
func newBucket(t *testing.T) (string, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	kv, err := Ensure(context.Background(), js, "instances", 1)
	if err != nil {
		t.Fatal(err)
	}
	return s.ClientURL(), js, kv
}

// openBucket opens the bucket over its own connection, returned so a test can cut it.
func openBucket(t *testing.T, url string) (*nats.Conn, jetstream.JetStream, jetstream.KeyValue) {
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
	kv, err := js.KeyValue(context.Background(), "instances")
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, kv
}

// start starts a beat of instance id every every; t.Cleanup stops it.
func start(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue, id string, every time.Duration) *Beat {
	t.Helper()
	b, err := Start(context.Background(), BeatConfig{
		JS: js, KV: kv, Self: Info{Instance: id, MchID: "1900000001", Host: "host-a", Version: "v-test"}, Every: every, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

// put stores r as the record of r.Instance, as some earlier process would have.
func put(t *testing.T, kv jetstream.KeyValue, r Record) {
	t.Helper()
	if _, err := kv.Put(context.Background(), r.Instance, encode(r)); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue, id string) Record {
	t.Helper()
	r, err := Get(context.Background(), js, kv, id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls cond every few milliseconds for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testingutil.WaitFor(t, 10*time.Second, func() (bool, string) { return cond(), "waiting for " + what })
}

// waitDone waits for b's beats to end.
func waitDone(t *testing.T, b *Beat) {
	t.Helper()
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("beats did not end")
	}
}

func TestClassify(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		rec       Record
		now       time.Time
		deadAfter time.Duration
		want      State
	}{
		{name: "just seen", rec: Record{SeenAt: t0}, now: t0.Add(time.Second), deadAfter: time.Minute, want: Alive},
		{name: "exactly deadAfter is alive", rec: Record{SeenAt: t0}, now: t0.Add(time.Minute), deadAfter: time.Minute, want: Alive},
		{name: "past deadAfter is silent", rec: Record{SeenAt: t0}, now: t0.Add(time.Minute + 1), deadAfter: time.Minute, want: Silent},
		{name: "seen in the future (skew) is alive", rec: Record{SeenAt: t0.Add(time.Second)}, now: t0, deadAfter: time.Minute, want: Alive},
		{name: "zero deadAfter is the default", rec: Record{SeenAt: t0}, now: t0.Add(DefaultDeadAfter), want: Alive},
		{name: "zero deadAfter is the default, past it", rec: Record{SeenAt: t0}, now: t0.Add(DefaultDeadAfter + 1), want: Silent},
		{name: "clean stop long ago is stopped", rec: Record{SeenAt: t0, StoppedAt: t0}, now: t0.Add(24 * time.Hour), deadAfter: time.Minute, want: Stopped},
		{name: "retired wins over stopped", rec: Record{SeenAt: t0, StoppedAt: t0, RetiredBy: "b"}, now: t0, deadAfter: time.Minute, want: Retired},
		{name: "retired, never seen", rec: Record{RetiredBy: "b", RetiredAt: t0}, now: t0, deadAfter: time.Minute, want: Retired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify([]Record{{Instance: "x"}, tt.rec}, tt.now, tt.deadAfter)
			if got, want := len(got), 2; got != want {
				t.Fatalf("%d statuses, want %d", got, want)
			}
			if got, want := got[1].State, tt.want; got != want {
				t.Fatalf("state %s, want %s", got, want)
			}
			if got, want := got[0].State, Silent; got != want {
				t.Fatalf("never seen: state %s, want %s", got, want)
			}
		})
	}
}

func TestEnsure(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	ctx := context.Background()
	for range 2 { // idempotent: every replica calls it at every start
		if _, err := Ensure(ctx, js, "paystream_instances", 1); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, "paystream_instances")
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
	if got, want := cfg.Storage, jetstream.FileStorage; got != want {
		t.Fatalf("storage %v, want %v", got, want)
	}
	if got, want := cfg.MaxAge, time.Duration(0); got != want {
		t.Fatalf("max age %v, want none: a retired record must outlive its instance", got)
	}
	if got, want := st.History(), int64(1); got != want {
		t.Fatalf("history %d, want %d", got, want)
	}
}

func TestBeat_showsUpAndStopsCleanly(t *testing.T) {
	_, js, kv := newBucket(t)
	var calls atomic.Int64
	// The loop's beats wait until the test has read the first one, which Start writes: on a
	// loaded machine the loop can otherwise beat twice before that read.
	firstRead := make(chan struct{})
	release := sync.OnceFunc(func() { close(firstRead) })
	t.Cleanup(release)
	b, err := Start(context.Background(), BeatConfig{
		JS: js, KV: kv, Self: Info{Instance: "inst000001", MchID: "1900000001", Host: "host-a", Version: "v-test"},
		Every: 10 * time.Millisecond, Log: quiet,
		Status: func() LedgerPos {
			n := calls.Add(1)
			if n > 1 {
				<-firstRead
			}
			return LedgerPos{Path: "/data/ledger.db", LastSeq: n, LastEvent: 10 * n}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := read(t, js, kv, "inst000001") // the first beat is written by Start
	release()
	if got, want := r.Ledger, (LedgerPos{Path: "/data/ledger.db", LastSeq: 1, LastEvent: 10}); got != want {
		t.Fatalf("first beat ledger %+v, want %+v", got, want)
	}
	if got, want := r.MchID+" "+r.Host+" "+r.Version, "1900000001 host-a v-test"; got != want {
		t.Fatalf("record says %q, want %q", got, want)
	}
	waitFor(t, "three beats", func() bool { return read(t, js, kv, "inst000001").Ledger.LastSeq >= 3 })

	recs, err := List(context.Background(), js, kv)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Classify(recs, time.Now(), time.Minute)[0].State, Alive; got != want {
		t.Fatalf("while beating: %s, want %s", got, want)
	}
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitDone(t, b)
	if err := b.Err(); err != nil {
		t.Fatalf("Err after Stop: %v", err)
	}
	r = read(t, js, kv, "inst000001")
	if r.StoppedAt.IsZero() {
		t.Fatal("no clean-stop mark")
	}
	if got, want := Classify([]Record{r}, time.Now().Add(time.Hour), time.Minute)[0].State, Stopped; got != want {
		t.Fatalf("an hour after a clean stop: %s, want %s", got, want)
	}
	if err := b.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestBeat_crashIsSilentAfterDeadAfter(t *testing.T) {
	url, js, kv := newBucket(t)
	nc, ownJS, own := openBucket(t, url)
	b := start(t, ownJS, own, "crash00001", 10*time.Millisecond)
	nc.Close() // the process dies: nothing more reaches NATS, not even the stop mark
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.Stop(ctx); err == nil {
		t.Fatal("Stop wrote its mark over a closed connection")
	}

	r := read(t, js, kv, "crash00001")
	if !r.StoppedAt.IsZero() {
		t.Fatal("a crash left a clean-stop mark")
	}
	deadAfter := 2 * time.Minute
	if got, want := Classify([]Record{r}, r.SeenAt.Add(deadAfter), deadAfter)[0].State, Alive; got != want {
		t.Fatalf("deadAfter after the last beat: %s, want %s", got, want)
	}
	if got, want := Classify([]Record{r}, r.SeenAt.Add(deadAfter+time.Millisecond), deadAfter)[0].State, Silent; got != want {
		t.Fatalf("past deadAfter: %s, want %s", got, want)
	}
}

func TestWatcher_reportsSilentOthers(t *testing.T) {
	url, js, kv := newBucket(t)
	t0 := time.Now()
	var clock atomic.Int64 // the watcher's and the live beat's clock
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	// Beating: stays alive.
	alive, err := Start(context.Background(), BeatConfig{JS: js, KV: kv, Self: Info{Instance: "alive00001"}, Every: 10 * time.Millisecond, Log: quiet, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alive.Stop(context.Background()) })
	// Stopped cleanly: never reported.
	if err := start(t, js, kv, "stop000001", time.Hour).Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Crashed: its last beat was at about t0.
	nc, ownJS, own := openBucket(t, url)
	start(t, ownJS, own, "crash00001", time.Hour)
	nc.Close()
	// This instance, silent too, but never reported to itself.
	put(t, kv, Record{Instance: "self000001", SeenAt: t0.Add(-time.Hour)})

	reports := make(chan []string)
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		JS: js, KV: kv, Self: "self000001", DeadAfter: time.Minute, Every: 10 * time.Millisecond, Log: quiet,
		Now: now,
		Report: func(silent []Record) {
			var ids []string
			for _, r := range silent {
				ids = append(ids, r.Instance)
			}
			select {
			case reports <- ids:
			case <-ctx.Done():
			}
		},
	}
	ran := make(chan error)
	go func() { ran <- w.Run(ctx) }()
	next := func() []string {
		t.Helper()
		select {
		case ids := <-reports:
			return ids
		case <-time.After(10 * time.Second):
			t.Fatal("no report")
			return nil
		}
	}
	if got := next(); len(got) != 0 {
		t.Fatalf("within deadAfter: reported %v, want none", got)
	}
	clock.Store(t0.Add(2 * time.Minute).UnixNano()) // the crashed one is past deadAfter; the live one beats on
	waitFor(t, "the crashed instance reported", func() bool {
		return slices.Equal(next(), []string{"crash00001"})
	})
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRetire(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		rec     *Record // nil: the instance never beat
		wantErr error
	}{
		{name: "silent", rec: &Record{SeenAt: now.Add(-time.Hour)}},
		{name: "stopped cleanly", rec: &Record{SeenAt: now.Add(-time.Second), StoppedAt: now.Add(-time.Second)}},
		{name: "never beat", rec: nil},
		{name: "alive", rec: &Record{SeenAt: now.Add(-time.Second)}, wantErr: ErrAlive},
		{name: "already retired", rec: &Record{SeenAt: now.Add(-time.Hour), RetiredBy: "other00001", RetiredAt: now}, wantErr: ErrRetired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, js, kv := newBucket(t)
			if tt.rec != nil {
				r := *tt.rec
				r.Instance = "gone000001"
				put(t, kv, r)
			}
			err := Retire(context.Background(), js, kv, "gone000001", "adopt00001", now, time.Minute)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Retire: %v, want %v", err, tt.wantErr)
			}
			r := read(t, js, kv, "gone000001")
			wantBy := "adopt00001"
			if tt.rec != nil && tt.wantErr != nil {
				wantBy = tt.rec.RetiredBy
			}
			if got, want := r.RetiredBy, wantBy; got != want {
				t.Fatalf("retired by %q, want %q", got, want)
			}
		})
	}
}

func TestRetire_concurrentAdoptersOneWins(t *testing.T) {
	for _, tt := range []struct {
		name  string
		beat  bool
		clock time.Duration // the adopters' clock, after now
	}{
		{name: "silent instance", beat: true, clock: time.Hour},
		{name: "instance that never beat"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, js, kv := newBucket(t)
			if tt.beat {
				nc, ownJS, own := openBucket(t, url)
				start(t, ownJS, own, "gone000001", time.Hour)
				nc.Close()
			}
			const n = 8
			adopters, adopterJS := make([]jetstream.KeyValue, n), make([]jetstream.JetStream, n)
			for i := range adopters {
				_, adopterJS[i], adopters[i] = openBucket(t, url)
			}
			errs := make([]error, n)
			var wg sync.WaitGroup
			gate := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-gate
					errs[i] = Retire(context.Background(), adopterJS[i], adopters[i], "gone000001", fmt.Sprintf("adopt%05d", i), time.Now().Add(tt.clock), time.Minute)
				})
			}
			close(gate)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("adopters %d and %d both won", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, ErrRetired):
					t.Fatalf("adopter %d: %v, want ErrRetired", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no adopter won")
			}
			if got, want := read(t, js, kv, "gone000001").RetiredBy, fmt.Sprintf("adopt%05d", winner); got != want {
				t.Fatalf("retired by %q, want the winner %q", got, want)
			}
		})
	}
}

func TestBeat_retiredStopsAtNextBeat(t *testing.T) {
	_, js, kv := newBucket(t)
	b := start(t, js, kv, "back000001", 10*time.Millisecond)
	// An adopter whose clock is an hour on judges it silent (it was cut off, say).
	if err := Retire(context.Background(), js, kv, "back000001", "adopt00001", time.Now().Add(time.Hour), time.Minute); err != nil {
		t.Fatal(err)
	}
	waitDone(t, b)
	if err := b.Err(); !errors.Is(err, ErrRetired) {
		t.Fatalf("Err: %v, want ErrRetired", err)
	}
	if err := b.Stop(context.Background()); !errors.Is(err, ErrRetired) {
		t.Fatalf("Stop: %v, want ErrRetired", err)
	}
	r := read(t, js, kv, "back000001")
	if got, want := r.RetiredBy, "adopt00001"; got != want {
		t.Fatalf("retired by %q, want %q: the beat wrote over the retirement", got, want)
	}
	if !r.StoppedAt.IsZero() {
		t.Fatal("a fenced beat wrote its stop mark")
	}
	// It never starts again either.
	_, err := Start(context.Background(), BeatConfig{JS: js, KV: kv, Self: Info{Instance: "back000001"}, Log: quiet})
	if !errors.Is(err, ErrRetired) {
		t.Fatalf("Start of a retired instance: %v, want ErrRetired", err)
	}
}

func TestBeat_secondProcessSupersedes(t *testing.T) {
	_, js, kv := newBucket(t)
	a := start(t, js, kv, "twin000001", 10*time.Millisecond)
	b := start(t, js, kv, "twin000001", 10*time.Millisecond) // the same ledger file, run twice
	waitDone(t, a)
	if err := a.Err(); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("first process: %v, want ErrSuperseded", err)
	}
	last := b.LastBeat()
	waitFor(t, "the second process to beat on", func() bool { return b.LastBeat().After(last) })
	if err := b.Err(); err != nil {
		t.Fatalf("second process: %v", err)
	}
	if got, want := read(t, js, kv, "twin000001").Boot, b.boot; got != want {
		t.Fatalf("record boot %q, want the second process's %q", got, want)
	}
}

func TestBeat_ownWriteWithLostReplyIsNotAnotherProcess(t *testing.T) {
	_, js, kv := newBucket(t)
	b := start(t, js, kv, "self000001", time.Hour)
	// A beat of ours reached the server but its reply was lost: the revision moved on.
	r := read(t, js, kv, "self000001")
	r.SeenAt = r.SeenAt.Add(time.Millisecond)
	put(t, kv, r)
	if err := b.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if read(t, js, kv, "self000001").StoppedAt.IsZero() {
		t.Fatal("no clean-stop mark")
	}
}

func TestBeat_lostReplyOverTheWire(t *testing.T) {
	s := natstest.Run(t)
	if _, err := Ensure(context.Background(), natstest.Connect(t, s), "instances", 1); err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start("127.0.0.1:0", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	js := natstest.ConnectURL(t, p.URL(), nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1))
	kv, err := js.KeyValue(context.Background(), "instances")
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, js, kv, "lost000001", 20*time.Millisecond)
	// The next beat's update reaches the server; its reply does not, and the connection drops.
	p.CutAfter([]byte("HPUB $KV.instances.lost000001 "), 1)
	waitFor(t, "the cut", func() bool { return p.Cuts() == 1 })
	cut := time.Now()
	waitFor(t, "a beat after the cut", func() bool { return b.LastBeat().After(cut) })
	if err := b.Err(); err != nil {
		t.Fatalf("after a lost reply: %v", err)
	}
	if err := b.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func TestStart_takesOverEarlierRun(t *testing.T) {
	tests := []struct {
		name string
		rec  Record
	}{
		{name: "stopped cleanly", rec: Record{Boot: "earlier", SeenAt: time.Now().Add(-time.Hour), StoppedAt: time.Now().Add(-time.Hour)}},
		{name: "crashed", rec: Record{Boot: "earlier", SeenAt: time.Now().Add(-time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, js, kv := newBucket(t)
			tt.rec.Instance = "again00001"
			put(t, kv, tt.rec)
			b := start(t, js, kv, "again00001", time.Hour)
			r := read(t, js, kv, "again00001")
			if got, want := r.Boot, b.boot; got != want {
				t.Fatalf("boot %q, want %q", got, want)
			}
			if got, want := Classify([]Record{r}, time.Now(), time.Minute)[0].State, Alive; got != want {
				t.Fatalf("state %s, want %s", got, want)
			}
		})
	}
}

// TestList_wholeOrError: a listing whose context ends before every record was read is an
// error, never a shorter list: a watcher reads a missing record as an instance gone, and a
// missing older version as "claims may go on" (jetstream's ListKeys, used before, returned no
// records and no error when its deadline passed first). Deadlines sweep the whole listing,
// from before its first request to after its last record.
func TestList_wholeOrError(t *testing.T) {
	_, js, kv := newBucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if none, err := List(ctx, js, kv); err != nil || len(none) != 0 {
		t.Fatalf("empty bucket: %d records, %v", len(none), err)
	}
	const n = 50
	for i := range n {
		put(t, kv, Record{Instance: fmt.Sprintf("inst%06d", i), MchID: "1900000001", SeenAt: time.Now()})
	}
	began := time.Now()
	whole, err := List(context.Background(), js, kv)
	took := time.Since(began)
	if err != nil || len(whole) != n {
		t.Fatalf("listing without a deadline: %d records, %v; want %d", len(whole), err, n)
	}
	if !slices.IsSortedFunc(whole, func(a, b Record) int { return strings.Compare(a.Instance, b.Instance) }) {
		t.Fatal("records not in instance order")
	}
	cut, complete := 0, 0
	step := max(took/100, time.Microsecond)
	for d := time.Duration(0); d <= 2*took; d += step {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		recs, err := List(ctx, js, kv)
		cancel()
		switch {
		case err != nil:
			cut++
		case len(recs) != n:
			t.Fatalf("deadline %v: %d of %d records and no error", d, len(recs), n)
		default:
			complete++
		}
	}
	t.Logf("%d listings cut short (errors), %d complete", cut, complete)
}

// TestList_whileEveryKeyBeats: every instance beats while the listings run (a bucket keeps one
// value per key, so each beat removes the value a listing may be about to read) and new ones
// start, and every listing still holds every instance there was before it began: a watch
// alone ends early when a key delivered twice, or a new one, stands in for one not yet
// delivered.
func TestList_whileEveryKeyBeats(t *testing.T) {
	_, js, kv := newBucket(t)
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("beat%06d", i)
		put(t, kv, Record{Instance: ids[i], SeenAt: time.Now()})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = kv.Put(ctx, id, encode(Record{Instance: id, SeenAt: time.Now()}))
			}
		}()
	}
	wg.Add(1)
	go func() { // instances starting
		defer wg.Done()
		for i := 0; i < 50 && ctx.Err() == nil; i++ {
			id := fmt.Sprintf("new%07d", i)
			_, _ = kv.Create(ctx, id, encode(Record{Instance: id, SeenAt: time.Now()}))
		}
	}()
	for i := range 50 {
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		recs, err := List(lctx, js, kv)
		lcancel()
		if err != nil {
			t.Fatalf("listing %d: %v", i, err)
		}
		got := map[string]bool{}
		for _, r := range recs {
			got[r.Instance] = true
		}
		for _, id := range ids {
			if !got[id] {
				t.Fatalf("listing %d: %s missing (%d records) while the instances beat", i, id, len(recs))
			}
		}
	}
}

// TestList_aLaggingCopyIsNotRead: a replica of the bucket behind its leader (here a mirror
// that serves direct gets and holds none of the records) must not shorten a listing or hide
// a record: an older version's instance read as absent lifts intake's pause.
func TestList_aLaggingCopyIsNotRead(t *testing.T) {
	ctx := context.Background()
	_, js, kv := newBucket(t)
	const n = 10
	for i := range n {
		put(t, kv, Record{Instance: fmt.Sprintf("inst%06d", i), SeenAt: time.Now()})
	}
	natstest.LaggingCopy(t, js, kv)
	for round := range 20 {
		recs, err := List(ctx, js, kv)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != n {
			t.Fatalf("listing %d holds %d records, want %d", round, len(recs), n)
		}
		id := fmt.Sprintf("inst%06d", round%n)
		if _, err := Get(ctx, js, kv, id); err != nil {
			t.Fatalf("Get(%s), round %d: %v", id, round, err)
		}
	}
}
