package wechatpay

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/paystream/paystream/internal/backoff"
)

// Defaults of a Client, changed with options.
const (
	// DefaultTimeout bounds one attempt when the caller's context has no deadline.
	DefaultTimeout = 10 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between retries.
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 8 * time.Second
	// MaxResponseBytes caps a response body; a larger one is an error (ambiguous).
	MaxResponseBytes = 1 << 20
	// UserAgent is sent on every request.
	UserAgent = "paystream-wechatpay/1 (Go)"
)

// Log attribute keys.
const (
	logMethod    = "method"
	logPath      = "path"
	logStatus    = "status"
	logRequestID = "request_id"
	logAttempt   = "attempt"
	logHost      = "host"
	logReason    = "reason"
	logElapsed   = "elapsed"
	logError     = "error"
)

// Client is a signed WeChat Pay APIv3 client. It is safe for concurrent use. Every 2xx response is
// verified before its body is decoded (docs/wechatpay.md §2). Errors are classified with Classify:
// callers decide on the class, never on the message.
type Client struct {
	signer     Signer
	verifier   verifier
	serial     string         // sent in Wechatpay-Serial on every request (docs/wechatpay.md §1, §3)
	encryptKey *rsa.PublicKey // the key named by serial; encrypts user_name (docs/wechatpay.md §3)
	apiv3Key   string
	bases      []string // BaseURL, then BackupBaseURL if set
	hc         *http.Client
	now        func() time.Time
	nonce      func() string
	log        *slog.Logger
	timeout    time.Duration
	retries    int
	minBackoff time.Duration
	maxBackoff time.Duration
	observe    func(Observation) // nil: none
}

// Option sets an optional Client setting.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: a client with a dedicated transport).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithClock sets the clock used for request timestamps and the skew check (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithNonce sets the request nonce source (default NewNonce). Tests use it to reproduce
// signatures byte for byte; production must leave it random.
func WithNonce(nonce func() string) Option { return func(c *Client) { c.nonce = nonce } }

// WithLogger sets the logger (default slog.Default()). Bodies, keys and names are never logged.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithTimeout bounds each attempt when the caller's context has no deadline (default
// DefaultTimeout). A context deadline always wins.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetries retries an ambiguous outcome up to n more times (default 0) with the same
// method, URL and body bytes and a fresh timestamp, nonce and signature, as stripe-go does.
// Only ambiguous outcomes are retried (Classify); definite answers never are.
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// WithBackoff sets the bounds of the capped, jittered exponential wait between retries
// (default DefaultMinBackoff, DefaultMaxBackoff).
func WithBackoff(minWait, maxWait time.Duration) Option {
	return func(c *Client) { c.minBackoff, c.maxBackoff = minWait, max(minWait, maxWait) }
}

// NewClient validates cfg and returns a Client.
func NewClient(cfg Config, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		signer:     Signer{MchID: cfg.MchID, SerialNo: cfg.MerchantSerialNo, Key: cfg.PrivateKey},
		apiv3Key:   cfg.APIv3Key,
		bases:      []string{strings.TrimSuffix(cfg.BaseURL, "/")},
		hc:         &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		now:        time.Now,
		nonce:      NewNonce,
		log:        slog.Default(),
		timeout:    DefaultTimeout,
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
	}
	if cfg.BackupBaseURL != "" {
		c.bases = append(c.bases, strings.TrimSuffix(cfg.BackupBaseURL, "/"))
	}
	certs := make(map[string]*rsa.PublicKey, len(cfg.PlatformCertificates))
	for s, k := range cfg.PlatformCertificates {
		certs[s] = k
	}
	c.verifier = verifier{publicKeyID: cfg.WechatPayPublicKeyID, publicKey: cfg.WechatPayPublicKey, certificates: certs}
	if cfg.WechatPayPublicKey != nil {
		c.serial, c.encryptKey = cfg.WechatPayPublicKeyID, cfg.WechatPayPublicKey
	} else {
		serials := make([]string, 0, len(certs))
		for s := range certs {
			serials = append(serials, s)
		}
		sort.Strings(serials)
		c.serial = serials[len(serials)-1]
		c.encryptKey = certs[c.serial]
	}
	for _, o := range opts {
		o(c)
	}
	c.verifier.now = c.now
	return c, nil
}

