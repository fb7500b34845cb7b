package configtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/paystream/paystream/internal/config"
)

// fakeT records whether a check failed instead of failing the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(string, ...any) {
	f.failed = true
	panic(f) // stop like t.Fatalf does
}

func TestWantField(t *testing.T) {
	bad := config.Errorf("poll.page-limit", 500, "20..100")
	tests := []struct {
		name       string
		err        error
		field, msg string
		wantFail   bool
	}{
		{"nil wanted", nil, "", "", false},
		{"error where nil wanted", bad, "", "", true},
		{"the field", bad, "poll.page-limit", "20..100", false},
		{"wrapped", fmt.Errorf("file: %w", bad), "poll.page-limit", "file: config", false},
		{"another field", bad, "poll.interval", "", true},
		{"another message", bad, "poll.page-limit", "1..10", true},
		{"not a ConfigError", errors.New("poll.page-limit"), "poll.page-limit", "", true},
		{"nil where an error is wanted", nil, "poll.page-limit", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeT{TB: t}
			func() {
				defer func() {
					if r := recover(); r != nil && r != f {
						panic(r)
					}
				}()
				WantField(f, tt.err, tt.field, tt.msg)
			}()
			if f.failed != tt.wantFail {
				t.Fatalf("failed = %v, want %v", f.failed, tt.wantFail)
			}
		})
	}
}
