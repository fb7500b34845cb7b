// Package app wires one processor replica from its configuration: the ledger, NATS (embedded
// or external), the topology, the WeChat Pay client and the pipeline. cmd/processor stays thin.
package app

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/broker"
	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/internal/pipeline"
	"github.com/paystream/paystream/internal/replica"
	"github.com/paystream/paystream/pkg/batching"
	"github.com/paystream/paystream/pkg/wechatpay"
)

// Config is the processor's configuration file (configs/processor.yaml).
type Config struct {
	DataDir   string          `yaml:"data-dir"` // ledger, embedded JetStream store
	Ledger    string          `yaml:"ledger"`   // default <data-dir>/ledger.db
	NATS      NATSConfig      `yaml:"nats"`
	WeChatPay WeChatPayConfig `yaml:"wechatpay"`
	Pipeline  pipeline.Config `yaml:"pipeline"`
	Callback  CallbackConfig  `yaml:"callback"`
	HTTP      HTTPConfig      `yaml:"http"`
	Log       LogConfig       `yaml:"log"`
	Replica   ReplicaConfig   `yaml:"replica"`
}

// ReplicaConfig is where the ledger is replicated, continuously, by litestream run as a child
// process (internal/replica, docs/replication.md), and restored from when the file is lost.
type ReplicaConfig struct {
	// URL is the replica of this processor's ledger (one per ledger): file:///backup/p1,
	// nats://n1:4222/paystream-ledger-p1 (a JetStream object store; the nats section's
	// credentials and TLS files are used), s3://bucket/path. Empty: no replication.
	URL string `yaml:"url"`
	// SyncInterval is how often litestream ships new commits: about what a lost disk loses.
	SyncInterval time.Duration `yaml:"sync-interval"`
	// Litestream is the litestream executable (make litestream builds the pinned version).
	Litestream string `yaml:"litestream"`
}

// NATSConfig says where JetStream is and what lives in it.
type NATSConfig struct {
	broker.Conn    `yaml:",inline"`
	EmbeddedListen string          `yaml:"embedded-listen"` // used when url is empty
	Topology       broker.Topology `yaml:"topology"`
}

// WeChatPayConfig holds the merchant's API identity. Secrets come from files or ${VARS}.
type WeChatPayConfig struct {
	BaseURL       string   `yaml:"base-url"`
	BackupBaseURL string   `yaml:"backup-base-url"`
	MchID         string   `yaml:"mchid"`
	SubMchIDs     []string `yaml:"sub-mchids"` // partner rail: the sub-merchants this processor may pay for; empty: none
	// Product is what the merchant has: batches (the batch API, merchants from before
	// 2025-01-15) or bills (transfer bills, every merchant since). It decides the rail of
	// new requests and the default rate limits.
	Product              string        `yaml:"product"`
	MerchantSerialNo     string        `yaml:"merchant-serial-no"`
	PrivateKeyFile       string        `yaml:"private-key-file"` // must be mode 0600
	PublicKeyFile        string        `yaml:"wechatpay-public-key-file"`
	PublicKeyID          string        `yaml:"wechatpay-public-key-id"`
	PlatformCertificates []string      `yaml:"platform-certificates"`
	APIv3Key             string        `yaml:"apiv3-key"`
	Timeout              time.Duration `yaml:"timeout"`
}

// LogValue keeps the APIv3 key out of logs.
func (w WeChatPayConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", w.BaseURL), slog.String("mchid", w.MchID), slog.String("serial", w.MerchantSerialNo))
}

// CallbackConfig enables the notification endpoint.
type CallbackConfig struct {
	Listen string `yaml:"listen"` // e.g. 127.0.0.1:8088; empty: off
	Path   string `yaml:"path"`
}

// HTTPConfig is the operator's listener: the status page, /metrics, /livez and /readyz.
type HTTPConfig struct {
	Listen string `yaml:"listen"` // e.g. 127.0.0.1:8091; empty: off
	// AdminToken enables the page's actions that move money (retry a parked batch, cancel a
	// payout); empty: the page is read-only.
	AdminToken string `yaml:"admin-token"`
}

