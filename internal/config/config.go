// Package config loads paystream's YAML configuration files: kebab-case keys, ${VAR}
// expansion for secrets, unknown keys refused, and validation errors that name the field.
// Load is the one path every binary takes: defaults, the file, the command-line flags that
// override its keys (Flags, Overrides), then Validate.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"

	"gopkg.in/yaml.v3"
)

// ConfigError is a validation error that names the offending field by its YAML path.
type ConfigError struct {
	Field string // e.g. "wechatpay.mchid"
	Value any    // the rejected value; never a secret
	Err   error
}

func (e *ConfigError) Error() string {
	if e.Value == nil {
		return fmt.Sprintf("config: %s: %v", e.Field, e.Err)
	}
	return fmt.Sprintf("config: %s = %v: %v", e.Field, e.Value, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// Errorf returns a *ConfigError for field.
func Errorf(field string, value any, format string, args ...any) *ConfigError {
	return &ConfigError{Field: field, Value: value, Err: fmt.Errorf(format, args...)}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// ErrUnsetVariable is returned when a file refers to an environment variable that is not set.
var ErrUnsetVariable = errors.New("environment variable not set")

// Parse decodes YAML from r into dst after replacing every ${VAR} in a scalar value with
// getenv("VAR") (comments are left alone). dst should already hold the defaults; keys absent
// from the file keep them. Unknown keys are an error. A reference to an unset variable is an
// error, so a missing secret is never silently empty. A value of the wrong type and an
// unknown key are *ConfigErrors naming the key path and the line of the file
// ("pipeline.poll.interval: cannot use "abc" as a duration … (line 12)"), joined with
// errors.Join when there are several; a value from a ${VAR} is not repeated in them.
func Parse(r io.Reader, getenv func(string) string, dst any) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if doc.Kind == 0 {
		return nil // empty file: defaults
	}
	var missing []string
	fromVar := map[*yaml.Node]bool{}
	expand(&doc, getenv, &missing, fromVar)
	if len(missing) > 0 {
		return fmt.Errorf("config: %w: %v", ErrUnsetVariable, missing)
	}
	// Re-encode so the strict decoder reports unknown keys.
	expanded, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return keyPathErrors(fmt.Errorf("config: %w", err), expanded, &doc, fromVar)
	}
	return nil
}

// expand replaces every ${VAR} in n's scalars, recording the names of unset ones in missing
// and the scalars it changed in fromVar.
func expand(n *yaml.Node, getenv func(string) string, missing *[]string, fromVar map[*yaml.Node]bool) {
	if n.Kind == yaml.ScalarNode && envRef.MatchString(n.Value) {
		fromVar[n] = true
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			name := envRef.FindStringSubmatch(m)[1]
			v := getenv(name)
			if v == "" {
				*missing = append(*missing, name)
			}
			return v
		})
	}
	for _, c := range n.Content {
		expand(c, getenv, missing, fromVar)
	}
}

// Within returns err with prefix put before the key path of every *ConfigError in it (also
// inside errors.Join), so a package validates its own section with keys relative to it and
// the caller that embeds the section names the full path: Within("pipeline", err) turns
// "poll.page-limit" into "pipeline.poll.page-limit". Other errors are returned unchanged;
// nil stays nil.
func Within(prefix string, err error) error {
	var ce *ConfigError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce) && ce == err:
		c := *ce
		c.Field = prefix + "." + c.Field
		return &c
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = Within(prefix, e)
		}
		return errors.Join(out...)
	}
	return err
}
