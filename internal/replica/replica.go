// Package replica replicates a processor's SQLite ledger off the machine with litestream
// (docs/replication.md) and restores it after a disk loss.
//
// litestream always runs as a separate process, never linked into the processor: it is built
// on another SQLite (modernc.org/sqlite), and two SQLite copies in one process release each
// other's POSIX locks on the same file. This package writes litestream's YAML config
// (WriteConfig), runs `litestream replicate` as a child process (Start) and runs `litestream
// restore` (Restore). Binary finds or builds the pinned litestream executable.
package replica

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Version is the litestream release this package writes configs for and Binary builds. The
// Makefile's LITESTREAM_VERSION names the same one (a test checks).
const Version = "v0.5.18"

// Module is litestream's command, installed with `go install Module@Version`.
const Module = "github.com/benbjohnson/litestream/cmd/litestream"

// StopTimeout is how long Stop and a cancelled Start context wait for litestream to exit
// after SIGTERM before killing it: litestream's own shutdown-timeout (30 s, its final sync to
// the replica included) plus a margin.
const StopTimeout = 35 * time.Second

// Errors callers branch on.
var (
	// ErrInvalid: a Config that cannot be written (no DB path, a replica that is not a URL
	// litestream accepts). Nothing was written.
	ErrInvalid = errors.New("replica: invalid config")
	// ErrExited: litestream exited on its own, before Stop asked it to.
	ErrExited = errors.New("replica: litestream exited")
	// ErrOrphanWAL: a -wal, -shm or -journal file lies beside a missing database. It belonged
	// to the lost file; replayed into a restored or new one it would corrupt it. Nothing was
	// restored; an operator removes it.
	ErrOrphanWAL = errors.New("replica: WAL or journal left beside a missing database")
)

// Replica URL schemes litestream v0.5 accepts (its cmd/litestream NewReplicaFromConfig).
var schemes = map[string]bool{"file": true, "nats": true, "s3": true, "gs": true, "abs": true,
	"sftp": true, "webdav": true, "oss": true}

// Config is one ledger file and the place litestream replicates it to.
type Config struct {
	// DB is the ledger file's path (made absolute by WriteConfig).
	DB string
	// Replica is where its copy lives, as a URL litestream accepts: file:///abs/dir,
	// nats://host:port/bucket (a JetStream object store, created beforehand: EnsureBucket),
	// s3://bucket/path (credentials from the AWS_* or LITESTREAM_* environment variables,
	// which the child process inherits). One replica location per ledger file: a nats bucket
	// holds one database.
	Replica string
	// SyncInterval is both how often litestream reads new WAL frames of DB (its
	// monitor-interval) and how often it ships them to Replica (sync-interval); 0 means
	// litestream's default, 1 s for each. A commit reaches the replica within about two
	// intervals plus the upload: that is what a disk loss can lose.
	SyncInterval time.Duration
	// Creds, RootCA, ClientCert and ClientKey authenticate to a nats:// replica as the
	// processor does (its nats.creds-file, tls-ca, tls-cert, tls-key); empty means none. Set
	// on any other replica they are an error.
	Creds, RootCA, ClientCert, ClientKey string
}

// Validate reports an error wrapping ErrInvalid when c cannot be written.
func (c Config) Validate() error {
	if c.DB == "" {
		return fmt.Errorf("%w: empty db path", ErrInvalid)
	}
	u, err := url.Parse(c.Replica)
	if err != nil || !schemes[u.Scheme] {
		return fmt.Errorf("%w: replica %q: want a URL such as file:///dir, nats://host:4222/bucket or s3://bucket/path", ErrInvalid, c.Replica)
	}
	if u.Scheme == "nats" && strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("%w: replica %q: nats needs a bucket, nats://host:4222/bucket", ErrInvalid, c.Replica)
	}
	if u.Scheme != "nats" && c.Creds+c.RootCA+c.ClientCert+c.ClientKey != "" {
		return fmt.Errorf("%w: replica %q: NATS credentials or TLS files on a %s replica", ErrInvalid, c.Replica, u.Scheme)
	}
	if (c.ClientCert == "") != (c.ClientKey == "") {
		return fmt.Errorf("%w: replica %q: client cert and key go together", ErrInvalid, c.Replica)
	}
	if c.SyncInterval < 0 {
		return fmt.Errorf("%w: negative sync interval %s", ErrInvalid, c.SyncInterval)
	}
	return nil
}

