package cli

import (
	"context"
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
