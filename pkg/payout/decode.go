package payout

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxMessageSize is the largest encoded Request Decode accepts, in bytes. A real request is
// well under 2 KiB; anything near this size is an attack or a bug.
const MaxMessageSize = 64 << 10

// ErrMalformed matches every error returned by Decode: the bytes are not a Request, and
// retrying cannot help (dead-letter the message).
var ErrMalformed = errors.New("malformed payout request")

// Decode errors. Each one is wrapped in a *DecodeError that names the field; all of them
// also match ErrMalformed.
var (
	ErrTooLarge     = errors.New("message too large")
	ErrSyntax       = errors.New("invalid JSON")
	ErrInvalidUTF8  = errors.New("invalid UTF-8")
	ErrUnknownField = errors.New("unknown field")
	ErrDuplicateKey = errors.New("duplicate key")
	ErrWrongType    = errors.New("wrong JSON type")
	ErrNotInteger   = errors.New("amount must be an integer number of fen, not a float, exponent or string")
	ErrOutOfRange   = errors.New("number out of int64 range")
)

// DecodeError is a Decode (or DecodeCancel) failure. Field is the JSON field at fault, or
// "" when the message as a whole is. Inside a report row it is the row's path, e.g.
// "transfer_scene_report_infos[1].info_content", or the row's quoted unknown key,
// transfer_scene_report_infos[1]."info"; a row that is not an object is
// "transfer_scene_report_infos[1]". The text never contains a field's value, so it is safe
// to log and to put in a dead-letter header; only an unknown key's name is quoted
// (truncated).
type DecodeError struct {
	Field string
	Err   error
}

// Error names the field and the problem, never the value.
func (e *DecodeError) Error() string {
	if e.Field == "" {
		return "payout: decode: " + e.Err.Error()
	}
	return "payout: decode: field " + e.Field + ": " + e.Err.Error()
}

// Unwrap returns the specific sentinel and ErrMalformed.
func (e *DecodeError) Unwrap() []error { return []error{e.Err, ErrMalformed} }

// fieldKind is how a known field is decoded.
type fieldKind int

const (
	kindString fieldKind = iota
	kindInt64
	kindTime
	kindInfos // transfer_scene_report_infos: an array of SceneReportInfo objects
)

// field is a known wire name of Request (exact case) and how it is decoded; stringDests
// says where a kindString field goes.
type field struct {
	name string
	kind fieldKind
}

// infoFields are the wire names of SceneReportInfo, in field order.
var infoFields = [...]string{"info_type", "info_content"}

// fieldList holds every wire name of Request; fields indexes it by name.
var fieldList = [...]field{
	{"schema", kindString},
	{"out_detail_no", kindString},
	{"mchid", kindString},
	{"appid", kindString},
	{"openid", kindString},
	{"amount", kindInt64},
	{"remark", kindString},
	{"user_name", kindString},
	{"user_name_cipher", kindString},
	{"wechatpay_serial", kindString},
	{"transfer_scene_id", kindString},
	{"user_recv_perception", kindString},
	{"transfer_scene_report_infos", kindInfos},
	{"batch_name", kindString},
	{"batch_remark", kindString},
	{"sub_mchid", kindString},
	{"sub_appid", kindString},
	{"sp_appid", kindString},
	{"authorization_type", kindString},
	{"transfer_purpose", kindString},
	{"transfer_scene", kindString},
	{"source", kindString},
	{"created_at", kindTime},
}

// stringDests returns where in r each kindString field of fieldList is decoded to, by index
// (nil for the other kinds). A table of pointers rather than of functions: a Request passed
// to a function value escapes to the heap, which cost intake an allocation per message.
func stringDests(r *Request) [len(fieldList)]*string {
	return [len(fieldList)]*string{
		&r.Schema,
		&r.OutDetailNo,
		&r.MchID,
		&r.AppID,
		&r.OpenID,
		nil, // amount
		&r.Remark,
		&r.UserName,
		&r.UserNameCipher,
		&r.WechatpaySerial,
		&r.SceneID,
		&r.UserRecvPerception,
		nil, // transfer_scene_report_infos
		&r.BatchName,
		&r.BatchRemark,
		&r.SubMchID,
		&r.SubAppID,
		&r.SpAppID,
		&r.AuthorizationType,
		&r.TransferPurpose,
		&r.TransferScene,
		&r.Source,
		nil, // created_at
	}
}

