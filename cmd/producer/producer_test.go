package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/internal/config"
	"github.com/paystream/paystream/internal/natstest"
	"github.com/paystream/paystream/pkg/payout"
	"github.com/paystream/paystream/pkg/wechatpay"
	"github.com/paystream/paystream/pkg/wechatpay/wechatpaytest"
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

// keyArgs configure the TEST-ONLY WeChat Pay public key, which the sandbox decrypts with.
var keyArgs = []string{
	"--wechatpay-public-key-file", "../../pkg/wechatpay/wechatpaytest/keys/wechatpay_platform_TEST_ONLY_public_key.pem",
	"--wechatpay-public-key-id", wechatpaytest.DefaultPlatformKeyID,
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
	code, out, errOut := runCmd(t, "", append([]string{"publish", "--file", f, "--url", s.ClientURL()}, keyArgs...)...)
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
	r, err := payout.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Header.Get(jetstream.MsgIDHeader), payout.MsgID(&r); got != want || r.OutDetailNo != "A5" {
		t.Fatalf("Nats-Msg-Id = %q for %s, want %q for A5", got, r.OutDetailNo, want)
	}
}

// TestPublish_conflict: the same out_detail_no with another amount inside the duplicate
// window is published (the processor dead-letters it as a conflict), not dropped as a
// duplicate; an identical re-publish is still a duplicate.
func TestPublish_conflict(t *testing.T) {
	s, st := mustServer(t, true)
	f := writeFile(t, "p.jsonl", line("K1", "100", "")+"\n"+line("K1", "200", "")+"\n"+line("K1", "100", "")+"\n")
	code, out, errOut := runCmd(t, "", "publish", "--file", f, "--url", s.ClientURL())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got, want := out, "published 2, duplicates 1, invalid 0, failed 0\n"; got != want {
		t.Fatalf("summary = %q, want %q", got, want)
	}
	amounts := map[int64]bool{}
	for seq := uint64(1); seq <= msgCount(t, st); seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		r, err := payout.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		amounts[r.Amount] = true
	}
	if !amounts[100] || !amounts[200] || len(amounts) != 2 {
		t.Fatalf("stored amounts %v, want 100 and 200", amounts)
	}
}

// TestPublish_sealsNames: names are published only sealed: the stream's store files hold no
// plaintext name, and each stored cipher decrypts with the TEST-ONLY platform private key to
// the name of its line. Re-publishing the file gives only duplicates although every
// ciphertext is new.
func TestPublish_sealsNames(t *testing.T) {
	s, st := mustServer(t, true)
	names := map[string]string{"N1": "欧阳娜娜", "N2": "SECRETNAME"}
	f := writeFile(t, "p.jsonl", line("N1", "250000", `,"user_name":"欧阳娜娜"`)+"\n"+
		line("N2", "100", `,"user_name":"SECRETNAME"`)+"\n"+line("N3", "100", "")+"\n")
	args := append([]string{"publish", "--file", f, "--url", s.ClientURL()}, keyArgs...)
	if code, out, errOut := runCmd(t, "", args...); code != 0 || out != "published 3, duplicates 0, invalid 0, failed 0\n" {
		t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
	}
	if code, out, errOut := runCmd(t, "", args...); code != 0 || out != "published 0, duplicates 3, invalid 0, failed 0\n" {
		t.Fatalf("second run: exit %d, summary %q, stderr %s", code, out, errOut)
	}
	l := payout.DefaultLimits()
	l.EncryptedNamesOnly = true // as the processor validates
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		r, err := payout.DecodeAndValidate(m.Data, l)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		want, named := names[r.OutDetailNo]
		if !named {
			continue
		}
		got, err := wechatpay.DecryptOAEP(wechatpaytest.PlatformPrivateKey(), r.UserNameCipher)
		if err != nil || got != want || r.WechatpaySerial != wechatpaytest.DefaultPlatformKeyID {
			t.Fatalf("%s: name decrypts to %q (%v) under %q, want %q", r.OutDetailNo, got, err, r.WechatpaySerial, want)
		}
	}
	stored := natstest.StoreBytes(t, s)
	if !bytes.Contains(stored, []byte("o123")) {
		t.Fatal("the store files do not hold the openid: the scan sees nothing")
	}
	for _, name := range names {
		if bytes.Contains(stored, []byte(name)) {
			t.Fatalf("the store files hold the plaintext name %q", name)
		}
	}
}

