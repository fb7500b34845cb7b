// Package ops is one processor's operator surface: the status page a person reads at a
// glance, the payout lookup, /status.json, /livez, /readyz, /metrics (mounted from the
// caller's handler) and the admin actions that move money, plus the text and JSON that
// `processor status` prints. Everything it shows comes from a ledger snapshot
// (ledger.OpsSnapshot, ledger.PayoutView) and the process's runtime picture (Runtime).
//
// It never shows an openid in full (Mask), a name cipher or a request body. Admin actions exist
// only with both Config.Admin and Config.AdminToken; they are POSTs that need a session (a
// login with the token, or Authorization: Bearer) and, for browser sessions, a CSRF token. GET
// never changes anything.
package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
)

// Ledger is the read side of the ledger the page shows; *ledger.DB implements it. Both calls
// may run concurrently with each other and with the pipeline's writes.
type Ledger interface {
	// Ops reads one consistent snapshot for now, listing at most limit open batches and
	// recent failures.
	Ops(ctx context.Context, now time.Time, limit int) (ledger.OpsSnapshot, error)
	// Lookup returns one payout; an error matching ledger.ErrNotFound when it is unknown.
	Lookup(ctx context.Context, outDetailNo string) (ledger.PayoutView, error)
}

// Admin holds the actions that move money. A nil Admin (or an empty Config.AdminToken) makes
// the page read-only.
type Admin interface {
	// RetryBatch makes a parked or waiting batch (and its parked bills) due now. Errors
	// matching ledger.ErrNotFound or ledger.ErrIllegalTransition are shown to the operator.
	RetryBatch(ctx context.Context, outBatchNo string) error
	// CancelPayout asks for a payout on the bills rail to be cancelled (it publishes a
	// payout.CancelRequest; the cancel path answers with the payout's outcome). reason has at
	// most payout.MaxCancelReasonLen characters and may be empty.
	CancelPayout(ctx context.Context, outDetailNo, reason string) error
}

// Runtime is the process's own picture: who it is and what it is doing right now. The lead's
// wiring fills it from the pipeline and the JetStream consumer; Handler overwrites Ready and
// NotReady with Config.Ready's answer.
type Runtime struct {
	Instance, MchID, Product, Version, NATSURL string
	Started                                    time.Time
	Breakers                                   []Breaker
	InFlight                                   int // batches with a worker
	ConsumerPending, ConsumerAckPending        uint64
	ConsumerErr                                string // why the consumer counts are unknown; "" when read
	Ready                                      bool
	NotReady                                   []string // the reasons when not Ready
	// Silent are the other processor instances that stopped beating without a clean stop
	// (internal/instances), as this one last looked: the payouts they claimed are stranded.
	Silent []SilentInstance
}

// SilentInstance is another processor instance not seen for its silent-after: who it was,
// where, when it was last seen and how far its ledger had come.
type SilentInstance struct {
	Instance, Host     string
	SeenAt             time.Time
	LastSeq, LastEvent int64
}

// Breaker is one circuit breaker and its state ("closed", "half-open" or "open").
type Breaker struct{ Name, State string }

// Config is what Handler serves. Ledger is required; every other field is optional.
type Config struct {
	Ledger Ledger
	// Runtime returns the process's picture for the page and /status.json; nil: an empty one.
	Runtime func(ctx context.Context) Runtime
	// Ready returns the reasons the process is not ready; empty means ready. nil: always ready.
	Ready func(ctx context.Context) []string
	// Metrics is mounted at /metrics; nil: /metrics answers 404.
	Metrics http.Handler
	// Admin and AdminToken together enable the admin actions; either missing: read-only.
	Admin      Admin
	AdminToken string
	// Action says what fixes a parked batch's code on its rail, shown under WeChat's message;
	// nil: nothing shown.
	Action func(code, rail string) string
	Now    func() time.Time // default time.Now
	Log    *slog.Logger     // default slog.Default()
}

// Status is the whole picture: /status.json serves it and `processor status --json` prints
// it. Every OpenID in it is masked by whoever produced it through this package (WriteJSON,
// /status.json). LedgerErr and RuntimeErr say why a part is missing ("" when it was read).
type Status struct {
	Runtime    Runtime
	Ledger     ledger.OpsSnapshot
	LedgerErr  string `json:",omitempty"`
	RuntimeErr string `json:",omitempty"`
}

// Masked returns s with every openid in it masked (Mask) and the credentials of the NATS URL
// replaced by "redacted". It copies what it changes.
func (s Status) Masked() Status {
	s.Runtime.NATSURL = redactURLs(s.Runtime.NATSURL)
	if len(s.Ledger.RecentFailures) > 0 {
		fs := make([]ledger.PayoutBrief, len(s.Ledger.RecentFailures))
		for i, f := range s.Ledger.RecentFailures {
			f.OpenID = Mask(f.OpenID)
			fs[i] = f
		}
		s.Ledger.RecentFailures = fs
	}
	return s
}

// redactURLs replaces the user info of each URL in a comma-separated list (a NATS server list)
// by "redacted"; a part that does not parse is replaced whole.
func redactURLs(list string) string {
	if list == "" {
		return ""
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil:
			parts[i] = "(unparseable URL)"
		case u.User != nil:
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// WriteJSON writes s, masked, as indented JSON.
func WriteJSON(w io.Writer, s Status) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.Masked()); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// Mask shortens an openid to a prefix and a suffix ("o-ab…wxyz") so that a person can tell
// payees apart without the page holding the identifier. Openids of up to 8 characters are replaced
// by "…" entirely; no openid is ever returned whole.
func Mask(openid string) string {
	const head, tail = 4, 4
	if openid == "" {
		return ""
	}
	r := []rune(openid)
	if len(r) <= head+tail {
		return "…"
	}
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

// Yuan formats an amount in fen as yuan with two decimals ("123.45", "-0.05"), without floats.
func Yuan(fen int64) string {
	sign := ""
	u := uint64(fen)
	if fen < 0 {
		sign, u = "-", uint64(-fen) // -MinInt64 wraps to itself, which as uint64 is its magnitude
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}
