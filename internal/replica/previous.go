package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pid returns the process id of the running litestream.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// WritePID records pid in the file at path, so that the next start can wait for this
// litestream to be gone (AwaitPrevious).
func WritePID(path string, pid int) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("litestream pid file: %w", err)
	}
	return nil
}

// AwaitPrevious waits until the litestream recorded in the pid file at path (WritePID) has
// exited, so two never replicate one ledger at once: a processor killed and restarted at once
// would otherwise start a new litestream while the old one, told to stop by the parent's
// death, still ships its last frames. It waits up to grace, then kills it. A missing file, a
// process that is gone, or a pid now held by something other than litestream (as /proc says;
// where there is no /proc, nothing is waited for) means there is nothing to wait for. The file
// is removed.
func AwaitPrevious(ctx context.Context, path string, grace time.Duration, log *slog.Logger) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("litestream pid file: %w", err)
	}
	defer os.Remove(path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !isLitestream(pid) {
		return nil
	}
	log.Warn("an earlier litestream of this ledger is still running; waiting for it to finish shipping", "pid", pid)
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for isLitestream(pid) {
		if time.Now().After(deadline) {
			log.Warn("the earlier litestream did not stop; killing it", "pid", pid, "grace", grace)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(grace)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// isLitestream reports whether pid is a live litestream process (not a zombie), by its
// /proc entry.
func isLitestream(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmdline) == 0 {
		return false // gone, a zombie, or no /proc
	}
	name, _, _ := bytes.Cut(cmdline, []byte{0})
	return strings.HasSuffix(string(name), "litestream")
}
