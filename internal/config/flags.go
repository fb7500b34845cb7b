package config

import (
	"flag"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// flagValue is a flag that overrides key of a config: it keeps the text as typed, for Load
// to decode. It has no Go default: the config's defaults and file are the defaults.
type flagValue struct {
	key     string
	typ     string // the argument's name in help: "duration", "float", …
	boolean bool
	text    string
}

func (v *flagValue) String() string {
	if v == nil {
		return ""
	}
	return v.text
}

func (v *flagValue) Set(s string) error { v.text = s; return nil }

// IsBoolFlag makes --admin alone mean --admin=true (flag.Value's optional method).
func (v *flagValue) IsBoolFlag() bool { return v.boolean }

// Type names the flag's argument in help (cli.SetUsage prints it where the flag package
// would say "value").
func (v *flagValue) Type() string { return v.typ }

// Flags defines on fs, for each key of usage, a flag named like the key ("speed",
// "log-level") whose value, when the command line gives one, overrides that key of the
// config: Overrides lists them for Load. cfg is the config holding its defaults (a struct or
// a pointer to one): a key's field decides the argument's name in help and makes a boolean
// field a boolean flag (--admin alone is --admin=true), and its default, unless zero, is
// shown in help as the flag's default; a config file read by Load may change it. The flags
// are not parsed by type: a bad value is Load's *ConfigError naming the key. Flags panics
// when a key is not in cfg, a programming error.
func Flags(fs *flag.FlagSet, cfg any, usage map[string]string) {
	v := reflect.ValueOf(cfg)
	for key, text := range usage {
		keys := strings.Split(key, ".")
		t, ok := typeAt(v.Type(), keys)
		if !ok {
			panic(fmt.Sprintf("config.Flags: no key %q in %T", key, cfg))
		}
		fs.Var(&flagValue{key: key, typ: argName(t), boolean: t.Kind() == reflect.Bool}, key, text)
		fs.Lookup(key).DefValue = defaultText(v, keys)
	}
}

// Overrides returns the flags of fs defined by Flags that the command line set, in
// lexical order of their names (fs.Visit), for Load.
func Overrides(fs *flag.FlagSet) []Override {
	var out []Override
	fs.Visit(func(f *flag.Flag) {
		if v, ok := f.Value.(*flagValue); ok {
			out = append(out, Override{Key: v.key, Value: v.text})
		}
	})
	return out
}

// argName is what help calls a value of type t, in the flag package's words where it has
// them.
func argName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Bool:
		return ""
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "int"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr:
		return "uint"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "float"
	case t.Kind() == reflect.Slice:
		return "list"
	}
	return "mapping"
}

// defaultText is the scalar at the key path keys of the struct v as a flag's default in
// help, or "" for a zero value, a list, a mapping and a key under a map.
func defaultText(v reflect.Value, keys []string) string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if len(keys) == 0 {
		switch {
		case v.IsZero(), v.Kind() == reflect.Slice, v.Kind() == reflect.Map, v.Kind() == reflect.Struct:
			return ""
		case v.Type() == durationType:
			return time.Duration(v.Int()).String()
		}
		return fmt.Sprint(v.Interface())
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	for i := range v.NumField() {
		name, inline, skip := yamlName(v.Type().Field(i))
		switch {
		case skip:
		case inline:
			if _, ok := typeAt(v.Field(i).Type(), keys); ok {
				return defaultText(v.Field(i), keys)
			}
		case name == keys[0]:
			return defaultText(v.Field(i), keys[1:])
		}
	}
	return ""
}
