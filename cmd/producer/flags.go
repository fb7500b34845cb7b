package main

import (
	"flag"
	"maps"
	"os"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/pkg/payout"
)

// connUsage is the help of the flags publish and cancel share, the NATS connection's keys.
var connUsage = map[string]string{
	"url":      "NATS URL",
	"creds":    "NATS credentials file",
	"tls-ca":   "CA bundle to verify the NATS server",
	"tls-cert": "client certificate for mutual TLS",
	"tls-key":  "client key for mutual TLS",
}

// configFlags defines on fs --config and a flag for each key of the connection (connUsage)
// and of usage, each overriding that key of the config file; loadConfig reads them.
func configFlags(fs *flag.FlagSet, usage map[string]string) (path *string) {
	path = fs.String("config", "", "config file (default "+DefaultConfigPath+" when it exists); flags override it")
	all := maps.Clone(connUsage)
	maps.Copy(all, usage)
	config.Flags(fs, DefaultConfig(), all)
	return path
}

// loadConfig loads the config the one way (config.Load): DefaultConfig, then the file at
// path (DefaultConfigPath when path is "" and that exists; no file otherwise), then the
// overrides (config.Overrides of the command line's flags), then Validate.
func loadConfig(path string, getenv func(string) string, overrides ...config.Override) (Config, error) {
	if path == "" {
		if _, err := os.Stat(DefaultConfigPath); err == nil {
			path = DefaultConfigPath
		}
	}
	c := DefaultConfig()
	err := config.Load(path, getenv, &c, overrides...)
	return c, err
}

// productRail returns the rail requests of product are validated for: payout.RailBills
// for ProductBills, "" (each request's own) otherwise.
func productRail(product string) string {
	if product == ProductBills {
		return payout.RailBills
	}
	return ""
}
