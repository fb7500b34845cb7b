package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// ErrNegative is the error of a *ConfigError from NegativeDuration.
var ErrNegative = errors.New("must not be negative")

var durationType = reflect.TypeFor[time.Duration]()

// NegativeDuration returns a *ConfigError (Err ErrNegative) naming, by its YAML path, the
// first negative time.Duration in v, or nil when there is none. v is a config struct or a
// pointer to one; its fields are named as yaml.v3 names them (the yaml tag, else the field
// name in lower case; ",inline" fields add no name), and it walks nested structs, slices
// ("nats.topology.backoff[1]") and maps ("bill-scenes.1000"). Every duration a paystream
// config holds is a wait, a period or an age, none of which can be negative, so Validate
// methods call this instead of listing them (and a field added later is covered).
func NegativeDuration(v any) error {
	return negative(reflect.ValueOf(v), "")
}

func negative(v reflect.Value, path string) error {
	switch {
	case v.Type() == durationType:
		if d := time.Duration(v.Int()); d < 0 {
			return &ConfigError{Field: path, Value: d, Err: ErrNegative}
		}
	case v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface:
		if !v.IsNil() {
			return negative(v.Elem(), path)
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, inline, skip := yamlName(f)
			if skip {
				continue
			}
			p := join(path, name)
			if inline {
				p = path
			}
			if err := negative(v.Field(i), p); err != nil {
				return err
			}
		}
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Array:
		for i := range v.Len() {
			if err := negative(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case v.Kind() == reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			if err := negative(iter.Value(), join(path, fmt.Sprint(iter.Key().Interface()))); err != nil {
				return err
			}
		}
	}
	return nil
}

// yamlName is the key yaml.v3 decodes field f from.
func yamlName(f reflect.StructField) (name string, inline, skip bool) {
	if !f.IsExported() {
		return "", false, true
	}
	tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "-" {
		return "", false, true
	}
	if strings.Contains(","+opts+",", ",inline,") {
		return "", true, false
	}
	if tag == "" {
		tag = strings.ToLower(f.Name)
	}
	return tag, false, false
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
