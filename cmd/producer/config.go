package main

import (
	"fmt"
	"time"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/pkg/payout"
)

// DefaultConfigPath is read when it exists and --config is not given.
const DefaultConfigPath = "configs/producer.yaml"

// Config is configs/producer.yaml. Flags of the same names given on the command line
// override it (loadConfig).
type Config struct {
	URL           string `yaml:"url"`            // NATS server URL(s), comma-separated
	Creds         string `yaml:"creds"`          // NATS credentials file (JWT + nkey seed)
	TLSCA         string `yaml:"tls-ca"`         // CA bundle to verify the server
	TLSCert       string `yaml:"tls-cert"`       // client certificate (mutual TLS)
	TLSKey        string `yaml:"tls-key"`        // client key
	SubjectPrefix string `yaml:"subject-prefix"` // requests go to <prefix>.<mchid>
	// Product is the merchant's WeChat Pay product: "batches" (the batch API, direct or
	// partner by sub_mchid) or "bills" (transfer bills: every request is checked for the
	// bills rail, payout.RailBills). It must match the processor's wechatpay.product.
	Product             string        `yaml:"product"`
	CancelSubjectPrefix string        `yaml:"cancel-subject-prefix"` // cancels go to <prefix>.<mchid>
	MaxInFlight         int           `yaml:"max-in-flight"`         // unacknowledged publishes at once
	AckTimeout          time.Duration `yaml:"ack-timeout"`           // per publish
	RetryFor            time.Duration `yaml:"retry-for"`             // keep re-publishing after a passing failure this long
	Source              string        `yaml:"source"`                // Request.Source when a record has none
	Limits              LimitsConfig  `yaml:"limits"`

	// WeChat Pay's public key (PEM "PUBLIC KEY", or a platform "CERTIFICATE") and its id
	// (PUB_KEY_ID_…, or the certificate serial): user_name is sealed with it before
	// publishing. Both or neither; without them a record with a plaintext name is invalid.
	WechatpayPublicKeyFile string `yaml:"wechatpay-public-key-file"`
	WechatpayPublicKeyID   string `yaml:"wechatpay-public-key-id"`
}

// LimitsConfig is payout.Limits in YAML.
type LimitsConfig struct {
	MinAmount int64    `yaml:"min-amount"` // fen
	MaxAmount int64    `yaml:"max-amount"` // fen
	Scenes    []string `yaml:"scenes"`     // enabled transfer_scene_id values (batch product)
	// BillScenes is the transfer bills scene table (product bills); empty means
	// payout.DefaultBillScenes.
	BillScenes map[string]BillSceneConfig `yaml:"bill-scenes"`
}

// BillSceneConfig is payout.BillScene in YAML.
type BillSceneConfig struct {
	ReportInfos []string `yaml:"report-infos"` // required info_type values, each exactly once
	Perceptions []string `yaml:"perceptions"`  // allowed user_recv_perception values
}

// Products: the values of Config.Product.
const (
	ProductBatches = "batches"
	ProductBills   = "bills"
)

// DefaultConfig returns the defaults that configs/producer.yaml documents.
func DefaultConfig() Config {
	l := payout.DefaultLimits()
	return Config{
		URL:                 "nats://127.0.0.1:4222",
		SubjectPrefix:       payout.DefaultSubjectPrefix,
		Product:             ProductBatches,
		CancelSubjectPrefix: payout.CancelPrefix,
		MaxInFlight:         256,
		AckTimeout:          5 * time.Second,
		RetryFor:            time.Minute,
		Source:              "producer",
		Limits:              LimitsConfig{MinAmount: l.MinAmount, MaxAmount: l.MaxAmount, Scenes: l.Scenes},
	}
}

// Validate returns a *config.ConfigError for the first bad field.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return config.Errorf("url", nil, "required")
	case c.SubjectPrefix == "":
		return config.Errorf("subject-prefix", nil, "required")
	case c.Product != ProductBatches && c.Product != ProductBills:
		return config.Errorf("product", c.Product, "must be batches or bills")
	case c.CancelSubjectPrefix == "":
		return config.Errorf("cancel-subject-prefix", nil, "required")
	case c.MaxInFlight < 1:
		return config.Errorf("max-in-flight", c.MaxInFlight, "must be at least 1")
	case c.AckTimeout <= 0:
		return config.Errorf("ack-timeout", c.AckTimeout, "must be positive")
	case c.RetryFor < 0:
		return config.Errorf("retry-for", c.RetryFor, "must not be negative")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return config.Errorf("tls-cert", nil, "tls-cert and tls-key go together")
	case c.Limits.MinAmount < 1:
		return config.Errorf("limits.min-amount", c.Limits.MinAmount, "must be at least 1 fen")
	case c.Limits.MaxAmount < c.Limits.MinAmount:
		return config.Errorf("limits.max-amount", c.Limits.MaxAmount, "below min-amount")
	case c.WechatpayPublicKeyFile != "" && c.WechatpayPublicKeyID == "":
		return config.Errorf("wechatpay-public-key-id", nil, "required with wechatpay-public-key-file")
	case c.WechatpayPublicKeyID != "" && c.WechatpayPublicKeyFile == "":
		return config.Errorf("wechatpay-public-key-file", nil, "required with wechatpay-public-key-id")
	case c.WechatpayPublicKeyID != "" && !payout.ValidSerial(c.WechatpayPublicKeyID):
		return config.Errorf("wechatpay-public-key-id", c.WechatpayPublicKeyID, "must be [0-9A-Za-z_]{1,64} (PUB_KEY_ID_… or a certificate serial)")
	}
	if err := payout.ValidateBillScenes(c.limits().BillScenes); err != nil {
		return config.Errorf("limits.bill-scenes", nil, "%v", err)
	}
	return nil
}

// publisherOptions returns the payout.Publisher options of c, loading the WeChat Pay public
// key when one is configured.
func (c Config) publisherOptions() ([]payout.PublisherOption, error) {
	opts := []payout.PublisherOption{payout.WithSubjectPrefix(c.SubjectPrefix),
		payout.WithCancelPrefix(c.CancelSubjectPrefix), payout.WithLimits(c.limits()),
		payout.WithSource(c.Source), payout.WithRail(c.rail())}
	if c.WechatpayPublicKeyFile == "" {
		return opts, nil
	}
	k, err := payout.LoadNameKey(c.WechatpayPublicKeyID, c.WechatpayPublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("wechatpay-public-key-file: %w", err)
	}
	return append(opts, payout.WithNameKey(k)), nil
}

// limits returns the payout.Limits of c.
func (c Config) limits() payout.Limits {
	l := payout.Limits{MinAmount: c.Limits.MinAmount, MaxAmount: c.Limits.MaxAmount, Scenes: c.Limits.Scenes}
	if len(c.Limits.BillScenes) > 0 {
		l.BillScenes = make(map[string]payout.BillScene, len(c.Limits.BillScenes))
		for id, s := range c.Limits.BillScenes {
			l.BillScenes[id] = payout.BillScene{ReportInfos: s.ReportInfos, Perceptions: s.Perceptions}
		}
	}
	return l
}

// rail returns the rail every request is validated for: payout.RailBills on product bills,
// else "" (each request's own, payout.Request.Rail).
func (c Config) rail() string { return productRail(c.Product) }
