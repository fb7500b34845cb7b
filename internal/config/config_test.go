package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name   string        `yaml:"name"`
	Secret string        `yaml:"secret"`
	Wait   time.Duration `yaml:"wait"`
	Keep   int           `yaml:"keep"`
}

func TestParse(t *testing.T) {
	env := map[string]string{"SECRET": "s3cr3t"}
	getenv := func(k string) string { return env[k] }
	t.Run("expands variables and keeps defaults", func(t *testing.T) {
		got := sample{Keep: 7}
		if err := Parse(strings.NewReader("name: a\nsecret: ${SECRET}\nwait: 2s\n"), getenv, &got); err != nil {
			t.Fatal(err)
		}
		if want := (sample{Name: "a", Secret: "s3cr3t", Wait: 2 * time.Second, Keep: 7}); got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("unset variable is an error", func(t *testing.T) {
		var got sample
		err := Parse(strings.NewReader("secret: ${NOPE}\n"), getenv, &got)
		if !errors.Is(err, ErrUnsetVariable) || !strings.Contains(err.Error(), "NOPE") {
			t.Fatalf("err = %v, want ErrUnsetVariable naming NOPE", err)
		}
	})
	t.Run("comments are not expanded", func(t *testing.T) {
		var got sample
		if err := Parse(strings.NewReader("# ${NOT_SET} is fine here\nname: b # and ${HERE}\n"), getenv, &got); err != nil || got.Name != "b" {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("unknown key is an error", func(t *testing.T) {
		var got sample
		if err := Parse(strings.NewReader("nmae: a\n"), getenv, &got); err == nil || !strings.Contains(err.Error(), "nmae") {
			t.Fatalf("err = %v, want one naming the unknown key", err)
		}
	})
	t.Run("empty file keeps defaults", func(t *testing.T) {
		got := sample{Keep: 3}
		if err := Parse(strings.NewReader(""), getenv, &got); err != nil || got.Keep != 3 {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

func TestConfigError(t *testing.T) {
	err := Errorf("wechatpay.mchid", "x", "must be digits")
	var ce *ConfigError
	if !errors.As(error(err), &ce) || ce.Field != "wechatpay.mchid" {
		t.Fatalf("errors.As failed: %v", err)
	}
	if got, want := err.Error(), "config: wechatpay.mchid = x: must be digits"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
