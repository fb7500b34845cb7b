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
	// FundFlowReady is when a day's fund-flow bill can be had, counted from the start of that
	// day in China Standard Time (docs/reconciliation.md: WeChat's are ready from about 10:00
	// the next day, 34h); make run sets 0 to reconcile the day it ran.
	FundFlowReady   time.Duration `yaml:"fund-flow-ready"`
	FundFlowReturns bool          `yaml:"fund-flow-returns"` // failed batch details appear as a debit and its return

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
		FundFlowReady: o.FundFlowDelay + 24*time.Hour, FundFlowReturns: o.FundFlowReturns,
	}
}

// flagUsage is the help of the flags: one for each key of Config but bill-scenes, named
// like it, overriding the config file (config.Flags).
var flagUsage = map[string]string{
	"listen":                  "address to serve on; port 0 picks one (the URL is the first stdout line)",
	"admin":                   "serve the unsigned admin API under /sandbox/ (paid, batches, stats, confirm, faults, …)",
	"state":                   "JSON file that keeps batches and the paid record across restarts (written atomically)",
	"save-interval":           "how often a changed state is saved",
	"log-level":               "debug, info, warn or error (debug logs every request)",
	"mchid":                   "merchant id requests must be signed for",
	"merchant-serial":         "merchant certificate serial requests must name",
	"merchant-public-key":     "PEM public key that verifies requests (default: the embedded TEST-ONLY key)",
	"platform-private-key":    "PEM private key that signs answers (default: the embedded TEST-ONLY key)",
	"platform-key-id":         "Wechatpay-Serial of answers: a PUB_KEY_ID_… or a platform certificate serial",
	"apiv3-key":               "32-byte key that encrypts callbacks (use ${VAR} in the config file for real secrets)",
	"appid":                   "the only appid accepted (empty: any)",
	"speed":                   "divides every sandbox delay; 1 is realistic, 100 suits tests",
	"accept-delay":            "how long a batch stays ACCEPTED (at speed 1)",
	"bill-accept-delay":       "how long a transfer bill stays ACCEPTED before WAIT_USER_CONFIRM (at speed 1)",
	"process-delay":           "how long a detail stays PROCESSING (at speed 1)",
	"not-found-lag":           "queries of younger batches answer 404 NOT_FOUND (at speed 1)",
	"no-password-limit":       "fen; larger details wait in WAIT_PAY for POST /sandbox/confirm (0: no limit)",
	"auto-confirm":            "confirm WAIT_PAY details this long after acceptance (0: never)",
	"wait-pay-timeout":        "fail unconfirmed WAIT_PAY details after this (0: never)",
	"product":                 "the merchant's product: batches or bills (the other's creates answer 403 NO_AUTH); empty: both",
	"bill-auto-confirm":       "simulated users act on transfer bills after this: confirm, or by openid decline-…/noconfirm-… (0: only POST /sandbox/bills/{out_bill_no}/confirm or /decline)",
	"bill-confirm-timeout":    "unconfirmed transfer bills close FAIL OVERDUE_CLOSE after this (0: never)",
	"bill-close-lag":          "the close of an unconfirmed bill comes this much after --bill-confirm-timeout",
	"balance":                 "merchant balance in fen; creates beyond it get 403 NOT_ENOUGH (-1: unlimited)",
	"min-amount":              "smallest transfer_amount in fen",
	"rate-limit":              "requests per second per batch endpoint, else 429 FREQUENCY_LIMITED (0: off)",
	"bill-rate-limit":         "requests per second per transfer-bill endpoint (0: off)",
	"notify-attempts":         "deliveries of one callback at most",
	"notify-backoff":          "first wait between callback deliveries, doubling (at speed 1)",
	"notify-loss":             "share of callbacks (batches and bills) never delivered, drawn from --seed",
	"notify-delay":            "extra wait before a callback's first delivery (at speed 1)",
	"fund-flow-ready":         "a day's fund-flow bill is served from this long after the day begins, China time (WeChat: 34h, 10:00 the next day; 0: at once)",
	"fund-flow-returns":       "fund-flow bills show each failed batch detail as a debit and its return",
	"seed":                    "seed of the fault rates, for reproducible runs",
	"latency":                 "added to every call",
	"system-error-rate":       "share of calls answered 500 SYSTEM_ERROR before doing anything",
	"drop-after-commit-rate":  "share of calls served, then answered by a connection reset",
	"drop-before-commit-rate": "share of calls answered by a reset before doing anything",
	"truncate-rate":           "share of calls served, then answered with half a body",
	"unsigned-rate":           "share of calls served, then answered without a signature",
	"frequency-limited-rate":  "share of calls answered 429 FREQUENCY_LIMITED",
}

