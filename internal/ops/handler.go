package ops

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/paystream/paystream/pkg/ledger"
)

// PageLimit is how many open batches and recent failures the page and /status.json list.
const PageLimit = 50

// StuckAfter is how long past its next try a batch that is not parked may wait before the page
// calls it stuck: nobody is working on it (no replica owns it, or its worker is wedged).
const StuckAfter = 5 * time.Minute

// HorizonMargin: a batch this close to WeChat's 30-day query horizon (ledger.QueryHorizon,
// docs/wechatpay.md §10) is stuck too, since after it WeChat no longer answers for it.
const HorizonMargin = 5 * 24 * time.Hour

//go:embed templates/*.html
var templateFS embed.FS

var (
	indexTmpl  = mustPage("templates/index.html")
	payoutTmpl = mustPage("templates/payout.html")
)

func mustPage(name string) *template.Template {
	return template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", name))
}

var funcs = template.FuncMap{
	"yuan": Yuan,
	"mask": Mask,
	"age":  age,
	"next": next,
	"ts":   ts,
	"sum": func(m map[string]ledger.StateTotal) ledger.StateTotal {
		var t ledger.StateTotal
		for _, v := range m {
			t.Count, t.Amount = t.Count+v.Count, t.Amount+v.Amount
		}
		return t
	},
	"keys":        func(m map[string]ledger.StateTotal) []string { return sortedKeys(m) },
	"outboxKinds": func(m map[string]int) []string { return sortedKeys(m) },
}

// server is Handler's state; it is safe for concurrent use (nothing in it changes after
// Handler returns).
type server struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	admin  bool   // Admin and AdminToken both set
	secret []byte // signs sessions and CSRF tokens; random per process
}

// Handler serves the operator endpoints of one processor:
//
//	GET  /                              the status page (refreshes every 5 s)
//	GET  /payouts?key=K, /payouts/{key} one payout (out_detail_no)
//	GET  /status.json                   Status, openids masked
//	GET  /livez                         200 "ok" while the process serves
//	GET  /readyz                        200 "ready", or 503 and Config.Ready's reasons, one a line
//	GET  /metrics                       Config.Metrics
//	POST /admin/login, /admin/logout    a browser session from the admin token (form field token)
//	POST /admin/batches/{no}/retry      Admin.RetryBatch
//	POST /admin/payouts/{key}/cancel    Admin.CancelPayout (form field reason)
//
// The admin POSTs answer 403 unless Config.Admin and Config.AdminToken are both set, the
// request carries a session cookie and its CSRF form field (csrf) or Authorization: Bearer
// with the token, and is not cross-origin (Sec-Fetch-Site, Origin or Referer). A browser gets
// 303 back to the page with the result as a flash message; a Bearer request gets the result as
// text (200, 404 unknown, 409 already settled, 500 other). Every response carries a
// Content-Security-Policy, X-Frame-Options DENY and nosniff. Handler panics if cfg.Ledger is nil.
func Handler(cfg Config) http.Handler {
	if cfg.Ledger == nil {
		panic("ops.Handler: nil Ledger")
	}
	s := &server{cfg: cfg, now: cfg.Now, log: cfg.Log, admin: cfg.Admin != nil && cfg.AdminToken != ""}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.secret = make([]byte, 32)
	rand.Read(s.secret) // never fails (crypto/rand.Read panics rather than return an error)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /payouts", func(w http.ResponseWriter, r *http.Request) { s.lookup(w, r, r.FormValue("key")) })
	mux.HandleFunc("GET /payouts/{key}", func(w http.ResponseWriter, r *http.Request) { s.lookup(w, r, r.PathValue("key")) })
	mux.HandleFunc("GET /status.json", s.statusJSON)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { text(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	mux.HandleFunc("POST /admin/login", s.login)
	mux.HandleFunc("POST /admin/logout", s.logout)
	mux.HandleFunc("POST /admin/batches/{no}/retry", s.retry)
	mux.HandleFunc("POST /admin/payouts/{key}/cancel", s.cancel)
	return secure(http.NewCrossOriginProtection().Handler(mux))
}

// secure sets the security headers of every response.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; "+
			"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func text(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// status reads the whole picture, masked. A ledger error is reported in LedgerErr.
func (s *server) status(ctx context.Context) Status {
	var st Status
	if s.cfg.Runtime != nil {
		st.Runtime = s.cfg.Runtime(ctx)
	}
	st.Runtime.NotReady = s.notReady(ctx)
	st.Runtime.Ready = len(st.Runtime.NotReady) == 0
	snap, err := s.cfg.Ledger.Ops(ctx, s.now(), PageLimit)
	if err != nil {
		s.log.Warn("ops: ledger read", "err", err)
		st.LedgerErr = err.Error()
	}
	st.Ledger = snap
	return st.Masked()
}

func (s *server) notReady(ctx context.Context) []string {
	if s.cfg.Ready == nil {
		return nil
	}
	return s.cfg.Ready(ctx)
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if reasons := s.notReady(r.Context()); len(reasons) > 0 {
		text(w, http.StatusServiceUnavailable, strings.Join(reasons, "\n"))
		return
	}
	text(w, http.StatusOK, "ready")
}

func (s *server) statusJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if err := WriteJSON(w, s.status(r.Context())); err != nil {
		s.log.Warn("ops: write status.json", "err", err)
	}
}

// page is what the templates render.
type page struct {
	Title    string
	Refresh  bool
	Now      time.Time
	Status   Status
	Open     []openRow
	Admin    bool   // admin actions configured
	LoggedIn bool   // this browser has a session
	CSRF     string // the session's CSRF token
	Flash    string
	// The lookup page.
	Key       string
	Payout    *ledger.PayoutView // masked
	LookupErr string
	CanCancel bool
}

// openRow is one open batch on the page.
type openRow struct {
	ledger.OpenBatch
	Stuck  bool
	Action string // what fixes it, when parked
}

func (s *server) newPage(w http.ResponseWriter, r *http.Request, title string) *page {
	p := &page{Title: title, Now: s.now(), Admin: s.admin, Flash: takeFlash(w, r)}
	if s.admin {
		if c, ok := s.session(r); ok {
			p.LoggedIn, p.CSRF = true, s.csrfFor(c)
		}
	}
	p.Status = s.status(r.Context())
	return p
}

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	p := s.newPage(w, r, "")
	p.Title = "paystream " + instance(p.Status)
	p.Refresh = true
	p.Open = openRows(p.Status.Ledger.Open, p.Now)
	if s.cfg.Action != nil {
		for i, r := range p.Open {
			if r.Parked {
				p.Open[i].Action = s.cfg.Action(r.LastErrorCode, r.Rail)
			}
		}
	}
	s.render(w, http.StatusOK, indexTmpl, p)
}

