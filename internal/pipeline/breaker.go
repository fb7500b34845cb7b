package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// BreakerConfig configures the circuit breaker around WeChat Pay calls.
type BreakerConfig struct {
	Failures    uint32        `yaml:"failures"`     // consecutive ambiguous outcomes that open it
	OpenTimeout time.Duration `yaml:"open-timeout"` // how long it stays open before a probe
}

// newBreaker wraps calls in a gobreaker that trips only on ambiguous outcomes that say
// WeChat is unwell (transport errors, 5xx, SYSTEM_ERROR, forged 2xx). Business rejections,
// NOT_FOUND, a bill create's ALREADY_EXISTS and 429s count as successes for the breaker (the
// API answered; a 429 is the throttle's to act on, and the payout still treats it as "maybe
// done"); cancellation is ignored. While open, calls
// fail with gobreaker.ErrOpenState before anything is sent.
func newBreaker[T any](name string, c BreakerConfig, log *slog.Logger) *gobreaker.CircuitBreaker[T] {
	return gobreaker.NewCircuitBreaker[T](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     c.OpenTimeout,
		ReadyToTrip: func(counts gobreaker.Counts) bool { return counts.ConsecutiveFailures >= c.Failures },
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("circuit breaker", "name", name, "from", from.String(), "to", to.String())
		},
		IsSuccessful: func(err error) bool {
			return !wechatpay.Ambiguous(err) || is429(err) || errors.Is(err, wechatpay.ErrAlreadyExists)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
}

// classify is wechatpay.Classify, with an open breaker meaning nothing was sent.
func classify(err error) wechatpay.Class {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return wechatpay.ClassNotSent
	}
	return wechatpay.Classify(err)
}