// Validate returns a *config.ConfigError naming the first bad setting. The key files are
// read by options.
func (c Config) Validate() error {
	var level slog.Level
	switch {
	case c.Listen == "":
		return config.Errorf("listen", nil, "required")
	case c.SaveInterval <= 0:
		return config.Errorf("save-interval", c.SaveInterval, "want > 0")
	case level.UnmarshalText([]byte(c.LogLevel)) != nil:
		return config.Errorf("log-level", c.LogLevel, "want debug, info, warn or error")
	case !(c.Speed > 0) || math.IsInf(c.Speed, 0):
		return config.Errorf("speed", c.Speed, "want > 0: it divides every delay (1 is realistic)")
	case c.RateLimit < 0:
		return config.Errorf("rate-limit", c.RateLimit, "want ≥ 0 requests/s (0: no limit)")
	case c.BillRateLimit < 0:
		return config.Errorf("bill-rate-limit", c.BillRateLimit, "want ≥ 0 requests/s (0: no limit)")
	case len(c.APIv3Key) != wechatpay.APIv3KeySize:
		return config.Errorf("apiv3-key", nil, "%d bytes, want %d", len(c.APIv3Key), wechatpay.APIv3KeySize)
	case c.Balance < -1:
		return config.Errorf("balance", c.Balance, "want fen ≥ 0, or -1 for unlimited")
	case c.Product != wechatpaytest.ProductBoth && c.Product != wechatpaytest.ProductBatches && c.Product != wechatpaytest.ProductBills:
		return config.Errorf("product", c.Product, "want batches, bills or empty (both)")
	case !(c.NotifyLoss >= 0 && c.NotifyLoss <= 1):
		return config.Errorf("notify-loss", c.NotifyLoss, "want a share from 0 to 1")
	}
	for _, r := range c.faultRates() {
		if !(r.rate >= 0 && r.rate <= 1) {
			return config.Errorf(r.field, r.rate, "want a share from 0 to 1")
		}
	}
	if err := config.NegativeDuration(c); err != nil { // accept-delay, notify-delay, bill-close-lag, …
		return err
	}
	if scenes := c.billScenes(); scenes != nil {
		if err := wechatpaytest.ValidateBillScenes(scenes); err != nil {
			return &config.ConfigError{Field: "bill-scenes", Err: err}
		}
	}
	return nil
}

// logLevel is the level of log-level, which Validate has checked.
func (c Config) logLevel() slog.Level {
	var level slog.Level
	level.UnmarshalText([]byte(c.LogLevel))
	return level
}

// faultRate is a share of calls answered with fault, set by field.
type faultRate struct {
	field string
	rate  float64
	fault wechatpaytest.Fault
}

