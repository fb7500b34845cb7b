package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Validator is a config that checks itself: Validate returns a *ConfigError (or several,
// joined) naming a bad field by its key path, or nil.
type Validator interface{ Validate() error }

// Override is a value for one key of a config given outside its file, on the command line
// (Flags, Overrides). Load decodes Value as it would decode the file's value of Key, so
// "5s" is a duration, "true" a boolean and "[a, b]" a list.
type Override struct {
	Key   string // key path: "speed", "pipeline.poll.interval", "limits.bill-scenes.1006"
	Value string // as typed
}

// fromCommandLine is where the errors of an Override say the value came from, in place of
// the line of a file.
const fromCommandLine = "(command line)"

// Load is the one way a paystream binary reads its configuration. dst holds the defaults; the
// YAML file at path, when path is not "", is read over them as Parse reads it (${VAR}
// expanded, unknown keys refused, errors naming the key path and line, all prefixed with
// path); then each override is applied in order, so a flag wins over the file; then
// dst.Validate() decides. dst must be a pointer. An override is decoded by the same strict
// decoder as the file: a key that is not in dst, or a value of the wrong type, is a
// *ConfigError naming the key and saying it came from the command line. ${VAR} in an
// override is not expanded: the shell has done that.
func Load(path string, getenv func(string) string, dst Validator, overrides ...Override) error {
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		err = Parse(f, getenv, dst)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	for _, o := range overrides {
		if err := apply(dst, o); err != nil {
			return err
		}
	}
	return dst.Validate()
}

// apply decodes o into dst as a one-key YAML document, {a: {b: VALUE}} for "a.b".
func apply(dst any, o Override) error {
	keys := strings.Split(o.Key, ".")
	t, ok := typeAt(reflect.TypeOf(dst), keys)
	if !ok {
		return &ConfigError{Field: o.Key, Err: fmt.Errorf("unknown key %s", fromCommandLine)}
	}
	bad := &ConfigError{Field: o.Key, Err: fmt.Errorf("cannot use %q as %s %s", o.Value, typeName(t.String()), fromCommandLine)}
	value := &yaml.Node{Kind: yaml.ScalarNode, Value: o.Value}
	switch {
	case t == durationType || t.Kind() == reflect.String:
		// As typed: "" is not null, "0" is a duration of 0 (yaml.v3 takes no number for one).
		value.Tag = "!!str"
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(o.Value), &doc); err != nil || len(doc.Content) == 0 {
			return bad
		}
		value = doc.Content[0]
	}
	for i := len(keys) - 1; i >= 0; i-- {
		value = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: keys[i]}, value}}
	}
	doc, err := yaml.Marshal(value)
	if err != nil {
		return bad
	}
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	var te *yaml.TypeError
	switch err := dec.Decode(dst); {
	case errors.As(err, &te):
		if len(te.Errors) == 1 && typeErrRE.MatchString(te.Errors[0]) {
			return bad
		}
		return &ConfigError{Field: o.Key, Err: fmt.Errorf("%s %s", strings.Join(te.Errors, "; "), fromCommandLine)}
	case err != nil:
		return &ConfigError{Field: o.Key, Err: fmt.Errorf("%w %s", err, fromCommandLine)}
	}
	return nil
}

// typeAt is the type of the value at the key path keys in a config of type t, as yaml.v3
// decodes it: struct fields by yamlName (",inline" ones searched in place), map entries by
// their key. ok is false when t has no such key.
func typeAt(t reflect.Type, keys []string) (_ reflect.Type, ok bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if len(keys) == 0 {
		return t, true
	}
	switch t.Kind() {
	case reflect.Map:
		if t.Key().Kind() != reflect.String && t.Key().Kind() != reflect.Int {
			return nil, false
		}
		return typeAt(t.Elem(), keys[1:])
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, inline, skip := yamlName(f)
			switch {
			case skip:
			case inline:
				if ft, ok := typeAt(f.Type, keys); ok {
					return ft, true
				}
			case name == keys[0]:
				return typeAt(f.Type, keys[1:])
			}
		}
	}
	return nil, false
}
