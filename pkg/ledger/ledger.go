// Package ledger is paystream's durable record of every payout request, every batch and every
// state change, kept in one SQLite file per processor instance.
//
// The ledger is the source of truth for the rules of money: a request is committed here before
// its message is acked; a batch's out_batch_no, members and frozen body bytes are committed
// (SealBatch) before the first submit; states only move forward; every change is appended to a
// hash-chained events table so an edited history is detectable by Audit.
//
// A DB has one writer connection (every write is one transaction through db.write) and a
// separate read-only pool. All methods are safe for concurrent use. Times are stored as Unix
// milliseconds; amounts are integer fen.
package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Errors callers branch on.
var (
	// ErrNotFound: no batch (or payout) with that key.
	ErrNotFound = errors.New("ledger: not found")
	// ErrIllegalTransition: a state change the state machine forbids; it was logged, counted
	// (IllegalTransitions) and not applied.
	ErrIllegalTransition = errors.New("ledger: illegal transition")
	// ErrLocked: another DB (in this or another process) has the file open for writing.
	ErrLocked = errors.New("ledger: file is open by another writer")
	// ErrClosed: a write after Close.
	ErrClosed = errors.New("ledger: closed")
	// ErrReadOnly: a write through a DB from OpenReadOnly.
	ErrReadOnly = errors.New("ledger: opened read-only")
	// ErrInvalid: the caller passed data that violates a ledger rule (wrong totals, cap,
	// member not claimed, body not matching its members, …). Nothing was written.
	ErrInvalid = errors.New("ledger: invalid")
	// ErrWrongMerchant: the file is bound to another merchant than the one given to
	// WithMerchant. Such a ledger must never be used to pay (docs/money-rules.md#merchant).
	ErrWrongMerchant = errors.New("ledger: bound to another merchant")
)

// Option configures Open.
type Option func(*DB)

// WithNow sets the clock used for every timestamp the ledger writes (default time.Now).
func WithNow(now func() time.Time) Option { return func(db *DB) { db.now = now } }

// WithLogger sets the logger for illegal transitions and conflicts (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(db *DB) { db.log = l } }

// WithMerchant binds the ledger to the merchant mchid. Open records it in the file (meta key
// "mchid") if the file records none, and fails with an error wrapping ErrWrongMerchant if
// the file records another; OpenReadOnly only checks. Empty mchid: no binding, no check
// (the default). Audit reports payouts and batches of any other merchant in a bound file.
func WithMerchant(mchid string) Option { return func(db *DB) { db.want = mchid } }

// WithCommitObserver sets f to be called after each committed write transaction with the
// time it took from BEGIN to COMMIT: the wait for the single writer (another write in
// progress) is not counted. f runs on the writing goroutine after the writer is released;
// it must be quick and safe for concurrent use. Writes that fail or roll back are not
// observed.
func WithCommitObserver(f func(time.Duration)) Option { return func(db *DB) { db.observe = f } }

// DB is an open ledger file. Close it when done; it is safe for concurrent use.
type DB struct {
	path       string
	instanceID string
	merchant   string // the mchid recorded in meta; "" if none
	now        func() time.Time
	log        *slog.Logger
	want       string              // the merchant from WithMerchant; "" = no binding
	observe    func(time.Duration) // WithCommitObserver; nil = none

	wdb   *sql.DB   // the writer's pool: one connection, held as wconn
	wconn *sql.Conn // the single writer; transactions are BEGIN IMMEDIATE … COMMIT on it
	rdb   *sql.DB   // read-only pool

	upTo      int                    // migrations to apply; 0 = all (tests open older schema versions)
	sem       chan struct{}          // weight-1 write semaphore, honours ctx
	head      []byte                 // hash of the last event; guarded by sem
	lastEvent int64                  // id of the last event; guarded by sem
	onCommit  []func()               // run after the current write commits; guarded by sem
	closed    atomic.Bool            // set by Close, under sem, before the key index is released
	rawStmts  map[string]driver.Stmt // insertRows' statements, prepared on wconn's driver conn; guarded by sem
	named     []driver.NamedValue    // insertRows' argument buffer; guarded by sem
	rowArgs   []any                  // storeRows' argument buffer; guarded by sem
	keys      *keyIndex
	lock      *os.File // holds the writer's flock on the file until Close
	illegal   atomic.Int64
	posSeq    atomic.Int64 // the last payout seq committed (Position)
	posEvent  atomic.Int64 // the last event id committed (Position)
	closeOne  sync.Once
}

