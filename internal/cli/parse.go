package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// Version is the release this binary was built from. The Makefile sets it with
// -ldflags "-X github.com/paystream/paystream/internal/cli.Version=$(git describe --always --dirty)";
// a plain go build leaves "devel".
var Version = "devel"

// VersionString is Version followed by the VCS revision (and "modified" for a dirty tree)
// that the go command recorded in the binary, when it did, and the Go version:
// "v1.2.0 (vcs 1a2b3c4d5e6f) go1.26.8".
func VersionString() string {
	s := Version
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return s
	}
	var rev, modified string
	for _, kv := range info.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.modified":
			if kv.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev != "" {
		s += fmt.Sprintf(" (vcs %.12s%s)", rev, modified)
	}
	return s + " " + info.GoVersion
}

// WriteVersion prints "name VersionString()" on w: what --version prints.
func WriteVersion(w io.Writer, name string) {
	fmt.Fprintf(w, "%s %s\n", name, VersionString())
}

// Parse parses args into fs. It returns ok when the command should go on. Otherwise code is
// the exit code: 0 after -h or --help, which prints fs.Usage on e.Stdout (help asked for is
// not an error), 2 after a bad flag, which prints the error and fs.Usage on e.Stderr.
// fs.Usage must write to fs.Output(), as SetUsage's does. fs's output is e.Stderr afterwards.
func Parse(fs *flag.FlagSet, args []string, e Env) (ok bool, code int) {
	usage := fs.Usage
	// Silence the flag package's own printing: it would send help to stderr.
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(e.Stderr)
	switch {
	case err == nil:
		return true, 0
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(e.Stdout)
		usage()
		fs.SetOutput(e.Stderr)
		return false, 0
	default:
		fmt.Fprintln(e.Stderr, err)
		usage()
		return false, 2
	}
}

// SetUsage makes fs's usage text followed by its flags (flag.PrintDefaults), written to
// fs.Output(). A text of "" says "usage: NAME [flags]".
func SetUsage(fs *flag.FlagSet, text string) {
	if text == "" {
		text = fmt.Sprintf("usage: %s [flags]\n\nflags:\n", fs.Name())
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), text)
		fs.PrintDefaults()
	}
}
