package ledger

import (
	"bytes"
	"strconv"
	"strings"
)

// scanBody reads a create-request body the way json.Unmarshal into a createBody does, in one
// pass and without reflection, but only bodies in the plain shape the batcher writes: compact
// JSON (no white space outside strings but at the end), keys of printable ASCII without escapes, each of
// the fields read at most once per object, their values plain (strings of printable ASCII
// without escapes, integer literals in range, transfer_detail_list an array of objects), and
// the fields it skips strings, numbers or literals. Anything else (a nested value to skip, a
// key that differs from a field's name only in case, which json.Unmarshal would match, null,
// a float, invalid JSON) makes it return false, and the caller decodes with json.Unmarshal:
// whenever it returns true, json.Unmarshal returns no error and the same value
// (FuzzScanBody). Checking a sealed body against its members was a sixth of an intake
// commit's CPU through json.Unmarshal.
func scanBody(body []byte) (createBody, bool) {
	s := bodyScanner{src: body}
	var cb createBody
	var seen [4]bool
	for more := s.objectStart(); more; more = s.more() {
		switch k := s.key(); {
		case string(k) == "out_batch_no" && !seen[0]:
			seen[0] = true
			cb.OutBatchNo = string(s.plain())
		case string(k) == "total_amount" && !seen[1]:
			seen[1] = true
			cb.TotalAmount = s.integer()
		case string(k) == "total_num" && !seen[2]:
			seen[2] = true
			n := s.integer()
			if int64(int(n)) != n {
				s.fail()
			}
			cb.TotalNum = int(n)
		case string(k) == "transfer_detail_list" && !seen[3]:
			seen[3] = true
			cb.Details = s.details()
		case foldsTo(k, "out_batch_no", "total_amount", "total_num", "transfer_detail_list"):
			s.fail() // a second one, or a case variant json.Unmarshal would also match
		default:
			s.skip()
		}
	}
	for s.pos < len(s.src) && isSpace(s.src[s.pos]) { // json.Encoder ends a body with a newline
		s.pos++
	}
	if s.bad || s.pos != len(s.src) {
		return createBody{}, false
	}
	return cb, true
}

// isSpace reports whether c is JSON white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// foldsTo reports whether key equals one of names ignoring ASCII case (keys are ASCII).
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if len(key) == len(n) && bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// bodyScanner is scanBody's cursor; bad is set by the first thing outside the plain shape,
// after which every step is a no-op.
type bodyScanner struct {
	src []byte
	pos int
	bad bool
}

func (s *bodyScanner) fail() { s.bad = true }

// next returns the byte at the cursor (0 at the end or once failed).
func (s *bodyScanner) next() byte {
	if s.bad || s.pos >= len(s.src) {
		return 0
	}
	return s.src[s.pos]
}

// eat consumes c if it is next, or fails.
func (s *bodyScanner) eat(c byte) {
	if s.next() != c {
		s.fail()
		return
	}
	s.pos++
}

// objectStart reads an object's '{' and reports whether a member follows.
func (s *bodyScanner) objectStart() bool {
	s.eat('{')
	if s.next() == '}' {
		s.pos++
		return false
	}
	return !s.bad
}

// key reads a member's key and the ':' after it; the cursor is then on its value, which the
// caller must read (or fail).
func (s *bodyScanner) key() []byte {
	k := s.plain()
	s.eat(':')
	return k
}

// more reads the ',' after a member (true: another follows) or the object's '}' (false).
func (s *bodyScanner) more() bool {
	if s.next() == ',' {
		s.pos++
		return !s.bad
	}
	s.eat('}')
	return false
}

