package pipeline

import (
	"log/slog"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// TestBreaker: 429s are the throttle's to handle and never open the breaker; a run of
// answers that say WeChat is unwell does.
func TestBreaker(t *testing.T) {
	cb := newBreaker[int]("test", BreakerConfig{Failures: 3, OpenTimeout: time.Hour}, slog.New(slog.DiscardHandler))
	call := func(err error) {
		if _, got := cb.Execute(func() (int, error) { return 0, err }); got != err {
			t.Fatalf("Execute = %v, want %v passed through", got, err)
		}
	}
	for range 10 {
		call(&wechatpay.APIError{StatusCode: 429, Code: "FREQUENCY_LIMIT_EXCEED"})
	}
	call(&wechatpay.APIError{StatusCode: 400, Code: "ALREADY_EXISTS"})
	if got := cb.State(); got != gobreaker.StateClosed {
		t.Fatalf("after 10 429s and an ALREADY_EXISTS the breaker is %v, want closed", got)
	}
	for range 3 {
		call(&wechatpay.APIError{StatusCode: 500, Code: "SYSTEM_ERROR"})
	}
	if got := cb.State(); got != gobreaker.StateOpen {
		t.Fatalf("after 3 SYSTEM_ERRORs the breaker is %v, want open", got)
	}
}
