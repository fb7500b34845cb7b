package ops

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/paystream/paystream/pkg/ledger"
	"github.com/paystream/paystream/pkg/payout"
)

// Cookie names and the session's lifetime.
const (
	sessionCookie = "paystream_admin"
	flashCookie   = "paystream_flash"
	// SessionTTL is how long an admin login lasts; a restart ends every session too.
	SessionTTL = 12 * time.Hour
)

// mac is HMAC-SHA256 under the process's secret of a purpose and a value, so a session value
// cannot be used as a CSRF token or the other way round.
func (s *server) mac(purpose, v string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(v))
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// newSession returns a session value: its expiry and a nonce, then their MAC.
func (s *server) newSession(now time.Time) string {
	payload := make([]byte, 8+16)
	binary.BigEndian.PutUint64(payload, uint64(now.Add(SessionTTL).Unix()))
	rand.Read(payload[8:])
	p := b64.EncodeToString(payload)
	return p + "." + b64.EncodeToString(s.mac("session", p))
}

// session returns the request's valid, unexpired session cookie value.
func (s *server) session(r *http.Request) (string, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", false
	}
	p, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return "", false
	}
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac("session", p)) {
		return "", false
	}
	payload, err := b64.DecodeString(p)
	if err != nil || len(payload) != 24 {
		return "", false
	}
	if s.now().Unix() >= int64(binary.BigEndian.Uint64(payload)) {
		return "", false
	}
	return c.Value, true
}

// csrfFor is the CSRF token of a session: forms carry it in the field csrf.
func (s *server) csrfFor(session string) string { return b64.EncodeToString(s.mac("csrf", session)) }

// tokenOK compares a presented token with the admin token in constant time.
func (s *server) tokenOK(presented string) bool {
	a, b := sha256.Sum256([]byte(presented)), sha256.Sum256([]byte(s.cfg.AdminToken))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// refererOK rejects a request whose Referer names another host. Origin and Sec-Fetch-Site are
// checked by http.CrossOriginProtection; Referer covers browsers that send neither.
func refererOK(r *http.Request) bool {
	ref := r.Header.Get("Referer")
	if ref == "" {
		return true
	}
	u, err := url.Parse(ref)
	return err == nil && u.Host == r.Host
}

// errors of authorize, each a 403.
var (
	errAdminOff  = errors.New("admin actions are disabled (no admin token configured)")
	errNoSession = errors.New("log in with the admin token first")
	errCSRF      = errors.New("missing or stale form token: reload the page and try again")
	errOrigin    = errors.New("cross-origin request refused")
)

// authorize checks an admin POST: admin configured, same origin, and either a Bearer token
// (bearer true: no CSRF needed, it carries no ambient credentials) or a session with its CSRF
// form field.
func (s *server) authorize(r *http.Request) (bearer bool, err error) {
	if !s.admin {
		return false, errAdminOff
	}
	if !refererOK(r) {
		return false, errOrigin
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if !s.tokenOK(tok) {
			return true, errNoSession
		}
		return true, nil
	}
	sess, ok := s.session(r)
	if !ok {
		return false, errNoSession
	}
	got, want := []byte(r.PostFormValue("csrf")), []byte(s.csrfFor(sess))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return false, errCSRF
	}
	return false, nil
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	if !s.admin {
		text(w, http.StatusForbidden, errAdminOff.Error())
		return
	}
	if !refererOK(r) {
		text(w, http.StatusForbidden, errOrigin.Error())
		return
	}
	if !s.tokenOK(r.PostFormValue("token")) {
		s.log.Warn("ops: admin login refused", "remote", r.RemoteAddr)
		setFlash(w, "login failed: wrong token")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.newSession(s.now()), Path: "/",
		MaxAge: int(SessionTTL / time.Second), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	s.log.Info("ops: admin login", "remote", r.RemoteAddr)
	setFlash(w, "logged in")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r); err != nil {
		text(w, http.StatusForbidden, err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	setFlash(w, "logged out")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *server) retry(w http.ResponseWriter, r *http.Request) {
	no := r.PathValue("no")
	bearer, err := s.authorize(r)
	if err != nil {
		text(w, http.StatusForbidden, err.Error())
		return
	}
	if !validNo(no) {
		text(w, http.StatusBadRequest, "not an out_batch_no: want 1 to 32 characters [0-9A-Za-z]")
		return
	}
	err = s.cfg.Admin.RetryBatch(r.Context(), no)
	s.log.Info("ops: admin retry batch", "out_batch_no", no, "bearer", bearer, "remote", r.RemoteAddr, "err", err)
	msg := "batch " + no + " will be tried again now"
	if err != nil {
		msg = fmt.Sprintf("retry batch %s: %v", no, err)
	}
	s.answer(w, r, bearer, "/", msg, err)
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	bearer, err := s.authorize(r)
	if err != nil {
		text(w, http.StatusForbidden, err.Error())
		return
	}
	reason := r.PostFormValue("reason")
	if !validNo(key) {
		text(w, http.StatusBadRequest, "not an out_detail_no: want 1 to 32 characters [0-9A-Za-z]")
		return
	}
	if !validReason(reason) {
		text(w, http.StatusBadRequest, fmt.Sprintf("reason: at most %d printable characters", payout.MaxCancelReasonLen))
		return
	}
	err = s.cfg.Admin.CancelPayout(r.Context(), key, reason)
	s.log.Info("ops: admin cancel payout", "out_detail_no", key, "bearer", bearer, "remote", r.RemoteAddr, "err", err)
	msg := "cancel of payout " + key + " requested; its outcome will show here"
	if err != nil {
		msg = fmt.Sprintf("cancel payout %s: %v", key, err)
	}
	s.answer(w, r, bearer, "/payouts/"+key, msg, err)
}

// answer ends an admin action: text with a status for a Bearer request, else 303 to back with
// msg as the flash message.
func (s *server) answer(w http.ResponseWriter, r *http.Request, bearer bool, back, msg string, err error) {
	if bearer {
		code := http.StatusOK
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, ledger.ErrIllegalTransition):
			code = http.StatusConflict
		case err != nil:
			code = http.StatusInternalServerError
		}
		text(w, code, msg)
		return
	}
	setFlash(w, msg)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// validReason reports whether a cancel reason is valid UTF-8 of at most
// payout.MaxCancelReasonLen characters, none of them a control character.
func validReason(s string) bool {
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > payout.MaxCancelReasonLen {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsControl)
}

// setFlash leaves a message for the next page this browser loads.
func setFlash(w http.ResponseWriter, msg string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: b64.EncodeToString([]byte(msg)), Path: "/",
		MaxAge: 60, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// takeFlash returns the pending flash message and clears it (a cookie of this browser only:
// no server state changes).
func takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	msg, err := b64.DecodeString(c.Value)
	if err != nil || !utf8.Valid(msg) || len(msg) > 1024 {
		return ""
	}
	return string(msg)
}
