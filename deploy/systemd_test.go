package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestSystemdUnits runs `systemd-analyze verify` on the units (with ExecStart pointing at
// /bin/true, since the binaries are not installed here) so a misplaced or misspelt key fails.
// Without systemd-analyze the test is skipped: the units are examples, not run by CI.
func TestSystemdUnits(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found")
	}
	exec1 := regexp.MustCompile(`(?m)^ExecStart=\S+`)
	envFile := regexp.MustCompile(`(?m)^EnvironmentFile=`)
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"paystream-processor.service", "nats-server.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		b = exec1.ReplaceAll(b, []byte("ExecStart=/bin/true"))
		b = envFile.ReplaceAll(b, []byte("EnvironmentFile=-"))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out, err := exec.Command(bin, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
