package wechatpaytest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paystream/paystream/pkg/wechatpay"
)

// Endpoints, as ServeMux patterns. They name endpoints in Fail, FailRate and Stats.
const (
	EndpointCreateBatch      = "POST /v3/transfer/batches"
	EndpointBatchByID        = "GET /v3/transfer/batches/batch-id/{batch_id}"
	EndpointBatchByOutNo     = "GET /v3/transfer/batches/out-batch-no/{out_batch_no}"
	EndpointDetailByID       = "GET /v3/transfer/batches/batch-id/{batch_id}/details/detail-id/{detail_id}"
	EndpointDetailByOutNo    = "GET /v3/transfer/batches/out-batch-no/{out_batch_no}/details/out-detail-no/{out_detail_no}"
	EndpointPartnerCreate    = "POST /v3/partner-transfer/batches"
	EndpointPartnerByID      = "GET /v3/partner-transfer/batches/batch-id/{batch_id}"
	EndpointPartnerByOutNo   = "GET /v3/partner-transfer/batches/out-batch-no/{out_batch_no}"
	EndpointPartnerDetailID  = "GET /v3/partner-transfer/batches/batch-id/{batch_id}/details/detail-id/{detail_id}"
	EndpointPartnerDetailOut = "GET /v3/partner-transfer/batches/out-batch-no/{out_batch_no}/details/out-detail-no/{out_detail_no}"
	EndpointCreateBill       = "POST /v3/fund-app/mch-transfer/transfer-bills"
	EndpointBillByOutNo      = "GET /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}"
	EndpointBillByNo         = "GET /v3/fund-app/mch-transfer/transfer-bills/transfer-bill-no/{transfer_bill_no}"
	EndpointCancelBill       = "POST /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}/cancel"
	EndpointCreateInstr      = "POST /v3/abnormal-fund-processing/receipts/{receipt_id}/transfer-instructions"
	EndpointInstrByOutNo     = "GET /v3/abnormal-fund-processing/receipts/{receipt_id}/transfer-instructions/{out_instruction_no}"
)

// maxBody bounds a request body: 3000 details with user_name fit in well under 4 MiB.
const maxBody = 8 << 20

// Server is a WeChat Pay APIv3 sandbox for 商家转账: it verifies request signatures, signs
// every answer, keeps batches, bills and instructions with a time-driven state machine,
// records what it paid (Paid), injects faults and delivers signed, encrypted callbacks.
// All methods are safe for concurrent use. Close releases it.
type Server struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time
	h    http.Handler

	mu      sync.Mutex
	st      state
	idx     indexes
	version uint64
	faults  faultTable
	windows map[string]*window
	stats   Stats
	outbox  []*notification // queued by advance, delivered by loop when due
	flows   fundFlow        // fund-flow bill faults and download files (fundflow.go)
	hold    *instrHold      // the next instruction create to stop (HoldInstr, abnormal.go)

	hs      *http.Server
	url     string
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	bg      sync.WaitGroup
	closeMu sync.Once
}

// Stats counts what the sandbox did. Read it with Server.Stats.
type Stats struct {
	Requests    map[string]int `json:"requests"`     // by endpoint pattern
	Faults      map[string]int `json:"faults"`       // injected, by fault name
	SignErrors  int            `json:"sign_errors"`  // requests refused with SIGN_ERROR
	RateLimited int            `json:"rate_limited"` // requests refused by the rate limit
	Notified    int            `json:"notified"`     // notifications acknowledged with 2xx
	NotifyFails int            `json:"notify_fails"` // notification deliveries that failed
	NotifyLost  int            `json:"notify_lost"`  // notifications dropped by Options.NotifyLoss
	// NotifyWaiting counts notifications queued for a later delivery (Options.NotifyDelay, a
	// retry's backoff, or the next tick); deliveries in flight are not counted.
	NotifyWaiting int `json:"notify_waiting"`
}