// LogValue keeps the admin token out of logs.
func (h HTTPConfig) LogValue() slog.Value { return slog.GroupValue(slog.String("listen", h.Listen)) }

// LogConfig selects the slog handler.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// DefaultConfig is the embedded, production-paced default.
func DefaultConfig() Config {
	return Config{
		DataDir: ".paystream",
		NATS:    NATSConfig{EmbeddedListen: "127.0.0.1:4222", Topology: broker.DefaultTopology()},
		WeChatPay: WeChatPayConfig{
			BaseURL: "https://api.mch.weixin.qq.com", BackupBaseURL: "https://api2.mch.weixin.qq.com", Timeout: 15 * time.Second,
			Product: pipeline.ProductBatches,
		},
		Pipeline: pipeline.DefaultConfig(),
		Callback: CallbackConfig{Path: "/wechatpay/notify"},
		Log:      LogConfig{Level: "info", Format: "text"},
		Replica:  ReplicaConfig{SyncInterval: time.Second, Litestream: replica.BinaryPath(".")},
	}
}

// LoadConfig is how the processor reads its configuration, config.Load's one path: the
// defaults (DefaultConfig), the YAML file at path over them (none when path is ""; ${VAR}
// expanded with getenv), then each override in order, so a command-line value wins over the
// file; then the settings derived from others (a Config's derive) and Validate. Every error
// naming a setting is a *config.ConfigError with its key path ("pipeline.poll.page-limit").
func LoadConfig(path string, getenv func(string) string, overrides ...config.Override) (Config, error) {
	cfg := loading(DefaultConfig())
	err := config.Load(path, getenv, &cfg, overrides...)
	return Config(cfg), err
}

// loading is a Config being read: the same keys, and a Validate that first derives what the
// file and the overrides leave to other settings, so the derived values see both.
type loading Config

// Validate derives, then checks (Config.Validate).
func (l *loading) Validate() error {
	c := (*Config)(l)
	c.derive()
	return c.Validate()
}

// derive sets what other settings decide: ledger defaults to <data-dir>/ledger.db; the
// pipeline's product is wechatpay.product; on product bills an untouched pipeline.rate-limit
// becomes the transfer bills limits (pipeline.BillsRates).
func (c *Config) derive() {
	if c.Ledger == "" {
		c.Ledger = filepath.Join(c.DataDir, "ledger.db")
	}
	c.Pipeline.Product = c.WeChatPay.Product
	if c.Pipeline.Product == pipeline.ProductBills && c.Pipeline.RateLimit == pipeline.DefaultConfig().RateLimit {
		c.Pipeline.RateLimit = pipeline.BillsRates()
	}
}

var digits = regexp.MustCompile(`^[0-9]{1,32}$`)

