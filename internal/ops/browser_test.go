package ops_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/paystream/paystream/internal/browsertest"
)

// TestHandler_Browser drives the page in headless Chromium: it renders with the parked batch
// and its reason, the lookup form finds a payout, and a logged-in admin retries the parked
// batch through its form. The screenshots are kept in the test's
// temp dir (logged with -v).
func TestHandler_Browser(t *testing.T) {
	browser := browsertest.New(t)
	admin := &fakeAdmin{}
	base := serve(t, config(admin))
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(browser, time.Minute)
	defer cancel()

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#open"))); err != nil {
		t.Fatal(err)
	}
	open, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#open tr.parked")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{parkedNo, "PARKED", "NOT_ENOUGH", "资金不足"} {
		if !strings.Contains(open, want) {
			t.Errorf("parked row %q lacks %q", open, want)
		}
	}
	browsertest.Screenshot(t, ctx, filepath.Join(dir, "status.png"))

	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#key"), billKey),
		chromedp.Submit(chromedp.CSS("#lookup")),
		chromedp.WaitVisible(chromedp.CSS("#payout")),
	); err != nil {
		t.Fatal(err)
	}
	state, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#state")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := state, "WAIT_USER_CONFIRM"; got != want {
		t.Errorf("looked-up state %q, want %q", got, want)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loc, base+"/payouts?key="+billKey; got != want {
		t.Errorf("location %q, want %q", got, want)
	}
	browsertest.Screenshot(t, ctx, filepath.Join(dir, "payout.png"))

	// An admin logs in and retries the parked batch: the browser's own Origin and
	// Sec-Fetch-Site pass the cross-origin checks, and the form carries the CSRF token.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), adminToken),
		chromedp.Submit(chromedp.CSS(`form[action="/admin/login"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/admin/batches/`+parkedNo+`/retry"]`)),
		chromedp.Submit(chromedp.CSS(`form[action="/admin/batches/`+parkedNo+`/retry"]`)),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
	); err != nil {
		t.Fatal(err)
	}
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#flash")))
	if err != nil {
		t.Fatal(err)
	}
	if want := "batch " + parkedNo + " will be tried again now"; flash != want {
		t.Errorf("flash %q, want %q", flash, want)
	}
	if retries, _ := admin.calls(); len(retries) != 1 || retries[0] != parkedNo {
		t.Errorf("retries %q, want exactly %s", retries, parkedNo)
	}
	browsertest.Screenshot(t, ctx, filepath.Join(dir, "retried.png"))
}

// shot saves a full-page PNG screenshot to path and logs where.
