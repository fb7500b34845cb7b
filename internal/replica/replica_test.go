package replica_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/internal/testingutil"
	"github.com/paystream/paystream/pkg/ledger"
)

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       replica.Config
		wantErr error
	}{
		{name: "file", c: replica.Config{DB: "l.db", Replica: "file:///var/lib/paystream/replica"}},
		{name: "nats with tls", c: replica.Config{DB: "l.db", Replica: "nats://n1:4222/ledger-p1", Creds: "c", RootCA: "ca", ClientCert: "c", ClientKey: "k"}},
		{name: "s3", c: replica.Config{DB: "l.db", Replica: "s3://bucket/p1", SyncInterval: time.Second}},
		{name: "no db", c: replica.Config{Replica: "file:///r"}, wantErr: replica.ErrInvalid},
		{name: "no replica", c: replica.Config{DB: "l.db"}, wantErr: replica.ErrInvalid},
		{name: "a path, not a URL", c: replica.Config{DB: "l.db", Replica: "/var/replica"}, wantErr: replica.ErrInvalid},
		{name: "unknown scheme", c: replica.Config{DB: "l.db", Replica: "ftp://h/r"}, wantErr: replica.ErrInvalid},
		{name: "nats without bucket", c: replica.Config{DB: "l.db", Replica: "nats://n1:4222"}, wantErr: replica.ErrInvalid},
		{name: "nats creds on s3", c: replica.Config{DB: "l.db", Replica: "s3://b/p", Creds: "c"}, wantErr: replica.ErrInvalid},
		{name: "cert without key", c: replica.Config{DB: "l.db", Replica: "nats://n1/b", ClientCert: "c"}, wantErr: replica.ErrInvalid},
		{name: "negative interval", c: replica.Config{DB: "l.db", Replica: "file:///r", SyncInterval: -time.Second}, wantErr: replica.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tc.wantErr)
			}
			path := filepath.Join(t.TempDir(), "litestream.yml")
			err = replica.WriteConfig(path, tc.c)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("WriteConfig() = %v, want %v", err, tc.wantErr)
			}
			if _, statErr := os.Stat(path); (statErr == nil) != (tc.wantErr == nil) {
				t.Fatalf("config file written: %v, want %v", statErr == nil, tc.wantErr == nil)
			}
		})
	}
}