// The YAML litestream v0.5 reads (its cmd/litestream Config, DBConfig and ReplicaConfig).
type (
	fileConfig struct {
		Logging struct {
			Type   string `yaml:"type"`
			Level  string `yaml:"level"`
			Stderr bool   `yaml:"stderr"`
		} `yaml:"logging"`
		DBs []dbConfig `yaml:"dbs"`
	}
	dbConfig struct {
		Path            string        `yaml:"path"`
		MonitorInterval string        `yaml:"monitor-interval,omitempty"`
		Replica         replicaConfig `yaml:"replica"`
	}
	replicaConfig struct {
		URL          string   `yaml:"url"`
		SyncInterval string   `yaml:"sync-interval,omitempty"`
		Creds        string   `yaml:"creds,omitempty"`
		RootCAs      []string `yaml:"root-cas,omitempty"`
		ClientCert   string   `yaml:"client-cert,omitempty"`
		ClientKey    string   `yaml:"client-key,omitempty"`
	}
)

// WriteConfig writes litestream's YAML config for cfgs to path (mode 0600, replaced
// atomically): one dbs entry each, JSON logs on stderr (Start and Restore forward them to
// their logger; stdout stays for results).
// The config is literal: run litestream on it with -no-expand-env, as Start and Restore do.
// An invalid Config is an error wrapping ErrInvalid and writes nothing.
func WriteConfig(path string, cfgs ...Config) error {
	var fc fileConfig
	fc.Logging.Type, fc.Logging.Level, fc.Logging.Stderr = "json", "info", true
	for _, c := range cfgs {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("write litestream config %s: %w", path, err)
		}
		db, err := filepath.Abs(c.DB)
		if err != nil {
			return fmt.Errorf("write litestream config %s: %w", path, err)
		}
		d := dbConfig{Path: db, Replica: replicaConfig{URL: c.Replica, Creds: c.Creds,
			ClientCert: c.ClientCert, ClientKey: c.ClientKey}}
		if c.RootCA != "" {
			d.Replica.RootCAs = []string{c.RootCA}
		}
		if c.SyncInterval > 0 {
			d.MonitorInterval, d.Replica.SyncInterval = c.SyncInterval.String(), c.SyncInterval.String()
		}
		fc.DBs = append(fc.DBs, d)
	}
	b, err := yaml.Marshal(&fc)
	if err != nil {
		return fmt.Errorf("write litestream config %s: %w", path, err)
	}
	b = append([]byte("# written by paystream internal/replica for litestream "+Version+" (docs/replication.md)\n"), b...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write litestream config %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write litestream config %s: %w", path, err)
	}
	return nil
}

// MetaDir is the directory beside db where litestream keeps its local replication state
// (".<name>-litestream"). It belongs to litestream; it describes one db file and is
// worthless without it.
func MetaDir(db string) string {
	return filepath.Join(filepath.Dir(db), "."+filepath.Base(db)+"-litestream")
}

// Process is a running `litestream replicate`. Stop it when done.
type Process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited and its output is forwarded
	err     error         // the exit error; set before done is closed
	mu      sync.Mutex
	stopped bool // Stop was called
}

// Start runs `litestream replicate -config configPath` (bin from Binary, the config from
// WriteConfig) as a child process, forwarding every line it writes to log (its JSON log
// records keep their level, message and attributes, under component=litestream). It returns
// once the process has started, not once replication has begun: litestream logs that
// itself. litestream keeps a read transaction open on each database and runs the WAL
// checkpoints itself (docs/replication.md).
//
// Cancelling ctx stops litestream as Stop does (SIGTERM, then SIGKILL after StopTimeout).
// Done is closed when it exits for any reason.
func Start(ctx context.Context, bin, configPath string, log *slog.Logger) (*Process, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "litestream")
	cmd := exec.CommandContext(ctx, bin, "replicate", "-config", configPath, "-no-expand-env")
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = StopTimeout
	out := newLineLogger(ctx, log, nil)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start litestream: %w", err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	log.Info("litestream started", "pid", cmd.Process.Pid, "config", configPath)
	go func() {
		err := cmd.Wait()
		out.flush()
		if err != nil && cmd.ProcessState != nil && cmd.ProcessState.Success() {
			err = nil // exit status 0 after ctx's SIGTERM: Wait reports ctx.Err()
		}
		if err != nil {
			p.err = fmt.Errorf("litestream replicate: %w", err)
		}
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		switch {
		case !stopped && ctx.Err() == nil:
			p.err = fmt.Errorf("%w: %w", ErrExited, errOr(err))
			log.Error("litestream exited: the ledger is no longer replicated", "err", p.err)
		case err != nil:
			log.Warn("litestream stopped with an error: its last changes may not have reached the replica", "err", err)
		default:
			log.Info("litestream stopped")
		}
		close(p.done)
	}()
	return p, nil
}

