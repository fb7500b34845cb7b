package main

import (
	"flag"

	"github.com/paystream/paystream/pkg/payout"
)

// connFlags are the flags publish and cancel share: the config file and the NATS
// connection. Flags given on the command line override the config file.
type connFlags struct {
	config, url, creds, tlsCA, tlsCert, tlsKey *string
}

// addConnFlags registers the shared flags on fs.
func addConnFlags(fs *flag.FlagSet) *connFlags {
	return &connFlags{
		config:  fs.String("config", "", "config file (default "+DefaultConfigPath+" when it exists)"),
		url:     fs.String("url", "", "NATS URL (default nats://127.0.0.1:4222)"),
		creds:   fs.String("creds", "", "NATS credentials file"),
		tlsCA:   fs.String("tls-ca", "", "CA bundle to verify the NATS server"),
		tlsCert: fs.String("tls-cert", "", "client certificate for mutual TLS"),
		tlsKey:  fs.String("tls-key", "", "client key for mutual TLS"),
	}
}

// load reads the config file and applies the shared flags set on fs's command line. The
// caller applies its own flags and then validates.
func (f *connFlags) load(fs *flag.FlagSet, getenv func(string) string) (Config, error) {
	cfg, err := loadConfig(*f.config, getenv)
	if err != nil {
		return cfg, err
	}
	override := map[string]func(){
		"url": func() { cfg.URL = *f.url }, "creds": func() { cfg.Creds = *f.creds },
		"tls-ca": func() { cfg.TLSCA = *f.tlsCA }, "tls-cert": func() { cfg.TLSCert = *f.tlsCert },
		"tls-key": func() { cfg.TLSKey = *f.tlsKey },
	}
	fs.Visit(func(fl *flag.Flag) {
		if set, ok := override[fl.Name]; ok {
			set()
		}
	})
	return cfg, nil
}

// productRail returns the rail requests of product are validated for: payout.RailBills
// for ProductBills, "" (each request's own) otherwise.
func productRail(product string) string {
	if product == ProductBills {
		return payout.RailBills
	}
	return ""
}