// TestPublish_nameWithoutKey: with no WeChat Pay public key configured, a record with a name
// is reported as invalid with its line, never published in plain text.
func TestPublish_nameWithoutKey(t *testing.T) {
	s, st := mustServer(t, true)
	f := writeFile(t, "p.jsonl", line("W1", "100", "")+"\n"+line("W2", "100", `,"user_name":"SECRETNAME"`)+"\n")
	code, out, errOut := runCmd(t, "", "publish", "--file", f, "--url", s.ClientURL())
	if code != 0 || out != "published 1, duplicates 0, invalid 1, failed 0\n" {
		t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
	}
	if want := "line 2: payout: invalid request: user_name: " + payout.ReasonNoNameKey; !strings.Contains(errOut, want) {
		t.Fatalf("stderr %q lacks %q", errOut, want)
	}
	if strings.Contains(errOut, "SECRETNAME") {
		t.Fatalf("stderr leaks the name: %s", errOut)
	}
	if got := msgCount(t, st); got != 1 {
		t.Fatalf("stream holds %d, want 1", got)
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
	inProcess := &jetstream.APIError{Code: 409, ErrorCode: 10158} // duplicate message id is in process
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

// TestPublish_csvBadQuotes: rows encoding/csv cannot parse (a bare quote in the first
// column, a stray quote in a quoted field, a wrong number of fields) are reported with their
// line and reason; nothing panics, and the rows after them are read (a row spanning two
// lines is reported at its first).
func TestPublish_csvBadQuotes(t *testing.T) {
	s, st := mustServer(t, true)
	in := "out_detail_no,schema,mchid,appid,openid,amount,remark\n" +
		"Q1,paystream.payout.v1,1900000001,wxa1,o1,100,奖励\n" +
		"Q\"2,paystream.payout.v1,1900000001,wxa1,o2,100,奖励\n" +
		"\"Q3\"x,paystream.payout.v1,1900000001,wxa1,o3,100,奖励\n" +
		"Q4,paystream.payout.v1,1900000001,wxa1,o4,100\n" +
		"Q5,paystream.payout.v1,1900000001,wxa1,o5,100,\"多行\n备注\"\n" +
		"Q6,paystream.payout.v1,1900000001,wxa1,o6,100,奖励\n"
	code, out, errOut := runCmd(t, in, "publish", "--file", "-", "--format", "csv", "--url", s.ClientURL())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got, want := out, "published 2, duplicates 0, invalid 4, failed 0\n"; got != want {
		t.Fatalf("summary = %q, want %q (stderr %s)", got, want, errOut)
	}
	for _, want := range []string{"line 3: bad csv record: ", `bare " in non-quoted-field`,
		"line 4: bad csv record: ", `extraneous or missing " in quoted-field`,
		"line 5: bad csv record: ", "wrong number of fields",
		"line 6: payout: invalid request: remark: control or format character"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	if got := msgCount(t, st); got != 2 {
		t.Fatalf("stream holds %d, want 2", got)
	}
	if m, err := st.GetLastMsgForSubject(t.Context(), "payouts.requests.1900000001"); err != nil || !strings.Contains(string(m.Data), `"Q6"`) {
		t.Fatalf("the row after the bad ones was not published: %v", err)
	}
}

// TestPublish_csvBOM: a CSV that starts with a UTF-8 byte order mark, as spreadsheets write
// it, even with a quoted first header cell, publishes its valid rows.
func TestPublish_csvBOM(t *testing.T) {
	s, st := mustServer(t, true)
	for i, header := range []string{"out_detail_no,schema,mchid,appid,openid,amount,remark", `"out_detail_no",schema,mchid,appid,openid,amount,remark`} {
		in := "\uFEFF" + header + "\r\n" +
			fmt.Sprintf("B%d1,paystream.payout.v1,1900000001,wxa1,o1,100,奖励\r\n", i) +
			fmt.Sprintf("B%d2,paystream.payout.v1,1900000001,wxa1,o2,100,奖励\r\n", i)
		f := writeFile(t, "p.csv", in)
		code, out, errOut := runCmd(t, "", "publish", "--file", f, "--url", s.ClientURL())
		if code != 0 || out != "published 2, duplicates 0, invalid 0, failed 0\n" {
			t.Fatalf("header %q: exit %d, summary %q, stderr %s", header, code, out, errOut)
		}
	}
	if got := msgCount(t, st); got != 4 {
		t.Fatalf("stream holds %d, want 4", got)
	}
}

// TestPublish_csvBadHeader: a header that cannot be parsed is one clear error, and nothing
// is published.
func TestPublish_csvBadHeader(t *testing.T) {
	s, st := mustServer(t, true)
	tests := []struct {
		name, in, want string
	}{
		{"unterminated quote", "\"out_detail_no,amount\nX1,100\n", "csv header: "},
		{"bare quote", "out\"detail_no,amount\nX1,100\n", "csv header: "},
		{"empty", "", "csv header: empty input"},
		{"repeated column", "amount,amount\n1,2\n", `csv header: column "amount" repeated`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tt.in, "publish", "--file", "-", "--format", "csv", "--url", s.ClientURL())
			if code != 1 || out != "published 0, duplicates 0, invalid 0, failed 0\n" {
				t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
			}
			if !strings.Contains(errOut, "producer: read: "+tt.want) || strings.Count(errOut, "\n") != 1 {
				t.Fatalf("stderr %q, want one line with %q", errOut, tt.want)
			}
		})
	}
	if got := msgCount(t, st); got != 0 {
		t.Fatalf("stream holds %d, want 0", got)
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

// TestPublish_raw: --raw publishes every line unvalidated, with Nats-Msg-Id = MsgID when the
// line decodes and none otherwise.
func TestPublish_raw(t *testing.T) {
	s, st := mustServer(t, true)
	valid := line("R2", "0", "")
	f := writeFile(t, "p.jsonl", line("R1", "1.5", "")+"\nnot json\n"+valid+"\n")
	code, out, errOut := runCmd(t, "", "publish", "--raw", "--file", f, "--url", s.ClientURL())
	if code != 0 || out != "published 3, duplicates 0, invalid 0, failed 0\n" {
		t.Fatalf("exit %d, summary %q, stderr %s", code, out, errOut)
	}
	if got := msgCount(t, st); got != 3 {
		t.Fatalf("stream holds %d, want 3", got)
	}
	if _, err := st.GetLastMsgForSubject(t.Context(), "payouts.requests.invalid"); err != nil {
		t.Fatalf("malformed line not on payouts.requests.invalid: %v", err)
	}
	r, err := payout.Decode([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: "", 2: "", 3: payout.MsgID(&r)} {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get(jetstream.MsgIDHeader); got != want {
			t.Fatalf("message %d: Nats-Msg-Id = %q, want %q", seq, got, want)
		}
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

// TestConfigFlags: a flag overrides the key of its name in the config file, and a bad value,
// in the file or on the command line, is refused before anything is read or published, with
// the key named (exit 1).
func TestConfigFlags(t *testing.T) {
	cfgFile := writeFile(t, "producer.yaml", "max-in-flight: 0\nretry-for: 5s\n")
	bad := writeFile(t, "bad.yaml", "retry-for: soon\n")
	tests := []struct {
		name    string
		args    []string
		wantErr string // on stderr; "" for none: the missing input file is all that fails
	}{
		{"a flag overrides a bad file value", []string{"--config", cfgFile, "--max-in-flight", "4"}, ""},
		{"the file's bad value", []string{"--config", cfgFile}, "max-in-flight = 0: must be at least 1"},
		{"a bad file value names the key and line", []string{"--config", bad}, `retry-for: cannot use "soon" as a duration`},
		{"a bad flag value names the key", []string{"--max-in-flight", "many"}, `max-in-flight: cannot use "many" as an integer (command line)`},
		{"a bad flag duration names the key", []string{"--retry-for", "soon"}, `retry-for: cannot use "soon" as a duration`},
		{"a zero duration needs no unit", []string{"--retry-for", "0"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"publish", "--file", "/nonexistent.jsonl"}, tt.args...)
			code, _, stderr := runCmd(t, "", args...)
			if code != 1 || tt.wantErr == "" && !strings.Contains(stderr, "nonexistent.jsonl") || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.wantErr)
			}
		})
	}
	cfg, err := loadConfig(cfgFile, func(string) string { return "" }, config.Override{Key: "max-in-flight", Value: "4"})
	if err != nil || cfg.MaxInFlight != 4 || cfg.RetryFor != 5*time.Second {
		t.Fatalf("loadConfig = %+v, %v; want max-in-flight 4 from the flag, retry-for 5s from the file", cfg, err)
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
	got, err := loadConfig("../../configs/producer.yaml", func(string) string { return "" })
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
		{"key file without id", "wechatpay-public-key-file: k.pem\n", "wechatpay-public-key-id"},
		{"key id without file", "wechatpay-public-key-id: PUB_KEY_ID_1\n", "wechatpay-public-key-file"},
		{"bad key id", "wechatpay-public-key-file: k.pem\nwechatpay-public-key-id: PUB-KEY\n", "wechatpay-public-key-id"},
		{"unknown product", "product: cards\n", "product"},
		{"empty cancel prefix", "cancel-subject-prefix: \"\"\n", "cancel-subject-prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeFile(t, "producer.yaml", tt.yaml), func(string) string { return "" })
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
// nothing may fail for want of a slot, and a second run is all duplicates (its names are
// sealed again, with new ciphertexts, under the same ids).
func TestPublish_sampleFile(t *testing.T) {
	s, st := mustServer(t, true)
	args := append([]string{"publish", "--file", "../../testdata/payouts.jsonl", "--url", s.ClientURL(), "--max-in-flight", "4"}, keyArgs...)
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

// TestDemoConfig: the make run producer config parses, and its key seals names with the
// sandbox's TEST-ONLY WeChat Pay public key (relative paths are from the repository root).
func TestDemoConfig(t *testing.T) {
	cfg, err := loadConfig("../../configs/demo-producer.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.WechatpayPublicKeyID, wechatpaytest.DefaultPlatformKeyID; got != want {
		t.Fatalf("key id %q, want %q", got, want)
	}
	k, err := payout.LoadNameKey(cfg.WechatpayPublicKeyID, filepath.Join("../..", cfg.WechatpayPublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !k.Key.Equal(wechatpaytest.PlatformPublicKey()) {
		t.Fatal("the demo producer seals names with another key than the sandbox's")
	}
}

// billLine is a valid transfer bills request (scene 1000, both report rows).
func billLine(no string) string {
	return line(no, "1000", `,"transfer_scene_id":"1000","user_recv_perception":"现金奖励","transfer_scene_report_infos":`+
		`[{"info_type":"活动名称","info_content":"新用户注册有礼"},{"info_type":"奖励说明","info_content":"注册完成奖励现金"}]`)
}

// TestPublish_billsProduct: with product bills (flag or config) records are checked for the
// bills rail: a bill is published, a batch API record (no scene rows) is invalid; the batch
// product refuses the bill.
func TestPublish_billsProduct(t *testing.T) {
	in := writeFile(t, "in.jsonl", billLine("B1")+"\n"+line("D1", "100", "")+"\n")
	cfgFile := writeFile(t, "producer.yaml", "product: bills\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"flag", []string{"--product", "bills"}, "published 1, duplicates 0, invalid 1, failed 0\n"},
		{"config", []string{"--config", cfgFile}, "published 1, duplicates 0, invalid 1, failed 0\n"},
		{"flag overrides config", []string{"--config", cfgFile, "--product", "batches"}, "published 1, duplicates 0, invalid 1, failed 0\n"},
		{"batch product", nil, "published 1, duplicates 0, invalid 1, failed 0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, st := mustServer(t, true)
			args := append([]string{"publish", "--file", in, "--url", s.ClientURL()}, tt.args...)
			code, out, errOut := runCmd(t, "", args...)
			if code != 0 || out != tt.want {
				t.Fatalf("exit %d, out %q, stderr %s", code, out, errOut)
			}
			bills := slices.Contains(tt.args, "bills") || slices.Contains(tt.args, cfgFile) && !slices.Contains(tt.args, "batches")
			wantLine, wantSubject := "line 2:", "B1."
			if !bills {
				wantLine, wantSubject = "line 1:", "D1."
			}
			if !strings.Contains(errOut, wantLine) {
				t.Fatalf("stderr %q does not report %s", errOut, wantLine)
			}
			msg, err := st.GetLastMsgForSubject(t.Context(), "payouts.requests.1900000001")
			if err != nil {
				t.Fatal(err)
			}
			if id := msg.Header.Get(jetstream.MsgIDHeader); !strings.HasPrefix(id, wantSubject) {
				t.Fatalf("published %s, want %s…", id, wantSubject)
			}
		})
	}
}

// mustCancelStream creates a stream on payouts.cancel.>.
func mustCancelStream(t *testing.T, s *server.Server) jetstream.Stream {
	t.Helper()
	st, err := natstest.Connect(t, s).CreateStream(t.Context(), jetstream.StreamConfig{Name: "cancels", Subjects: []string{"payouts.cancel.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestCancel publishes cancels from arguments and a file: one CancelRequest per key on
// payouts.cancel.<mchid> with Nats-Msg-Id cancel.<key>, a repeat deduplicated, an invalid
// key reported (exit 1) and not published.
func TestCancel(t *testing.T) {
	s := natstest.Run(t)
	st := mustCancelStream(t, s)
	keys := writeFile(t, "keys.txt", "# cancelled by support\nD3\n\n  D4  \nbad-key\n")
	code, out, errOut := runCmd(t, "", "cancel", "--url", s.ClientURL(), "--mchid", "1900000001", "--reason", "用户申请取消",
		"--file", keys, "D1", "D2", "D1")
	if got, want := out, "cancel requested 5, invalid 1, failed 0\n"; got != want || code != 1 {
		t.Fatalf("exit %d, out %q, want 1, %q; stderr %s", code, got, want, errOut)
	}
	if !strings.Contains(errOut, `"bad-key"`) || !strings.Contains(errOut, "out_detail_no") {
		t.Fatalf("stderr %q does not report the bad key", errOut)
	}
	if got, want := msgCount(t, st), uint64(4); got != want {
		t.Fatalf("stream holds %d cancels, want %d (D1 twice is one)", got, want)
	}
	cons, err := st.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 4 {
		m, err := cons.Next()
		if err != nil {
			t.Fatal(err)
		}
		c, err := payout.DecodeCancel(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if m.Subject() != "payouts.cancel.1900000001" || m.Headers().Get(jetstream.MsgIDHeader) != payout.CancelMsgID(c) ||
			c.Reason != "用户申请取消" || c.MchID != "1900000001" {
			t.Fatalf("message %s %v %+v", m.Subject(), m.Headers(), c)
		}
		got = append(got, c.OutDetailNo)
	}
	if want := []string{"D1", "D2", "D3", "D4"}; !slices.Equal(got, want) {
		t.Fatalf("cancelled %v, want %v", got, want)
	}

	code, out, errOut = runCmd(t, "D5\n", "cancel", "--url", s.ClientURL(), "--mchid", "1900000001", "--file", "-")
	if code != 0 || out != "cancel requested 1, invalid 0, failed 0\n" {
		t.Fatalf("stdin: exit %d, out %q, stderr %s", code, out, errOut)
	}
}

func TestCancel_usageAndFailures(t *testing.T) {
	s := natstest.Run(t) // no stream: nothing acknowledges a cancel
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no mchid", []string{"cancel", "D1"}, 2},
		{"no keys", []string{"cancel", "--mchid", "1900000001"}, 2},
		{"bad config", []string{"cancel", "--mchid", "1900000001", "--config", writeFile(t, "p.yaml", "product: cards\n"), "D1"}, 1},
		{"missing file", []string{"cancel", "--mchid", "1900000001", "--file", "/nonexistent"}, 1},
		{"no stream", []string{"cancel", "--mchid", "1900000001", "--url", s.ClientURL(), "--retry-for", "0s", "D1"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _, errOut := runCmd(t, "", tt.args...); code != tt.want {
				t.Fatalf("exit %d, want %d: %s", code, tt.want, errOut)
			}
		})
	}
}

// TestGen_bills: --product bills writes transfer bills requests that the bills rail accepts
// (apart from the invalid share), with simulated payees; an unknown product is a usage error.
func TestGen_bills(t *testing.T) {
	code, out, errOut := runCmd(t, "", "gen", "--product", "bills", "--count", "2000", "--seed", "3",
		"--noconfirm-rate", "0.05", "--decline-rate", "0.05")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var valid, noconfirm, decline int
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		r, err := payout.Decode([]byte(l))
		if err == nil {
			err = r.ValidateFor(payout.RailBills, payout.DefaultLimits())
		}
		if err != nil {
			continue
		}
		valid++
		switch {
		case strings.HasPrefix(r.OpenID, "noconfirm-"):
			noconfirm++
		case strings.HasPrefix(r.OpenID, "decline-"):
			decline++
		}
	}
	if valid < 1900 || noconfirm < 40 || decline < 40 {
		t.Fatalf("valid %d, noconfirm %d, decline %d of 2000", valid, noconfirm, decline)
	}
	if code, _, _ := runCmd(t, "", "gen", "--product", "cards"); code != 2 {
		t.Fatalf("unknown product: exit %d, want 2", code)
	}
}

// TestConfig_billScenes: limits.bill-scenes replaces the default scene table.
func TestConfig_billScenes(t *testing.T) {
	cfg, err := loadConfig(writeFile(t, "producer.yaml", "product: bills\nlimits:\n  bill-scenes:\n    \"2001\":\n"+
		"      report-infos: [岗位类型]\n      perceptions: [劳务报酬]\n"), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	r := payout.Request{Schema: payout.SchemaV1, OutDetailNo: "B1", MchID: "1900000001", AppID: "wxa1", OpenID: "o1",
		Amount: 100, Remark: "报酬", SceneID: "2001", UserRecvPerception: "劳务报酬",
		SceneReportInfos: []payout.SceneReportInfo{{InfoType: "岗位类型", InfoContent: "外卖骑手"}}}
	if err := r.ValidateFor(cfg.rail(), cfg.limits()); err != nil {
		t.Fatal(err)
	}
	r.SceneID = "1000"
	if err := r.ValidateFor(cfg.rail(), cfg.limits()); !errors.Is(err, payout.ErrInvalid) {
		t.Fatalf("scene 1000 outside the configured table: err = %v", err)
	}
}

// TestPublish_csvBills: a CSV cell of transfer_scene_report_infos holds the rows as JSON and
// is decoded as strictly as in JSON lines (an unknown key in a row is invalid; so is a cell
// that is not JSON).
func TestPublish_csvBills(t *testing.T) {
	s, st := mustServer(t, true)
	rows := `"[{""info_type"":""活动名称"",""info_content"":""春节红包雨""},{""info_type"":""奖励说明"",""info_content"":""签到奖励""}]"`
	in := "out_detail_no,schema,mchid,appid,openid,amount,remark,transfer_scene_id,user_recv_perception,transfer_scene_report_infos\n" +
		"C1,paystream.payout.v1,1900000001,wxa1,o1,100,奖励,1000,现金奖励," + rows + "\n" +
		"C2,paystream.payout.v1,1900000001,wxa1,o2,100,奖励,1000,," + strings.Replace(rows, `""info_content""`, `""info_kind""`, 1) + "\n" +
		"C3,paystream.payout.v1,1900000001,wxa1,o3,100,奖励,1000,,活动名称\n"
	code, out, errOut := runCmd(t, in, "publish", "--file", "-", "--format", "csv", "--product", "bills", "--url", s.ClientURL())
	if got, want := out, "published 1, duplicates 0, invalid 2, failed 0\n"; code != 0 || got != want {
		t.Fatalf("exit %d, summary %q, want %q (stderr %s)", code, got, want, errOut)
	}
	if !strings.Contains(errOut, `transfer_scene_report_infos[0]."info_kind"`) {
		t.Fatalf("stderr %q does not name the unknown row key", errOut)
	}
	if got, want := msgCount(t, st), uint64(1); got != want {
		t.Fatalf("stream holds %d, want %d", got, want)
	}
}