// errOr returns err, or a "status 0" error for a clean exit nobody asked for.
func errOr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// Done is closed when the process has exited (Stop, ctx cancelled, or on its own).
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the reason the process exited, once Done is closed: nil after a clean Stop, an
// error wrapping ErrExited if it exited on its own.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM (litestream then ships what it has not yet shipped, within its 30 s
// shutdown-timeout), waits for the process to exit (SIGKILL after StopTimeout) and returns
// Err. A SIGTERM that arrives before litestream has installed its signal handler (in its first
// milliseconds, before it has replicated anything) kills it: Err then reports "signal:
// terminated". Safe to call more than once and after the process has exited.
func (p *Process) Stop() error {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop litestream: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(StopTimeout):
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// Restore restores c.DB from c.Replica when the file c.DB does not exist, with `litestream
// restore -if-db-not-exists -if-replica-exists -integrity-check full`: litestream writes
// c.DB+".tmp", checks it, and renames it into place, so c.DB is either absent or a whole,
// checked copy of the replica's latest state. It reports restored=true when it wrote c.DB,
// false when c.DB already existed or the replica holds nothing (then it creates nothing).
//
// When c.DB is missing, litestream's local state for the old file (MetaDir) is removed
// first: it describes a file that is gone. A -wal, -shm or -journal file beside a missing
// c.DB is an error wrapping ErrOrphanWAL, replica or not.
//
// The restored file holds every transaction the replica held, not the ones the lost disk
// had not yet shipped. The caller checks it (integrity, event chain, audit) before use.
func Restore(ctx context.Context, bin string, c Config, log *slog.Logger) (restored bool, err error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "litestream")
	if err := c.Validate(); err != nil {
		return false, fmt.Errorf("restore %s: %w", c.DB, err)
	}
	if _, err := os.Stat(c.DB); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("restore %s: %w", c.DB, err)
	}
	for _, side := range []string{c.DB + "-wal", c.DB + "-shm", c.DB + "-journal"} {
		if _, err := os.Lstat(side); err == nil {
			return false, fmt.Errorf("restore %s: %w: %s", c.DB, ErrOrphanWAL, side)
		} else if !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("restore %s: %w", c.DB, err)
		}
	}
	if err := os.RemoveAll(MetaDir(c.DB)); err != nil {
		return false, fmt.Errorf("restore %s: remove stale litestream state: %w", c.DB, err)
	}
	dir, err := os.MkdirTemp("", "paystream-restore-")
	if err != nil {
		return false, fmt.Errorf("restore %s: %w", c.DB, err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "litestream.yml")
	if err := WriteConfig(cfg, c); err != nil {
		return false, fmt.Errorf("restore %s: %w", c.DB, err)
	}
	db, _ := filepath.Abs(c.DB) // WriteConfig succeeded, so Abs does
	stdout := &resultWriter{lineLogger: newLineLogger(ctx, log, nil)}
	stderr := newLineLogger(ctx, log, &tail{})
	cmd := exec.CommandContext(ctx, bin, "restore", "-config", cfg, "-no-expand-env",
		"-if-db-not-exists", "-if-replica-exists", "-integrity-check", "full", "-json", db)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	err = cmd.Run()
	stdout.flush()
	stderr.flush()
	if err != nil {
		return false, fmt.Errorf("restore %s from %s: %w: %s", c.DB, RedactURL(c.Replica), err, stderr.tail.String())
	}
	if stdout.result == nil { // -if-replica-exists: litestream found nothing and printed no result
		if _, err := os.Stat(c.DB); !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("restore %s: litestream printed no result, yet the file is there (%v)", c.DB, err)
		}
		log.Info("no replica to restore from", "db", c.DB, "replica", RedactURL(c.Replica))
		return false, nil
	}
	if _, err := os.Stat(c.DB); err != nil {
		return false, fmt.Errorf("restore %s: litestream reported txid %s but wrote no file: %w", c.DB, stdout.result.TXID, err)
	}
	log.Info("ledger restored from its replica", "db", c.DB, "replica", RedactURL(c.Replica),
		"txid", stdout.result.TXID, "took", time.Since(start).Round(time.Millisecond))
	return true, nil
}

