package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// ChildEnv names the environment variable that turns a benchmark binary into a processor
// child: its value is the path of a JSON-encoded app.Config. A main (or TestMain) that
// finds it set calls RunChild instead of its usual work, so the memory benchmark measures a
// processor process of its own.
const ChildEnv = "PAYSTREAM_BENCH_PROCESSOR"

// RunChild runs one processor with the JSON app.Config at path until ctx is done, logging
// to stderr.
func RunChild(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg app.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("child config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("child config: %w", err)
	}
	return app.Run(ctx, cfg, app.Options{Log: cfg.Logger(os.Stderr)})
}

// MemoryResult is the peak resident set of a processor process that took in a backlog.
type MemoryResult struct {
	Backlog int     `json:"backlog"`
	PeakMB  float64 `json:"peak_rss_mb"` // VmHWM
	Seconds float64 `json:"intake_s"`    // from process start to every message acked
}

// memory publishes a backlog of n payouts, then starts a processor child process (this
// executable with ChildEnv set) on this env's JetStream and a production-paced sandbox process,
// waits until it has acked every message, and reads its VmHWM from /proc.
func (e *env) memory(ctx context.Context, dataDir string, n int, seed uint64) (MemoryResult, error) {
	r := MemoryResult{Backlog: n}
	lastSeq, err := e.publish(ctx, payouts(n, seed))
	if err != nil {
		return r, err
	}
	sb, err := e.startSandbox(ctx, wechatpaytest.DefaultOptions(), dataDir)
	if err != nil {
		return r, err
	}
	defer sb.Close()
	cfgPath := filepath.Join(dataDir, "config.json")
	b, err := json.Marshal(e.processorConfig(dataDir, sb.URL()))
	if err != nil {
		return r, err
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return r, err
	}
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	logs, err := os.Create(filepath.Join(dataDir, "processor.log"))
	if err != nil {
		return r, err
	}
	defer logs.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ChildEnv+"="+cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start processor child: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	acked := make(chan error, 1)
	var end time.Time
	go func() {
		var err error
		end, err = e.waitAcked(wctx, e.topo.Consumer, lastSeq, 10*time.Minute)
		acked <- err
	}()
	select {
	case err = <-acked:
	case err = <-exited:
		return r, fmt.Errorf("processor child exited early (%v); see %s", err, logs.Name())
	}
	if err == nil {
		r.Seconds = end.Sub(start).Seconds()
		r.PeakMB, err = peakRSS(cmd.Process.Pid)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case werr := <-exited:
		var ee *exec.ExitError
		if errors.As(werr, &ee) && err == nil {
			err = fmt.Errorf("processor child: %w; see %s", werr, logs.Name())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
	}
	return r, err
}

// peakRSS reads VmHWM (the peak resident set) of pid, in MB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", v, err)
			}
			return float64(kb) / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}