// Validate checks every field the processor depends on and names the first bad one by its key
// path (a *config.ConfigError). The pipeline section is checked by pipeline.Config.Validate,
// the one check of those settings (pipeline.New runs it too), its keys named under
// "pipeline."; here only what needs two sections: intake.fetch-batch ≤ max-ack-pending.
func (c Config) Validate() error {
	t := c.NATS.Topology
	checks := []struct {
		bad   bool
		field string
		value any
		msg   string
	}{
		{c.DataDir == "", "data-dir", nil, "required"},
		{c.NATS.URL == "" && !validHostPort(c.NATS.EmbeddedListen), "nats.embedded-listen", c.NATS.EmbeddedListen, "want host:port"},
		{t.Stream == "" || t.Consumer == "" || t.ResultsStream == "" || t.DeadLetterStream == "" || t.ClaimsBucket == "", "nats.topology", nil, "stream, consumer, results-stream, dead-letter-stream and claims-bucket are required"},
		{!strings.HasSuffix(t.Subjects, ".>"), "nats.topology.subjects", t.Subjects, "must end in .>"},
		{!strings.HasSuffix(t.ResultsSubjects, ".>"), "nats.topology.results-subjects", t.ResultsSubjects, "must end in .>"},
		{!strings.HasSuffix(t.CancelSubjects, ".>"), "nats.topology.cancel-subjects", t.CancelSubjects, "must end in .>"},
		{t.AckWait < time.Second, "nats.topology.ack-wait", t.AckWait, "too short"},
		{t.MaxDeliver != -1, "nats.topology.max-deliver", t.MaxDeliver, "must be -1: JetStream drops a request after max-deliver deliveries and tells no one; paystream dead-letters bad requests itself"},
		{t.MaxAge < 7*24*time.Hour || t.MaxAge < 2*t.DuplicateWindow, "nats.topology.max-age", t.MaxAge, "≥ 7 days and ≥ twice the duplicate window: a request not taken in by then is lost"},
		{t.DeadLetterMaxAge < 24*time.Hour, "nats.topology.dead-letter-max-age", t.DeadLetterMaxAge, "≥ 24h, long enough for upstream to read its refusals"},
		{len(t.Backoff) > 0 && t.Backoff[0] < t.AckWait, "nats.topology.backoff", t.Backoff, "JetStream uses the first step as the ack wait: it must be ≥ ack-wait"},
		{t.InstancesBucket == "", "nats.topology.instances-bucket", nil, "required"},
		{t.BatchesBucket == "", "nats.topology.batches-bucket", nil, "required"},
		{t.HeartbeatEvery <= 0, "nats.topology.heartbeat-every", t.HeartbeatEvery, "must be positive"},
		{t.SilentAfter < 3*t.HeartbeatEvery, "nats.topology.silent-after", t.SilentAfter, "must be at least 3 × heartbeat-every: a beat or two lost is not a silent instance"},
		{t.ClaimsTTL < 24*time.Hour, "nats.topology.claims-ttl", t.ClaimsTTL, "must outlive every redelivery and replay window (≥ 24h; default 90 days)"},
		{t.Replicas < 1 || t.Replicas > 5, "nats.topology.replicas", t.Replicas, "1..5"},
		{c.NATS.URL == "" && t.Replicas > 1, "nats.topology.replicas", t.Replicas, "1 with the embedded server (a single node); 3 needs a NATS cluster in nats.url (deploy/nats)"},
		{c.WeChatPay.BaseURL == "", "wechatpay.base-url", nil, "required"},
		{!digits.MatchString(c.WeChatPay.MchID), "wechatpay.mchid", c.WeChatPay.MchID, "digits required"},
		{!allDigits(c.WeChatPay.SubMchIDs), "wechatpay.sub-mchids", c.WeChatPay.SubMchIDs, "digits required"},
		{c.WeChatPay.MerchantSerialNo == "", "wechatpay.merchant-serial-no", nil, "required"},
		{c.WeChatPay.PrivateKeyFile == "", "wechatpay.private-key-file", nil, "required"},
		{c.WeChatPay.PublicKeyFile == "" && len(c.WeChatPay.PlatformCertificates) == 0, "wechatpay.wechatpay-public-key-file", nil, "a WeChat Pay public key or platform certificates are required"},
		{len(c.WeChatPay.APIv3Key) != wechatpay.APIv3KeySize, "wechatpay.apiv3-key", nil, "must be 32 characters"},
		{c.HTTP.Listen != "" && !validHostPort(c.HTTP.Listen), "http.listen", c.HTTP.Listen, "want host:port"},
		{c.HTTP.AdminToken != "" && len(c.HTTP.AdminToken) < 16, "http.admin-token", nil, "at least 16 characters when set"},
		{c.Log.Format != "text" && c.Log.Format != "json", "log.format", c.Log.Format, "text or json"},
		{c.Replica.URL != "" && c.Replica.Litestream == "", "replica.litestream", nil, "required with replica.url (make litestream builds " + replica.BinaryPath(".") + ")"},
	}
	for _, ch := range checks {
		if ch.bad {
			return config.Errorf(ch.field, ch.value, "%s", ch.msg)
		}
	}
	// Pipeline.Product is set from wechatpay.product (derive): the file's key is named.
	if err := pipeline.CheckProduct(c.WeChatPay.Product); err != nil {
		return config.Errorf("wechatpay.product", c.WeChatPay.Product, "%w", err)
	}
	if err := config.Within("pipeline", c.Pipeline.Validate()); err != nil {
		return err
	}
	// One fetch asks for no more messages than the consumer lets be unacknowledged at once.
	if f := c.Pipeline.Intake.FetchBatch; f > t.MaxAckPending {
		return config.Errorf("pipeline.intake.fetch-batch", f, "must be ≤ nats.topology.max-ack-pending (%d)", t.MaxAckPending)
	}
	// Intake holds a claimed payout's message unacked until its batch fills or max-wait passes
	// (internal/pipeline): it must be acked well before JetStream delivers it again.
	if w := cmp.Or(c.Pipeline.Batching.MaxWait, batching.DefaultMaxWait); w > t.AckWait/2 {
		return config.Errorf("pipeline.batching.max-wait", w, "must be ≤ half of nats.topology.ack-wait (%s): intake holds messages that long", t.AckWait)
	}
	// Every duration is a wait, a period or an age: none may be negative.
	if err := config.NegativeDuration(c); err != nil {
		return err
	}
	if c.Replica.URL != "" {
		if err := c.replicaConfig().Validate(); err != nil {
			return config.Errorf("replica.url", nil, "%v", err)
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil {
		return config.Errorf("log.level", c.Log.Level, "%v", err)
	}
	return nil
}

func allDigits(ids []string) bool {
	for _, id := range ids {
		if !digits.MatchString(id) {
			return false
		}
	}
	return true
}

func validHostPort(s string) bool {
	_, _, err := net.SplitHostPort(s)
	return err == nil
}

// Logger builds the one *slog.Logger from c.Log.
func (c Config) Logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Log.Level)) // validated
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Client loads the key files and builds the WeChat Pay client, logging to log with the
// configured timeout; opts come after those. The library names what it refuses by its own Go
// field (wechatpay.ConfigError); those come back as *config.ConfigError naming the YAML key,
// like every other setting.
func (w WeChatPayConfig) Client(log *slog.Logger, opts ...wechatpay.Option) (*wechatpay.Client, error) {
	cfg := wechatpay.Config{
		BaseURL: w.BaseURL, BackupBaseURL: w.BackupBaseURL, MchID: w.MchID, MerchantSerialNo: w.MerchantSerialNo,
		WechatPayPublicKeyID: w.PublicKeyID, APIv3Key: w.APIv3Key,
	}
	if err := cfg.LoadKeyFiles(w.PrivateKeyFile, w.PublicKeyFile, w.PlatformCertificates...); err != nil {
		return nil, wechatpayKey(fmt.Errorf("wechatpay keys: %w", err))
	}
	c, err := wechatpay.NewClient(cfg, append([]wechatpay.Option{wechatpay.WithLogger(log), wechatpay.WithTimeout(w.Timeout)}, opts...)...)
	return c, wechatpayKey(err)
}