// restoreResult is what `litestream restore -json` prints on success (its RestoreResult).
type restoreResult struct {
	DBPath string `json:"db_path"`
	TXID   string `json:"txid"`
}

// resultWriter takes restore's stdout: the JSON result (multi-line, indented) is kept, any
// other line is logged.
type resultWriter struct {
	*lineLogger
	json   []string // lines of a JSON object being read
	result *restoreResult
}

func (w *resultWriter) Write(p []byte) (int, error) { return w.lineLogger.write(p, w.line) }

func (w *resultWriter) flush() { w.lineLogger.flushWith(w.line) }

func (w *resultWriter) line(s string) {
	switch {
	case w.json == nil && s == "{":
		w.json = []string{s}
	case w.json != nil:
		if w.json = append(w.json, s); s != "}" {
			return
		}
		var r restoreResult
		if err := json.Unmarshal([]byte(strings.Join(w.json, "\n")), &r); err == nil && r.DBPath != "" {
			w.result = &r
		} else {
			for _, l := range w.json {
				w.lineLogger.line(l)
			}
		}
		w.json = nil
	default:
		w.lineLogger.line(s)
	}
}

// RedactURL drops any password from a replica URL for errors and logs.
// RedactURL is a replica URL fit for a log: its password hidden.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable replica URL)"
	}
	return u.Redacted()
}

// tail keeps the last few lines written to it, for error messages.
type tail struct{ lines []string }

func (t *tail) add(s string) {
	if t.lines = append(t.lines, s); len(t.lines) > 5 {
		t.lines = t.lines[1:]
	}
}

func (t *tail) String() string { return strings.Join(t.lines, "; ") }

// lineLogger is an io.Writer that logs each line written to it: a JSON log record from
// litestream at its level with its message and attributes, any other line at INFO (at ERROR
// when it starts with "Error:", as litestream's fatal errors do).
type lineLogger struct {
	ctx  context.Context
	log  *slog.Logger
	tail *tail // also keeps the last lines, if non-nil
	mu   sync.Mutex
	buf  []byte
}

var _ io.Writer = (*lineLogger)(nil)

func newLineLogger(ctx context.Context, log *slog.Logger, t *tail) *lineLogger {
	return &lineLogger{ctx: context.WithoutCancel(ctx), log: log, tail: t}
}

func (l *lineLogger) Write(p []byte) (int, error) { return l.write(p, l.line) }

// write passes each whole line of p, trimmed, to line.
func (l *lineLogger) write(p []byte, line func(string)) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if s := strings.TrimSpace(string(l.buf[:i])); s != "" {
			line(s)
		}
		l.buf = l.buf[i+1:]
	}
}

// flush logs a last line that had no newline.
func (l *lineLogger) flush() { l.flushWith(l.line) }

func (l *lineLogger) flushWith(line func(string)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := strings.TrimSpace(string(l.buf)); s != "" {
		line(s)
	}
	l.buf = nil
}

// line logs one non-empty line.
func (l *lineLogger) line(s string) {
	if l.tail != nil {
		l.tail.add(s)
	}
	var rec map[string]any
	if strings.HasPrefix(s, "{") && json.Unmarshal([]byte(s), &rec) == nil {
		level := slog.LevelInfo
		if v, ok := rec["level"].(string); ok {
			_ = level.UnmarshalText([]byte(v)) // unknown levels (TRACE) stay INFO
		}
		msg, _ := rec["msg"].(string)
		delete(rec, "level")
		delete(rec, "msg")
		delete(rec, "time")
		attrs := make([]slog.Attr, 0, len(rec))
		for _, k := range slices.Sorted(maps.Keys(rec)) {
			attrs = append(attrs, slog.Any(k, rec[k]))
		}
		l.log.LogAttrs(l.ctx, level, msg, attrs...)
		return
	}
	if strings.HasPrefix(s, "Error:") {
		l.log.Error(s)
		return
	}
	l.log.Info(s)
}
