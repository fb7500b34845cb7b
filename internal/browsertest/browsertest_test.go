package browsertest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/paystream/paystream/internal/browsertest"
)

func TestNew(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>t</title><p id="greeting">hello</p>`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(browsertest.New(t), time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#greeting")))
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello"; got != want {
		t.Fatalf("text %q, want %q", got, want)
	}
}
