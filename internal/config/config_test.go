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

type nested struct {
	Pipeline struct {
		Poll struct {
			Interval time.Duration   `yaml:"interval"`
			Limit    int             `yaml:"limit"`
			Backoff  []time.Duration `yaml:"backoff"`
		} `yaml:"poll"`
		Scenes []string `yaml:"scenes"`
	} `yaml:"pipeline"`
	Token string `yaml:"token"`
}

func TestParse_typeErrorsNameTheKeyPath(t *testing.T) {
	env := map[string]string{"WAIT": "soon"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name string
		yaml string
		want []string // each a whole error line
	}{
		{
			name: "duration",
			yaml: "# comment\npipeline:\n\n  poll:\n    interval: abc   # oops\n",
			want: []string{`config: pipeline.poll.interval: cannot use "abc" as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (line 5)`},
		},
		{
			name: "a duration without a unit",
			yaml: "pipeline:\n  poll:\n    interval: 5\n",
			want: []string{`config: pipeline.poll.interval: cannot use "5" as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (line 3)`},
		},
		{
			name: "int",
			yaml: "pipeline:\n  poll:\n    limit: many\n",
			want: []string{`config: pipeline.poll.limit: cannot use "many" as an integer (line 3)`},
		},
		{
			name: "a list element, a long value",
			yaml: "pipeline:\n  poll:\n    backoff: [1s, thirty-seconds]\n",
			want: []string{`config: pipeline.poll.backoff[1]: cannot use "thirty-seconds" as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (line 3)`},
		},
		{
			name: "a scalar for a list",
			yaml: "pipeline:\n  scenes: \"1000\"\n",
			want: []string{`config: pipeline.scenes: cannot use "1000" as a list of string (line 2)`},
		},
		{
			name: "a list for a string",
			yaml: "token:\n  - a\n",
			want: []string{`config: token: cannot use a list as a string (line 2)`},
		},
		{
			name: "a value from a variable is not repeated",
			yaml: "pipeline:\n  poll:\n    interval: ${WAIT}\n",
			want: []string{`config: pipeline.poll.interval: cannot use the value of its ${VARIABLE} as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (line 3)`},
		},
		{
			name: "several errors and an unknown key, each with its path",
			yaml: "pipeline:\n  poll:\n    limit: x\n    intervall: 1s\n  scenes: {a: b}\n",
			want: []string{
				`config: pipeline.poll.limit: cannot use "x" as an integer (line 3)`,
				`config: pipeline.poll.intervall: unknown key (line 4)`,
				`config: pipeline.scenes: cannot use a mapping as a list of string (line 5)`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got nested
			err := Parse(strings.NewReader(tc.yaml), getenv, &got)
			if err == nil {
				t.Fatal("no error")
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Fatalf("error\n%s\nwant\n%s", got, want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%T is not a *ConfigError", err)
			}
		})
	}
}

func TestNegativeDuration(t *testing.T) {
	type inner struct {
		Wait    time.Duration   `yaml:"wait"`
		Backoff []time.Duration `yaml:"backoff"`
	}
	type conn struct {
		Timeout time.Duration `yaml:"timeout"`
	}
	type cfg struct {
		Conn    conn             `yaml:",inline"`
		Inner   inner            `yaml:"inner"`
		ByName  map[string]inner `yaml:"by-name"`
		Ptr     *inner           `yaml:"ptr"`
		Skipped time.Duration    `yaml:"-"`
		Plain   time.Duration
	}
	for _, tc := range []struct {
		name      string
		cfg       cfg
		wantField string // "" means no error
	}{
		{name: "none negative", cfg: cfg{Inner: inner{Wait: time.Second, Backoff: []time.Duration{0, time.Second}}, Skipped: -1}},
		{name: "nested", cfg: cfg{Inner: inner{Wait: -time.Second}}, wantField: "inner.wait"},
		{name: "a list element", cfg: cfg{Inner: inner{Backoff: []time.Duration{time.Second, -1}}}, wantField: "inner.backoff[1]"},
		{name: "inline adds no name", cfg: cfg{Conn: conn{Timeout: -time.Minute}}, wantField: "timeout"},
		{name: "a map value", cfg: cfg{ByName: map[string]inner{"a": {Wait: -1}}}, wantField: "by-name.a.wait"},
		{name: "through a pointer", cfg: cfg{Ptr: &inner{Wait: -1}}, wantField: "ptr.wait"},
		{name: "untagged: the lower-case name", cfg: cfg{Plain: -1}, wantField: "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := NegativeDuration(tc.cfg)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("NegativeDuration = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrNegative) {
				t.Fatalf("NegativeDuration = %v, want a *ConfigError wrapping ErrNegative", err)
			}
			if got, want := ce.Field, tc.wantField; got != want {
				t.Fatalf("field %q, want %q", got, want)
			}
		})
	}
}

func TestWithin(t *testing.T) {
	other := errors.New("other")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"one", Errorf("poll.page-limit", 7, "20..100"), "config: pipeline.poll.page-limit = 7: 20..100"},
		{"joined", errors.Join(Errorf("a", nil, "x"), other), "config: pipeline.a: x\nother"},
		{"other", other, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Within("pipeline", tt.err)
			if tt.want == "" {
				if got != nil {
					t.Fatalf("Within(nil) = %v", got)
				}
				return
			}
			if got.Error() != tt.want {
				t.Fatalf("Within = %q, want %q", got, tt.want)
			}
		})
	}
}