// faultRates are c's *-rate settings.
func (c Config) faultRates() []faultRate {
	return []faultRate{
		{"system-error-rate", c.SystemErrorRate, wechatpaytest.SystemError},
		{"drop-after-commit-rate", c.DropAfterCommitRate, wechatpaytest.DropAfterCommit},
		{"drop-before-commit-rate", c.DropBeforeCommitRate, wechatpaytest.DropBeforeCommit},
		{"truncate-rate", c.TruncateRate, wechatpaytest.Truncate},
		{"unsigned-rate", c.UnsignedRate, wechatpaytest.Unsigned},
		{"frequency-limited-rate", c.FrequencyLimitedRate, wechatpaytest.FrequencyLimited},
	}
}

// billScenes is bill-scenes as wechatpaytest's scene table, nil when not configured (the
// default table).
func (c Config) billScenes() map[string]wechatpaytest.BillSceneRule {
	if c.BillScenes == nil {
		return nil
	}
	out := make(map[string]wechatpaytest.BillSceneRule, len(c.BillScenes))
	for id, sc := range c.BillScenes {
		out[id] = wechatpaytest.BillSceneRule{ReportInfos: sc.ReportInfos, Perceptions: sc.Perceptions}
	}
	return out
}

// options validates c, reads its key files and turns it into wechatpaytest.Options.
func (c Config) options(log *slog.Logger) (wechatpaytest.Options, error) {
	o := wechatpaytest.DefaultOptions()
	if err := c.Validate(); err != nil {
		return o, err
	}
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
	if scenes := c.billScenes(); scenes != nil {
		o.BillScenes = scenes
	}
	o.Speed, o.AcceptDelay, o.BillAcceptDelay, o.ProcessDelay, o.NotFoundLag = c.Speed, c.AcceptDelay, c.BillAcceptDelay, c.ProcessDelay, c.NotFoundLag
	o.NoPasswordLimit, o.AutoConfirm, o.WaitPayTimeout = wechatpay.Fen(c.NoPasswordLimit), c.AutoConfirm, c.WaitPayTimeout
	o.BillAutoConfirm, o.MinAmount = c.BillAutoConfirm, wechatpay.Fen(c.MinAmount)
	o.Product, o.BillConfirmTimeout, o.BillCloseLag = c.Product, c.BillConfirmTimeout, c.BillCloseLag
	o.NotifyLoss, o.NotifyDelay = c.NotifyLoss, c.NotifyDelay
	o.FundFlowDelay, o.FundFlowReturns = c.FundFlowReady-24*time.Hour, c.FundFlowReturns
	if c.Balance >= 0 {
		o.Balance = wechatpay.Fen(c.Balance)
	}
	o.RateLimit, o.BillRateLimit, o.NotifyAttempts, o.NotifyBackoff = c.RateLimit, c.BillRateLimit, c.NotifyAttempts, c.NotifyBackoff
	o.Seed, o.Admin, o.Logger = c.Seed, c.Admin, log
	if c.Latency > 0 {
		o.Faults = append(o.Faults, wechatpaytest.FaultRule{Endpoint: wechatpaytest.AnyEndpoint, Fault: wechatpaytest.Latency(c.Latency), Rate: 1})
	}
	for _, r := range c.faultRates() {
		if r.rate > 0 {
			o.Faults = append(o.Faults, wechatpaytest.FaultRule{Endpoint: wechatpaytest.AnyEndpoint, Fault: r.fault, Rate: r.rate})
		}
	}
	return o, nil
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

// run is the whole command line (cli.Run): exit 0 after serving, 1 on an error, which it
// prints on stderr, 2 on a usage error.
func run(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) int {
	switch err := serve(ctx, args, getenv, stdout, stderr); {
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "sandbox:", err)
		return 1
	}
	return 0
}

// serve parses args, loads the config (config.Load: defaults, --config, then the flags
// given), serves until ctx is done, then saves the state and prints the counters.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	set := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	cli.SetUsage(set, usage)
	path := set.String("config", "", "YAML file of these settings (configs/sandbox.yaml); flags override it")
	config.Flags(set, cfg, flagUsage)
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
	if err := config.Load(*path, getenv, &cfg, config.Overrides(set)...); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel()}))
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
