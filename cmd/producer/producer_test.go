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
		{"key file without id", "wechatpay-public-key-file: k.pem\n", "wechatpay-public-key-id"},
		{"key id without file", "wechatpay-public-key-id: PUB_KEY_ID_1\n", "wechatpay-public-key-file"},
		{"bad key id", "wechatpay-public-key-file: k.pem\nwechatpay-public-key-id: PUB-KEY\n", "wechatpay-public-key-id"},
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
