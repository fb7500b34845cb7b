package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/payout"
)

// mustServer runs an embedded JetStream server; withStream creates the "payouts" stream.
func mustServer(t *testing.T, withStream bool) (*server.Server, jetstream.Stream) {
	t.Helper()
	s := natstest.Run(t)
	if !withStream {
		return s, nil
	}
	st, err := natstest.Connect(t, s).CreateStream(t.Context(), jetstream.StreamConfig{Name: "payouts", Subjects: []string{"payouts.requests.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	code = run(ctx, args, func(string) string { return "" }, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func line(no string, amount string, extra string) string {
	return `{"schema":"paystream.payout.v1","out_detail_no":"` + no + `","mchid":"1900000001","appid":"wxa1",` +
		`"openid":"o123","amount":` + amount + `,"remark":"奖励"` + extra + `}`
}

func msgCount(t *testing.T, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublish_jsonl(t *testing.T) {
	s, st := mustServer(t, true)
	in := strings.Join([]string{
		line("A1", "100", ""),
		"",
		line("A2", "100.5", ""), // float: invalid
		line("A3", "200", `,"user_name":"SECRETNAME"`),
		line("A1", "100", ""),                                             // duplicate
		line("A4", "300000", ""),                                          // ≥2000 yuan without a name: invalid
		`{"amount":1,` + strings.Repeat(" ", payout.MaxMessageSize) + `}`, // too large
		line("A5", "100", ""),
	}, "\n")
	f := writeFile(t, "p.jsonl", in)
	code, out, errOut := runCmd(t, "", "publish", "--file", f, "--url", s.ClientURL())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got, want := out, "published 3, duplicates 1, invalid 3, failed 0\n"; got != want {
		t.Fatalf("summary = %q, want %q", got, want)
	}
	for _, want := range []string{"line 3: ", "field amount", "line 6: ", "user_name: required", "line 7: ", "too large"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	if strings.Contains(errOut, "SECRETNAME") || strings.Contains(errOut, "o123") {
		t.Fatalf("stderr leaks a name or openid: %s", errOut)
	}
	if got, want := msgCount(t, st), uint64(3); got != want {
		t.Fatalf("stream holds %d, want %d", got, want)
	}
	m, err := st.GetLastMsgForSubject(t.Context(), "payouts.requests.1900000001")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != "A5" {
		t.Fatalf("Nats-Msg-Id = %q, want A5", got)
	}
}

// TestRetrier: a publish that failed for a passing reason ("duplicate message id is in
// process", answered by a replicated stream while an earlier publish of the id is stored; or
// no answer) is published again, same id; any other failure is final at once.
func TestRetrier(t *testing.T) {
	s, st := mustServer(t, true)
	js := natstest.Connect(t, s)
	r := retrier{js: js, ctx: t.Context(), window: 5 * time.Second}
	msg := func(id string) *nats.Msg {
		m := nats.NewMsg("payouts.requests.1900000001")
		m.Data = []byte(line(id, "100", ""))
		m.Header.Set(jetstream.MsgIDHeader, id)
		return m
	}
	inProcess := &jetstream.APIError{Code: 409, ErrorCode: jsDuplicateInProcess}
	for _, tc := range []struct {
		name    string
		err     error
		wantErr bool
	}{
		{name: "duplicate in process is retried", err: inProcess},
		{name: "no answer is retried", err: jetstream.ErrAsyncPublishTimeout},
		{name: "a refusal is final", err: &jetstream.APIError{Code: 400, ErrorCode: 10054}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := msgCount(t, st)
			ack, err := r.retry(msg(strings.ReplaceAll(tc.name, " ", "")), tc.err)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			want := before
			if !tc.wantErr {
				want++
				if ack == nil || ack.Duplicate {
					t.Fatalf("ack %+v, want a stored message", ack)
				}
			}
			if got := msgCount(t, st); got != want {
				t.Fatalf("stream holds %d, want %d", got, want)
			}
		})
	}
}

func TestPublish_csvFromStdin(t *testing.T) {
	s, st := mustServer(t, true)
	in := "out_detail_no,schema,mchid,appid,openid,amount,remark,transfer_scene_id\n" +
		"C1,paystream.payout.v1,1900000001,wxa1,o1,100,奖励,1001\n" +
		"C2,paystream.payout.v1,1900000001,wxa1,o2,1.5,奖励,1001\n" +
		"C3,paystream.payout.v1,1900000001,wxa1,o3,abc,奖励,1001\n" +
		"C4,paystream.payout.v1,1900000001\n" +
		"C5,paystream.payout.v1,1900000001,wxa1,o5,3000,\"备注,含逗号\",\n"
	code, out, errOut := runCmd(t, in, "publish", "--file", "-", "--format", "csv", "--url", s.ClientURL())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got, want := out, "published 2, duplicates 0, invalid 3, failed 0\n"; got != want {
		t.Fatalf("summary = %q, want %q (stderr %s)", got, want, errOut)
	}
	if got, want := msgCount(t, st), uint64(2); got != want {
		t.Fatalf("stream holds %d, want %d", got, want)
	}
}

func TestPublish_strictStopsAtFirstInvalid(t *testing.T) {
	s, st := mustServer(t, true)
	f := writeFile(t, "p.jsonl", line("S1", "100", "")+"\n"+line("S2", "0", "")+"\n"+line("S3", "100", "")+"\n")
	code, out, _ := runCmd(t, "", "publish", "--strict", "--file", f, "--url", s.ClientURL())
	if code != 1 || out != "published 1, duplicates 0, invalid 1, failed 0\n" {
		t.Fatalf("exit %d, summary %q", code, out)
	}
	if got := msgCount(t, st); got != 1 {
		t.Fatalf("stream holds %d, want 1", got)
	}
}

func TestPublish_failedPublishExitsNonZero(t *testing.T) {
	s, _ := mustServer(t, false) // no stream: nothing acks
	f := writeFile(t, "p.jsonl", line("F1", "100", "")+"\n")
	code, out, errOut := runCmd(t, "", "publish", "--file", f, "--url", s.ClientURL(), "--retry-for", "0")
	if code != 1 || out != "published 0, duplicates 0, invalid 0, failed 1\n" {
		t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "line 1: publish failed") {
		t.Fatalf("stderr %q", errOut)
	}
}

func TestPublish_raw(t *testing.T) {
	s, st := mustServer(t, true)
	f := writeFile(t, "p.jsonl", line("R1", "1.5", "")+"\nnot json\n")
	code, out, errOut := runCmd(t, "", "publish", "--raw", "--file", f, "--url", s.ClientURL())
	if code != 0 || out != "published 2, duplicates 0, invalid 0, failed 0\n" {
		t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
	}
	if got := msgCount(t, st); got != 2 {
		t.Fatalf("stream holds %d, want 2", got)
	}
	if _, err := st.GetLastMsgForSubject(t.Context(), "payouts.requests.invalid"); err != nil {
		t.Fatalf("malformed line not on payouts.requests.invalid: %v", err)
	}
}

func TestPublish_usage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, 2},
		{"unknown command", []string{"nope"}, 2},
		{"no file", []string{"publish"}, 2},
		{"bad format", []string{"publish", "--file", "x", "--format", "xml"}, 2},
		{"missing config", []string{"publish", "--file", "x", "--config", "/nonexistent.yaml"}, 1},
		{"missing file", []string{"publish", "--file", "/nonexistent.jsonl"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _, _ := runCmd(t, "", tt.args...); code != tt.want {
				t.Fatalf("exit %d, want %d", code, tt.want)
			}
		})
	}
}

// TestGen checks determinism, the mix of lines, and that the valid lines publish.
func TestGen(t *testing.T) {
	args := []string{"gen", "--count", "3000", "--seed", "42", "--invalid-rate", "0.05", "--fail-rate", "0.05", "--named-rate", "0.05"}
	code, a, errOut := runCmd(t, "", args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, b, _ := runCmd(t, "", args...); a != b {
		t.Fatal("gen is not deterministic for a seed")
	}
	if _, c, _ := runCmd(t, "", "gen", "--count", "3000", "--seed", "43"); a == c {
		t.Fatal("different seeds give the same output")
	}
	lines := strings.Split(strings.TrimSuffix(a, "\n"), "\n")
	if len(lines) != 3000 {
		t.Fatalf("%d lines, want 3000", len(lines))
	}
	var invalid, named, failing int
	groups := map[string]bool{}
	failRe := regexp.MustCompile(`^fail-[A-Z_]+-\d+$`)
	for _, l := range lines {
		r, err := payout.DecodeAndValidate([]byte(l), payout.DefaultLimits())
		if err != nil {
			if !errors.Is(err, payout.ErrInvalid) && !errors.Is(err, payout.ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			invalid++
			continue
		}
		if r.UserName != "" {
			named++
			if r.Amount < payout.NameRequiredFrom {
				t.Fatalf("named payout of %d fen", r.Amount)
			}
		}
		if failRe.MatchString(r.OpenID) {
			failing++
		}
		groups[r.AppID+r.SceneID+r.Rail()] = true
	}
	for _, c := range []struct {
		name string
		got  int
	}{{"invalid", invalid}, {"named", named}, {"failing", failing}} {
		if c.got < 75 || c.got > 250 { // 5% of 3000 = 150
			t.Errorf("%s = %d, want about 150", c.name, c.got)
		}
	}
	if len(groups) < 4 {
		t.Errorf("%d groups, want several", len(groups))
	}
}

// TestSampleFile checks testdata/payouts.jsonl, the file "make run" publishes.
func TestSampleFile(t *testing.T) {
	data, err := os.ReadFile("../../testdata/payouts.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := runCmd(t, "", "gen", "--count", "2600", "--seed", "1")
	if string(data) != want {
		t.Fatal("testdata/payouts.jsonl differs from producer gen --count 2600 --seed 1: regenerate it")
	}
}

func TestConfigFile(t *testing.T) {
	f, err := os.Open("../../configs/producer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseConfig(f, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); got.URL != want.URL || got.MaxInFlight != want.MaxInFlight || got.AckTimeout != want.AckTimeout {
		t.Fatalf("configs/producer.yaml = %+v, want the documented defaults %+v", got, want)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		wantField string
	}{
		{"unknown key", "urll: x\n", ""},
		{"in flight", "max-in-flight: 0\n", "max-in-flight"},
		{"cert without key", "tls-cert: c.pem\n", "tls-cert"},
		{"min amount", "limits:\n  min-amount: 0\n", "limits.min-amount"},
		{"max below min", "limits:\n  max-amount: 10\n", "limits.max-amount"},
		{"unset variable", "creds: ${NOPE}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tt.yaml), func(string) string { return "" })
			if err == nil {
				t.Fatal("accepted")
			}
			var ce *config.ConfigError
			if tt.wantField != "" && (!errors.As(err, &ce) || ce.Field != tt.wantField) {
				t.Fatalf("err = %v, want a ConfigError on %s", err, tt.wantField)
			}
		})
	}
}

// TestPublish_sampleFile publishes testdata/payouts.jsonl with a small in-flight window:
// nothing may fail for want of a slot, and a second run is all duplicates.
func TestPublish_sampleFile(t *testing.T) {
	s, st := mustServer(t, true)
	args := []string{"publish", "--file", "../../testdata/payouts.jsonl", "--url", s.ClientURL(), "--max-in-flight", "4"}
	start := time.Now()
	code, out, errOut := runCmd(t, "", args...)
	t.Logf("%s in %v", strings.TrimSpace(out), time.Since(start))
	var published, dups, invalid, failed int
	if _, err := fmt.Sscanf(out, "published %d, duplicates %d, invalid %d, failed %d", &published, &dups, &invalid, &failed); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	if code != 0 || failed != 0 || dups != 0 || published+invalid != 2600 || invalid == 0 {
		t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
	}
	if got := msgCount(t, st); got != uint64(published) {
		t.Fatalf("stream holds %d, want %d", got, published)
	}
	_, again, _ := runCmd(t, "", args...)
	if want := fmt.Sprintf("published 0, duplicates %d, invalid %d, failed 0\n", published, invalid); again != want {
		t.Fatalf("second run %q, want %q", again, want)
	}
}
