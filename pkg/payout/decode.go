package payout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
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

// DecodeError is a Decode failure. Field is the JSON field at fault, or "" when the message
// as a whole is. The text never contains a field's value, so it is safe to log and to put
// in a dead-letter header; only an unknown key's name is quoted (truncated).
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
)

// fields maps each wire name of Request (exact case) to its decoder and destination.
var fields = map[string]struct {
	kind fieldKind
	str  func(*Request) *string
}{
	"schema":             {kindString, func(r *Request) *string { return &r.Schema }},
	"out_detail_no":      {kindString, func(r *Request) *string { return &r.OutDetailNo }},
	"mchid":              {kindString, func(r *Request) *string { return &r.MchID }},
	"appid":              {kindString, func(r *Request) *string { return &r.AppID }},
	"openid":             {kindString, func(r *Request) *string { return &r.OpenID }},
	"amount":             {kind: kindInt64},
	"remark":             {kindString, func(r *Request) *string { return &r.Remark }},
	"user_name":          {kindString, func(r *Request) *string { return &r.UserName }},
	"transfer_scene_id":  {kindString, func(r *Request) *string { return &r.SceneID }},
	"batch_name":         {kindString, func(r *Request) *string { return &r.BatchName }},
	"batch_remark":       {kindString, func(r *Request) *string { return &r.BatchRemark }},
	"sub_mchid":          {kindString, func(r *Request) *string { return &r.SubMchID }},
	"sub_appid":          {kindString, func(r *Request) *string { return &r.SubAppID }},
	"sp_appid":           {kindString, func(r *Request) *string { return &r.SpAppID }},
	"authorization_type": {kindString, func(r *Request) *string { return &r.AuthorizationType }},
	"transfer_purpose":   {kindString, func(r *Request) *string { return &r.TransferPurpose }},
	"transfer_scene":     {kindString, func(r *Request) *string { return &r.TransferScene }},
	"source":             {kindString, func(r *Request) *string { return &r.Source }},
	"created_at":         {kind: kindTime},
}

// Decode parses one Request strictly: a single JSON object of at most MaxMessageSize bytes,
// valid UTF-8, only the known field names (exact case), each at most once, strings where
// strings are expected (null is refused), amount an integer literal within int64, created_at
// RFC 3339. Every error is a *DecodeError matching ErrMalformed and one specific sentinel.
// Decode does not validate business rules: call Validate (or use DecodeAndValidate).
func Decode(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxMessageSize {
		return r, &DecodeError{Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxMessageSize)}
	}
	// encoding/json silently turns invalid UTF-8 into U+FFFD; refuse it instead.
	if !utf8.Valid(data) {
		return r, &DecodeError{Err: ErrInvalidUTF8}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return r, &DecodeError{Err: err}
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return r, &DecodeError{Err: syntaxErr(err)}
		}
		key, ok := tok.(string)
		if !ok {
			return r, &DecodeError{Err: ErrSyntax}
		}
		f, known := fields[key]
		if !known {
			return r, &DecodeError{Field: quoteKey(key), Err: ErrUnknownField}
		}
		if seen[key] {
			return r, &DecodeError{Field: key, Err: ErrDuplicateKey}
		}
		seen[key] = true
		if err := decodeValue(dec, &r, f.kind, f.str); err != nil {
			return r, &DecodeError{Field: key, Err: err}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return r, &DecodeError{Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return r, &DecodeError{Err: fmt.Errorf("%w: data after the object", ErrSyntax)}
	}
	return r, nil
}

// DecodeAndValidate is Decode followed by Validate with l.
func DecodeAndValidate(data []byte, l Limits) (Request, error) {
	r, err := Decode(data)
	if err != nil {
		return r, err
	}
	return r, r.Validate(l)
}

func decodeValue(dec *json.Decoder, r *Request, kind fieldKind, str func(*Request) *string) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxErr(err)
	}
	switch kind {
	case kindInt64:
		n, ok := tok.(json.Number)
		if !ok {
			return wrongType(tok, "an integer")
		}
		if strings.ContainsAny(string(n), ".eE") {
			return ErrNotInteger
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return ErrOutOfRange
		}
		r.Amount = v
	case kindTime:
		s, ok := tok.(string)
		if !ok {
			return wrongType(tok, "an RFC 3339 time string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return fmt.Errorf("%w: want an RFC 3339 time", ErrWrongType)
		}
		r.CreatedAt = t
	default:
		s, ok := tok.(string)
		if !ok {
			return wrongType(tok, "a string")
		}
		*str(r) = s
	}
	return nil
}

// wrongType reports a value of the wrong type. Decoding stops at the first error, so the
// rest of a nested value is never read.
func wrongType(tok json.Token, want string) error {
	got := "null"
	switch tok.(type) {
	case json.Delim:
		got = "an object or array"
	case string:
		got = "a string"
	case json.Number:
		got = "a number"
	case bool:
		got = "a boolean"
	}
	return fmt.Errorf("%w: want %s, got %s", ErrWrongType, want, got)
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		if want == '{' {
			return fmt.Errorf("%w: want a JSON object", ErrSyntax)
		}
		return ErrSyntax
	}
	return nil
}

// syntaxErr maps a tokenizer error to ErrSyntax. encoding/json's messages quote at most a
// character of input, so they are kept for the byte offset they carry.
func syntaxErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: unexpected end of input", ErrSyntax)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w at byte %d", ErrSyntax, se.Offset)
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