// fields maps each wire name to its index in fieldList.
var fields = func() map[string]int {
	m := make(map[string]int, len(fieldList))
	for i, f := range fieldList {
		m[f.name] = i
	}
	return m
}()

// Decode parses one Request strictly: a single JSON object of at most MaxMessageSize bytes,
// valid UTF-8, only the known field names (exact case), each at most once, strings where
// strings are expected (null is refused), amount an integer literal within int64, created_at
// RFC 3339, transfer_scene_report_infos an array of objects that hold only info_type and
// info_content (strings, each at most once). Every error is a *DecodeError matching
// ErrMalformed and one specific sentinel. Decode does not validate business rules: call
// Validate or ValidateFor (or use DecodeAndValidate).
//
// The object is nearly flat, so Decode scans it in one pass (RFC 8259 grammar, encoding/json's
// string semantics: escapes are unescaped, a lone surrogate becomes U+FFFD) instead of
// going through encoding/json's tokenizer, which cost intake ten times more per message.
// Unescaped strings share one copy of data.
func Decode(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxMessageSize {
		return r, &DecodeError{Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxMessageSize)}
	}
	// encoding/json silently turns invalid UTF-8 into U+FFFD; refuse it instead.
	if !utf8.Valid(data) {
		return r, &DecodeError{Err: ErrInvalidUTF8}
	}
	s := scanner{src: string(data)}
	var seen [len(fieldList)]bool
	dst := stringDests(&r)
	err := s.object("", func(key string) (int, bool) {
		i, ok := fields[key]
		return i, ok
	}, seen[:], func(i int) error {
		return s.value(&r, &fieldList[i], dst[i])
	})
	if err != nil {
		return r, err
	}
	if s.skipSpace(); s.pos != len(s.src) {
		return r, &DecodeError{Err: fmt.Errorf("%w: data after the object", ErrSyntax)}
	}
	return r, nil
}

// object scans one JSON object: white space, '{', its members, '}'. For each key it asks
// index for the member's slot; an unknown key, or one seen before (seen[slot]), stops the
// scan. value decodes the member's value from the current position. Errors are
// *DecodeErrors whose Field is path followed by the key (quoted when unknown); a
// *DecodeError returned by value is passed on as it is (a nested path).
func (s *scanner) object(path string, index func(string) (int, bool), seen []bool, value func(int) error) error {
	if err := s.expect('{'); err != nil {
		if !errors.Is(err, errEOF) {
			err = fmt.Errorf("%w: want a JSON object", ErrSyntax)
		}
		return &DecodeError{Err: syntaxErr(err)}
	}
	if s.skipSpace(); s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		if s.peek() != '"' {
			return &DecodeError{Err: syntaxErr(s.errAt())}
		}
		key, err := s.str()
		if err != nil {
			return &DecodeError{Err: syntaxErr(err)}
		}
		i, known := index(key)
		if !known {
			return &DecodeError{Field: path + quoteKey(key), Err: ErrUnknownField}
		}
		if seen[i] {
			return &DecodeError{Field: path + key, Err: ErrDuplicateKey}
		}
		seen[i] = true
		if err := s.expect(':'); err != nil {
			return &DecodeError{Err: syntaxErr(err)}
		}
		if err := value(i); err != nil {
			var de *DecodeError
			if errors.As(err, &de) {
				return de
			}
			return &DecodeError{Field: path + key, Err: err}
		}
		s.skipSpace()
		if s.peek() == ',' {
			s.pos++
			continue
		}
		if err := s.expect('}'); err != nil {
			return &DecodeError{Err: syntaxErr(err)}
		}
		return nil
	}
}

