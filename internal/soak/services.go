package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/paystream/paystream/internal/app"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// Sandbox faults of the soak (at least 5% SYSTEM_ERROR, 2% commit-then-drop, 429s under load
// and 0.5% injected, a NOT_FOUND lag; README "Failure model"). The rates apply to every
// endpoint, creates included. The quota's 429s depend on how the replicas' calls bunch up; the
// injected ones make every run meet some.
var sandboxArgs = []string{
	"--admin", "--listen", "127.0.0.1:0", "--log-level", "warn",
	"--speed", "60", // a 1-minute PROCESSING phase lasts a second
	"--system-error-rate", "0.05",
	"--drop-after-commit-rate", "0.02",
	"--truncate-rate", "0.01",
	"--frequency-limited-rate", "0.005",
	"--not-found-lag", "90s", // 1.5 s at speed 60: the first query of a new batch is NOT_FOUND
}

// billsSandboxArgs make the sandbox a transfer bills merchant (docs/transfer-bills.md) whose
// payees, at speed 60, confirm a second after the create (then TRANSFERING for a second), decline then
// (decline-…), or never (noconfirm-…: the bill closes as FAIL OVERDUE_CLOSE 17 s after its
// creation, 15 s plus a 2 s lag, instead of 24 h and more); a fifth of the callbacks is
// lost and the others come half a second late, so queries must sweep up. A create answers
// WAIT_USER_CONFIRM with package_info at once, as WeChat's does.
var billsSandboxArgs = []string{
	"--product", "bills",
	"--bill-accept-delay", "0s",
	"--bill-auto-confirm", "60s",
	"--bill-confirm-timeout", "15m",
	"--bill-close-lag", "2m",
	"--notify-loss", "0.2",
	"--notify-delay", "30s",
}

// startSandbox runs cmd/sandbox and reads its URL from its first output line.
func (s *soak) startSandbox(ctx context.Context) error {
	logPath := filepath.Join(s.cfg.Dir, "sandbox.log")
	// The replicas' shares of the quota add up to more than the quota, so 429s come.
	args := append(append([]string{}, sandboxArgs...), "--seed", fmt.Sprint(s.cfg.Seed))
	if s.cfg.bills() {
		args = append(append(args, billsSandboxArgs...), "--bill-rate-limit", fmt.Sprint(s.cfg.Quota))
	} else {
		args = append(args, "--rate-limit", fmt.Sprint(s.cfg.Quota))
	}
	p, err := start("sandbox", filepath.Join(s.bin, "sandbox"), args, logPath, nil)
	if err != nil {
		return err
	}
	s.sandbox = p
	const prefix = "sandbox listening on "
	return poll(ctx, 30*time.Second, 50*time.Millisecond, func() (bool, string) {
		if p.exited() {
			return false, fmt.Sprintf("sandbox exited: %v (see %s)", p.err, logPath)
		}
		f, err := os.Open(logPath)
		if err != nil {
			return false, err.Error()
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				s.sandboxURL = strings.TrimSpace(rest)
				return true, ""
			}
		}
		return false, "no URL line in " + logPath
	})
}

// processor is one replica: its data dir, ledger and callback address survive every kill.
type processor struct {
	name, bin, dir, conf, ledger, logPath string
	listen                                string // bills: the callback address ("" on the batch API)
	p                                     *proc
	runsBefore                            int // runs() when the current process was started
}

// processorConfig is a fast-paced configs/demo-processor.yaml on the cluster (through the
// fault proxies): app.DefaultConfig with the soak's topology s.topo (R3, a short duplicate
// window and ack-wait, no backoff steps), the sandbox merchant's TEST-ONLY identity (keyPath is
// this replica's copy of the private key), Config.Share as its rate share (a fifth of it for
// cancels) and the merchant's product. On transfer bills each replica listens for callbacks on
// listen, its own address, named in the notify_url of every bill it seals (frozen in the body,
// so the replica that sealed a bill is the one its callbacks reach, across its restarts); bills
// are swept by queries from 2 s after a look up to every 10 s. listen is empty on the batch API:
// no callbacks. The result is what app.LoadConfig reads back from writeProcessorConfig's file.
func (s *soak) processorConfig(dir, keyPath, listen string) app.Config {
	cfg := app.DefaultConfig()
	cfg.DataDir, cfg.Ledger = dir, filepath.Join(dir, "ledger.db")
	cfg.NATS.URL, cfg.NATS.Topology = s.procURL, s.topo
	cfg.WeChatPay = app.WeChatPayConfig{
		BaseURL: s.sandboxURL, BackupBaseURL: "", MchID: wechatpaytest.DefaultMchID,
		Product: s.cfg.Product, MerchantSerialNo: wechatpaytest.DefaultMerchantSerial, PrivateKeyFile: keyPath,
		PublicKeyFile: filepath.Join(s.root, "testdata", "testvectors", "wechatpay_platform_TEST_ONLY_public_key.pem"),
		PublicKeyID:   wechatpaytest.DefaultPlatformKeyID, APIv3Key: wechatpaytest.DefaultAPIv3Key, Timeout: 5 * time.Second,
	}
	p := &cfg.Pipeline
	p.Product = s.cfg.Product // as app.LoadConfig derives it from wechatpay.product
	p.Intake.FetchBatch, p.Intake.FetchMaxWait, p.Intake.SweepEvery, p.Intake.RetryDelay = 1000, 100*time.Millisecond, 2*time.Second, time.Second
	p.Batching.MaxWait = time.Second
	p.Submit.RetryMin, p.Submit.RetryMax, p.Submit.ParkedRetry = 200*time.Millisecond, 2*time.Second, 2*time.Second
	p.Poll.FirstDelay, p.Poll.Interval, p.Poll.NotFoundGrace = time.Second, time.Second, 5*time.Second
	p.Poll.BillSweep, p.Poll.BillSweepMax = 2*time.Second, 10*time.Second
	share := float64(s.cfg.Share)
	p.RateLimit = pipeline.RateConfig{Create: share, Query: share, Detail: share, Cancel: max(1, share/5)}
	p.Breaker = pipeline.BreakerConfig{Failures: 5, OpenTimeout: 2 * time.Second}
	if listen != "" {
		cfg.Callback.Listen = listen
		p.NotifyURL = "http://" + listen + cfg.Callback.Path
	}
	cfg.Log = app.LogConfig{Level: "info", Format: "text"}
	return cfg
}

