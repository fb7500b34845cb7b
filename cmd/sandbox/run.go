package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/cli"
	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
)

// Config is the sandbox's configuration: configs/sandbox.yaml, then flags of the same names.
type Config struct {
	Listen       string        `yaml:"listen"`
	Admin        bool          `yaml:"admin"`
	State        string        `yaml:"state"`
	SaveInterval time.Duration `yaml:"save-interval"`
	LogLevel     string        `yaml:"log-level"`

	MchID             string `yaml:"mchid"`
	MerchantSerial    string `yaml:"merchant-serial"`
	MerchantPublicKey string `yaml:"merchant-public-key"`
	PlatformKey       string `yaml:"platform-private-key"`
	PlatformKeyID     string `yaml:"platform-key-id"`
	APIv3Key          string `yaml:"apiv3-key"`
	AppID             string `yaml:"appid"`

	Speed              float64                `yaml:"speed"`
	AcceptDelay        time.Duration          `yaml:"accept-delay"`
	BillAcceptDelay    time.Duration          `yaml:"bill-accept-delay"`
	ProcessDelay       time.Duration          `yaml:"process-delay"`
	NotFoundLag        time.Duration          `yaml:"not-found-lag"`
	NoPasswordLimit    int64                  `yaml:"no-password-limit"`
	AutoConfirm        time.Duration          `yaml:"auto-confirm"`
	WaitPayTimeout     time.Duration          `yaml:"wait-pay-timeout"`
	Product            string                 `yaml:"product"`
	BillAutoConfirm    time.Duration          `yaml:"bill-auto-confirm"`
	BillConfirmTimeout time.Duration          `yaml:"bill-confirm-timeout"`
	BillCloseLag       time.Duration          `yaml:"bill-close-lag"`
	BillScenes         map[string]SceneConfig `yaml:"bill-scenes"`
	Balance            int64                  `yaml:"balance"`
	MinAmount          int64                  `yaml:"min-amount"`
	RateLimit          int                    `yaml:"rate-limit"`
	BillRateLimit      int                    `yaml:"bill-rate-limit"`
	NotifyAttempts     int                    `yaml:"notify-attempts"`
	NotifyBackoff      time.Duration          `yaml:"notify-backoff"`
	NotifyLoss         float64                `yaml:"notify-loss"`
	NotifyDelay        time.Duration          `yaml:"notify-delay"`

	Seed                 uint64        `yaml:"seed"`
	Latency              time.Duration `yaml:"latency"`
	SystemErrorRate      float64       `yaml:"system-error-rate"`
	DropAfterCommitRate  float64       `yaml:"drop-after-commit-rate"`
	DropBeforeCommitRate float64       `yaml:"drop-before-commit-rate"`
	TruncateRate         float64       `yaml:"truncate-rate"`
	UnsignedRate         float64       `yaml:"unsigned-rate"`
	FrequencyLimitedRate float64       `yaml:"frequency-limited-rate"`
}

// SceneConfig is one transfer scene's rule in bill-scenes (config file only; see
// wechatpaytest.BillSceneRule): the info types its report infos must carry, each once, and
// the user_recv_perception values it allows.
type SceneConfig struct {
	ReportInfos []string `yaml:"report-infos"`
	Perceptions []string `yaml:"perceptions"`
}

// DefaultConfig is wechatpaytest.DefaultOptions on 127.0.0.1:8090 with embedded keys.
func DefaultConfig() Config {
	o := wechatpaytest.DefaultOptions()
	return Config{
		Listen: "127.0.0.1:8090", SaveInterval: time.Second, LogLevel: "info",
		MchID: o.MchID, MerchantSerial: o.MerchantSerial, PlatformKeyID: o.PlatformKeyID, APIv3Key: o.APIv3Key,
		Speed: o.Speed, AcceptDelay: o.AcceptDelay, BillAcceptDelay: o.BillAcceptDelay, ProcessDelay: o.ProcessDelay, Balance: -1,
		MinAmount: int64(o.MinAmount), RateLimit: o.RateLimit, BillRateLimit: o.BillRateLimit,
		NotifyAttempts: o.NotifyAttempts, NotifyBackoff: o.NotifyBackoff, BillConfirmTimeout: o.BillConfirmTimeout,
	}
}

