package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paystream/paystream/internal/ops"
	"github.com/paystream/paystream/pkg/ledger"
)

func TestHandler_Page(t *testing.T) {
	base := serve(t, config(nil))
	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
	} {
		if got := res.Header.Get(h); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want it to start with %q", h, got, want)
		}
	}
	code, body := get(t, client(t), base, "/")
	if got, want := code, http.StatusOK; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	parked, stuck, working := strings.Index(body, parkedNo), strings.Index(body, stuckNo), strings.Index(body, workingNo)
	if parked < 0 || stuck < 0 || working < 0 || !(parked < stuck && stuck < working) {
		t.Fatalf("open batches at %d (parked), %d (stuck), %d (working): want parked, then stuck, then the working one", parked, stuck, working)
	}
	row := body[parked:stuck]
	for _, want := range []string{"PARKED", "NOT_ENOUGH", "资金不足", ">3<", "30m0s", "in 10m0s", "123.45"} {
		if !strings.Contains(row, want) {
			t.Errorf("parked batch row lacks %q:\n%s", want, row)
		}
	}
	if !strings.Contains(body[stuck:working], "STUCK") || !strings.Contains(body[stuck:working], "overdue 15m0s") {
		t.Errorf("stuck batch row is not marked STUCK with its overdue next try:\n%s", body[stuck:working])
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		"ready", "merchant 1900000109", "product batch", "version v1.2.3", "uptime 2h0m",
		"17 pending, 3 ack pending", "2 batches", "3 (300.03 yuan)", "2 outcome", "oldest 3s",
		"direct/create", `class="bad">open`,
		"ACCOUNT_FROZEN", ops.Mask(fullOpenID), `href="/payouts/D2"`,
		"700.07", "1 batch NOT_ENOUGH",
		`action="/payouts"`, `href="/metrics"`, `href="/status.json"`, `href="/livez"`, `href="/readyz"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, `method="post"`) {
		t.Errorf("read-only page has a POST form:\n%s", body)
	}
}

func TestHandler_Lookup(t *testing.T) {
	base := serve(t, config(nil))
	for _, tc := range []struct {
		name     string
		path     string
		wantCode int
		want     []string
	}{
		{name: "by path", path: "/payouts/" + billKey, wantCode: http.StatusOK,
			want: []string{"WAIT_USER_CONFIRM", "0.88 yuan", "BP1000000000000000000004", "1330000071100999991182020050700019480001", "wechatpay", "stream seq 41"}},
		{name: "by form query", path: "/payouts?key=" + failedKey, wantCode: http.StatusOK,
			want: []string{"FAIL", "ACCOUNT_FROZEN", "5.00 yuan", "not published yet"}},
		{name: "unknown", path: "/payouts/NOPE1", wantCode: http.StatusNotFound, want: []string{"no payout NOPE1"}},
		{name: "invalid key", path: "/payouts?key=" + url.QueryEscape("<script>"), wantCode: http.StatusBadRequest,
			want: []string{"not an out_detail_no"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, client(t), base, tc.path)
			if got, want := code, tc.wantCode; got != want {
				t.Fatalf("status %d, want %d:\n%s", got, want, body)
			}
			for _, want := range tc.want {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if strings.Contains(body, "<script>") || strings.Contains(body, `http-equiv="refresh"`) {
				t.Errorf("lookup page has a script or refreshes itself")
			}
		})
	}
}

// TestHandler_NeverFullOpenID scans everything the handler serves, logged in or not, for the
// full openid.
func TestHandler_NeverFullOpenID(t *testing.T) {
	paths := []string{"/", "/status.json", "/payouts/" + billKey, "/payouts/" + failedKey, "/payouts?key=" + failedKey}
	for _, admin := range []bool{false, true} {
		var a ops.Admin
		if admin {
			a = &fakeAdmin{}
		}
		base := serve(t, config(a))
		c := client(t)
		if admin {
			login(t, c, base)
		}
		for _, p := range paths {
			_, body := get(t, c, base, p)
			if strings.Contains(body, fullOpenID) {
				t.Errorf("admin %v: %s shows the full openid", admin, p)
			}
			if strings.Contains(body, "hunter2") {
				t.Errorf("admin %v: %s shows the NATS password", admin, p)
			}
			if !strings.Contains(body, ops.Mask(fullOpenID)) {
				t.Errorf("admin %v: %s does not show the masked openid", admin, p)
			}
		}
	}
}

func TestHandler_StatusJSON(t *testing.T) {
	cfg := config(nil)
	cfg.Ready = func(context.Context) []string { return []string{"nats: disconnected"} }
	_, body := get(t, client(t), serve(t, cfg), "/status.json")
	var s ops.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if got, want := s.Runtime.Instance, "P1"; got != want {
		t.Errorf("instance %q, want %q", got, want)
	}
	if s.Runtime.Ready || len(s.Runtime.NotReady) != 1 {
		t.Errorf("ready %v %q: want not ready for the one reason Ready gave", s.Runtime.Ready, s.Runtime.NotReady)
	}
	if got, want := s.Ledger.Open[1].LastErrorCode, "NOT_ENOUGH"; got != want {
		t.Errorf("open[1] code %q, want %q", got, want)
	}
	if got, want := s.Ledger.RecentFailures[0].OpenID, ops.Mask(fullOpenID); got != want {
		t.Errorf("openid %q, want %q", got, want)
	}
	if got, want := s.Runtime.NATSURL, "nats://redacted@127.0.0.1:4222"; got != want {
		t.Errorf("NATS URL %q, want %q", got, want)
	}
}

func TestHandler_Health(t *testing.T) {
	var reasons atomic.Pointer[[]string]
	reasons.Store(&[]string{"nats: disconnected", "consumer: not bound"})
	cfg := config(nil)
	cfg.Ready = func(context.Context) []string { return *reasons.Load() }
	base := serve(t, cfg)
	c := client(t)
	for _, tc := range []struct {
		name     string
		path     string
		ready    []string
		wantCode int
		wantBody string
	}{
		{name: "live while serving", path: "/livez", wantCode: http.StatusOK, wantBody: "ok\n"},
		{name: "not ready names every reason", path: "/readyz", ready: []string{"nats: disconnected", "consumer: not bound"},
			wantCode: http.StatusServiceUnavailable, wantBody: "nats: disconnected\nconsumer: not bound\n"},
		{name: "ready", path: "/readyz", wantCode: http.StatusOK, wantBody: "ready\n"},
		{name: "metrics mounted", path: "/metrics", wantCode: http.StatusOK, wantBody: "paystream_ready 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reasons.Store(&tc.ready)
			code, body := get(t, c, base, tc.path)
			if code != tc.wantCode || body != tc.wantBody {
				t.Fatalf("%d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

func TestHandler_ReadOnlyRefusesAdmin(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func() (ops.Config, *fakeAdmin)
	}{
		{name: "no admin", cfg: func() (ops.Config, *fakeAdmin) { return config(nil), nil }},
		{name: "admin without token", cfg: func() (ops.Config, *fakeAdmin) {
			a := &fakeAdmin{}
			cfg := config(a)
			cfg.AdminToken = ""
			return cfg, a
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, a := tc.cfg()
			base := serve(t, cfg)
			c := client(t)
			_, page := get(t, c, base, "/")
			if strings.Contains(page, `method="post"`) {
				t.Errorf("page offers a POST form")
			}
			for _, p := range []string{"/admin/login", "/admin/batches/" + parkedNo + "/retry", "/admin/payouts/" + billKey + "/cancel"} {
				res, _ := post(t, c, base, p, url.Values{"token": {adminToken}}, "Authorization", "Bearer "+adminToken)
				if got, want := res.StatusCode, http.StatusForbidden; got != want {
					t.Errorf("POST %s: %d, want %d", p, got, want)
				}
			}
			if a != nil {
				if r, c := a.calls(); len(r)+len(c) > 0 {
					t.Errorf("admin called: %v %v", r, c)
				}
			}
		})
	}
}

func TestHandler_Admin(t *testing.T) {
	retry := "/admin/batches/" + parkedNo + "/retry"
	for _, tc := range []struct {
		name        string
		login       bool
		method      string
		path        string
		form        func(csrf string) url.Values
		headers     []string
		wantCode    int
		wantRetries int
		wantCancels int
		wantFlash   string
	}{
		{name: "no session", method: "POST", path: retry, wantCode: http.StatusForbidden},
		{name: "session without csrf", login: true, method: "POST", path: retry,
			form: func(string) url.Values { return url.Values{} }, wantCode: http.StatusForbidden},
		{name: "session with a bad csrf", login: true, method: "POST", path: retry,
			form: func(string) url.Values { return url.Values{"csrf": {"AAAA"}} }, wantCode: http.StatusForbidden},
		{name: "session and csrf", login: true, method: "POST", path: retry, wantCode: http.StatusSeeOther, wantRetries: 1,
			wantFlash: "batch " + parkedNo + " will be tried again now"},
		{name: "csrf but cross-site referer", login: true, method: "POST", path: retry,
			headers: []string{"Referer", "https://evil.example/"}, wantCode: http.StatusForbidden},
		{name: "csrf but cross-site origin", login: true, method: "POST", path: retry,
			headers: []string{"Origin", "https://evil.example"}, wantCode: http.StatusForbidden},
		{name: "bearer", method: "POST", path: retry, headers: []string{"Authorization", "Bearer " + adminToken},
			wantCode: http.StatusOK, wantRetries: 1},
		{name: "bearer with a wrong token", method: "POST", path: retry, headers: []string{"Authorization", "Bearer nope-nope-nope-nope"},
			wantCode: http.StatusForbidden},
		{name: "invalid out_batch_no", method: "POST", path: "/admin/batches/B-1/retry",
			headers: []string{"Authorization", "Bearer " + adminToken}, wantCode: http.StatusBadRequest},
		{name: "cancel with session", login: true, method: "POST", path: "/admin/payouts/" + billKey + "/cancel",
			form:     func(csrf string) url.Values { return url.Values{"csrf": {csrf}, "reason": {"payee asked"}} },
			wantCode: http.StatusSeeOther, wantCancels: 1, wantFlash: "cancel of payout D1 requested"},
		{name: "cancel with a control character in the reason", method: "POST", path: "/admin/payouts/" + billKey + "/cancel",
			form:    func(string) url.Values { return url.Values{"reason": {"a\nb"}} },
			headers: []string{"Authorization", "Bearer " + adminToken}, wantCode: http.StatusBadRequest},
		{name: "GET retry does nothing", login: true, method: "GET", path: retry, wantCode: http.StatusMethodNotAllowed},
		{name: "GET cancel does nothing", method: "GET", path: "/admin/payouts/" + billKey + "/cancel",
			headers: []string{"Authorization", "Bearer " + adminToken}, wantCode: http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &fakeAdmin{}
			base := serve(t, config(a))
			c := client(t)
			var csrf string
			if tc.login {
				csrf = login(t, c, base)
			}
			form := url.Values{"csrf": {csrf}}
			if tc.form != nil {
				form = tc.form(csrf)
			}
			var res *http.Response
			if tc.method == "GET" {
				req, _ := http.NewRequest("GET", base+tc.path+"?csrf="+url.QueryEscape(csrf), nil)
				for i := 0; i+1 < len(tc.headers); i += 2 {
					req.Header.Set(tc.headers[i], tc.headers[i+1])
				}
				var err error
				if res, err = c.Do(req); err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
			} else {
				res, _ = post(t, c, base, tc.path, form, tc.headers...)
			}
			if got, want := res.StatusCode, tc.wantCode; got != want {
				t.Fatalf("status %d, want %d", got, want)
			}
			retries, cancels := a.calls()
			if len(retries) != tc.wantRetries || len(cancels) != tc.wantCancels {
				t.Fatalf("retries %q cancels %q, want %d and %d", retries, cancels, tc.wantRetries, tc.wantCancels)
			}
			if tc.wantRetries == 1 && retries[0] != parkedNo {
				t.Errorf("retried %q, want %q", retries[0], parkedNo)
			}
			if tc.wantCancels == 1 && cancels[0] != billKey+":payee asked" {
				t.Errorf("cancelled %q", cancels[0])
			}
			if tc.wantFlash != "" {
				_, body := get(t, c, base, res.Header.Get("Location"))
				if !strings.Contains(body, tc.wantFlash) {
					t.Errorf("page after the action lacks %q", tc.wantFlash)
				}
			}
		})
	}
}

func TestHandler_AdminForms(t *testing.T) {
	base := serve(t, config(&fakeAdmin{}))
	c := client(t)
	_, page := get(t, c, base, "/")
	if !strings.Contains(page, `action="/admin/login"`) || strings.Contains(page, "/retry") {
		t.Fatalf("before login: want the login form and no action forms")
	}
	csrf := login(t, c, base)
	_, page = get(t, c, base, "/")
	for _, no := range []string{parkedNo, stuckNo, workingNo} {
		if !strings.Contains(page, `action="/admin/batches/`+no+`/retry"`) {
			t.Errorf("no retry form for %s", no)
		}
	}
	if !strings.Contains(page, `value="`+csrf+`"`) {
		t.Errorf("forms lack the session's csrf token")
	}
	for _, tc := range []struct {
		name       string
		key        string
		wantCancel bool
	}{
		{name: "bills rail, waiting for the payee", key: billKey, wantCancel: true},
		{name: "final payout", key: failedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, body := get(t, c, base, "/payouts/"+tc.key)
			if got := strings.Contains(body, `/cancel"`); got != tc.wantCancel {
				t.Fatalf("cancel form shown %v, want %v", got, tc.wantCancel)
			}
		})
	}
}

