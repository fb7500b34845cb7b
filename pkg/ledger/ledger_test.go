package ledger

import (
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestOpen_CreatesPrivateFileAndStableInstanceID(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	id := db.InstanceID()
	if !regexp.MustCompile(`^[0-9A-Za-z]{10}$`).MatchString(id) {
		t.Fatalf("InstanceID = %q, want [0-9A-Za-z]{10}", id)
	}
	mustInsert(t, db, newPayout("k1", 100))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Fatalf("mode = %v, want %v", got, want)
	}
	db2 := mustOpenPath(t, path)
	if got := db2.InstanceID(); got != id {
		t.Fatalf("InstanceID after reopen = %q, want %q", got, id)
	}
	if got := db2.Path(); got != path {
		t.Fatalf("Path = %q, want %q", got, path)
	}
	mustState(t, db2, "k1", PayoutReceived)
	// The chain continues across reopen.
	mustInsert(t, db2, newPayout("k2", 200))
	mustAuditClean(t, db2.now())
}

func TestOpen_OneWriterPerFile(t *testing.T) {
	db := mustOpenLedger(t)
	if _, err := Open(context.Background(), db.Path()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mustOpenPath(t, db.Path())
}

func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	w := mustOpenLedger(t)
	mustInsert(t, w, newPayout("k1", 100))
	r, err := OpenReadOnly(ctx, w.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.InstanceID() != w.InstanceID() {
		t.Fatalf("InstanceID = %q, want %q", r.InstanceID(), w.InstanceID())
	}
	mustInsert(t, w, newPayout("k2", 200)) // the writer goes on; the reader sees it
	sum, err := r.Summary(ctx)
	if err != nil || sum.Payouts[PayoutReceived].Count != 2 {
		t.Fatalf("Summary = %+v, %v; want 2 RECEIVED", sum, err)
	}
	if ts, err := r.Totals(ctx); err != nil || ts[PayoutReceived] != (StateTotal{Count: 2, Amount: 300}) || len(ts) != 1 {
		t.Fatalf("Totals = %v, %v; want 2 RECEIVED of 300 fen", ts, err)
	}
	mustState(t, r, "k2", PayoutReceived)
	if _, err := r.InsertPayouts(ctx, []Payout{newPayout("k3", 1)}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("InsertPayouts on a reader = %v, want ErrReadOnly", err)
	}
	if _, err := OpenReadOnly(ctx, filepath.Join(t.TempDir(), "none.db")); err == nil {
		t.Fatal("OpenReadOnly of a missing file succeeded")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.MarkClaimed(ctx, []int64{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close = %v, want ErrClosed", err)
	}
}

func TestOpen_BadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(path, []byte("this is not a database, just text that is long enough"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), path); err == nil {
		t.Fatal("Open of a non-database succeeded")
	}
	if _, err := Open(context.Background(), ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open(\"\") = %v, want ErrInvalid", err)
	}
}

func TestMigrate_FromEachVersion(t *testing.T) {
	ctx := context.Background()
	all := len(migrations())
	for from := 0; from < all; from++ {
		name := "empty file"
		if from > 0 {
			name = "from " + migrations()[from-1].version
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			var id string
			if from > 0 {
				// Data written under the old schema: by the code of its day where today's
				// cannot write it (testdata/migrate), else by today's.
				fixture := loadFixture(t, migrations()[from-1].version, path)
				old, err := Open(ctx, path, func(d *DB) { d.upTo = from })
				if err != nil {
					t.Fatal(err)
				}
				id = old.InstanceID()
				if !fixture {
					mustSeal(t, old, "B1", "m", 3)
				}
				if err := old.Close(); err != nil {
					t.Fatal(err)
				}
			}
			db := mustOpenPath(t, path)
			var n int
			if err := db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != all {
				t.Fatalf("schema_migrations has %d rows, want %d", n, all)
			}
			at := db.now()
			if from > 0 {
				if db.InstanceID() != id {
					t.Fatalf("InstanceID changed across migration")
				}
				b, err := db.Batch(ctx, "B1")
				if err != nil || len(b.Members) != 3 || checkBatch(b) != nil {
					t.Fatalf("Batch after migration = %+v, %v", b, err)
				}
				at = b.SealedAt // a fixture's batch, never sent, is stuck an hour after it
			}
			mustAuditClean(t, at, path)
		})
	}
}

func TestWrite_RollbackKeepsChainHead(t *testing.T) {
	ctx := context.Background()
	db := mustOpenLedger(t)
	mustInsert(t, db, newPayout("a", 100))
	head := string(db.head)
	boom := errors.New("boom")
	err := db.write(ctx, func(tx *sql.Conn) error {
		if err := db.appendEvent(ctx, tx, event{Source: srcIntake, Kind: kindSubmit}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("write = %v, want boom", err)
	}
	if string(db.head) != head {
		t.Fatal("chain head advanced on rollback")
	}
	mustInsert(t, db, newPayout("b", 100))
	mustAuditClean(t, db.now(), db.Path())
}

func TestOpen_WithMerchant(t *testing.T) {
	ctx := context.Background()
	const ours, theirs = "1900000001", "1900000002"
	tests := []struct {
		name         string
		recorded     string // the file's binding before; "" = none
		merchant     string // WithMerchant on this open; "" = no option
		wantMerchant string // Merchant() after Open
		wantRO       string // Merchant() after OpenReadOnly (which records nothing)
		wantErr      error
	}{
		{name: "unbound, no option", wantMerchant: "", wantRO: ""},
		{name: "unbound file is bound", merchant: ours, wantMerchant: ours, wantRO: ""},
		{name: "same merchant", recorded: ours, merchant: ours, wantMerchant: ours, wantRO: ours},
		{name: "no option keeps the binding", recorded: ours, wantMerchant: ours, wantRO: ours},
		{name: "another merchant", recorded: ours, merchant: theirs, wantErr: ErrWrongMerchant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			db := mustOpenPath(t, path, WithMerchant(tt.recorded))
			if got, want := db.Merchant(), tt.recorded; got != want {
				t.Fatalf("Merchant of the new file = %q, want %q", got, want)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			ro, err := OpenReadOnly(ctx, path, WithMerchant(tt.merchant))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("OpenReadOnly = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				if got, want := ro.Merchant(), tt.wantRO; got != want {
					t.Fatalf("read-only Merchant = %q, want %q", got, want)
				}
				ro.Close()
			}
			db, err = Open(ctx, path, WithMerchant(tt.merchant))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				// Refused without changing the file or keeping it locked.
				db = mustOpenPath(t, path)
				if got, want := db.Merchant(), tt.recorded; got != want {
					t.Fatalf("Merchant after a refused Open = %q, want %q", got, want)
				}
				return
			}
			if got, want := db.Merchant(), tt.wantMerchant; got != want {
				t.Fatalf("Merchant = %q, want %q", got, want)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if got, want := mustOpenPath(t, path).Merchant(), tt.wantMerchant; got != want {
				t.Fatalf("Merchant after reopen = %q, want %q", got, want)
			}
		})
	}
}

// TestPosition: the last payout seq and event id committed, kept as writes commit and read
// back from the file at Open; a failed write moves neither.
func TestPosition(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	db := mustOpenPath(t, path)
	if seq, ev := db.Position(); seq != 0 || ev != 0 {
		t.Fatalf("new ledger Position() = %d, %d, want 0, 0", seq, ev)
	}
	seqs := mustInsert(t, db, newPayout("p1", 100), newPayout("p2", 200))
	seq, ev := db.Position()
	if seq != seqs[1] || ev < 1 {
		t.Fatalf("Position() = %d, %d, want seq %d and an event", seq, ev, seqs[1])
	}
	if err := db.MarkClaimed(ctx, []int64{seqs[0], 9999}); err == nil {
		t.Fatal("MarkClaimed of an unknown seq succeeded")
	}
	if s2, e2 := db.Position(); s2 != seq || e2 != ev {
		t.Fatalf("after a failed write Position() = %d, %d, want %d, %d", s2, e2, seq, ev)
	}
	if err := db.MarkClaimed(ctx, seqs); err != nil {
		t.Fatal(err)
	}
	_, ev2 := db.Position()
	if ev2 <= ev {
		t.Fatalf("after a claim the last event is %d, want past %d", ev2, ev)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if s3, e3 := ro.Position(); s3 != seq || e3 != ev2 {
		t.Fatalf("read-only Position() = %d, %d, want %d, %d", s3, e3, seq, ev2)
	}
	db = mustOpenPath(t, path)
	defer db.Close()
	if s3, e3 := db.Position(); s3 != seq || e3 != ev2 {
		t.Fatalf("reopened Position() = %d, %d, want %d, %d", s3, e3, seq, ev2)
	}
}

// loadFixture writes testdata/migrate/<name>.db.gz, a ledger written by the code of that
// schema's day (one batch B1 of three members m0..m2 sealed), to path, and reports whether
// there is one: a migration that today's code cannot write the old schema for adds one.
func loadFixture(t *testing.T, name, path string) bool {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "migrate", name+".db.gz"))
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return true
}