// flags binds every Config field to a flag of its YAML name, with the current values as
// defaults, so flags override the file.
func (c *Config) flags(fs *flag.FlagSet) {
	fs.String("config", "", "YAML file of these settings (configs/sandbox.yaml); flags override it")
	fs.StringVar(&c.Listen, "listen", c.Listen, "address to serve on; port 0 picks one (the URL is the first stdout line)")
	fs.BoolVar(&c.Admin, "admin", c.Admin, "serve the unsigned admin API under /sandbox/ (paid, batches, stats, confirm, faults, …)")
	fs.StringVar(&c.State, "state", c.State, "JSON file that keeps batches and the paid record across restarts (written atomically)")
	fs.DurationVar(&c.SaveInterval, "save-interval", c.SaveInterval, "how often a changed state is saved")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (debug logs every request)")
	fs.StringVar(&c.MchID, "mchid", c.MchID, "merchant id requests must be signed for")
	fs.StringVar(&c.MerchantSerial, "merchant-serial", c.MerchantSerial, "merchant certificate serial requests must name")
	fs.StringVar(&c.MerchantPublicKey, "merchant-public-key", c.MerchantPublicKey, "PEM public key that verifies requests (default: the embedded TEST-ONLY key)")
	fs.StringVar(&c.PlatformKey, "platform-private-key", c.PlatformKey, "PEM private key that signs answers (default: the embedded TEST-ONLY key)")
	fs.StringVar(&c.PlatformKeyID, "platform-key-id", c.PlatformKeyID, "Wechatpay-Serial of answers: a PUB_KEY_ID_… or a platform certificate serial")
	fs.StringVar(&c.APIv3Key, "apiv3-key", c.APIv3Key, "32-byte key that encrypts callbacks (use ${VAR} in the config file for real secrets)")
	fs.StringVar(&c.AppID, "appid", c.AppID, "the only appid accepted (empty: any)")
	fs.Float64Var(&c.Speed, "speed", c.Speed, "divides every sandbox delay; 1 is realistic, 100 suits tests")
	fs.DurationVar(&c.AcceptDelay, "accept-delay", c.AcceptDelay, "how long a batch stays ACCEPTED (at speed 1)")
	fs.DurationVar(&c.BillAcceptDelay, "bill-accept-delay", c.BillAcceptDelay, "how long a transfer bill stays ACCEPTED before WAIT_USER_CONFIRM (at speed 1)")
	fs.DurationVar(&c.ProcessDelay, "process-delay", c.ProcessDelay, "how long a detail stays PROCESSING (at speed 1)")
	fs.DurationVar(&c.NotFoundLag, "not-found-lag", c.NotFoundLag, "queries of younger batches answer 404 NOT_FOUND (at speed 1)")
	fs.Int64Var(&c.NoPasswordLimit, "no-password-limit", c.NoPasswordLimit, "fen; larger details wait in WAIT_PAY for POST /sandbox/confirm (0: no limit)")
	fs.DurationVar(&c.AutoConfirm, "auto-confirm", c.AutoConfirm, "confirm WAIT_PAY details this long after acceptance (0: never)")
	fs.DurationVar(&c.WaitPayTimeout, "wait-pay-timeout", c.WaitPayTimeout, "fail unconfirmed WAIT_PAY details after this (0: never)")
	fs.StringVar(&c.Product, "product", c.Product, "the merchant's product: batches or bills (the other's creates answer 403 NO_AUTH); empty: both")
	fs.DurationVar(&c.BillAutoConfirm, "bill-auto-confirm", c.BillAutoConfirm, "simulated users act on transfer bills after this: confirm, or by openid decline-…/noconfirm-… (0: only POST /sandbox/bills/{out_bill_no}/confirm or /decline)")
	fs.DurationVar(&c.BillConfirmTimeout, "bill-confirm-timeout", c.BillConfirmTimeout, "unconfirmed transfer bills close FAIL OVERDUE_CLOSE after this (0: never)")
	fs.DurationVar(&c.BillCloseLag, "bill-close-lag", c.BillCloseLag, "the close of an unconfirmed bill comes this much after --bill-confirm-timeout")
	fs.Int64Var(&c.Balance, "balance", c.Balance, "merchant balance in fen; creates beyond it get 403 NOT_ENOUGH (-1: unlimited)")
	fs.Int64Var(&c.MinAmount, "min-amount", c.MinAmount, "smallest transfer_amount in fen")
	fs.IntVar(&c.RateLimit, "rate-limit", c.RateLimit, "requests per second per batch endpoint, else 429 FREQUENCY_LIMITED (0: off)")
	fs.IntVar(&c.BillRateLimit, "bill-rate-limit", c.BillRateLimit, "requests per second per transfer-bill endpoint (0: off)")
	fs.IntVar(&c.NotifyAttempts, "notify-attempts", c.NotifyAttempts, "deliveries of one callback at most")
	fs.DurationVar(&c.NotifyBackoff, "notify-backoff", c.NotifyBackoff, "first wait between callback deliveries, doubling (at speed 1)")
	fs.Float64Var(&c.NotifyLoss, "notify-loss", c.NotifyLoss, "share of callbacks (batches and bills) never delivered, drawn from --seed")
	fs.DurationVar(&c.NotifyDelay, "notify-delay", c.NotifyDelay, "extra wait before a callback's first delivery (at speed 1)")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the fault rates, for reproducible runs")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "added to every call")
	fs.Float64Var(&c.SystemErrorRate, "system-error-rate", c.SystemErrorRate, "share of calls answered 500 SYSTEM_ERROR before doing anything")
	fs.Float64Var(&c.DropAfterCommitRate, "drop-after-commit-rate", c.DropAfterCommitRate, "share of calls served, then answered by a connection reset")
	fs.Float64Var(&c.DropBeforeCommitRate, "drop-before-commit-rate", c.DropBeforeCommitRate, "share of calls answered by a reset before doing anything")
	fs.Float64Var(&c.TruncateRate, "truncate-rate", c.TruncateRate, "share of calls served, then answered with half a body")
	fs.Float64Var(&c.UnsignedRate, "unsigned-rate", c.UnsignedRate, "share of calls served, then answered without a signature")
	fs.Float64Var(&c.FrequencyLimitedRate, "frequency-limited-rate", c.FrequencyLimitedRate, "share of calls answered 429 FREQUENCY_LIMITED")
}

