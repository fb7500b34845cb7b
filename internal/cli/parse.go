package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"strings"
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

// SetUsage makes fs's usage text followed by its flags (as flag.PrintDefaults, see
// printDefaults), written to fs.Output(). A text of "" says "usage: NAME [flags]".
func SetUsage(fs *flag.FlagSet, text string) {
	if text == "" {
		text = fmt.Sprintf("usage: %s [flags]\n\nflags:\n", fs.Name())
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), text)
		printDefaults(fs)
	}
}

// printDefaults is flag.PrintDefaults, except that a flag whose Value has a Type() string
// method (config.Flags') shows that as the name of its argument where the flag package would
// say "value", and quotes its default when that name is "string".
func printDefaults(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		var b strings.Builder
		fmt.Fprintf(&b, "  -%s", f.Name)
		name, usage := flag.UnquoteUsage(f)
		typed, ok := f.Value.(interface{ Type() string })
		if ok && name == "value" {
			name = typed.Type()
		}
		if name != "" {
			b.WriteString(" " + name)
		}
		if b.Len() <= 4 { // a one-letter boolean flag: usage on the same line
			b.WriteString("\t")
		} else {
			b.WriteString("\n    \t")
		}
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		if !isZeroValue(f) {
			if g, ok := f.Value.(flag.Getter); ok && isString(g.Get()) || name == "string" {
				fmt.Fprintf(&b, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(&b, " (default %v)", f.DefValue)
			}
		}
		fmt.Fprint(fs.Output(), b.String(), "\n")
	})
}

func isString(v any) bool { _, ok := v.(string); return ok }

// isZeroValue reports whether f's default is the zero value of its type, which help does
// not show (as the flag package decides it: the String of a new Value of the same type). A
// Value whose zero String panics has a default worth showing.
func isZeroValue(f *flag.Flag) (zero bool) {
	defer func() {
		if recover() != nil {
			zero = false
		}
	}()
	t := reflect.TypeOf(f.Value)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	return f.DefValue == z.Interface().(flag.Value).String()
}