// Serial is the value sent in Wechatpay-Serial on every request: the WeChat Pay public key
// id, or the platform certificate serial when no public key is configured.
func (c *Client) Serial() string { return c.serial }

// Verify checks a response's or notification's headers and raw body (docs/wechatpay.md §2):
// signature type, known serial (public key id or platform certificate), |now − timestamp| < 300 s,
// probe signatures rejected, SHA256withRSA signature. Every error wraps ErrUnverified.
func (c *Client) Verify(h http.Header, body []byte) error { return c.verifier.verify(h, body) }

// EncryptUserName encrypts a real name for user_name with RSA-OAEP under the key named by
// Serial (docs/wechatpay.md §3). The plaintext never appears in an error.
func (c *Client) EncryptUserName(plaintext string) (string, error) {
	if plaintext == "" {
		return "", fmt.Errorf("%w: %w: empty user_name", ErrNotSent, ErrBadInput)
	}
	ct, err := EncryptOAEP(nil, c.encryptKey, plaintext)
	if err != nil {
		return "", fmt.Errorf("%w: encrypt user_name of %d bytes: %w", ErrNotSent, len(plaintext), errors.Unwrap(err))
	}
	return ct, nil
}

// ErrBadInput marks a request the client refused to send because it breaks a rule of the API
// (docs/wechatpay.md §4–§7; docs/transfer-bills.md; docs/abnormal-funds.md). Such errors also wrap
// ErrNotSent.
var ErrBadInput = errors.New("wechatpay: bad input")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrNotSent, ErrBadInput, fmt.Sprintf(format, args...))
}

