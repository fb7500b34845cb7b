package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// unitKeys reads a systemd unit as section → key → values (a key may repeat), failing on a
// line that is neither a comment, a [Section] nor Key=Value.
func unitKeys(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	units := map[string]map[string][]string{}
	var section string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			units[section] = map[string][]string{}
		case section != "" && strings.Contains(line, "="):
			k, v, _ := strings.Cut(line, "=")
			units[section][k] = append(units[section][k], v)
		default:
			t.Fatalf("%s:%d: not a unit line: %q", path, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return units
}

// TestSystemdUnits checks what the units promise (deploy/README.md): the processor runs as its
// own user with its secrets from a file, its state in /var/lib/paystream, restarts on failure
// and has time to finish the group in hand on stop; NATS stops in lame-duck mode. Where
// systemd-analyze exists it also verifies every key (with ExecStart pointing at /bin/true).
func TestSystemdUnits(t *testing.T) {
	for _, tc := range []struct {
		name string
		want map[string]string // Service key → value it must have ("" = present)
		exec string            // what ExecStart must contain
	}{
		{name: "paystream-processor.service", exec: " run --config /etc/paystream/processor.yaml", want: map[string]string{
			"User": "paystream", "EnvironmentFile": "/etc/paystream/env", "StateDirectory": "paystream",
			"Restart": "on-failure", "KillSignal": "SIGTERM", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
			"TimeoutStopSec": ""}},
		{name: "nats-server.service", exec: "nats-server -c ", want: map[string]string{
			"User": "nats", "StateDirectory": "nats", "Restart": "on-failure", "KillSignal": "SIGUSR2", "TimeoutStopSec": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := unitKeys(t, filepath.Join("systemd", tc.name))
			svc := u["Service"]
			if u["Unit"] == nil || svc == nil || u["Install"] == nil {
				t.Fatalf("want [Unit], [Service] and [Install] sections, got %v", u)
			}
			if got := svc["ExecStart"]; len(got) != 1 || !strings.Contains(got[0], tc.exec) {
				t.Errorf("ExecStart %q, want one containing %q", got, tc.exec)
			}
			for k, want := range tc.want {
				got := svc[k]
				if len(got) != 1 || (want != "" && got[0] != want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if stop, err := time.ParseDuration(svc["TimeoutStopSec"][0]); err != nil || stop < 30*time.Second {
				t.Errorf("TimeoutStopSec %q: want at least 30s to finish the group in hand (%v)", svc["TimeoutStopSec"], err)
			}
		})
	}
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found: keys checked above only")
		return
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