// wechatpayKeys maps wechatpay.Config's fields to the keys of the wechatpay section.
var wechatpayKeys = map[string]string{
	"BaseURL": "base-url", "BackupBaseURL": "backup-base-url", "MchID": "mchid", "MerchantSerialNo": "merchant-serial-no",
	"PrivateKey": "private-key-file", "WechatPayPublicKeyID": "wechatpay-public-key-id",
	"WechatPayPublicKey": "wechatpay-public-key-file", "PlatformCertificates": "platform-certificates", "APIv3Key": "apiv3-key",
}

// wechatpayKey turns a *wechatpay.ConfigError in err into a *config.ConfigError naming the
// YAML key ("wechatpay.private-key-file"); other errors are returned as they are.
func wechatpayKey(err error) error {
	var ce *wechatpay.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	key, ok := wechatpayKeys[ce.Field]
	if !ok {
		return err
	}
	return config.Errorf("wechatpay."+key, nil, "%v", ce.Err)
}

// replicaConfig is the litestream configuration of the ledger (internal/replica).
// A nats:// replica authenticates with the nats section's credentials and TLS files.
func (c Config) replicaConfig() replica.Config {
	rc := replica.Config{DB: c.Ledger, Replica: c.Replica.URL, SyncInterval: c.Replica.SyncInterval}
	if strings.HasPrefix(c.Replica.URL, "nats://") {
		rc.Creds, rc.RootCA, rc.ClientCert, rc.ClientKey = c.NATS.CredsFile, c.NATS.TLSCA, c.NATS.TLSCert, c.NATS.TLSKey
	}
	return rc
}