func TestHandler_LoginRefusesWrongToken(t *testing.T) {
	a := &fakeAdmin{}
	base := serve(t, config(a))
	c := client(t)
	res, _ := post(t, c, base, "/admin/login", url.Values{"token": {"wrong-token-wrong-token"}})
	if got, want := res.StatusCode, http.StatusSeeOther; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	_, page := get(t, c, base, "/")
	if !strings.Contains(page, "login failed") || strings.Contains(page, `name="csrf"`) {
		t.Fatalf("after a wrong token: want the failure flash and no session")
	}
}

func TestHandler_SessionExpires(t *testing.T) {
	a := &fakeAdmin{}
	var now atomic.Int64
	now.Store(t0.UnixNano())
	cfg := config(a)
	cfg.Now = func() time.Time { return time.Unix(0, now.Load()) }
	base := serve(t, cfg)
	c := client(t)
	csrf := login(t, c, base)
	now.Add(int64(ops.SessionTTL))
	res, _ := post(t, c, base, "/admin/batches/"+parkedNo+"/retry", url.Values{"csrf": {csrf}})
	if got, want := res.StatusCode, http.StatusForbidden; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
}

func TestHandler_BearerErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		wantCode int
	}{
		{name: "unknown batch", err: ledger.ErrNotFound, wantCode: http.StatusNotFound},
		{name: "settled batch", err: ledger.ErrIllegalTransition, wantCode: http.StatusConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := serve(t, config(&fakeAdmin{err: tc.err}))
			res, body := post(t, client(t), base, "/admin/batches/"+parkedNo+"/retry", nil, "Authorization", "Bearer "+adminToken)
			if got, want := res.StatusCode, tc.wantCode; got != want {
				t.Fatalf("status %d, want %d: %s", got, want, body)
			}
		})
	}
}

