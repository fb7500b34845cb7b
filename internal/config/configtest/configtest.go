// Package configtest checks, in tests, the errors internal/config's loaders and validators
// return.
package configtest

import (
	"errors"
	"strings"
	"testing"

	"github.com/paystream/paystream/internal/config"
)

// WantField fails t unless err is (or wraps) a *config.ConfigError naming field whose text
// contains msg. With field "" it fails t unless err is nil.
func WantField(t testing.TB, err error, field, msg string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	var ce *config.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *config.ConfigError for %s", err, field)
	}
	if got, want := ce.Field, field; got != want {
		t.Fatalf("field = %q, want %q (%v)", got, want, err)
	}
	if got := err.Error(); !strings.Contains(got, msg) {
		t.Fatalf("err = %q, want it to say %q", got, msg)
	}
}