// instance names the processor: the runtime's instance id, else the ledger's.
func instance(st Status) string {
	if st.Runtime.Instance != "" {
		return st.Runtime.Instance
	}
	return st.Ledger.Instance
}

// openRows orders open batches parked first, then stuck, then the rest, keeping the ledger's
// order (oldest first) within each group.
func openRows(open []ledger.OpenBatch, now time.Time) []openRow {
	rows := make([]openRow, len(open))
	for i, b := range open {
		rows[i] = openRow{OpenBatch: b, Stuck: stuck(b, now)}
	}
	rank := func(r openRow) int {
		switch {
		case r.Parked:
			return 0
		case r.Stuck:
			return 1
		}
		return 2
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i]) < rank(rows[j]) })
	return rows
}

// stuck reports whether an open batch that is not parked looks abandoned: its next try is
// overdue by more than StuckAfter, or it nears WeChat's query horizon.
func stuck(b ledger.OpenBatch, now time.Time) bool {
	if b.Parked {
		return false
	}
	overdue := !b.NextAt.IsZero() && now.Sub(b.NextAt) > StuckAfter
	old := !b.SealedAt.IsZero() && now.Sub(b.SealedAt) > ledger.QueryHorizon-HorizonMargin
	return overdue || old
}

func (s *server) lookup(w http.ResponseWriter, r *http.Request, key string) {
	p := s.newPage(w, r, "payout "+key)
	p.Key = key
	code := http.StatusOK
	switch v, err := s.lookupPayout(r.Context(), key); {
	case errors.Is(err, errInvalidKey):
		code, p.LookupErr = http.StatusBadRequest, "not an out_detail_no: want 1 to 32 characters [0-9A-Za-z]"
		p.Key = ""
	case errors.Is(err, ledger.ErrNotFound):
		code, p.LookupErr = http.StatusNotFound, "no payout "+key+" in this processor's ledger (another replica may own it)"
	case err != nil:
		s.log.Warn("ops: lookup", "out_detail_no", key, "err", err)
		code, p.LookupErr = http.StatusInternalServerError, "ledger: "+err.Error()
	default:
		v.OpenID = Mask(v.OpenID)
		p.Payout = &v
		p.CanCancel = p.LoggedIn && cancellable(v)
	}
	s.render(w, code, payoutTmpl, p)
}

var errInvalidKey = errors.New("invalid out_detail_no")

func (s *server) lookupPayout(ctx context.Context, key string) (ledger.PayoutView, error) {
	if !validNo(key) {
		return ledger.PayoutView{}, errInvalidKey
	}
	return s.cfg.Ledger.Lookup(ctx, key)
}

// cancellable reports whether a payout may be offered for cancelling: the bills rail is the
// only one that can cancel (docs/transfer-bills.md), and only before a final state.
func cancellable(v ledger.PayoutView) bool {
	return v.Rail == ledger.RailBills && !ledger.PayoutFinal(v.State)
}

func (s *server) render(w http.ResponseWriter, code int, t *template.Template, p *page) {
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		s.log.Error("ops: render page", "err", err)
		text(w, http.StatusInternalServerError, "render page: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(b.String()))
}

// validNo reports whether s is an out_batch_no or out_detail_no: [0-9A-Za-z]{1,32}
// (docs/wechatpay.md §4).
func validNo(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