const driverName = "sqlite3_paystream"

func init() {
	sql.Register(driverName, &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			// Inserts only append (no random-key index), so a modest page cache suffices and
			// memory stays flat however large the ledger grows: 16 MiB per connection, no
			// mmap (mapped pages would count as resident). A bigger auto-checkpoint amortises
			// rewriting pages dirtied by many commits.
			_, err := c.Exec(`PRAGMA cache_size = -16384; PRAGMA mmap_size = 0;
				PRAGMA wal_autocheckpoint = 10000; PRAGMA temp_store = MEMORY;`, nil)
			return err
		},
	})
}

// Open opens (creating it with mode 0600 if absent) the ledger at path and applies any
// pending embedded migrations. Only one DB may have a file open at a time (ErrLocked
// otherwise); readers such as Audit need no DB. Open loads every key's hash into memory
// (8–21 bytes a payout, outside the Go heap). The caller must Close the DB.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	db := &DB{path: path, now: time.Now, log: slog.Default(), sem: make(chan struct{}, 1)}
	for _, o := range opts {
		o(db)
	}
	if path == "" {
		return nil, fmt.Errorf("open ledger: %w: empty path", ErrInvalid)
	}
	// One writer per file: the in-memory key index must see every insert. The flock is
	// released by Close or by the kernel when the process dies.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			err = ErrLocked
		}
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	db.lock = f
	if db.wdb, err = sql.Open(driverName, dsn(path, false)); err != nil {
		f.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	db.wdb.SetMaxOpenConns(1)
	db.wdb.SetMaxIdleConns(1)
	db.wdb.SetConnMaxLifetime(0)
	if db.wconn, err = db.wdb.Conn(ctx); err != nil {
		db.wdb.Close()
		f.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	if db.upTo == 0 {
		db.upTo = len(migrations())
	}
	if err := db.init(ctx, db.upTo); err != nil {
		db.wconn.Close()
		db.wdb.Close()
		f.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	if db.rdb, err = sql.Open(driverName, dsn(path, true)); err != nil {
		db.wconn.Close()
		db.wdb.Close()
		f.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	return db, nil
}

// OpenReadOnly opens an existing ledger for reading only, alongside a running writer or
// without one: Summary, Batch, DueBatches, NextDue, PayoutsInState, Payout and
// PendingOutcomes work; every write method returns ErrReadOnly. It takes no lock and applies
// no migration (an older schema is an error). The caller must Close the DB.
func OpenReadOnly(ctx context.Context, path string, opts ...Option) (*DB, error) {
	db := &DB{path: path, now: time.Now, log: slog.Default(), sem: make(chan struct{}, 1)}
	for _, o := range opts {
		o(db)
	}
	var err error
	if db.rdb, err = openReader(ctx, path); err != nil {
		return nil, err
	}
	err = db.rdb.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&db.instanceID)
	if err == nil {
		err = db.loadMerchant(ctx, db.rdb, false)
	}
	if err == nil {
		var seq, ev int64
		err = db.rdb.QueryRowContext(ctx, `SELECT (SELECT coalesce(max(seq), 0) FROM payouts), (SELECT coalesce(max(id), 0) FROM events)`).Scan(&seq, &ev)
		db.posSeq.Store(seq)
		db.posEvent.Store(ev)
	}
	if err != nil {
		db.rdb.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	return db, nil
}

// openReader opens the read-only pool of an existing, fully migrated ledger file.
func openReader(ctx context.Context, path string) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	rdb, err := sql.Open(driverName, dsn(path, true))
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	var have int
	err = rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&have)
	if err == nil && have != len(migrations()) {
		err = fmt.Errorf("schema has %d of %d migrations; open it with the processor to migrate", have, len(migrations()))
	}
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("open ledger %s: not a readable ledger: %w", path, err)
	}
	return rdb, nil
}