func TestWriteText(t *testing.T) {
	cfg := config(nil)
	snap, _ := cfg.Ledger.Ops(context.Background(), t0, 50)
	rt := testRuntime(context.Background())
	rt.Ready = true
	rt.Silent = []ops.SilentInstance{{Instance: "ghost0001", Host: "lost-host", SeenAt: t0.Add(-5 * time.Minute), LastSeq: 42, LastEvent: 7}}
	var b bytes.Buffer
	if err := ops.WriteText(&b, ops.Status{Runtime: rt, Ledger: snap}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	parked, stuck, working := strings.Index(out, parkedNo), strings.Index(out, stuckNo), strings.Index(out, workingNo)
	if !(0 <= parked && parked < stuck && stuck < working) {
		t.Errorf("open batches not parked, stuck, working:\n%s", out)
	}
	for _, want := range []string{"P1", "ready", "yes", "17 pending, 3 ack pending", "breaker direct/create", "PARKED batch",
		"1 with NOT_ENOUGH", "资金不足", "STUCK", "12 received, 3 paid (300.03 yuan)", "ACCOUNT_FROZEN", ops.Mask(fullOpenID),
		"SILENT ghost0001", "on lost-host, last seen 5m", "(ledger seq 42, event 7)"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, fullOpenID) {
		t.Errorf("text shows the full openid")
	}

	b.Reset()
	if err := ops.WriteText(&b, ops.Status{Ledger: snap, RuntimeErr: "processor not reachable at http://127.0.0.1:8091"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "unknown: processor not reachable") || !strings.Contains(b.String(), "NOT_ENOUGH") {
		t.Errorf("without a runtime: want the reason and the ledger part:\n%s", b.String())
	}
}

func TestMask(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"short", "…"},
		{"12345678", "…"},
		{fullOpenID, "oUpF…eS6o"},
		{"中文中文中文中文中", "中文中文…文中文中"},
	} {
		if got := ops.Mask(tc.in); got != tc.want {
			t.Errorf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestYuan(t *testing.T) {
	for _, tc := range []struct {
		fen  int64
		want string
	}{
		{0, "0.00"}, {5, "0.05"}, {100, "1.00"}, {12345, "123.45"}, {-5, "-0.05"}, {-12345, "-123.45"},
		{9223372036854775807, "92233720368547758.07"}, {-9223372036854775808, "-92233720368547758.08"},
	} {
		if got := ops.Yuan(tc.fen); got != tc.want {
			t.Errorf("Yuan(%d) = %q, want %q", tc.fen, got, tc.want)
		}
	}
}
