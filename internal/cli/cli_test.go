package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"
)

func TestDispatch(t *testing.T) {
	cmds := map[string]Command{"hello": func(_ context.Context, args []string, e Env) int {
		e.Stdout.Write([]byte("hi " + strings.Join(args, ",")))
		return 7
	}}
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string
		wantErrSub string
	}{
		{name: "runs the subcommand with the rest", args: []string{"hello", "a", "b"}, wantCode: 7, wantOut: "hi a,b"},
		{name: "no arguments is a usage error", args: nil, wantCode: 2, wantErrSub: "USAGE"},
		{name: "unknown subcommand is named", args: []string{"nope"}, wantCode: 2, wantErrSub: `tool: unknown command "nope"`},
		{name: "help prints usage on stdout", args: []string{"--help"}, wantCode: 0, wantOut: "USAGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			code := Dispatch(context.Background(), "tool", "USAGE", cmds, tc.args, Env{Stdout: &out, Stderr: &errOut})
			if code != tc.wantCode || out.String() != tc.wantOut || !strings.Contains(errOut.String(), tc.wantErrSub) {
				t.Fatalf("code %d out %q err %q; want %d %q containing %q", code, out.String(), errOut.String(), tc.wantCode, tc.wantOut, tc.wantErrSub)
			}
		})
	}
}

func TestDispatch_Version(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version"} {
		var out, errOut strings.Builder
		if got, want := Dispatch(context.Background(), "tool", "USAGE", nil, []string{arg}, Env{Stdout: &out, Stderr: &errOut}), 0; got != want {
			t.Fatalf("%s: exit %d, want %d", arg, got, want)
		}
		if got, want := out.String(), "tool "+VersionString()+"\n"; got != want {
			t.Fatalf("%s: stdout %q, want %q", arg, got, want)
		}
	}
}

func TestVersionString(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.9.9-test"
	if got := VersionString(); !strings.HasPrefix(got, "v9.9.9-test") || !strings.Contains(got, "go1.") {
		t.Fatalf("VersionString() = %q, want the -X value then the Go version", got)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name             string
		args             []string
		custom           bool // a fs.Usage of its own
		wantOK           bool
		wantCode         int
		wantOut, wantErr string // substrings; "" means nothing at all
		wantN            int
	}{
		{name: "flags parse", args: []string{"-n", "3"}, wantOK: true, wantN: 3},
		{name: "-h prints usage on stdout and exits 0", args: []string{"-h"}, wantOut: "usage: tool [flags]"},
		{name: "--help too", args: []string{"--help"}, wantOut: "-n int"},
		{name: "a custom usage goes to stdout", args: []string{"--help"}, custom: true, wantOut: "usage: tool --n N"},
		{name: "a bad flag is a usage error on stderr", args: []string{"--nope"}, wantCode: 2, wantErr: "flag provided but not defined: -nope\nusage: tool [flags]"},
		{name: "a bad value names the flag", args: []string{"-n", "x"}, custom: true, wantCode: 2, wantErr: `invalid value "x" for flag -n`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("tool", flag.ContinueOnError)
			n := fs.Int("n", 0, "a number")
			SetUsage(fs, "")
			if tc.custom {
				fs.Usage = func() { fmt.Fprintln(fs.Output(), "usage: tool --n N") }
			}
			var out, errOut strings.Builder
			ok, code := Parse(fs, tc.args, Env{Stdout: &out, Stderr: &errOut})
			if ok != tc.wantOK || code != tc.wantCode || *n != tc.wantN {
				t.Fatalf("Parse = %v, %d, n %d; want %v, %d, n %d", ok, code, *n, tc.wantOK, tc.wantCode, tc.wantN)
			}
			for _, c := range []struct{ got, want, stream string }{{out.String(), tc.wantOut, "stdout"}, {errOut.String(), tc.wantErr, "stderr"}} {
				if (c.want == "") != (c.got == "") || !strings.Contains(c.got, c.want) {
					t.Fatalf("%s %q, want %q", c.stream, c.got, c.want)
				}
			}
		})
	}
}

// typed is a flag.Value that names its argument, as config.Flags' do.
type typed struct{ s string }

func (v *typed) String() string {
	if v == nil {
		return ""
	}
	return v.s
}
func (v *typed) Set(s string) error { v.s = s; return nil }
func (v *typed) Type() string       { return "duration" }

// TestSetUsage_typedFlag: help names the argument of a Value with a Type method and shows
// its default; the flag package's own flags print as flag.PrintDefaults prints them.
func TestSetUsage_typedFlag(t *testing.T) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.Var(&typed{}, "wait", "how long")
	fs.Lookup("wait").DefValue = "1s"
	fs.Var(&typed{}, "idle", "no default")
	fs.Int("n", 3, "a number")
	fs.String("s", "", "a string")
	var want strings.Builder
	std := flag.NewFlagSet("tool", flag.ContinueOnError)
	std.Int("n", 3, "a number")
	std.String("s", "", "a string")
	std.SetOutput(&want)
	std.PrintDefaults()
	SetUsage(fs, "usage\n")
	var out strings.Builder
	fs.SetOutput(&out)
	fs.Usage()
	for _, sub := range []string{"usage\n", "  -wait duration\n    \thow long (default 1s)\n", "  -idle duration\n    \tno default\n", want.String()[:strings.Index(want.String(), "  -s")]} {
		if !strings.Contains(out.String(), sub) {
			t.Fatalf("usage %q, want it to contain %q", out.String(), sub)
		}
	}
}
