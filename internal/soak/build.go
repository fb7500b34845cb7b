package soak

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs a soak runs, by file name in its bin directory.
var Binaries = []string{"processor", "sandbox", "producer", "nats-server"}

// Build compiles the paystream binaries and nats-server (from the nats-server/v2 module this
// module already requires) into dir. It runs the go command in the module root, so the
// build cache makes a repeated build quick.
func Build(ctx context.Context, dir string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"build", "-o", abs + string(filepath.Separator), "./cmd/processor", "./cmd/sandbox", "./cmd/producer"},
		{"build", "-o", filepath.Join(abs, "nats-server"), "github.com/nats-io/nats-server/v2"},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// ModuleRoot is the directory of the go.mod that encloses the working directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == "/dev/null" {
		return "", fmt.Errorf("not inside the paystream module")
	}
	return filepath.Dir(mod), nil
}