// options validates c and turns it into wechatpaytest.Options.
func (c *Config) options(log *slog.Logger) (wechatpaytest.Options, error) {
	o := wechatpaytest.DefaultOptions()
	o.MchID, o.MerchantSerial, o.PlatformKeyID, o.APIv3Key, o.AppID = c.MchID, c.MerchantSerial, c.PlatformKeyID, c.APIv3Key, c.AppID
	if c.MerchantPublicKey != "" {
		k, err := wechatpay.LoadPublicKey(c.MerchantPublicKey)
		if err != nil {
			return o, &config.ConfigError{Field: "merchant-public-key", Value: c.MerchantPublicKey, Err: err}
		}
		o.MerchantKey = k
	}
	if c.PlatformKey != "" {
		k, err := wechatpay.LoadPrivateKey(c.PlatformKey)
		if err != nil {
			return o, &config.ConfigError{Field: "platform-private-key", Value: c.PlatformKey, Err: err}
		}
		o.PlatformKey = k
	}
	switch {
	case c.Listen == "":
		return o, config.Errorf("listen", nil, "required")
	case c.SaveInterval <= 0:
		return o, config.Errorf("save-interval", c.SaveInterval, "want > 0")
	case !(c.Speed > 0) || math.IsInf(c.Speed, 0):
		return o, config.Errorf("speed", c.Speed, "want > 0: it divides every delay (1 is realistic)")
	case c.RateLimit < 0:
		return o, config.Errorf("rate-limit", c.RateLimit, "want ≥ 0 requests/s (0: no limit)")
	case c.BillRateLimit < 0:
		return o, config.Errorf("bill-rate-limit", c.BillRateLimit, "want ≥ 0 requests/s (0: no limit)")
	case len(c.APIv3Key) != wechatpay.APIv3KeySize:
		return o, config.Errorf("apiv3-key", nil, "%d bytes, want %d", len(c.APIv3Key), wechatpay.APIv3KeySize)
	case c.Balance < -1:
		return o, config.Errorf("balance", c.Balance, "want fen ≥ 0, or -1 for unlimited")
	case c.Product != wechatpaytest.ProductBoth && c.Product != wechatpaytest.ProductBatches && c.Product != wechatpaytest.ProductBills:
		return o, config.Errorf("product", c.Product, "want batches, bills or empty (both)")
	case !(c.NotifyLoss >= 0 && c.NotifyLoss <= 1):
		return o, config.Errorf("notify-loss", c.NotifyLoss, "want a share from 0 to 1")
	}
	if err := config.NegativeDuration(c); err != nil { // accept-delay, notify-delay, bill-close-lag, …
		return o, err
	}
	if c.BillScenes != nil {
		o.BillScenes = make(map[string]wechatpaytest.BillSceneRule, len(c.BillScenes))
		for id, sc := range c.BillScenes {
			o.BillScenes[id] = wechatpaytest.BillSceneRule{ReportInfos: sc.ReportInfos, Perceptions: sc.Perceptions}
		}
		if err := wechatpaytest.ValidateBillScenes(o.BillScenes); err != nil {
			return o, &config.ConfigError{Field: "bill-scenes", Err: err}
		}
	}
	o.Speed, o.AcceptDelay, o.BillAcceptDelay, o.ProcessDelay, o.NotFoundLag = c.Speed, c.AcceptDelay, c.BillAcceptDelay, c.ProcessDelay, c.NotFoundLag
	o.NoPasswordLimit, o.AutoConfirm, o.WaitPayTimeout = wechatpay.Fen(c.NoPasswordLimit), c.AutoConfirm, c.WaitPayTimeout
	o.BillAutoConfirm, o.MinAmount = c.BillAutoConfirm, wechatpay.Fen(c.MinAmount)
	o.Product, o.BillConfirmTimeout, o.BillCloseLag = c.Product, c.BillConfirmTimeout, c.BillCloseLag
	o.NotifyLoss, o.NotifyDelay = c.NotifyLoss, c.NotifyDelay
	if c.Balance >= 0 {
		o.Balance = wechatpay.Fen(c.Balance)
	}
	o.RateLimit, o.BillRateLimit, o.NotifyAttempts, o.NotifyBackoff = c.RateLimit, c.BillRateLimit, c.NotifyAttempts, c.NotifyBackoff
	o.Seed, o.Admin, o.Logger = c.Seed, c.Admin, log
	if c.Latency > 0 {
		o.Faults = append(o.Faults, wechatpaytest.FaultRule{Endpoint: wechatpaytest.AnyEndpoint, Fault: wechatpaytest.Latency(c.Latency), Rate: 1})
	}
	for _, r := range []struct {
		field string
		rate  float64
		fault wechatpaytest.Fault
	}{
		{"system-error-rate", c.SystemErrorRate, wechatpaytest.SystemError},
		{"drop-after-commit-rate", c.DropAfterCommitRate, wechatpaytest.DropAfterCommit},
		{"drop-before-commit-rate", c.DropBeforeCommitRate, wechatpaytest.DropBeforeCommit},
		{"truncate-rate", c.TruncateRate, wechatpaytest.Truncate},
		{"unsigned-rate", c.UnsignedRate, wechatpaytest.Unsigned},
		{"frequency-limited-rate", c.FrequencyLimitedRate, wechatpaytest.FrequencyLimited},
	} {
		if !(r.rate >= 0 && r.rate <= 1) {
			return o, config.Errorf(r.field, r.rate, "want a share from 0 to 1")
		}
		if r.rate > 0 {
			o.Faults = append(o.Faults, wechatpaytest.FaultRule{Endpoint: wechatpaytest.AnyEndpoint, Fault: r.fault, Rate: r.rate})
		}
	}
	return o, nil
}