// stmtCache is how many prepared statements each connection keeps: the ledger has about 125
// statement texts (the writer uses fewer), and an IN list's text varies with its length.
// Without it the bills rail's writes spent a quarter of their CPU preparing
// (BenchmarkBillLifecycle: 1.9 → 1.4 ms of CPU per bill's three transactions).
const stmtCache = 128

// dsn builds the connection string of STYLE.md; readOnly connections use mode=ro. Each
// connection keeps its last stmtCache prepared statements by their text (mattn/go-sqlite3's
// _stmt_cache_size), so a statement run again is not parsed and planned again.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", "5000")
	q.Set("_foreign_keys", "on")
	q.Set("_stmt_cache_size", strconv.Itoa(stmtCache))
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "FULL")
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// init applies the first upTo migrations and loads the meta data and the event chain head.
func (db *DB) init(ctx context.Context, upTo int) error {
	if err := migrate(ctx, db.wconn, upTo, db.now); err != nil {
		return err
	}
	return db.write(ctx, func(tx *sql.Conn) error {
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&db.instanceID)
		if errors.Is(err, sql.ErrNoRows) {
			db.instanceID = newInstanceID()
			_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('instance_id', ?), ('created_at', ?)`,
				db.instanceID, db.now().UTC().Format(time.RFC3339Nano))
		}
		if err != nil {
			return fmt.Errorf("instance id: %w", err)
		}
		if err := db.loadMerchant(ctx, tx, true); err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT id, hash FROM events ORDER BY id DESC LIMIT 1`).Scan(&db.lastEvent, &db.head)
		if errors.Is(err, sql.ErrNoRows) {
			db.head, err = []byte{}, nil
		}
		if err != nil {
			return err
		}
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM payouts`).Scan(&seq); err != nil {
			return err
		}
		db.posSeq.Store(seq)
		db.posEvent.Store(db.lastEvent)
		db.keys, err = loadKeys(ctx, tx)
		return err
	})
}

// metaQuerier is a *sql.DB or *sql.Conn.
type metaQuerier interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}

// loadMerchant reads the merchant recorded in meta into db.merchant and checks it against
// WithMerchant; with record, it records the wanted merchant in a file that has none.
func (db *DB) loadMerchant(ctx context.Context, q metaQuerier, record bool) error {
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'mchid'`).Scan(&db.merchant)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		db.merchant = ""
		if !record || db.want == "" {
			return nil
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('mchid', ?)`, db.want); err != nil {
			return fmt.Errorf("record merchant: %w", err)
		}
		db.merchant = db.want
		return nil
	case err != nil:
		return fmt.Errorf("merchant: %w", err)
	case db.want != "" && db.merchant != db.want:
		return fmt.Errorf("%w: the file records merchant %s, not %s", ErrWrongMerchant, db.merchant, db.want)
	}
	return nil
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func newInstanceID() string {
	b := make([]byte, 10)
	for i := range b {
		b[i] = idAlphabet[randIntn(len(idAlphabet))]
	}
	return string(b)
}

// randIntn returns a uniform int in [0,n) from crypto/rand (rejection sampling on one byte).
func randIntn(n int) int {
	limit := 256 - 256%n
	var b [1]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥1.24)
		if int(b[0]) < limit {
			return int(b[0]) % n
		}
	}
}

type migration struct{ version, sql string }

func migrations() []migration {
	names, _ := fs.Glob(migrationFS, "migrations/*.sql") // pattern is valid
	sort.Strings(names)
	ms := make([]migration, 0, len(names))
	for _, n := range names {
		b, _ := migrationFS.ReadFile(n) // embedded: cannot fail
		ms = append(ms, migration{version: strings.TrimSuffix(strings.TrimPrefix(n, "migrations/"), ".sql"), sql: string(b)})
	}
	return ms
}

// migrate applies the first upTo embedded migrations not yet recorded in schema_migrations,
// one transaction each. Foreign keys are off while they run, so that a migration can rebuild
// a table others refer to (SQLite's ALTER TABLE procedure; the pragma is a no-op inside a
// transaction), and each transaction commits only if PRAGMA foreign_key_check finds nothing.
func migrate(ctx context.Context, conn *sql.Conn, upTo int, now func() time.Time) (err error) {
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version TEXT PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		return fmt.Errorf("migrations table: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return fmt.Errorf("migrations: foreign keys off: %w", err)
	}
	defer func() {
		if _, ferr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); ferr != nil {
			err = errors.Join(err, fmt.Errorf("migrations: foreign keys on: %w", ferr))
		}
	}()
	for _, m := range migrations()[:upTo] {
		err := inTx(ctx, conn, func(tx *sql.Conn) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil || n > 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			if err := foreignKeyCheck(ctx, tx); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, m.version, ms(now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.version, err)
		}
	}
	return nil
}

// foreignKeyCheck returns an error naming the first row that violates a foreign key.
func foreignKeyCheck(ctx context.Context, tx *sql.Conn) error {
	var table, parent string
	var rowid sql.NullInt64
	var fkid int
	err := tx.QueryRowContext(ctx, `PRAGMA foreign_key_check`).Scan(&table, &rowid, &parent, &fkid)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("foreign key check: %w", err)
	}
	return fmt.Errorf("foreign key check: %s rowid %d refers to a missing %s row", table, rowid.Int64, parent)
}

// inTx runs fn between BEGIN IMMEDIATE and COMMIT on conn, rolling back if fn or the commit
// fails. COMMIT and ROLLBACK run even if ctx is cancelled, so no transaction is left open.
func inTx(ctx context.Context, conn *sql.Conn, fn func(*sql.Conn) error) error {
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	err := fn(conn)
	if err == nil {
		if _, err = conn.ExecContext(bg, `COMMIT`); err == nil {
			return nil
		}
	}
	// An interrupted statement may already have rolled back: "no transaction is active".
	if _, rerr := conn.ExecContext(bg, `ROLLBACK`); rerr != nil && !strings.Contains(rerr.Error(), "no transaction") {
		return errors.Join(err, rerr)
	}
	return err
}

// Close closes both pools and releases the writer lock. Pending writes finish first (they
// hold the write connection).
func (db *DB) Close() error {
	var err error
	db.closeOne.Do(func() {
		db.sem <- struct{}{} // wait for a running write
		defer func() { <-db.sem }()
		db.closed.Store(true)
		if db.wconn == nil { // read-only
			err = db.rdb.Close()
			return
		}
		raw := db.wconn.Raw(func(any) error { // the driver's statements close on their connection
			var errs []error
			for _, st := range db.rawStmts {
				errs = append(errs, st.Close())
			}
			return errors.Join(errs...)
		})
		// The lock's descriptor closes last: closing any descriptor of the file earlier
		// would drop SQLite's POSIX locks.
		err = errors.Join(raw, db.rdb.Close(), db.wconn.Close(), db.wdb.Close(), db.lock.Close())
		db.keys.release()
	})
	return err
}

// Path returns the file the ledger was opened from.
func (db *DB) Path() string { return db.path }

// InstanceID returns the random [0-9A-Za-z]{10} id generated when the file was created; it is
// stable across reopen and names this ledger (and its processor) to other replicas.
func (db *DB) InstanceID() string { return db.instanceID }

// Merchant returns the mchid the file is bound to (see WithMerchant), or "" if none is
// recorded.
func (db *DB) Merchant() string { return db.merchant }

// IllegalTransitions returns how many illegal transitions were refused since Open.
func (db *DB) IllegalTransitions() int64 { return db.illegal.Load() }

// write runs fn in one IMMEDIATE transaction on the single writer and commits it. Events
// appended by fn extend the hash chain; the in-memory head and key index only advance on
// commit.
func (db *DB) write(ctx context.Context, fn func(tx *sql.Conn) error) error {
	took, err := db.writeLocked(ctx, fn)
	if err == nil && db.observe != nil {
		db.observe(took)
	}
	return err
}

// writeLocked is write under the semaphore; took is the transaction's time.
func (db *DB) writeLocked(ctx context.Context, fn func(tx *sql.Conn) error) (took time.Duration, err error) {
	select {
	case db.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-db.sem }()
	switch {
	case db.closed.Load():
		return 0, ErrClosed
	case db.wconn == nil:
		return 0, ErrReadOnly
	}
	head, last := db.head, db.lastEvent
	db.onCommit = db.onCommit[:0]
	start := time.Now()
	if err := inTx(ctx, db.wconn, fn); err != nil {
		db.head, db.lastEvent = head, last
		return 0, err
	}
	took = time.Since(start)
	db.posEvent.Store(db.lastEvent)
	for _, f := range db.onCommit {
		f()
	}
	return took, nil
}

// Position returns the last payout seq and the last event id committed to the file: where
// this ledger stands, cheaply and safely from any goroutine (a heartbeat reports it, so a
// restored copy can be compared with what its writer last committed). A DB from OpenReadOnly
// reports the file as it was when opened.
func (db *DB) Position() (lastSeq, lastEvent int64) {
	return db.posSeq.Load(), db.posEvent.Load()
}

// insertRows runs q, an INSERT of many rows, inside the current write, straight on the
// driver: mattn/go-sqlite3 binds all of a query's arguments in one cgo call where its exec
// path makes one call each (17 to 21 a payout row: a seventh of an intake commit's CPU,
// BenchmarkInsertPayouts), and handing it the arguments as they are skips database/sql's copy
// and check of each (21 000 a group of 1000). args hold only nil, int64, string and []byte.
// The INSERT runs at the query's first step, whose error the query returns; it returns no
// rows. cached keeps the prepared statement for the life of the ledger.
func (db *DB) insertRows(ctx context.Context, tx *sql.Conn, cached bool, q string, args []any) error {
	named := db.named[:0]
	for i, a := range args {
		switch a.(type) {
		case nil, int64, string, []byte:
		default:
			return fmt.Errorf("%w: insert argument %d is a %T", ErrInvalid, i+1, a)
		}
		named = append(named, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	defer func() { clear(named); db.named = named[:0] }() // the buffer keeps no rows alive
	return tx.Raw(func(dc any) error {
		st, ok := db.rawStmts[q]
		if !ok {
			var err error
			if st, err = dc.(driver.ConnPrepareContext).PrepareContext(ctx, q); err != nil {
				return err
			}
			if !cached {
				defer st.Close()
			} else {
				if db.rawStmts == nil {
					db.rawStmts = map[string]driver.Stmt{}
				}
				db.rawStmts[q] = st
			}
		}
		rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, named)
		if err != nil {
			return err
		}
		return rows.Close()
	})
}

// illegalf logs and counts a refused transition and returns an error wrapping
// ErrIllegalTransition.
func (db *DB) illegalf(ctx context.Context, format string, args ...any) error {
	db.illegal.Add(1)
	err := fmt.Errorf("%w: "+format, append([]any{ErrIllegalTransition}, args...)...)
	// A verified answer the ledger cannot take (a final state contradicted, a number changed)
	// needs a human: the money may have moved otherwise than the ledger says.
	db.log.ErrorContext(ctx, "ledger: illegal transition refused", slog.String("error", err.Error()))
	return err
}

// ms converts t to stored Unix milliseconds; the zero time is stored as 0.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS converts stored Unix milliseconds back; 0 is the zero time.
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
