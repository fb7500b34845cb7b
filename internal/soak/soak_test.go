package soak

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSoakShort is the soak of make test: 5000 requests through 3 processors on a 3-node
// cluster, a processor SIGKILLed every 2 s (at least 5 times), one NATS node restarted, and
// every check of the full soak (make soak) asserted. The binaries are built into the test's
// temporary directory; the go build cache makes that quick.
func TestSoakShort(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Payouts, cfg.KillEvery, cfg.MinKills, cfg.Timeout = 5000, 2*time.Second, 5, 4*time.Minute
	cfg.Quota, cfg.Share = 20, 20 // a small load still meets 429s
	var progress strings.Builder
	cfg.Log = &progress
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("soak could not run: %v\n%s", err, progress.String())
	}
	var b strings.Builder
	rep.WriteText(&b)
	t.Log("\n" + b.String() + "\nprogress:\n" + progress.String())
	if rep.Kills < 5 || rep.NATSRestarts < 1 {
		t.Errorf("%d kills and %d NATS restarts, want ≥ 5 and ≥ 1", rep.Kills, rep.NATSRestarts)
	}
	if n := rep.Failed(); n > 0 {
		t.Errorf("%d of %d checks failed", n, len(rep.Checks))
	}
	if len(rep.Checks) < 10 {
		t.Errorf("only %d checks ran", len(rep.Checks))
	}
	if t.Failed() {
		// t.TempDir goes away with the test: keep the end of each processor's log here.
		for i := range cfg.Processors {
			path := filepath.Join(cfg.Dir, fmt.Sprintf("p%d", i+1), "processor.log")
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last lines of %s:\n%s", path, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	}
}

// TestConfigValidate: a config the harness cannot run is refused before anything starts.
func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Dir = t.TempDir()
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr error
	}{
		{"default with a dir", func(*Config) {}, nil},
		{"no dir", func(c *Config) { c.Dir = "" }, ErrConfig},
		{"too few payouts", func(c *Config) { c.Payouts = 10 }, ErrConfig},
		{"no processors", func(c *Config) { c.Processors = 0 }, ErrConfig},
		{"ack-wait under a second", func(c *Config) { c.AckWait = time.Millisecond }, ErrConfig},
		{"no kill interval", func(c *Config) { c.KillEvery = 0 }, ErrConfig},
		{"no quota", func(c *Config) { c.Quota = 0 }, ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if err := c.validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}
