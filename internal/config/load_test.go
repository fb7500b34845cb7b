package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// loaded is a config for Load's tests: nested, with a list, a map and a Validate.
type loaded struct {
	Name    string            `yaml:"name"`
	Admin   bool              `yaml:"admin"`
	Speed   float64           `yaml:"speed"`
	Poll    poll              `yaml:"poll"`
	Tags    []string          `yaml:"tags"`
	Scenes  map[string]string `yaml:"scenes"`
	Inlined `yaml:",inline"`
}

type poll struct {
	Interval time.Duration `yaml:"interval"`
	Limit    int           `yaml:"limit"`
}

// Inlined is a section whose keys sit at the top level.
type Inlined struct {
	Seed uint64 `yaml:"seed"`
}

func (c loaded) Validate() error {
	if c.Poll.Limit < 0 {
		return Errorf("poll.limit", c.Poll.Limit, "must not be negative")
	}
	return nil
}

func defaults() loaded {
	return loaded{Name: "d", Speed: 1, Poll: poll{Interval: time.Second, Limit: 10}}
}

func TestLoad(t *testing.T) {
	env := map[string]string{"NAME": "from-env"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name      string
		file      string // "" for no file
		overrides []Override
		want      func(*loaded)
		wantField string // a *ConfigError naming this key path
		wantSub   string // in the error
		wantErr   bool
	}{
		{name: "no file keeps defaults", want: func(*loaded) {}},
		{name: "file over defaults, ${VAR} expanded", file: "name: ${NAME}\npoll:\n  limit: 3\n",
			want: func(c *loaded) { c.Name, c.Poll.Limit = "from-env", 3 }},
		{name: "a flag overrides the file", file: "poll:\n  interval: 2s\n", overrides: []Override{{Key: "poll.interval", Value: "5s"}},
			want: func(c *loaded) { c.Poll.Interval = 5 * time.Second }},
		{name: "typed values", overrides: []Override{{Key: "admin", Value: "true"}, {Key: "speed", Value: "2.5"}, {Key: "seed", Value: "7"}, {Key: "poll.limit", Value: "4"}},
			want: func(c *loaded) { c.Admin, c.Speed, c.Seed, c.Poll.Limit = true, 2.5, 7, 4 }},
		{name: "a string as typed, even empty", file: "name: x\n", overrides: []Override{{Key: "name", Value: ""}},
			want: func(c *loaded) { c.Name = "" }},
		{name: "a number-looking string stays a string", overrides: []Override{{Key: "name", Value: "0123"}},
			want: func(c *loaded) { c.Name = "0123" }},
		{name: "a duration of 0 without a unit", overrides: []Override{{Key: "poll.interval", Value: "0"}},
			want: func(c *loaded) { c.Poll.Interval = 0 }},
		{name: "a list and a map entry", overrides: []Override{{Key: "tags", Value: "[a, b]"}, {Key: "scenes.1000", Value: "x"}},
			want: func(c *loaded) { c.Tags, c.Scenes = []string{"a", "b"}, map[string]string{"1000": "x"} }},
		{name: "bad file value names the key and line", file: "name: a\npoll:\n  interval: soon\n",
			wantField: "poll.interval", wantSub: `cannot use "soon" as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (line 3)`, wantErr: true},
		{name: "bad flag value names the key and the command line", file: "name: a\n", overrides: []Override{{Key: "poll.interval", Value: "soon"}},
			wantField: "poll.interval", wantSub: `cannot use "soon" as a duration (a number with a unit: 500ms, 30s, 1m30s, 2h) (command line)`, wantErr: true},
		{name: "bad flag number", overrides: []Override{{Key: "poll.limit", Value: "many"}},
			wantField: "poll.limit", wantSub: `cannot use "many" as an integer (command line)`, wantErr: true},
		{name: "bad flag boolean", overrides: []Override{{Key: "admin", Value: "maybe"}},
			wantField: "admin", wantSub: "true or false (command line)", wantErr: true},
		{name: "bad flag list", overrides: []Override{{Key: "tags", Value: "[a"}},
			wantField: "tags", wantSub: "(command line)", wantErr: true},
		{name: "unknown key in the file", file: "nmae: a\n", wantField: "nmae", wantSub: "unknown key (line 1)", wantErr: true},
		{name: "unknown key on the command line", overrides: []Override{{Key: "poll.intervall", Value: "1s"}},
			wantField: "poll.intervall", wantSub: "unknown key (command line)", wantErr: true},
		{name: "unset variable", file: "name: ${NOPE}\n", wantSub: "NOPE", wantErr: true},
		{name: "Validate decides after the overrides", file: "poll:\n  limit: 1\n", overrides: []Override{{Key: "poll.limit", Value: "-1"}},
			wantField: "poll.limit", wantSub: "must not be negative", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var path string
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got := defaults()
			err := Load(path, getenv, &got, tc.overrides...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				var ce *ConfigError
				if tc.wantField != "" && (!errors.As(err, &ce) || ce.Field != tc.wantField) {
					t.Fatalf("err = %v, want a *ConfigError for %s", err, tc.wantField)
				}
				if !strings.Contains(err.Error(), tc.wantSub) {
					t.Fatalf("err = %v, want it to say %q", err, tc.wantSub)
				}
				return
			}
			want := defaults()
			tc.want(&want)
			if !equal(got, want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

func equal(a, b loaded) bool {
	return a.Name == b.Name && a.Admin == b.Admin && a.Speed == b.Speed && a.Poll == b.Poll && a.Seed == b.Seed &&
		slices.Equal(a.Tags, b.Tags) && len(a.Scenes) == len(b.Scenes) && a.Scenes["1000"] == b.Scenes["1000"]
}

func TestLoad_missingFile(t *testing.T) {
	got := defaults()
	if err := Load(filepath.Join(t.TempDir(), "nope.yaml"), os.Getenv, &got); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want os.ErrNotExist", err)
	}
}

// TestFlags: only the config flags set on the command line become overrides, named by key;
// a boolean one needs no value; a default is shown in help, a zero one is not.
func TestFlags(t *testing.T) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.String("file", "", "not a config key")
	Flags(fs, defaults(), map[string]string{"admin": "a", "speed": "s", "poll.interval": "i", "poll.limit": "l", "seed": "s"})
	if err := fs.Parse([]string{"--admin", "--poll.interval", "5s", "--file", "f", "--seed=9"}); err != nil {
		t.Fatal(err)
	}
	want := []Override{{Key: "admin", Value: "true"}, {Key: "poll.interval", Value: "5s"}, {Key: "seed", Value: "9"}}
	if got := Overrides(fs); !slices.Equal(got, want) {
		t.Fatalf("Overrides = %+v, want %+v", got, want)
	}
	for name, want := range map[string]string{"speed": "1", "poll.interval": "1s", "poll.limit": "10", "admin": "", "seed": ""} {
		if got := fs.Lookup(name).DefValue; got != want {
			t.Fatalf("default of %s = %q, want %q", name, got, want)
		}
	}
	got := defaults()
	if err := Load("", os.Getenv, &got, Overrides(fs)...); err != nil || !got.Admin || got.Poll.Interval != 5*time.Second || got.Seed != 9 {
		t.Fatalf("Load = %+v, %v", got, err)
	}
}

func TestFlags_unknownKeyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a key the config does not have")
		}
	}()
	Flags(flag.NewFlagSet("tool", flag.ContinueOnError), defaults(), map[string]string{"spede": "typo"})
}