// configPath finds --config in args before the flags are defined, so that the file's values
// become the flags' defaults and explicit flags override them.
func configPath(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

const usage = `usage: sandbox [flags]

Serves the WeChat Pay APIv3 sandbox (pkg/wechatpay/wechatpaytest) with TEST-ONLY keys.
An openid "fail-<FAIL_REASON>-<anything>" makes its detail (or confirmed bill) fail with
that reason. Transfer-bill payees: "decline-…" declines and "noconfirm-…" never confirms
(the bill closes at --bill-confirm-timeout plus --bill-close-lag); others confirm after
--bill-auto-confirm.
Delays are divided by --speed. Flags override --config.

flags:
`

// errUsage is a command-line mistake that has already been reported with the usage.
var errUsage = errors.New("usage error")

// run parses args, serves until ctx is done, then saves the state and prints the counters.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	if path := configPath(args); path != "" {
		if err := config.Load(path, getenv, &cfg); err != nil {
			return err
		}
	}
	set := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	cli.SetUsage(set, usage)
	cfg.flags(set)
	version := set.Bool("version", false, "print the version and exit")
	switch ok, code := cli.Parse(set, args, cli.Env{Stdout: stdout, Stderr: stderr}); {
	case code == 2:
		return errUsage
	case !ok:
		return nil
	case *version:
		cli.WriteVersion(stdout, "sandbox")
		return nil
	}
	if set.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", set.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return config.Errorf("log-level", cfg.LogLevel, "want debug, info, warn or error")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	opts, err := cfg.options(log)
	if err != nil {
		return err
	}
	srv, err := wechatpaytest.New(opts)
	if err != nil {
		return err
	}
	if cfg.State != "" {
		switch err := srv.LoadState(cfg.State); {
		case errors.Is(err, fs.ErrNotExist):
			log.Info("sandbox: no state yet", "state", cfg.State)
		case err != nil:
			srv.Close()
			return err
		default:
			log.Info("sandbox: state loaded", "state", cfg.State, "batches", len(srv.Batches()))
		}
	}
	if err := srv.Start(cfg.Listen); err != nil {
		srv.Close()
		return err
	}
	fmt.Fprintf(stdout, "sandbox listening on %s\n", srv.URL())
	saved := srv.Version()
	save := func() error {
		if cfg.State == "" {
			return nil
		}
		v := srv.Version()
		if v == saved {
			return nil
		}
		if err := srv.SaveState(cfg.State); err != nil {
			return err
		}
		saved = v
		return nil
	}
	tick := time.NewTicker(cfg.SaveInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			if err := save(); err != nil {
				log.Error("sandbox: save state", "err", err)
			}
		}
	}
	srv.Close()
	err = save()
	stats, _ := json.Marshal(srv.Stats())
	fmt.Fprintf(stderr, "sandbox: stopped; counters %s; double paid %v\n", stats, srv.DoublePaid())
	return err
}