// TestWriteConfig checks the YAML against litestream v0.5's config keys (cmd/litestream
// DBConfig and ReplicaConfig).
func TestWriteConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "litestream.yml")
	err := replica.WriteConfig(path,
		replica.Config{DB: "/data/p1.db", Replica: "nats://n1:4222/ledger-p1", SyncInterval: 250 * time.Millisecond,
			Creds: "/etc/p.creds", RootCA: "/etc/ca.pem", ClientCert: "/etc/c.pem", ClientKey: "/etc/c.key"},
		replica.Config{DB: "/data/p2.db", Replica: "file:///backup/p2"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"logging": map[string]any{"type": "json", "level": "info", "stderr": true},
		"dbs": []any{
			map[string]any{"path": "/data/p1.db", "monitor-interval": "250ms", "replica": map[string]any{
				"url": "nats://n1:4222/ledger-p1", "sync-interval": "250ms", "creds": "/etc/p.creds",
				"root-cas": []any{"/etc/ca.pem"}, "client-cert": "/etc/c.pem", "client-key": "/etc/c.key"}},
			map[string]any{"path": "/data/p2.db", "replica": map[string]any{"url": "file:///backup/p2"}},
		},
	}
	if got, want := yamlString(t, got), yamlString(t, want); got != want {
		t.Fatalf("config:\n%s\nwant:\n%s", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config mode = %v, %v, want 0600", fi.Mode().Perm(), err)
	}
}

func yamlString(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestVersion_Makefile: `make litestream` and Binary build the same release.
func TestVersion_Makefile(t *testing.T) {
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("\nLITESTREAM_VERSION := "+replica.Version+"\n")) {
		t.Fatalf("Makefile does not set LITESTREAM_VERSION := %s", replica.Version)
	}
}

func TestMetaDir(t *testing.T) {
	if got, want := replica.MetaDir("/data/ledger.db"), "/data/.ledger.db-litestream"; got != want {
		t.Fatalf("MetaDir = %q, want %q", got, want)
	}
}

// mustBinary returns litestream, built from the module proxy on first use.
func mustBinary(t *testing.T) string {
	t.Helper()
	bin, err := replica.Binary("../..")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// testLogger logs through t, so litestream's lines show with a failing test.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// payouts builds n valid payout requests with random keys.
func payouts(n int) []ledger.Payout {
	ps := make([]ledger.Payout, n)
	for i := range ps {
		key := rand.Text()[:24]
		h := sha256.Sum256([]byte(key))
		ps[i] = ledger.Payout{OutDetailNo: key, MchID: "1900000109", AppID: "wxapp", OpenID: "o-" + key,
			Remark: "prize", Rail: "direct", GroupKey: "1900000109/direct", Amount: int64(100 + i),
			ContentHash: h[:], StreamSeq: uint64(i + 1)}
	}
	return ps
}

func mustInsert(t *testing.T, db *ledger.DB, ps []ledger.Payout) {
	t.Helper()
	res, err := db.InsertPayouts(context.Background(), ps)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Status != ledger.Inserted {
			t.Fatalf("InsertPayouts[%d] = %v, want inserted", i, r.Status)
		}
	}
}

// replicatedWithin restores c's replica into a scratch file until it holds key, and returns
// how long that took from now (the replication lag of the commit of key, to within one
// restore). Bounded by 30 s.
func replicatedWithin(t *testing.T, bin string, c replica.Config, key string) time.Duration {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	probe := replica.Config{DB: filepath.Join(t.TempDir(), "probe.db"), Replica: c.Replica,
		Creds: c.Creds, RootCA: c.RootCA, ClientCert: c.ClientCert, ClientKey: c.ClientKey}
	quiet := slog.New(slog.DiscardHandler)
	for deadline := start.Add(30 * time.Second); time.Now().Before(deadline); {
		for _, f := range []string{probe.DB, probe.DB + "-wal", probe.DB + "-shm"} {
			os.Remove(f)
		}
		restored, err := replica.Restore(ctx, bin, probe, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if restored {
			db, err := ledger.OpenReadOnly(ctx, probe.DB)
			if err != nil {
				t.Fatal(err)
			}
			_, err = db.Payout(ctx, key)
			db.Close()
			if err == nil {
				return time.Since(start)
			} else if !errors.Is(err, ledger.ErrNotFound) {
				t.Fatal(err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // poll interval, not synchronisation
		}
	}
	t.Fatalf("payout %s not on the replica after 30 s", key)
	return 0
}

// testReplicateRestore replicates a ledger of a few thousand payouts to c.Replica while
// writing, measures the lag, loses the disk (ledger, -wal, -shm, litestream's state) and
// restores: the restored ledger audits clean and holds every payout that was replicated and
// none written after litestream stopped.
func testReplicateRestore(t *testing.T, c replica.Config) {
	ctx := context.Background()
	bin := mustBinary(t)
	log := testLogger(t)
	db, err := ledger.Open(ctx, c.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	cfg := filepath.Join(t.TempDir(), "litestream.yml")
	if err := replica.WriteConfig(cfg, c); err != nil {
		t.Fatal(err)
	}
	p, err := replica.Start(ctx, bin, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	var keys []string
	insert := func(n int) string {
		ps := payouts(n)
		mustInsert(t, db, ps)
		for _, p := range ps {
			keys = append(keys, p.OutDetailNo)
		}
		return ps[n-1].OutDetailNo
	}
	// The first group goes with litestream's initial snapshot; the rest as WAL frames.
	replicatedWithin(t, bin, c, insert(500))
	for range 9 { // 5000 payouts in all, written while litestream replicates
		insert(500)
	}
	var idle, loaded []time.Duration
	for range 3 {
		idle = append(idle, replicatedWithin(t, bin, c, insert(100)))
	}
	// Under load: another 500-payout group committed every 100 ms (5000 payouts/s) while a
	// marker is measured.
	stop, written := make(chan struct{}), make(chan []string)
	go func() {
		var ks []string
		defer func() { written <- ks }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond): // the load's pace, not synchronisation
			}
			ps := payouts(500)
			if _, err := db.InsertPayouts(ctx, ps); err != nil {
				t.Error(err)
				return
			}
			for _, p := range ps {
				ks = append(ks, p.OutDetailNo)
			}
		}
	}()
	for range 3 {
		loaded = append(loaded, replicatedWithin(t, bin, c, insert(100)))
	}
	close(stop)
	keys = append(keys, <-written...)
	scheme, _, _ := strings.Cut(c.Replica, ":")
	t.Logf("replication lag, commit to %s replica (sync interval %v, 0 = 1 s): idle %v; with 500-payout commits every 100 ms %v; %d payouts",
		scheme, c.SyncInterval, idle, loaded, len(keys))

	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Written after litestream stopped: on the lost disk only.
	lost := payouts(100)
	mustInsert(t, db, lost)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{c.DB, c.DB + "-wal", c.DB + "-shm", replica.MetaDir(c.DB)} {
		if err := os.RemoveAll(f); err != nil {
			t.Fatal(err)
		}
	}

	restored, err := replica.Restore(ctx, bin, c, log)
	if err != nil {
		t.Fatal(err)
	}
	if !restored {
		t.Fatal("Restore: restored = false, want true")
	}
	rep, err := ledger.Audit(ctx, []string{c.DB}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		var b strings.Builder
		rep.WriteText(&b)
		t.Fatalf("audit of the restored ledger:\n%s", b.String())
	}
	if db, err = ledger.Open(ctx, c.DB); err != nil {
		t.Fatal(err)
	}
	s, err := db.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Payouts["RECEIVED"].Count, len(keys); got != want {
		t.Fatalf("restored ledger holds %d payouts, want %d (the %d written after litestream stopped are lost)", got, want, len(lost))
	}
	for _, k := range keys {
		if _, err := db.Payout(ctx, k); err != nil {
			t.Fatalf("payout %s: %v", k, err)
		}
	}
	if _, err := db.Payout(ctx, lost[0].OutDetailNo); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("payout written after litestream stopped: %v, want ErrNotFound", err)
	}
	// The restored ledger takes writes.
	mustInsert(t, db, payouts(10))
}

func TestReplicate_File(t *testing.T) {
	dir := t.TempDir()
	testReplicateRestore(t, replica.Config{DB: filepath.Join(dir, "ledger.db"),
		Replica: "file://" + filepath.Join(t.TempDir(), "replica")})
}

// TestReplicate_NATS stores the replica in a JetStream object store on an embedded server,
// as deploy/ does on the cluster paystream already runs.
func TestReplicate_NATS(t *testing.T) {
	s := natstest.Run(t)
	js := natstest.Connect(t, s)
	c := replica.Config{DB: filepath.Join(t.TempDir(), "ledger.db"),
		Replica: s.ClientURL() + "/paystream-ledger-p1"}
	ctx := context.Background()
	for range 2 { // the second call finds the bucket
		if err := replica.EnsureBucket(ctx, js, c, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.ObjectStore(ctx, "paystream-ledger-p1"); err != nil {
		t.Fatalf("bucket: %v", err)
	}
	testReplicateRestore(t, c)
}

func TestEnsureBucket_NotNATS(t *testing.T) {
	// A file replica needs no bucket: EnsureBucket must not touch JetStream (nil here).
	if err := replica.EnsureBucket(context.Background(), nil, replica.Config{DB: "l.db", Replica: "file:///r"}, 3); err != nil {
		t.Fatal(err)
	}
}

func TestRestore_NoReplica(t *testing.T) {
	bin := mustBinary(t)
	dir := t.TempDir()
	c := replica.Config{DB: filepath.Join(dir, "ledger.db"), Replica: "file://" + filepath.Join(t.TempDir(), "empty")}
	restored, err := replica.Restore(context.Background(), bin, c, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if restored {
		t.Fatal("restored = true with no replica")
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("Restore created %v (%v), want nothing", ents, err)
	}
}

func TestRestore_DBExists(t *testing.T) {
	bin := mustBinary(t)
	c := replica.Config{DB: filepath.Join(t.TempDir(), "ledger.db"), Replica: "file://" + t.TempDir()}
	if err := os.WriteFile(c.DB, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	restored, err := replica.Restore(context.Background(), bin, c, testLogger(t))
	if err != nil || restored {
		t.Fatalf("Restore = %v, %v, want false, nil", restored, err)
	}
	if b, _ := os.ReadFile(c.DB); string(b) != "mine" {
		t.Fatalf("existing file changed to %q", b)
	}
}

// TestRestore_OrphanWAL: a WAL left beside a missing ledger belonged to the lost file; it must
// not be replayed into a restored one.
func TestRestore_OrphanWAL(t *testing.T) {
	bin := mustBinary(t)
	c := replica.Config{DB: filepath.Join(t.TempDir(), "ledger.db"), Replica: "file://" + t.TempDir()}
	if err := os.WriteFile(c.DB+"-wal", []byte("old frames"), 0o600); err != nil {
		t.Fatal(err)
	}
	restored, err := replica.Restore(context.Background(), bin, c, testLogger(t))
	if !errors.Is(err, replica.ErrOrphanWAL) || restored {
		t.Fatalf("Restore = %v, %v, want ErrOrphanWAL", restored, err)
	}
	if _, err := os.Stat(c.DB); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ledger file: %v, want none", err)
	}
}

// TestStart_Exits: litestream exiting on its own (here: no such config) is reported.
func TestStart_Exits(t *testing.T) {
	bin := mustBinary(t)
	p, err := replica.Start(context.Background(), bin, filepath.Join(t.TempDir(), "missing.yml"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		p.Stop()
		t.Fatal("litestream still running on a missing config")
	}
	if err := p.Err(); !errors.Is(err, replica.ErrExited) {
		t.Fatalf("Err() = %v, want ErrExited", err)
	}
	if err := p.Stop(); !errors.Is(err, replica.ErrExited) {
		t.Fatalf("Stop() after exit = %v, want ErrExited", err)
	}
}

// TestStart_Cancel: cancelling Start's ctx stops litestream as Stop does, cleanly.
func TestStart_Cancel(t *testing.T) {
	l := newLedgerReplica(t)
	ctx, cancel := context.WithCancel(context.Background())
	p := l.start(ctx, t)
	cancel()
	select {
	case <-p.Done():
	case <-time.After(replica.StopTimeout + 5*time.Second):
		t.Fatal("litestream still running after its ctx was cancelled")
	}
	if err := p.Err(); err != nil {
		t.Fatalf("Err() = %v, want nil", err)
	}
}

// TestAwaitPrevious: a new start waits for the litestream recorded in the pid file until it
// has exited, and kills one that outlives the grace; a stale file, or a pid that is not
// litestream, is not waited for (and never killed).
func TestAwaitPrevious(t *testing.T) {
	l := newLedgerReplica(t)
	pidFile := filepath.Join(t.TempDir(), "litestream.pid")
	ctx := context.Background()
	start := func() *replica.Process {
		p := l.start(ctx, t)
		if err := replica.WritePID(pidFile, p.Pid()); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("waits until it exits", func(t *testing.T) {
		p := start()
		waiting := testingutil.NewLogWatch("still running")
		awaited := make(chan error, 1)
		go func() {
			awaited <- replica.AwaitPrevious(ctx, pidFile, time.Minute, slog.New(slog.NewTextHandler(waiting, nil)))
		}()
		select {
		case <-waiting.Seen(): // it found the earlier litestream and waits for it
		case err := <-awaited:
			t.Fatalf("AwaitPrevious returned (%v) while the earlier litestream ran", err)
		case <-time.After(10 * time.Second):
			t.Fatal("AwaitPrevious neither waited nor returned")
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-awaited:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("AwaitPrevious still waiting after the earlier litestream exited")
		}
	})
	t.Run("kills it after the grace", func(t *testing.T) {
		p := start()
		if err := replica.AwaitPrevious(ctx, pidFile, 200*time.Millisecond, testLogger(t)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the earlier litestream outlived AwaitPrevious")
		}
	})
	t.Run("not litestream, or gone", func(t *testing.T) {
		for _, pid := range []int{os.Getpid(), 1 << 22} {
			if err := replica.WritePID(pidFile, pid); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- replica.AwaitPrevious(ctx, pidFile, time.Minute, testLogger(t)) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("AwaitPrevious waited for pid %d", pid)
			}
			if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("pid file left behind: %v", err)
			}
		}
	})
}

// ledgerReplica is a ledger file with a litestream config replicating it into a directory.
type ledgerReplica struct {
	bin, cfg string
	c        replica.Config
	db       *ledger.DB
}

func newLedgerReplica(t *testing.T) *ledgerReplica {
	t.Helper()
	l := &ledgerReplica{bin: mustBinary(t), cfg: filepath.Join(t.TempDir(), "litestream.yml"),
		c: replica.Config{DB: filepath.Join(t.TempDir(), "ledger.db"), Replica: "file://" + t.TempDir()}}
	db, err := ledger.Open(context.Background(), l.c.DB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l.db = db
	if err := replica.WriteConfig(l.cfg, l.c); err != nil {
		t.Fatal(err)
	}
	return l
}

// start runs litestream on the ledger and returns once it has shipped a new payout: it is up,
// its signal handler too.
func (l *ledgerReplica) start(ctx context.Context, t *testing.T) *replica.Process {
	t.Helper()
	p, err := replica.Start(ctx, l.bin, l.cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ps := payouts(1)
	mustInsert(t, l.db, ps)
	replicatedWithin(t, l.bin, l.c, ps[0].OutDetailNo)
	return p
}