// Do sends one signed request and, on a verified 2xx, decodes the JSON body into out (when
// out is non-nil and the body is not empty). pathAndQuery is the path plus ?query exactly
// as it will be sent and signed; body the exact bytes sent (nil for none).
//
// Errors: before anything is sent, errors wrap ErrNotSent. A non-2xx answer is an *APIError
// (an undecodable error body gives an empty Code, which Classify calls ambiguous). A 2xx
// that fails verification wraps ErrUnverified. Transport errors are returned as they are.
// Ambiguous outcomes are retried per WithRetries. After a connection error the same signed
// request is re-sent to BackupBaseURL.
func (c *Client) Do(ctx context.Context, method, pathAndQuery string, body []byte, out any) error {
	if method == "" || method != strings.ToUpper(method) {
		return invalid("method %q must be upper case", method)
	}
	if !strings.HasPrefix(pathAndQuery, "/") {
		return invalid("path %q must start with /", pathAndQuery)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrNotSent, method, pathAndQuery, err)
	}
	for attempt := 0; ; attempt++ {
		err := c.attempt(ctx, method, pathAndQuery, body, out, attempt)
		if err == nil || attempt >= c.retries {
			return err
		}
		reason, ok := shouldRetry(ctx, err)
		if !ok {
			return err
		}
		wait := c.backoff(attempt)
		c.log.LogAttrs(ctx, slog.LevelWarn, "wechatpay: retrying with the same body",
			slog.String(logMethod, method), slog.String(logPath, pathAndQuery),
			slog.Int(logAttempt, attempt+1), slog.String(logReason, reason), slog.Duration("wait", wait),
			slog.String(logError, err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (no retry: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// shouldRetry reports whether err may be retried with the same body, and why.
func shouldRetry(ctx context.Context, err error) (string, bool) {
	if ctx.Err() != nil || Classify(err) != ClassAmbiguous {
		return "", false
	}
	var ae *APIError
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("HTTP %d %q", ae.StatusCode, ae.Code), true
	case errors.Is(err, ErrUnverified):
		return "unverified response", true
	}
	return "transport error", true
}

// backoff returns a wait in [d/2, d] with d = minBackoff·2^attempt capped at maxBackoff.
func (c *Client) backoff(attempt int) time.Duration {
	return backoff.Jittered(c.minBackoff, c.maxBackoff, attempt)
}

// attempt signs once and sends to the primary host, then to the backup after a connection
// error. The same signed request goes to both: the host is not signed.
func (c *Client) attempt(ctx context.Context, method, uri string, body []byte, out any, n int) error {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	auth, err := c.signer.Authorization(method, uri, c.now().Unix(), c.nonce(), body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	var sendErr error
	sent := false
	for _, base := range c.bases {
		req, err := c.newRequest(ctx, method, base, uri, body, auth)
		if err != nil {
			return err
		}
		start := time.Now()
		resp, err := c.hc.Do(req)
		if err != nil {
			elapsed := time.Since(start)
			c.observed(method, uri, 0, ClassAmbiguous, "", elapsed)
			// Debug only: whoever gets the error logs it once (the retry line below, or the
			// caller), so one transport error makes one line.
			c.log.LogAttrs(ctx, slog.LevelDebug, "wechatpay: transport error",
				slog.String(logMethod, method), slog.String(logPath, uri), slog.String(logHost, req.URL.Host),
				slog.Int(logAttempt, n), slog.Duration(logElapsed, elapsed), slog.String(logError, err.Error()))
			sent = sent || !dialError(err)
			sendErr = errors.Join(sendErr, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		err = c.handle(resp, method, uri, out)
		elapsed := time.Since(start)
		if c.observe != nil {
			var code string
			var ae *APIError
			if errors.As(err, &ae) {
				code = ae.Code
			}
			c.observed(method, uri, resp.StatusCode, Classify(err), code, elapsed)
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "wechatpay: response",
			slog.String(logMethod, method), slog.String(logPath, uri), slog.String(logHost, req.URL.Host),
			slog.Int(logStatus, resp.StatusCode), slog.String(logRequestID, resp.Header.Get(HeaderRequestID)),
			slog.Int(logAttempt, n), slog.Duration(logElapsed, elapsed))
		return err
	}
	if !sent && ctx.Err() == nil {
		// Every host refused the connection: not one byte of the request left the process.
		return fmt.Errorf("%w: %s %s: %w", ErrNotSent, method, uri, sendErr)
	}
	return fmt.Errorf("%s %s: %w", method, uri, sendErr)
}

// observed reports one exchange to the observer, if there is one.
func (c *Client) observed(method, uri string, status int, class Class, code string, elapsed time.Duration) {
	if c.observe != nil {
		c.observe(Observation{Method: method, Endpoint: EndpointName(method, uri), Status: status, Class: class, Code: code, Elapsed: elapsed})
	}
}

// dialError reports whether err happened while dialling, before any request byte was written.
func dialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (c *Client) newRequest(ctx context.Context, method, base, uri string, body []byte, auth Authorization) (*http.Request, error) {
	u, err := url.Parse(base + uri)
	if err != nil {
		return nil, invalid("url %q: %v", uri, err)
	}
	if u.RequestURI() != uri {
		return nil, invalid("url %q would be sent as %q; escape it first", uri, u.RequestURI())
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, invalid("%s %s: %v", method, uri, err)
	}
	req.Header.Set("Authorization", auth.String())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(HeaderSerial, c.serial)
	return req, nil
}

// handle reads, verifies and decodes a response, or turns it into an *APIError.
func (c *Client) handle(resp *http.Response, method, uri string, out any) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s %s: HTTP %d: read body: %w", method, uri, resp.StatusCode, err)
	}
	if len(body) > MaxResponseBytes {
		return fmt.Errorf("%s %s: HTTP %d: body exceeds %d bytes", method, uri, resp.StatusCode, MaxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: %w", method, uri, newAPIError(resp, body))
	}
	if err := c.verifier.verify(resp.Header, body); err != nil {
		return fmt.Errorf("%s %s: HTTP %d (request id %s): %w", method, uri, resp.StatusCode, resp.Header.Get(HeaderRequestID), err)
	}
	if out == nil || len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		// Verified but undecodable: the call may have taken effect. Not an APIError, so ambiguous.
		return fmt.Errorf("%s %s: decode verified %d response: %w", method, uri, resp.StatusCode, err)
	}
	return nil
}

// maxMessageBytes caps APIError.Message: it is for humans and goes into logs.
const maxMessageBytes = 512

func newAPIError(resp *http.Response, body []byte) *APIError {
	e := &APIError{}
	if json.Unmarshal(body, e) != nil {
		e = &APIError{} // not JSON (a proxy page?): empty Code, which Classify calls ambiguous
	}
	e.StatusCode, e.RequestID = resp.StatusCode, resp.Header.Get(HeaderRequestID)
	if len(e.Message) > maxMessageBytes {
		e.Message = strings.ToValidUTF8(e.Message[:maxMessageBytes], "") + "…"
	}
	return e
}
