package wechatpay

import (
	"errors"
	"fmt"
)

// APIError is a non-2xx answer from WeChat Pay. Callers decide on Code (and StatusCode),
// never on Message, which is for humans only (docs/wechatpay.md §5, §11).
type APIError struct {
	StatusCode int    `json:"-"`
	Code       string `json:"code"`
	Message    string `json:"message"`
	RequestID  string `json:"-"`
}

// Error formats the status, code and request id; Message is for humans only.
func (e *APIError) Error() string {
	return fmt.Sprintf("wechatpay: HTTP %d %s (request id %s): %s", e.StatusCode, e.Code, e.RequestID, e.Message)
}

// Is matches on Code, so errors.Is(err, ErrNotFound) holds for any NOT_FOUND answer.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	return ok && t.Code == e.Code
}

// Error codes named in docs/wechatpay.md §5–§9 and docs/transfer-bills.md §9. Match them with
// errors.Is.
var (
	ErrSystemError          = &APIError{Code: "SYSTEM_ERROR"}
	ErrFrequencyLimited     = &APIError{Code: "FREQUENCY_LIMITED"}
	ErrFrequencyLimitExceed = &APIError{Code: "FREQUENCY_LIMIT_EXCEED"}
	ErrRateLimitExceeded    = &APIError{Code: "RATELIMIT_EXCEEDED"}
	ErrFrequencyLimit       = &APIError{Code: "FREQUENCY_LIMIT"}
	ErrNotEnough            = &APIError{Code: "NOT_ENOUGH"}
	ErrQuotaExceed          = &APIError{Code: "QUOTA_EXCEED"}
	ErrParamError           = &APIError{Code: "PARAM_ERROR"}
	ErrInvalidRequest       = &APIError{Code: "INVALID_REQUEST"}
	ErrSignError            = &APIError{Code: "SIGN_ERROR"}
	ErrAppIDMchIDNotMatch   = &APIError{Code: "APPID_MCHID_NOT_MATCH"}
	ErrNoAuth               = &APIError{Code: "NO_AUTH"}
	ErrAccountError         = &APIError{Code: "ACCOUNTERROR"}
	ErrNotFound             = &APIError{Code: "NOT_FOUND"}
	ErrAlreadyExists        = &APIError{Code: "ALREADY_EXISTS"}
)

// ErrUnverified marks a 2xx response whose signature, serial or timestamp could not be
// verified. Its body is not believed; for a create it means "maybe paid" (docs/wechatpay.md §2).
var ErrUnverified = errors.New("wechatpay: response signature not verified")

// ErrNotSent marks an error that happened before any byte reached the network (a bad
// request, an open breaker, a cancelled rate-limit wait). Nothing was created.
var ErrNotSent = errors.New("wechatpay: request not sent")

// Class is how the product must treat the outcome of a call (docs/wechatpay.md §11).
type Class int

const (
	// ClassOK is a verified 2xx answer.
	ClassOK Class = iota
	// ClassAmbiguous means "maybe paid": timeouts, resets, 5xx, SYSTEM_ERROR, any 429,
	// unknown codes, unverifiable 2xx. Retry with the same number and body, or query.
	ClassAmbiguous
	// ClassRejected is a definite rejection the input caused (PARAM_ERROR): nothing was
	// created and retrying the same body cannot succeed.
	ClassRejected
	// ClassBlocked is a definite rejection an operator must fix (NOT_ENOUGH, NO_AUTH,
	// ACCOUNTERROR, quota, SIGN_ERROR, APPID_MCHID_NOT_MATCH, INVALID_REQUEST). Nothing was
	// created now; retry the same number later. INVALID_REQUEST is here, not in
	// ClassRejected, because it is also WeChat's "number exists but content differs":
	// query before anything else (docs/wechatpay.md §4).
	ClassBlocked
	// ClassNotFound is a NOT_FOUND answer to a query: not a failure (docs/wechatpay.md §5).
	ClassNotFound
	// ClassNotSent means the request never left the process: nothing happened.
	ClassNotSent
)

var classNames = [...]string{"ok", "ambiguous", "rejected", "blocked", "not_found", "not_sent"}

// String returns the class name used in logs and metrics, e.g. "ambiguous".
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// blockedCodes are definite rejections an operator fixes; the same number is retried later.
var blockedCodes = map[string]bool{
	"NOT_ENOUGH": true, "NO_AUTH": true, "ACCOUNTERROR": true, "QUOTA_EXCEED": true,
	"SIGN_ERROR": true, "APPID_MCHID_NOT_MATCH": true, "INVALID_REQUEST": true,
}

// Classify tells how to treat err, the error returned by a Client call. A nil error is
// ClassOK. Anything not positively known to be definite is ClassAmbiguous: an unknown code
// must never lead to a new out_batch_no (docs/wechatpay.md §5 "新的错误码").
func Classify(err error) Class {
	if err == nil {
		return ClassOK
	}
	if errors.Is(err, ErrNotSent) {
		return ClassNotSent
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return ClassAmbiguous // transport error, timeout, reset, unverified 2xx
	}
	switch {
	case ae.StatusCode >= 500, ae.StatusCode == 429:
		return ClassAmbiguous
	case ae.Code == "NOT_FOUND":
		return ClassNotFound
	case ae.Code == "PARAM_ERROR":
		return ClassRejected
	case blockedCodes[ae.Code]:
		return ClassBlocked
	}
	return ClassAmbiguous
}

// Ambiguous reports whether err means "maybe paid" (docs/wechatpay.md §11).
func Ambiguous(err error) bool { return Classify(err) == ClassAmbiguous }
