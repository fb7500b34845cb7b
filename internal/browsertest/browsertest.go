// Package browsertest starts a headless Chromium for tests that drive a page through
// github.com/chromedp/chromedp. The browser is Debian's chromium package (or Google Chrome):
// CI installs it (.ci/run) and a missing browser fails the test there; locally it skips with
// the command that installs it.
package browsertest

import (
	"context"
	"os"
	"os/exec"
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
