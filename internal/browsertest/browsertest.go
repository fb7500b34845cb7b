// Package browsertest starts a headless Chromium for tests that drive a page through
// github.com/chromedp/chromedp. The browser is Debian's chromium package (or Google Chrome):
// CI installs it (.ci/run) and a missing browser fails the test there; locally it skips with
// the command that installs it.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// Install is what a machine without a browser needs.
const Install = "install Debian's chromium (apt-get install chromium)"

// candidates are the browser executables looked for on PATH, in order.
var candidates = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// Chromium returns the path of a Chromium or Chrome executable on PATH. When there is none it
// fails the test under CI=true and skips it otherwise, both saying how to install one.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range candidates {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no chromium, chromium-browser or google-chrome on PATH: %s", Install)
	}
	t.Skipf("no chromium, chromium-browser or google-chrome on PATH: %s", Install)
	return ""
}

// New starts a headless browser (Chromium's sandbox off when running as root, where it cannot
// start) and returns a chromedp context for one tab in it. The browser is closed when the
// test ends; bound each chromedp.Run or chromedp.Do with context.WithTimeout of this context. A browser
// that does not start fails the test.
func New(t testing.TB) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium(t)), chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1024))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser and its first tab, with no timeout (it would bound the browser's life)
		t.Fatalf("start %s: %v", Chromium(t), err)
	}
	return ctx
}

// Screenshot saves a full-page PNG of the tab in ctx to path and logs where (go test -v shows
// it). With SCREENSHOT_DIR set, a copy goes there too, named <test>-<file>, to outlive the
// test's temp dir (the README's screenshot is made so).
func Screenshot(t testing.TB, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{path}
	if dir := os.Getenv("SCREENSHOT_DIR"); dir != "" {
		paths = append(paths, filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+filepath.Base(path)))
	}
	for _, p := range paths {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
}
