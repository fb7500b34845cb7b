package payout

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"ack timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"no responders", fmt.Errorf("publish: %w", nats.ErrNoResponders), true},
		{"duplicate in process", &jetstream.APIError{ErrorCode: jsDuplicateInProcess}, true},
		{"other API error", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{"canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := Transient(tt.err), tt.want; got != want {
				t.Fatalf("Transient(%v) = %v, want %v", tt.err, got, want)
			}
		})
	}
}