// New builds a Server from opts without listening; see Start and Handler. Close it.
func New(opts Options) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, now: opts.Now, log: opts.Logger, windows: map[string]*window{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.BillScenes == nil {
		s.opts.BillScenes = DefaultBillScenes()
	}
	if s.opts.HTTPClient == nil {
		s.opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	s.faults = faultTable{
		queued: map[string][]Fault{},
		rules:  append([]FaultRule(nil), opts.Faults...),
		rng:    rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		counts: map[string]int{},
	}
	s.stats = Stats{Requests: map[string]int{}}
	s.st = newState(opts.Balance)
	s.idx = newIndexes()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.h = s.routes()
	s.bg.Add(1)
	go s.loop()
	return s, nil
}

// NewServer starts a Server on 127.0.0.1 for a test, with DefaultOptions at TestSpeed
// changed by opts, and closes it in t.Cleanup. It fails the test if the server cannot start.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := DefaultOptions()
	o.Speed = TestSpeed
	for _, opt := range opts {
		opt(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatalf("wechatpaytest: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		s.Close()
		t.Fatalf("wechatpaytest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start listens on addr ("127.0.0.1:0" picks a port) and serves in the background.
// URL reports the address.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("wechatpaytest: listen: %w", err)
	}
	s.hs = &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
	s.url = "http://" + ln.Addr().String()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("sandbox serve", "err", err)
		}
	}()
	return nil
}

// URL is the base URL ("http://127.0.0.1:PORT") after Start; a Client's BaseURL.
func (s *Server) URL() string { return s.url }

// Handler is the sandbox's HTTP handler, for use without Start (benchmarks, other servers).
// With Options.Admin it also serves the admin API under /sandbox/ (see admin.go).
func (s *Server) Handler() http.Handler { return s.h }

// Close stops serving, cancels pending notifications and waits for the background work.
// It is idempotent.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		s.cancel()
		if s.hs != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.hs.Shutdown(ctx); err != nil {
				s.hs.Close()
			}
		}
		s.bg.Wait()
	})
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = cloneMap(s.stats.Requests)
	st.Faults = cloneMap(s.faults.counts)
	st.NotifyWaiting = len(s.outbox)
	return st
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// loop advances state machines and delivers notifications until Close.
func (s *Server) loop() {
	defer s.bg.Done()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
			s.tick()
		}
	}
}

// tick advances the state to the sandbox clock and starts the delivery of every
// notification due by then. It returns how many it started.
func (s *Server) tick() int {
	s.mu.Lock()
	now := s.now()
	s.advance(now)
	var due []*notification
	keep := s.outbox[:0]
	for _, n := range s.outbox {
		if now.Before(n.at) {
			keep = append(keep, n)
		} else {
			due = append(due, n)
		}
	}
	clear(s.outbox[len(keep):])
	s.outbox = keep
	s.mu.Unlock()
	for _, n := range due {
		s.bg.Add(1)
		go s.deliver(n)
	}
	return len(due)
}

// call is one verified API request.
type call struct {
	r        *http.Request
	body     []byte
	now      time.Time
	endpoint string
}

// apiFunc runs an endpoint. It returns the value to encode as the 200 body, or an error
// (a *wechatpay.APIError becomes its own status and code).
type apiFunc func(c *call) (any, error)

// api wraps an endpoint with verification, rate limiting, faults and response signing.
func (s *Server) api(endpoint string, limit int, fn apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.accept(w, r, endpoint)
		if !ok {
			return
		}
		now, body := c.now, c.body
		if !s.allow(endpoint, limit, now) {
			s.write(w, c, apiError(http.StatusTooManyRequests, limitCode(endpoint), "too many requests"), Fault{})
			return
		}
		s.mu.Lock()
		delay, fault := s.faults.pick(endpoint)
		s.mu.Unlock()
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		var res any
		switch fault.kind {
		case faultSystemError:
			res = apiError(http.StatusInternalServerError, "SYSTEM_ERROR", "injected system error")
		case faultFrequencyLimited:
			res = apiError(http.StatusTooManyRequests, "FREQUENCY_LIMITED", "injected frequency limit")
		case faultNotFound:
			res = apiError(http.StatusNotFound, "NOT_FOUND", "injected not found")
		case faultDropBeforeCommit:
			drop(w, nil)
			return
		default:
			if len(body) > maxBody {
				res = apiError(http.StatusBadRequest, "PARAM_ERROR", "body larger than %d bytes", maxBody)
				break
			}
			v, err := fn(c)
			res = v
			if err != nil {
				res = err
			}
		}
		s.write(w, c, res, fault)
	}
}

