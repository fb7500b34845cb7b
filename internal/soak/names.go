package soak

import "unicode/utf8"

// names finds the workload's plaintext real names in bytes (ledger files, logs, stream
// messages) in one pass: each name is looked up among the windows of its length in runes
// that start at a non-ASCII rune, so the cost does not grow with the number of names.
type names struct {
	set      map[string]bool
	min, max int // shortest and longest name, in runes
}

// add records a name; it must contain a non-ASCII rune first (synth's names are Chinese).
func (n *names) add(name string) {
	if n.set == nil {
		n.set = map[string]bool{}
	}
	n.set[name] = true
	l := utf8.RuneCountInString(name)
	if n.min == 0 || l < n.min {
		n.min = l
	}
	n.max = max(n.max, l)
}

// len is the number of distinct names.
func (n *names) len() int { return len(n.set) }

// in reports whether b contains one of the names.
func (n *names) in(b []byte) bool {
	if len(n.set) == 0 {
		return false
	}
	for i := 0; i < len(b); {
		_, size := utf8.DecodeRune(b[i:])
		if b[i] >= utf8.RuneSelf {
			for j, runes := i, 0; j < len(b) && runes < n.max; {
				_, w := utf8.DecodeRune(b[j:])
				j, runes = j+w, runes+1
				if runes >= n.min && n.set[string(b[i:j])] {
					return true
				}
			}
		}
		i += size
	}
	return false
}
