package soak

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// Sandbox faults of the soak (at least 5% SYSTEM_ERROR, 2% commit-then-drop, 429s under load,
// a NOT_FOUND lag; README "Failure model"). The rates apply to every endpoint, creates included.
var sandboxArgs = []string{
	"--admin", "--listen", "127.0.0.1:0", "--log-level", "warn",
	"--speed", "60", // a 1-minute PROCESSING phase lasts a second
	"--system-error-rate", "0.05",
	"--drop-after-commit-rate", "0.02",
	"--truncate-rate", "0.01",
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
	p                                     *proc
}

// processorConfig is a fast-paced configs/demo-processor.yaml on the cluster (through the
// fault proxies) with R3 topology, a short duplicate window and ack-wait, Config.Share as
// its rate share, and the merchant's product. On transfer bills each replica listens for
// callbacks on its own address, named in the notify_url of every bill it seals (frozen in
// the body, so the replica that sealed a bill is the one its callbacks reach, across its
// restarts); bills are swept by queries from 2 s after a look up to every 10 s.
const processorConfig = `# written by internal/soak
data-dir: %[1]s
nats:
  url: %[2]s
  topology:
    replicas: 3
    duplicate-window: %[3]s
    ack-wait: %[4]s
    backoff: []
    max-ack-pending: %[5]d
wechatpay:
  base-url: %[6]s
  backup-base-url: ""
  mchid: "%[7]s"
  merchant-serial-no: %[8]s
  private-key-file: %[9]s
  wechatpay-public-key-file: %[10]s
  wechatpay-public-key-id: %[11]s
  apiv3-key: %[12]s
  timeout: 5s
  product: %[14]s
pipeline:
  intake:
    fetch-batch: 1000
    fetch-max-wait: 100ms
    sweep-every: 2s
    retry-delay: 1s
  batching:
    max-wait: 1s
  submit:
    retry-min: 200ms
    retry-max: 2s
    parked-retry: 2s
  poll:
    first-delay: 1s
    interval: 1s
    not-found-grace: 5s
    bill-sweep: 2s
    bill-sweep-max: 10s
  rate-limit:
    create: %[13]g
    query: %[13]g
    detail: %[13]g
    cancel: %[15]g
  breaker:
    failures: 5
    open-timeout: 2s
  notify-url: "%[16]s"
callback:
  listen: "%[17]s"
log:
  level: info
  format: text
`

// maxAckPending is the consumer's unacknowledged-message budget per replica: a fetched
// group of 1000 being committed plus the next one prefetched, with room to spare.
const maxAckPending = 4000

func (s *soak) newProcessor(i int) (*processor, error) {
	name := fmt.Sprintf("p%d", i)
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
	var listen, notifyURL string
	if s.cfg.bills() {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		listen = fmt.Sprintf("127.0.0.1:%d", port)
		notifyURL = "http://" + listen + "/wechatpay/notify"
	}
	conf := fmt.Sprintf(processorConfig, dir, s.procURL, s.cfg.DuplicateWindow, s.cfg.AckWait, s.topo.MaxAckPending,
		s.sandboxURL, wechatpaytest.DefaultMchID, wechatpaytest.DefaultMerchantSerial, keyPath,
		filepath.Join(vectors, "wechatpay_platform_TEST_ONLY_public_key.pem"), wechatpaytest.DefaultPlatformKeyID,
		wechatpaytest.DefaultAPIv3Key, float64(s.cfg.Share), s.cfg.Product, max(1, float64(s.cfg.Share)/5), notifyURL, listen)
	p := &processor{
		name: name, bin: filepath.Join(s.bin, "processor"), dir: dir,
		conf: filepath.Join(dir, "processor.yaml"), ledger: filepath.Join(dir, "ledger.db"),
		logPath: filepath.Join(dir, "processor.log"),
	}
	return p, os.WriteFile(p.conf, []byte(conf), 0o600)
}

// start runs the processor on its config; its log is appended to across restarts.
func (p *processor) start() error {
	pr, err := start(p.name, p.bin, []string{"run", "--config", p.conf}, p.logPath, nil)
	if err != nil {
		return err
	}
	p.p = pr
	return nil
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