// infos decodes the array of transfer_scene_report_infos. An empty array gives an empty,
// non-nil slice (json.Marshal leaves it out again).
func (s *scanner) infos() ([]SceneReportInfo, error) {
	if s.peek() != '[' {
		return nil, s.wrongType("an array of objects")
	}
	s.pos++
	out := []SceneReportInfo{}
	if s.skipSpace(); s.peek() == ']' {
		s.pos++
		return out, nil
	}
	for {
		path := "transfer_scene_report_infos[" + strconv.Itoa(len(out)) + "]"
		var in SceneReportInfo
		if s.skipSpace(); s.peek() != '{' {
			err := s.wrongType("an object")
			if errors.Is(err, ErrWrongType) {
				err = &DecodeError{Field: path, Err: err}
			}
			return nil, err
		}
		var seen [len(infoFields)]bool
		err := s.object(path+".", func(key string) (int, bool) {
			switch key {
			case infoFields[0]:
				return 0, true
			case infoFields[1]:
				return 1, true
			}
			return 0, false
		}, seen[:], func(i int) error {
			return s.stringInto([...]*string{&in.InfoType, &in.InfoContent}[i])
		})
		if err != nil {
			return nil, err
		}
		out = append(out, in)
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return out, nil
		default:
			return nil, syntaxErr(s.errAt())
		}
	}
}

// DecodeAndValidate is Decode followed by Validate with l.
func DecodeAndValidate(data []byte, l Limits) (Request, error) {
	r, err := Decode(data)
	if err != nil {
		return r, err
	}
	return r, r.Validate(l)
}

// errEOF is the scanner's unexpected end of input; syntaxErr turns it into ErrSyntax.
var errEOF = errors.New("unexpected end of input")

// scanner reads the JSON text src.
type scanner struct {
	src string
	pos int
}

// syntaxError is a grammar error at a byte offset.
type syntaxError struct{ offset int }

func (e *syntaxError) Error() string { return "at byte " + strconv.Itoa(e.offset) }

// peek returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	if s.pos < len(s.src) {
		return s.src[s.pos]
	}
	return 0
}

// errAt is the error for an unexpected byte at the current position.
func (s *scanner) errAt() error {
	if s.pos >= len(s.src) {
		return errEOF
	}
	return &syntaxError{offset: s.pos + 1}
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// expect skips white space and consumes c.
func (s *scanner) expect(c byte) error {
	s.skipSpace()
	if s.peek() != c || s.pos >= len(s.src) {
		return s.errAt()
	}
	s.pos++
	return nil
}

// value decodes the value of field f into r; a kindString field into dst (stringDests).
func (s *scanner) value(r *Request, f *field, dst *string) error {
	s.skipSpace()
	c := s.peek()
	switch f.kind {
	case kindInt64:
		if c != '-' && !isDigit(c) {
			return s.wrongType("an integer")
		}
		n, integer, err := s.number()
		if err != nil {
			return syntaxErr(err)
		}
		if !integer {
			return ErrNotInteger
		}
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return ErrOutOfRange
		}
		r.Amount = v
	case kindInfos:
		infos, err := s.infos()
		if err != nil {
			return err
		}
		r.SceneReportInfos = infos
	case kindTime:
		if c != '"' {
			return s.wrongType("an RFC 3339 time string")
		}
		str, err := s.str()
		if err != nil {
			return syntaxErr(err)
		}
		t, err := time.Parse(time.RFC3339Nano, str)
		if err != nil {
			return fmt.Errorf("%w: want an RFC 3339 time", ErrWrongType)
		}
		r.CreatedAt = t
	default:
		return s.stringInto(dst)
	}
	return nil
}

// stringInto reads a JSON string value into dst: a value of another type is ErrWrongType,
// a malformed one a syntax error.
func (s *scanner) stringInto(dst *string) error {
	if s.skipSpace(); s.peek() != '"' {
		return s.wrongType("a string")
	}
	str, err := s.str()
	if err != nil {
		return syntaxErr(err)
	}
	*dst = str
	return nil
}

