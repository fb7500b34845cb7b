package pipeline

import (
	"context"
	"fmt"
	"testing"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/pkg/wechatpay"
)

func TestCreateAnswer(t *testing.T) {
	api := func(status int, code string) error { return &wechatpay.APIError{StatusCode: status, Code: code} }
	for _, tc := range []struct {
		name  string
		err   error
		first bool
		want  createAction
	}{
		{name: "accepted", err: nil, first: true, want: createAccepted},
		{name: "PARAM_ERROR on the first attempt", err: api(400, "PARAM_ERROR"), first: true, want: createRejected},
		{name: "PARAM_ERROR after an unanswered attempt", err: api(400, "PARAM_ERROR"), first: false, want: createProbe},
		{name: "INVALID_REQUEST, even first", err: api(400, "INVALID_REQUEST"), first: true, want: createProbe},
		{name: "NOT_ENOUGH first", err: api(403, "NOT_ENOUGH"), first: true, want: createParked},
		{name: "NO_AUTH after an unanswered attempt", err: api(403, "NO_AUTH"), first: false, want: createProbe},
		{name: "ALREADY_EXISTS", err: api(400, "ALREADY_EXISTS"), first: false, want: createExists},
		{name: "SYSTEM_ERROR", err: api(500, "SYSTEM_ERROR"), first: true, want: createMaybeYes},
		{name: "any 429", err: api(429, "SOMETHING_NEW"), first: true, want: createMaybeYes},
		{name: "an unknown code", err: api(400, "NEVER_SEEN"), first: true, want: createMaybeYes},
		{name: "NOT_FOUND", err: api(404, "NOT_FOUND"), first: true, want: createMaybeYes},
		{name: "a timeout", err: fmt.Errorf("post: %w", context.DeadlineExceeded), first: true, want: createMaybeYes},
		{name: "not sent", err: fmt.Errorf("%w: throttle", wechatpay.ErrNotSent), first: true, want: createNotSent},
		{name: "breaker open", err: gobreaker.ErrOpenState, first: false, want: createNotSent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := createAnswer(tc.err, tc.first); got != tc.want {
				t.Fatalf("createAnswer(%v, first=%v) = %d, want %d", tc.err, tc.first, got, tc.want)
			}
		})
	}
}