// writeProcessorConfig checks cfg with its Validate and writes it to path as YAML (mode 0600:
// it holds the TEST-ONLY APIv3 key). yaml.v3 writes every time.Duration as its String ("2s"),
// which the processor's loader parses back: app.LoadConfig on the file gives cfg again.
func writeProcessorConfig(path string, cfg app.Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("processor config %s: %w", path, err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("processor config %s: %w", path, err)
	}
	return os.WriteFile(path, append([]byte("# written by internal/soak\n"), b...), 0o600)
}

// maxAckPending is the consumer's unacknowledged-message budget per replica: a fetched
// group of 1000 being committed plus the next one prefetched, with room to spare.
const maxAckPending = 4000

// newProcessor writes the config of a processor named name on its own data dir (the
// working directory's name/), listening for callbacks on listen (bills; "" picks a free
// port), replicating its ledger with litestream if replicated. It does not start it.
func (s *soak) newProcessor(name, listen string, replicated bool) (*processor, error) {
	dir := filepath.Join(s.cfg.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	vectors := filepath.Join(s.root, "testdata", "testvectors")
	key, err := os.ReadFile(filepath.Join(vectors, "merchant_TEST_ONLY_private_key.pem"))
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, "merchant_TEST_ONLY_private_key.pem")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return nil, err
	}
	if s.cfg.bills() && listen == "" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		listen = fmt.Sprintf("127.0.0.1:%d", port)
	}
	p := &processor{
		name: name, bin: filepath.Join(s.bin, "processor"), dir: dir,
		conf: filepath.Join(dir, "processor.yaml"), ledger: filepath.Join(dir, "ledger.db"),
		logPath: filepath.Join(dir, "processor.log"), listen: listen,
	}
	cfg := s.processorConfig(dir, keyPath, listen)
	if replicated {
		// The replica lives off the processor's data dir: what loseDisk deletes.
		cfg.Replica = app.ReplicaConfig{URL: "file://" + filepath.Join(s.cfg.Dir, "replica-"+name), SyncInterval: 200 * time.Millisecond, Litestream: s.litestream}
	}
	return p, writeProcessorConfig(p.conf, cfg)
}

// start runs the processor on its config; its log is appended to across restarts.
func (p *processor) start() error {
	p.runsBefore = p.runs()
	pr, err := start(p.name, p.bin, []string{"run", "--config", p.conf}, p.logPath, nil)
	if err != nil {
		return err
	}
	p.p = pr
	return nil
}

// runningLine is what a processor logs once it consumes.
const runningLine = `msg="processor running"`

// runs counts the times the processor's log says it was running.
func (p *processor) runs() int {
	b, _ := os.ReadFile(p.logPath)
	return bytes.Count(b, []byte(runningLine))
}

// running reports whether the processor's current process has come up and consumes.
func (p *processor) running() bool {
	return p.p != nil && !p.p.exited() && p.runs() > p.runsBefore
}

// kill SIGKILLs the processor: no shutdown code runs, as in a power cut.
func (p *processor) kill() {
	if p.p != nil && !p.p.exited() {
		p.p.kill()
	}
}

// producerConfig is the producer's configuration: the TEST-ONLY WeChat Pay public key it
// seals names with (the sandbox decrypts them with its private half).
const producerConfig = `# written by internal/soak
wechatpay-public-key-file: %s
wechatpay-public-key-id: %s
`

// writeProducerConfig writes producerConfig into the working directory.
func (s *soak) writeProducerConfig() error {
	s.producerConf = filepath.Join(s.cfg.Dir, "producer.yaml")
	conf := fmt.Sprintf(producerConfig, filepath.Join(s.root, "testdata", "testvectors", "wechatpay_platform_TEST_ONLY_public_key.pem"),
		wechatpaytest.DefaultPlatformKeyID)
	return os.WriteFile(s.producerConf, []byte(conf), 0o600)
}
