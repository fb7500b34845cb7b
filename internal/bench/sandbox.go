package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paystream/paystream/internal/soak"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// Limits of the sandbox child's life.
const (
	sandboxStartLimit = 30 * time.Second // until its URL line
	sandboxStopGrace  = 10 * time.Second // from SIGTERM until SIGKILL
)

// buildSandbox compiles cmd/sandbox into dir (go build, in the module root, so the build
// cache makes it quick) and returns the binary's path. Benchmarks run the sandbox as a
// process of its own: its RSA signing and verification would otherwise take CPU inside the
// process being measured.
func buildSandbox(ctx context.Context, dir string) (string, error) {
	root, err := soak.ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin, err := filepath.Abs(filepath.Join(dir, "sandbox"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sandbox")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sandbox: %w\n%s", err, out)
	}
	return bin, nil
}

// sandboxArgs renders the settings of o that benchmarks vary as cmd/sandbox flags; the
// other fields of o must be wechatpaytest.DefaultOptions', which are the command's defaults.
// The admin API is on (the drains read the sandbox's record through it), logs at warn.
func sandboxArgs(o wechatpaytest.Options) []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return []string{
		"--listen", "127.0.0.1:0", "--admin", "--log-level", "warn",
		"--speed", f(o.Speed), "--product", o.Product,
		"--rate-limit", strconv.Itoa(o.RateLimit), "--bill-rate-limit", strconv.Itoa(o.BillRateLimit),
		"--accept-delay", o.AcceptDelay.String(), "--bill-accept-delay", o.BillAcceptDelay.String(),
		"--process-delay", o.ProcessDelay.String(), "--bill-auto-confirm", o.BillAutoConfirm.String(),
		"--notify-loss", f(o.NotifyLoss), "--seed", strconv.FormatUint(o.Seed, 10),
	}
}

// sandbox is cmd/sandbox running as a child process with its admin API on; it logs to a
// file. Close it.
//
// It runs in a session of its own. The sandbox stands in for WeChat Pay's servers, whose CPUs
// are not ours, and Linux with sched_autogroup (this project's CI machines, most desktops)
// shares the CPU fairly between sessions: in the bench's session, the sandbox's signing
// would come out of the measured processor's share. Beside make test, a bills drain's
// sandbox took a third of the bench session's one core, and the processor then created bills
// at 88/s of its 98/s.
type sandbox struct {
	url     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited; err is then set
	err     error
	client  *http.Client
}

// startSandbox runs the sandbox binary bin with the settings of o, its stdout and stderr
// appended to logPath, and returns once it has printed its URL.
func startSandbox(ctx context.Context, bin string, o wechatpaytest.Options, logPath string) (*sandbox, error) {
	logs, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	first := &firstLine{w: logs, line: make(chan string, 1)}
	cmd := exec.Command(bin, sandboxArgs(o)...)
	cmd.Stdout, cmd.Stderr = first, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // a ^C reaches the bench, which stops it
	if err := cmd.Start(); err != nil {
		logs.Close()
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	s := &sandbox{logPath: logPath, cmd: cmd, done: make(chan struct{}), client: &http.Client{Timeout: 10 * time.Second}}
	go func() {
		s.err = cmd.Wait()
		logs.Close()
		close(s.done)
	}()
	limit := time.NewTimer(sandboxStartLimit)
	defer limit.Stop()
	const prefix = "sandbox listening on "
	select {
	case line := <-first.line:
		if u, ok := strings.CutPrefix(line, prefix); ok {
			s.url = strings.TrimSpace(u)
			return s, nil
		}
		err = fmt.Errorf("sandbox printed %q, want %q…", line, prefix)
	case <-s.done:
		err = fmt.Errorf("sandbox exited: %v", s.err)
	case <-limit.C:
		err = fmt.Errorf("sandbox printed no URL within %s", sandboxStartLimit)
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(fmt.Errorf("%w (see %s)", err, logPath), s.Close())
}

// yield lowers the sandbox process to the lowest CPU priority (nice 19). The sandbox stands in
// for WeChat Pay's servers, whose CPUs are not ours: where a measurement is about what the
// processor can do with this machine, the sandbox takes only the cycles the processor leaves
// idle (it still answers every request; an OAEP decryption per sealed name is most of its work).
//
// Linux keeps a nice value per thread, and setpriority on a pid changes only the thread of
// that id, so every thread is lowered (a thread started later inherits its creator's value);
// passes repeat until one finds no thread it had not lowered. With sched_autogroup the
// sandbox's session is lowered too (/proc/pid/autogroup), as a thread's nice counts only
// within its session.
func (s *sandbox) yield() error {
	pid := s.cmd.Process.Pid
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", pid), []byte("19"), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sandbox session priority: %w", err)
	}
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		tids, err := threads(pid)
		if err != nil {
			return fmt.Errorf("sandbox priority: %w", err)
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("sandbox priority of thread %d: %w", tid, err)
			}
			done[tid], fresh = true, fresh+1
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("sandbox priority: threads kept starting")
}

// threads lists the thread ids of process pid (/proc/pid/task).
func threads(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// URL is the sandbox's base URL.
func (s *sandbox) URL() string { return s.url }

// Stats is the sandbox's counters (GET /sandbox/stats).
func (s *sandbox) Stats(ctx context.Context) (wechatpaytest.Stats, error) {
	var st wechatpaytest.Stats
	return st, s.admin(ctx, wechatpaytest.AdminStats, &st)
}

// Batches is every batch the sandbox holds, in creation order (GET /sandbox/batches).
func (s *sandbox) Batches(ctx context.Context) ([]wechatpaytest.BatchSummary, error) {
	var bs []wechatpaytest.BatchSummary
	return bs, s.admin(ctx, wechatpaytest.AdminBatches, &bs)
}

// Bills is every transfer bill the sandbox holds, in creation order (GET /sandbox/bills).
func (s *sandbox) Bills(ctx context.Context) ([]wechatpaytest.BillSummary, error) {
	var bs []wechatpaytest.BillSummary
	return bs, s.admin(ctx, wechatpaytest.AdminBills, &bs)
}

// admin GETs the admin route route ("GET /sandbox/…") and decodes its JSON answer into v.
func (s *sandbox) admin(ctx context.Context, route string, v any) error {
	path, ok := strings.CutPrefix(route, http.MethodGet+" ")
	if !ok {
		return fmt.Errorf("admin route %q is not a GET", route)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
	if err != nil {
		return err
	}
	res, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("sandbox %s: %s: %s", path, res.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("sandbox %s: %w", path, err)
	}
	return nil
}

// Close stops the sandbox (SIGTERM, SIGKILL after sandboxStopGrace) and waits for it; an
// error if it had to be killed or exited with a failure.
func (s *sandbox) Close() error {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(sandboxStopGrace):
			_ = s.cmd.Process.Kill()
			<-s.done
			return fmt.Errorf("sandbox did not stop within %s (see %s)", sandboxStopGrace, s.logPath)
		}
	}
	if s.err != nil {
		return fmt.Errorf("sandbox: %w (see %s)", s.err, s.logPath)
	}
	return nil
}

// firstLine passes everything to w and sends the first complete line, once, on line
// (buffered 1). exec.Cmd calls Write from one goroutine.
type firstLine struct {
	w    io.Writer
	buf  []byte
	sent bool
	line chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	if !f.sent {
		f.buf = append(f.buf, p...)
		if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
			f.line <- string(f.buf[:i])
			f.sent, f.buf = true, nil
		}
	}
	return f.w.Write(p)
}
