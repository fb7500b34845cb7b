package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yaml.v3 reports a value of the wrong type and an unknown key only by line, in these forms
// (gopkg.in/yaml.v3 decode.go, terror and knownFields).
var (
	typeErrRE    = regexp.MustCompile("^line ([0-9]+): cannot unmarshal (!![a-z]+)(?: `(.*)`)? into (.+)$")
	unknownKeyRE = regexp.MustCompile(`^line ([0-9]+): field (.+) not found in type .+$`)
)

// node is a key or a value of the document with its dotted path, "pipeline.poll.interval",
// "nats.topology.backoff[1]".
type node struct {
	path string
	key  bool
	n    *yaml.Node
}

// nodes lists n's keys and values in document order, each with its path.
func nodes(n *yaml.Node, path string, out []node) []node {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = nodes(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			out = append(out, node{path: p, key: true, n: n.Content[i]}, node{path: p, n: n.Content[i+1]})
			out = nodes(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out = append(out, node{path: p, n: c})
			out = nodes(c, p, out)
		}
	}
	return out
}

// keyPathErrors turns yaml.v3's type errors, which give a line of decoded (the document
// as re-encoded after expansion), into *ConfigErrors naming the key path, with the line of
// the same key in orig (the file as written). A value that came from a ${VAR} is not
// repeated. err is returned unchanged when it is not a *yaml.TypeError.
func keyPathErrors(err error, decoded []byte, orig *yaml.Node, fromVar map[*yaml.Node]bool) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var doc yaml.Node
	if yaml.Unmarshal(decoded, &doc) != nil {
		return err
	}
	at := nodes(&doc, "", nil)
	byPath := map[node]*yaml.Node{}
	for _, o := range nodes(orig, "", nil) {
		byPath[node{path: o.path, key: o.key}] = o.n
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		errs = append(errs, keyPathError(msg, at, byPath, fromVar))
	}
	return errors.Join(errs...)
}

// keyPathError is one of yaml.v3's messages as a *ConfigError, or the message as it is when
// it has no recognisable form or line.
func keyPathError(msg string, at []node, byPath map[node]*yaml.Node, fromVar map[*yaml.Node]bool) error {
	if m := unknownKeyRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		for _, a := range at {
			if a.key && a.n.Line == line && a.n.Value == m[2] {
				return &ConfigError{Field: a.path, Err: fmt.Errorf("unknown key%s", lineOf(byPath[node{path: a.path, key: true}]))}
			}
		}
		return errors.New(msg)
	}
	m := typeErrRE.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(msg)
	}
	line, _ := strconv.Atoi(m[1])
	tag, shown, goType := m[2], m[3], m[4]
	for _, a := range at {
		if a.key || a.n.Line != line || !sameValue(a.n, shown) {
			continue
		}
		o := byPath[node{path: a.path}]
		var what string
		switch {
		case tag == "!!map":
			what = "a mapping"
		case tag == "!!seq":
			what = "a list"
		case o != nil && fromVar[o]:
			what = "the value of its ${VARIABLE}"
		case o != nil:
			what = strconv.Quote(o.Value)
		default:
			what = strconv.Quote(a.n.Value)
		}
		return &ConfigError{Field: a.path, Err: fmt.Errorf("cannot use %s as %s%s", what, typeName(goType), lineOf(o))}
	}
	return errors.New(msg)
}

// sameValue reports whether n is the node yaml.v3 quoted as shown: the value itself, the
// first 7 bytes and "..." for a longer one, nothing for a list or mapping.
func sameValue(n *yaml.Node, shown string) bool {
	if n.Kind != yaml.ScalarNode {
		return shown == ""
	}
	if p, ok := strings.CutSuffix(shown, "..."); ok && len(n.Value) > 10 {
		return strings.HasPrefix(n.Value, p)
	}
	return n.Value == shown
}

// typeName says what a Go type of a config field wants, in a reader's words.
func typeName(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration (a number with a unit: 500ms, 30s, 1m30s, 2h)"
	case strings.HasPrefix(goType, "[]"):
		return "a list of " + strings.TrimPrefix(typeName(goType[2:]), "a ")
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasSuffix(goType, ".Fen"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	}
	return "a mapping" // a struct: a section of the file
}

func lineOf(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf(" (line %d)", n.Line)
}