// wrongType reports a value of the wrong type, or a syntax error if the value is not
// well-formed. Decoding stops at the first error, so the rest of a nested value is never
// read.
func (s *scanner) wrongType(want string) error {
	var got string
	switch c := s.peek(); {
	case c == '{' || c == '[':
		got = "an object or array"
	case c == '"':
		got = "a string"
	case c == '-' || isDigit(c):
		if _, _, err := s.number(); err != nil {
			return syntaxErr(err)
		}
		got = "a number"
	case s.literal("true") || s.literal("false"):
		got = "a boolean"
	case s.literal("null"):
		got = "null"
	default:
		return syntaxErr(s.errAt())
	}
	return fmt.Errorf("%w: want %s, got %s", ErrWrongType, want, got)
}

// literal consumes word if it comes next.
func (s *scanner) literal(word string) bool {
	if strings.HasPrefix(s.src[s.pos:], word) {
		s.pos += len(word)
		return true
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number consumes a JSON number (RFC 8259 §6) and reports whether it is an integer
// literal (no fraction, no exponent).
func (s *scanner) number() (string, bool, error) {
	start := s.pos
	if s.peek() == '-' {
		s.pos++
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return "", false, s.errAt()
	}
	integer := true
	if s.peek() == '.' {
		s.pos++
		if !isDigit(s.peek()) {
			return "", false, s.errAt()
		}
		s.digits()
		integer = false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !isDigit(s.peek()) {
			return "", false, s.errAt()
		}
		s.digits()
		integer = false
	}
	return s.src[start:s.pos], integer, nil
}

func (s *scanner) digits() {
	for isDigit(s.peek()) {
		s.pos++
	}
}

// str consumes a JSON string and returns its value. Without escapes the value is a
// substring of src (no copy).
func (s *scanner) str() (string, error) {
	s.pos++ // the opening quote
	start := s.pos
	for s.pos < len(s.src) {
		switch c := s.src[s.pos]; {
		case c == '"':
			s.pos++
			return s.src[start : s.pos-1], nil
		case c == '\\':
			return s.unescape(start)
		case c < 0x20:
			return "", s.errAt()
		}
		s.pos++
	}
	return "", errEOF
}

// unescape finishes a string that has escapes, from its first escape on.
func (s *scanner) unescape(start int) (string, error) {
	b := []byte(s.src[start:s.pos])
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case c == '"':
			s.pos++
			return string(b), nil
		case c < 0x20:
			return "", s.errAt()
		case c != '\\':
			b = append(b, c)
			s.pos++
			continue
		}
		s.pos++ // the backslash
		e := s.peek()
		if e == 0 && s.pos >= len(s.src) {
			return "", errEOF
		}
		s.pos++
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, err := s.hex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(r) {
				// A valid pair is one character; anything else is U+FFFD, as in encoding/json.
				if strings.HasPrefix(s.src[s.pos:], "\\u") {
					save := s.pos
					s.pos += 2
					r2, err := s.hex4()
					if err != nil {
						return "", err
					}
					if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
						b = utf8.AppendRune(b, d)
						continue
					}
					s.pos = save
				}
				r = unicode.ReplacementChar
			}
			b = utf8.AppendRune(b, r)
		default:
			s.pos--
			return "", s.errAt()
		}
	}
	return "", errEOF
}

// hex4 consumes the four hex digits of a \u escape.
func (s *scanner) hex4() (rune, error) {
	if len(s.src)-s.pos < 4 {
		return 0, errEOF
	}
	var r rune
	for range 4 {
		c := s.src[s.pos]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, s.errAt()
		}
		r = r<<4 | rune(c)
		s.pos++
	}
	return r, nil
}

// syntaxErr maps a scanner error to ErrSyntax, keeping the byte offset; never a value.
func syntaxErr(err error) error {
	var se *syntaxError
	switch {
	case errors.Is(err, errEOF):
		return fmt.Errorf("%w: unexpected end of input", ErrSyntax)
	case errors.Is(err, ErrSyntax):
		return err
	case errors.As(err, &se):
		return fmt.Errorf("%w %s", ErrSyntax, se.Error())
	}
	return ErrSyntax
}

// quoteKey renders an unknown key for an error message: quoted (so no control characters
// reach a header or log line) and cut to 40 characters.
func quoteKey(k string) string {
	const maxKey = 40
	if r := []rune(k); len(r) > maxKey {
		k = string(r[:maxKey]) + "…"
	}
	return strconv.QuoteToASCII(k)
}
