package pipeline

import (
	"errors"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// createAction is what the answer to a create (a batch or a bill) calls for. It is the one
// place the rules of money decide on a create's answer, for every rail.
type createAction int

const (
	createAccepted createAction = iota // WeChat took it
	// createRejected: refused for its content on the very first attempt, so nothing can
	// exist under the number: nothing was paid.
	createRejected
	// createProbe: refused, but the number may exist: an earlier attempt went unanswered (its
	// refusal would prove nothing, docs/money-rules.md#ambiguous), or the code is INVALID_REQUEST, which is also WeChat's
	// "this number exists with other content" (docs/wechatpay.md §4). Query it: follow it if it
	// exists (the body is frozen, so it is ours), else park.
	createProbe
	createParked   // refused until an operator acts: the same number after parked-retry
	createExists   // ALREADY_EXISTS (transfer bills): it exists and is final; query it
	createNotSent  // nothing left this process (cancelled, breaker open, throttle)
	createMaybeYes // ambiguous, or NOT_FOUND: maybe done; the same body again after a backoff
)

// createAnswer classifies a create's error. first is whether no earlier attempt of this
// number may have reached WeChat.
func createAnswer(err error, first bool) createAction {
	class := classify(err)
	switch {
	case class == wechatpay.ClassOK:
		return createAccepted
	case errors.Is(err, wechatpay.ErrAlreadyExists):
		return createExists
	case class == wechatpay.ClassRejected && first:
		return createRejected
	case class == wechatpay.ClassRejected, class == wechatpay.ClassBlocked:
		if !first || errors.Is(err, wechatpay.ErrInvalidRequest) {
			return createProbe
		}
		return createParked
	case class == wechatpay.ClassNotSent:
		return createNotSent
	}
	return createMaybeYes
}