// details reads transfer_detail_list: an array of objects, each read as a bodyDetail.
func (s *bodyScanner) details() []bodyDetail {
	out := []bodyDetail{}
	s.eat('[')
	if s.next() == ']' {
		s.pos++
		return out
	}
	for !s.bad {
		var d bodyDetail
		var haveKey, haveAmount bool
		for more := s.objectStart(); more; more = s.more() {
			switch k := s.key(); {
			case string(k) == "out_detail_no" && !haveKey:
				haveKey = true
				d.OutDetailNo = string(s.plain())
			case string(k) == "transfer_amount" && !haveAmount:
				haveAmount = true
				d.Amount = s.integer()
			case foldsTo(k, "out_detail_no", "transfer_amount"):
				s.fail()
			default:
				s.skip()
			}
		}
		out = append(out, d)
		if s.next() == ',' {
			s.pos++
			continue
		}
		s.eat(']')
		break
	}
	return out
}

// plain reads a string of printable ASCII without escapes and returns its bytes (a view of
// the body); any other string fails the scan (json.Unmarshal would unescape it or replace
// bytes).
func (s *bodyScanner) plain() []byte {
	s.eat('"')
	if s.bad {
		return nil
	}
	for i := s.pos; i < len(s.src); i++ {
		switch c := s.src[i]; {
		case c == '"':
			v := s.src[s.pos:i]
			s.pos = i + 1
			return v
		case c < 0x20 || c > 0x7e || c == '\\':
			s.fail()
			return nil
		}
	}
	s.fail()
	return nil
}

// integer reads an integer literal within int64; a fraction, exponent or overflow fails.
func (s *bodyScanner) integer() int64 {
	start := s.pos
	if s.next() == '-' {
		s.pos++
	}
	digits := s.pos
	for c := s.next(); c >= '0' && c <= '9'; c = s.next() {
		s.pos++
	}
	n := s.pos - digits
	if s.bad || n == 0 || (n > 1 && s.src[digits] == '0') {
		s.fail()
		return 0
	}
	if c := s.next(); c == '.' || c == 'e' || c == 'E' {
		s.fail()
		return 0
	}
	v, err := strconv.ParseInt(string(s.src[start:s.pos]), 10, 64)
	if err != nil {
		s.fail()
	}
	return v
}

// skip reads a value scanBody does not keep: a string (any valid JSON string), a number or a
// literal. Objects and arrays fail the scan.
func (s *bodyScanner) skip() {
	switch c := s.next(); {
	case c == '"':
		s.skipString()
	case c == '-' || (c >= '0' && c <= '9'):
		s.skipNumber()
	case c == 't':
		s.literal("true")
	case c == 'f':
		s.literal("false")
	default: // null, objects, arrays, anything else
		s.fail()
	}
}

// skipString reads a valid JSON string: no control characters, valid escapes.
func (s *bodyScanner) skipString() {
	s.eat('"')
	for !s.bad {
		i := s.pos
		for i < len(s.src) && s.src[i] >= 0x20 && s.src[i] != '"' && s.src[i] != '\\' {
			i++
		}
		s.pos = i
		switch c := s.next(); c {
		case '"':
			s.pos++
			return
		case '\\':
			s.pos++
			switch e := s.next(); e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				s.pos++
				for range 4 {
					if h := s.next(); !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						s.fail()
					}
					s.pos++
				}
			default:
				s.fail()
			}
		default: // the end, or a control character
			s.fail()
		}
	}
}

// skipNumber reads a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *bodyScanner) skipNumber() {
	if s.next() == '-' {
		s.pos++
	}
	if s.next() == '0' {
		s.pos++
	} else if !s.digits() {
		s.fail()
		return
	}
	if s.next() == '.' {
		s.pos++
		if !s.digits() {
			s.fail()
			return
		}
	}
	if c := s.next(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.next(); c == '+' || c == '-' {
			s.pos++
		}
		if !s.digits() {
			s.fail()
		}
	}
}

// digits reads one or more decimal digits and reports whether there was one.
func (s *bodyScanner) digits() bool {
	start := s.pos
	for c := s.next(); c >= '0' && c <= '9'; c = s.next() {
		s.pos++
	}
	return s.pos > start
}

// literal reads word (true or false).
func (s *bodyScanner) literal(word string) {
	if s.bad || !strings.HasPrefix(string(s.src[s.pos:min(s.pos+len(word), len(s.src))]), word) {
		s.fail()
		return
	}
	s.pos += len(word)
}
