package replica

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BinaryPath is where `make litestream` puts the pinned litestream under moduleRoot (the
// directory holding paystream's go.mod): bin/litestream-<Version>/litestream.
func BinaryPath(moduleRoot string) string {
	return filepath.Join(moduleRoot, "bin", "litestream-"+Version, "litestream")
}

// Binary returns the absolute path of the pinned litestream executable under moduleRoot,
// building it first when it is missing, as `make litestream` does: `go install
// Module@Version` from the Go module proxy (a few minutes: it compiles modernc SQLite). The
// build goes to a temporary directory and is renamed into place, so concurrent callers
// (test packages run in parallel) never run a half-written file; the losers of a race
// build in vain. It needs the go command on PATH.
func Binary(moduleRoot string) (string, error) {
	bin, err := filepath.Abs(BinaryPath(moduleRoot))
	if err != nil {
		return "", fmt.Errorf("litestream binary: %w", err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("litestream binary: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", fmt.Errorf("litestream binary: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(bin), ".build-")
	if err != nil {
		return "", fmt.Errorf("litestream binary: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", Module+"@"+Version)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("litestream binary: go install %s@%s: %w\n%s", Module, Version, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "litestream"), bin); err != nil {
		return "", fmt.Errorf("litestream binary: %w", err)
	}
	return bin, nil
}