// readBody reads at most maxBody+1 bytes, in one allocation when Content-Length is known.
func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= maxBody {
		buf.Grow(int(n) + 1)
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, maxBody+1))
	return buf.Bytes(), err
}

// apiError builds the error answer of one call.
func apiError(status int, code, format string, args ...any) *wechatpay.APIError {
	return &wechatpay.APIError{StatusCode: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// write encodes res (a value or an error), signs it and sends it, spoiled by fault.
func (s *Server) write(w http.ResponseWriter, c *call, res any, fault Fault) {
	status := http.StatusOK
	var ae *wechatpay.APIError
	if err, ok := res.(error); ok {
		if !errors.As(err, &ae) {
			ae = apiError(http.StatusInternalServerError, "SYSTEM_ERROR", "sandbox: %v", err)
		}
		status, res = ae.StatusCode, ae
	}
	body, err := json.Marshal(res)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"code":"SYSTEM_ERROR","message":"sandbox: encode"}`)
	}
	reqID := s.requestID()
	code := ""
	if ae != nil {
		code = ae.Code
	}
	s.log.Debug("sandbox request", "endpoint", c.endpoint, "status", status, "code", code, "fault", fault.String(), "request_id", reqID)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Request-ID", reqID)
	switch fault.kind {
	case faultDropAfterCommit:
		drop(w, nil)
		return
	case faultUnsigned:
	case faultBadSignature:
		s.sign(h, append([]byte("tampered:"), body...))
	default:
		s.sign(h, body)
	}
	if fault.kind == faultTruncate {
		h.Set("Content-Length", strconv.Itoa(len(body)))
		drop(w, func(bw *bufio.Writer) {
			fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
			h.Write(bw)
			bw.WriteString("\r\n")
			bw.Write(body[:len(body)/2])
		})
		return
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	w.Write(body)
}

// sign adds the response signature headers of docs/wechatpay.md §2 for body to h.
func (s *Server) sign(h http.Header, body []byte) {
	ts := strconv.FormatInt(s.now().Unix(), 10)
	nonce := randomString(32)
	sig, err := s.signature(ts, nonce, body)
	if err != nil {
		s.log.Error("sandbox sign", "err", err)
		return
	}
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", sig)
	h.Set("Wechatpay-Serial", s.opts.PlatformKeyID)
	h.Set("Wechatpay-Signature-Type", wechatpay.AuthScheme)
}

// signature is the Wechatpay-Signature of body at timestamp ts with nonce (docs/wechatpay.md §2).
func (s *Server) signature(ts, nonce string, body []byte) (string, error) {
	return wechatpay.Sign(s.opts.PlatformKey, wechatpay.ResponseMessage(ts, nonce, body))
}

// ClientConfig returns a wechatpay.Config for this server: its URL, the merchant id and
// serial, the embedded TEST-ONLY merchant private key (so it fits Options whose MerchantKey
// is MerchantPublicKey), the platform key as WeChat Pay public key (or, when PlatformKeyID
// is not a PUB_KEY_ID_…, as the platform certificate of that serial) and the APIv3 key.
func (s *Server) ClientConfig() wechatpay.Config {
	c := wechatpay.Config{
		BaseURL: s.URL(), MchID: s.opts.MchID, MerchantSerialNo: s.opts.MerchantSerial,
		PrivateKey: MerchantPrivateKey(), APIv3Key: s.opts.APIv3Key,
	}
	pub := &s.opts.PlatformKey.PublicKey
	if strings.HasPrefix(s.opts.PlatformKeyID, wechatpay.PublicKeyIDPrefix) {
		c.WechatPayPublicKeyID, c.WechatPayPublicKey = s.opts.PlatformKeyID, pub
	} else {
		c.PlatformCertificates = map[string]*rsa.PublicKey{s.opts.PlatformKeyID: pub}
	}
	return c
}

// drop hijacks the connection, lets raw write to it if not nil, and closes it; with
// nothing written, SO_LINGER 0 makes the close a TCP reset.
func drop(w http.ResponseWriter, raw func(*bufio.Writer)) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // HTTP/2 or a recorder: abort the stream instead
	}
	conn, bw, err := hj.Hijack()
	if err != nil {
		return
	}
	if raw != nil {
		raw(bw.Writer)
		bw.Flush()
	} else if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

// verify checks the Authorization of a request (docs/wechatpay.md §1).
func (s *Server) verify(r *http.Request, body []byte, now time.Time) error {
	a, err := wechatpay.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	switch {
	case a.MchID != s.opts.MchID:
		return fmt.Errorf("mchid %q is not this merchant", a.MchID)
	case a.SerialNo != s.opts.MerchantSerial:
		return fmt.Errorf("serial_no %q is not the merchant certificate", a.SerialNo)
	case a.NonceStr == "":
		return errors.New("empty nonce_str")
	}
	if err := s.checkTimestamp(a.Timestamp, now); err != nil {
		return err
	}
	msg := wechatpay.RequestMessage(r.Method, r.RequestURI, a.Timestamp, a.NonceStr, body)
	if err := wechatpay.VerifySignature(s.opts.MerchantKey, msg, a.Signature); err != nil {
		return errors.New("signature does not verify")
	}
	return nil
}

// checkTimestamp refuses a request timestamp more than TimestampWindow from now
// (docs/wechatpay.md §1, §2). Its message states the skew a person can act on: that the
// timestamp looks like Unix milliseconds (docs/wechatpay.md §1: seconds), how old or how far
// ahead it is, or that it is no Unix time in seconds at all, where time.Duration would saturate
// at about 292 years.
func (s *Server) checkTimestamp(ts int64, now time.Time) error {
	w := s.opts.TimestampWindow
	within := func(d time.Duration) bool { return d <= w && d >= -w }
	d := now.Sub(time.Unix(ts, 0))
	switch {
	case within(d):
		return nil
	case within(now.Sub(time.UnixMilli(ts))):
		return fmt.Errorf("timestamp %d looks like Unix milliseconds; want seconds", ts)
	case d == math.MaxInt64 || d == math.MinInt64:
		return fmt.Errorf("timestamp %d is not Unix seconds near now (%d)", ts, now.Unix())
	case d > 0:
		return fmt.Errorf("timestamp %d is %v old, beyond %v", ts, d.Round(time.Second), w)
	}
	return fmt.Errorf("timestamp %d is %v ahead of now, beyond %v", ts, (-d).Round(time.Second), w)
}

// limitCode is the 429 code of endpoint: FREQUENCY_LIMITED on the batch APIs (docs/wechatpay.md
// §8), FREQUENCY_LIMIT_EXCEED on transfer bills and abnormal funds (docs/transfer-bills.md;
// docs/abnormal-funds.md).
func limitCode(endpoint string) string {
	if strings.Contains(endpoint, "/v3/fund-app/") || strings.Contains(endpoint, "/v3/abnormal-fund-processing/") {
		return "FREQUENCY_LIMIT_EXCEED"
	}
	return "FREQUENCY_LIMITED"
}

// window is a fixed 1-second rate window (docs/transfer-bills.md "fixed 1-s window").
type window struct {
	second int64
	n      int
}

// allow counts one call of endpoint against limit per second (0 = unlimited).
func (s *Server) allow(endpoint string, limit int, now time.Time) bool {
	if limit <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[endpoint]
	if w == nil {
		w = &window{}
		s.windows[endpoint] = w
	}
	if sec := now.Unix(); sec != w.second {
		w.second, w.n = sec, 0
	}
	w.n++
	if w.n > limit {
		s.stats.RateLimited++
		return false
	}
	return true
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomString returns n characters of [0-9A-Za-z] (nonces, ids).
func randomString(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[rand.IntN(len(alnum))]
	}
	return string(b)
}

func (s *Server) requestID() string { return randomString(32) }

// accept reads a request to endpoint, counts it and checks its signature. ok is false when
// it was answered (401 SIGN_ERROR) or its connection is gone; else c is the call to serve.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, endpoint string) (c *call, ok bool) {
	body, err := readBody(r)
	if err != nil {
		return nil, false // the connection is gone
	}
	now := s.now()
	c = &call{r: r, body: body, now: now, endpoint: endpoint}
	s.mu.Lock()
	s.stats.Requests[endpoint]++
	s.mu.Unlock()
	if err := s.verify(r, body, now); err != nil {
		s.mu.Lock()
		s.stats.SignErrors++
		s.mu.Unlock()
		s.write(w, c, apiError(http.StatusUnauthorized, "SIGN_ERROR", "%v", err), Fault{})
		return nil, false
	}
	return c, true
}
